/*
 * stratusctl's credential: where it is found, how a request is signed and
 * a sealed result opened (docs/stratusctl.md "credentials", docs/bus.md
 * "auth"), and `stratusctl credential create|list|revoke` (admin).
 *
 * The file is JSON {"id", "secret" (64 hex digits), "project", "role"},
 * mode 0600. Looked for like openstack's clouds.yaml: --credential FILE
 * (which sets $STRATUS_CREDENTIAL), then $STRATUS_CREDENTIAL, then
 * ~/.config/stratus/credential, then /etc/stratus/credential.
 */
#define LOG_TAG "cli"
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli_priv.h"
#include "core/core.h"
#include "core/crypto.h"

#define CRED_FILE_MAX 4096

static int hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* The file to use: the first of the search list that exists. */
static int cred_path(char *buf, size_t len)
{
	const char *env = getenv("STRATUS_CREDENTIAL"), *home = getenv("HOME");

	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return 0;
	}
	if (home && *home) {
		snprintf(buf, len, "%s/.config/stratus/credential", home);
		if (access(buf, F_OK) == 0)
			return 0;
	}
	snprintf(buf, len, "/etc/stratus/credential");
	if (access(buf, F_OK) == 0)
		return 0;
	return err_set(-ENOENT, "no credential: give --credential FILE or set "
		       "$STRATUS_CREDENTIAL, or put one in ~/.config/stratus/credential or "
		       "/etc/stratus/credential (an admin makes one with 'stratusctl credential "
		       "create')");
}

static int parse_cred(const char *path, const char *text, struct cli_credential *out)
{
	json_error_t jerr;
	json_t *o = json_loads(text, 0, &jerr);
	const char *id = json_string_value(json_object_get(o, "id"));
	const char *secret = json_string_value(json_object_get(o, "secret"));
	const char *project = json_string_value(json_object_get(o, "project"));
	const char *role = json_string_value(json_object_get(o, "role"));
	unsigned char raw[32];
	int r = 0;

	if (!o)
		return err_set(-EINVAL, "credential %s: not JSON: %s", path, jerr.text);
	if (!id || !*id || strlen(id) >= sizeof(out->id) || !project || !*project ||
	    strlen(project) >= sizeof(out->project) || !role ||
	    (strcmp(role, "member") != 0 && strcmp(role, "admin") != 0)) {
		r = err_set(-EINVAL, "credential %s: id, project and role (member or admin) are "
			    "required", path);
		goto out;
	}
	if (!secret || strlen(secret) != 64) {
		r = err_set(-EINVAL, "credential %s: secret: expected 64 lower-case hex digits",
			    path);
		goto out;
	}
	for (size_t i = 0; i < 32; i++) {
		int hi = hex_nibble(secret[2 * i]), lo = hex_nibble(secret[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			r = err_set(-EINVAL, "credential %s: secret: expected 64 lower-case hex "
				    "digits", path);
			goto out;
		}
		raw[i] = (unsigned char)(hi << 4 | lo);
	}
	/* the same derivation as the scheduler's (scheduler/auth.c) */
	r = crypto_hkdf_sha256(raw, sizeof(raw), NULL, 0, "stratus request signing",
			       out->sign_key);
	if (r == 0)
		r = crypto_hkdf_sha256(raw, sizeof(raw), NULL, 0, "stratus result", out->result_key);
	if (r == 0) {
		snprintf(out->id, sizeof(out->id), "%s", id);
		snprintf(out->project, sizeof(out->project), "%s", project);
		snprintf(out->role, sizeof(out->role), "%s", role);
	}
	memset(raw, 0, sizeof(raw));
out:
	json_decref(o);
	return r;
}

int cli_credential_load(struct cli_credential *out)
{
	char path[1024];
	_cleanup_free_ char *text = NULL;
	struct stat st;
	size_t len;
	int r = cred_path(path, sizeof(path));

	if (r < 0)
		return r;
	if (stat(path, &st) < 0)
		return err_sys(-errno, "credential %s", path);
	if (st.st_mode & 077)
		return err_set(-EPERM, "credential %s: mode %04o lets others read the secret: "
			       "chmod 600 %s", path, (unsigned)(st.st_mode & 07777), path);
	r = read_file(path, CRED_FILE_MAX, &text, &len);
	if (r < 0)
		return err_prefix(r, "credential %s", path);
	r = parse_cred(path, text, out);
	memset(text, 0, len);
	return r;
}

int cli_credential_sign(const struct cli_credential *cred, struct bus_envelope *e)
{
	_cleanup_free_ char *canon = NULL;
	unsigned char mac[CRYPTO_MAC_LEN];
	char hex[2 * CRYPTO_MAC_LEN + 1];
	json_t *auth;
	size_t len;
	int r = bus_envelope_canonical(e, &canon, &len);

	if (r == 0)
		r = crypto_hmac_sha256(cred->sign_key, sizeof(cred->sign_key), canon, len, mac);
	if (r < 0)
		return r;
	hex_encode(mac, sizeof(mac), hex);
	auth = json_pack("{s:s, s:s}", "credential", cred->id, "sig", hex);
	if (!auth)
		return err_set(-ENOMEM, "out of memory");
	return bus_envelope_set_auth(e, auth); /* takes auth, also on failure */
}

int cli_credential_open(const struct cli_credential *cred, const char *rid, const char *sealed,
			json_t **out)
{
	_cleanup_free_ unsigned char *ct = NULL, *pt = NULL;
	size_t n, m;
	json_t *v;
	int r = base64_decode(sealed, CRYPTO_SEAL_MAX + CRYPTO_AEAD_OVERHEAD, &ct, &n);

	if (r < 0)
		return err_set(r, "result of request %s: sealed: not base64", rid);
	r = crypto_aead_open(cred->result_key, rid, strlen(rid), ct, n, &pt, &m);
	if (r < 0)
		return err_set(r, "result of request %s: sealed to another credential than %s, "
			       "or altered", rid, cred->id);
	v = json_loadb((const char *)pt, m, JSON_DECODE_ANY, NULL);
	if (!v)
		return err_set(-EINVAL, "result of request %s: sealed data is not JSON", rid);
	*out = v;
	return 0;
}

/* ---- stratusctl credential create|list|revoke --------------------------- */

static const char cred_usage[] =
	"credential create --project P --role member|admin [--output FILE] | credential list | "
	"credential revoke ID";

static int cred_create(struct cli_ctx *ctx, const struct cli_common *co, const char *project,
		       const char *role, const char *output)
{
	struct cli_session ss;
	json_t *data = NULL, *body = json_pack("{s:s, s:s}", "project", project, "role", role);
	_cleanup_free_ char *text = NULL;
	int rc = cli_session_open(&ss, ctx, co->timeout_s);

	if (rc == CLI_OK)
		rc = cli_request(&ss, "credential.create", body, &data);
	if (rc == CLI_OK) {
		text = json_dumps(data, JSON_INDENT(2) | JSON_SORT_KEYS);
		if (!text) {
			rc = CLI_ERROR;
		} else if (output) {
			int r = write_file_durable(output, text, strlen(text), 0600);

			if (r < 0) {
				cli_error(ctx, "credential %s created but not written to %s: %s",
					  json_string_value(json_object_get(data, "id")), output,
					  err_msg());
				rc = CLI_ERROR;
			} else {
				printf("credential %s (project %s, %s) written to %s (mode 0600)\n",
				       json_string_value(json_object_get(data, "id")), project, role,
				       output);
			}
		} else {
			printf("%s\n", text);
		}
	}
	cli_session_close(&ss);
	json_decref(data);
	json_decref(body);
	return rc;
}

int cli_credential(struct cli_ctx *ctx, int argc, char **argv)
{
	enum { C_ROLE = 3100, C_OUTPUT };
	static const struct option opts[] = {
		{ "role", required_argument, NULL, C_ROLE },
		{ "output", required_argument, NULL, C_OUTPUT },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	static const char *const cols[] = { "id", "project", "role", "created", "revoked", NULL };
	static const char *const heads[] = { "ID", "PROJECT", "ROLE", "CREATED", "REVOKED" };
	struct cli_common co = { .timeout_s = 30 };
	const char *role = NULL, *output = NULL, *sub;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = cli_common_opt(ctx, c, &co);

		if (r < 0)
			return CLI_USAGE;
		if (r == 0)
			continue;
		if (c == CLI_OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, cred_usage);
			return CLI_OK;
		}
		if (c == C_ROLE)
			role = optarg;
		else if (c == C_OUTPUT)
			output = optarg;
		else
			return cli_usage_error(ctx, cred_usage, "unknown option %s", argv[optind - 1]);
	}
	if (argc - optind < 1)
		return cli_usage_only(ctx, cred_usage);
	sub = argv[optind];
	if (strcmp(sub, "create") == 0 && argc - optind == 1) {
		if (!co.project || !role)
			return cli_usage_error(ctx, cred_usage, "credential create: --project and "
					       "--role are required");
		if (strcmp(role, "member") != 0 && strcmp(role, "admin") != 0)
			return cli_usage_error(ctx, cred_usage, "credential create: --role: "
					       "expected member or admin, got '%s'", role);
		return cred_create(ctx, &co, co.project, role, output);
	}
	if (strcmp(sub, "list") == 0 && argc - optind == 1)
		return cli_request_print(ctx, &co, "credential.list", json_object(), cols, heads);
	if (strcmp(sub, "revoke") == 0 && argc - optind == 2) {
		int rc = cli_request_print(ctx, &co, "credential.revoke",
					   json_pack("{s:s}", "id", argv[optind + 1]), NULL, NULL);

		if (rc == CLI_OK && !ctx->json)
			printf("credential %s revoked\n", argv[optind + 1]);
		return rc;
	}
	return cli_usage_only(ctx, cred_usage);
}
