/*
 * stratusctl instance commands: boot, delete, stop, start, reboot,
 * console, show and list. boot (and delete, stop, start) follow the
 * instance's state events until the state asked for, checking with
 * instance.show when the events are quiet.
 */
#define LOG_TAG "cli"
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"
#include "cli/cli_priv.h"
#include "core/core.h"
#include "core/crypto.h"

#define SHOW_EVERY_MS 2000

/* ---- waiting for states ------------------------------------------------ */

struct target {
	char uuid[UUID_STRLEN];
	char *name;
	char *state;
	char *host;
	bool done;
};

static void target_set(char **dst, const char *v)
{
	if (v && (!*dst || strcmp(*dst, v) != 0)) {
		free(*dst);
		*dst = strdup(v);
	}
}

bool cli_state_wanted(const char *state, const char *want)
{
	size_t n = strlen(state);

	for (const char *p = want; p && *p;) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);

		if (len == n && strncmp(p, state, n) == 0)
			return true;
		p = bar ? bar + 1 : NULL;
	}
	return false;
}

/* One state seen for T: print progress, return 1 done ok, -1 error, 0 on. */
static int target_update(struct cli_ctx *ctx, struct target *t, const char *state,
			 const char *host, const char *reason, const char *want)
{
	bool changed = !t->state || strcmp(t->state, state) != 0 ||
		       (host && (!t->host || strcmp(t->host, host) != 0));

	if (!changed)
		return 0;
	target_set(&t->state, state);
	target_set(&t->host, host);
	if (!ctx->json) {
		if (t->host && strcmp(state, "deleted") != 0)
			printf("%s: %s on %s\n", t->name, state, t->host);
		else
			printf("%s: %s\n", t->name, state);
		fflush(stdout);
	}
	if (cli_state_wanted(state, want)) {
		t->done = true;
		return 1;
	}
	if (strcmp(state, "error") == 0) {
		cli_error(ctx, "%s: %s", t->name, reason ? reason : "error");
		t->done = true;
		return -1;
	}
	return 0;
}

/* Follow TARGETS (n) until each reaches WANT. */
static int wait_states(struct cli_session *ss, const char *project, struct target *tg, size_t n,
		       const char *want)
{
	int64_t last_show = time_mono_ms();
	size_t left = n;
	int rc = CLI_OK;

	for (size_t i = 0; i < n; i++)
		json_object_set_new(ss->w.uuids, tg[i].uuid, json_true());
	while (left > 0) {
		size_t k;
		json_t *st;

		if (time_mono_ms() >= ss->deadline_ms) {
			cli_error(ss->ctx, "timed out waiting for %s", want);
			return CLI_TIMEOUT;
		}
		cli_session_poll(ss, 100);
		if (ss->w.late_error) {
			const char *err = json_string_value(json_object_get(ss->w.late_error, "error"));

			cli_error(ss->ctx, "%s", err ? err : "refused by the host");
			return CLI_ERROR;
		}
		json_array_foreach(ss->w.states, k, st) {
			const char *u = json_string_value(json_object_get(st, "uuid"));

			for (size_t i = 0; i < n; i++) {
				int r;

				if (tg[i].done || strcmp(tg[i].uuid, u) != 0)
					continue;
				if (json_is_true(json_object_get(st, "rolled_back"))) {
					/* a rebuild the host undid: back as before, and failed */
					const char *why = json_string_value(json_object_get(st, "reason"));

					cli_error(ss->ctx, "%s: %s", tg[i].name, why ? why : "rolled back");
					tg[i].done = true;
					left--;
					rc = CLI_ERROR;
					continue;
				}
				r = target_update(ss->ctx, &tg[i],
						  json_string_value(json_object_get(st, "state")),
						  json_string_value(json_object_get(st, "host")),
						  json_string_value(json_object_get(st, "reason")), want);
				if (r != 0)
					left--;
				if (r < 0)
					rc = CLI_ERROR;
			}
		}
		json_array_clear(ss->w.states);
		if (left > 0 && time_mono_ms() - last_show >= SHOW_EVERY_MS) {
			/* quiet: ask for the state itself */
			for (size_t i = 0; i < n; i++) {
				json_t *body, *data = NULL;
				int r;

				if (tg[i].done)
					continue;
				body = json_pack("{s:s, s:s}", "project", project, "instance", tg[i].uuid);
				r = cli_request(ss, "instance.show", body, &data);
				json_decref(body);
				if (r == CLI_ERROR && strcmp(want, "deleted") == 0) {
					/* gone from the list: deleted */
					target_update(ss->ctx, &tg[i], "deleted", NULL, NULL, want);
					left--;
					continue;
				}
				if (r != CLI_OK) {
					json_decref(data);
					return r;
				}
				r = target_update(ss->ctx, &tg[i],
						  json_string_value(json_object_get(data, "state")),
						  json_string_value(json_object_get(data, "host")),
						  json_string_value(json_object_get(data, "reason")), want);
				if (r != 0)
					left--;
				if (r < 0)
					rc = CLI_ERROR;
				json_decref(data);
			}
			last_show = time_mono_ms();
		}
	}
	return rc;
}

static void targets_free(struct target *tg, size_t n)
{
	for (size_t i = 0; tg && i < n; i++) {
		free(tg[i].name);
		free(tg[i].state);
		free(tg[i].host);
	}
	free(tg);
}

/* ---- boot -------------------------------------------------------------- */

static const char boot_usage[] =
	"boot NAME --flavor F --image I [--user-data FILE] [--key FILE]... [--meta K=V]...\n"
	"       [--count N] [--group G [--group-policy affinity|anti-affinity]] [--az Z]\n"
	"       [--seed nocloud|configdrive|none] [--security-group G]... [--volume V] [--no-wait]\n"
	"       [--project P] [--timeout S]";

static int read_key(struct cli_ctx *ctx, const char *path, json_t *keys)
{
	_cleanup_free_ char *text = NULL, *copy = NULL;
	size_t len;

	if (read_file(path, 16 * 1024, &text, &len) < 0) {
		cli_error(ctx, "--key %s: %s", path, err_msg());
		return -1;
	}
	text[strcspn(text, "\r\n")] = '\0';
	copy = strdup(path);
	if (!copy || !*text) {
		cli_error(ctx, "--key %s: no key in the file", path);
		return -1;
	}
	json_array_append_new(keys, json_pack("{s:s, s:s}", "name", basename(copy), "key", text));
	return 0;
}

enum { O_FLAVOR = 2000, O_IMAGE, O_UD, O_KEY, O_META, O_COUNT, O_GROUP, O_GPOL, O_AZ, O_SEED,
       O_SECGROUP, O_VOLUME };

/* A boot request as its options build it. */
struct boot_req {
	struct cli_common co;
	json_t *body, *keys, *meta;
	bool help;               /* --help was printed */
};

/* One boot option (not a common one) into b; CLI_OK or the exit code. */
static int boot_opt(struct cli_ctx *ctx, int c, char **argv, struct boot_req *b)
{
	long count = 1;

	switch (c) {
	case O_FLAVOR: json_object_set_new(b->body, "flavor", json_string(optarg)); break;
	case O_IMAGE: json_object_set_new(b->body, "image", json_string(optarg)); break;
	case O_GROUP: json_object_set_new(b->body, "server_group", json_string(optarg)); break;
	case O_GPOL: json_object_set_new(b->body, "server_group_policy", json_string(optarg)); break;
	case O_AZ: json_object_set_new(b->body, "availability_zone", json_string(optarg)); break;
	case O_SEED: json_object_set_new(b->body, "seed", json_string(optarg)); break;
	case O_SECGROUP: {
		json_t *g = json_object_get(b->body, "security_groups");

		if (!g) {
			g = json_array();
			json_object_set_new(b->body, "security_groups", g);
		}
		json_array_append_new(g, json_string(optarg));
		break;
	}
	case O_VOLUME: json_object_set_new(b->body, "volume", json_string(optarg)); break;
	case O_COUNT:
		if (parse_long(optarg, 1, 100, &count) < 0)
			return cli_usage_error(ctx, boot_usage, "--count: expected 1 to 100, got '%s'",
					       optarg);
		json_object_set_new(b->body, "count", json_integer(count));
		break;
	case O_UD: {
		_cleanup_free_ char *ud = NULL, *b64 = NULL;
		size_t len;

		if (read_file(optarg, 64 * 1024, &ud, &len) < 0) {
			cli_error(ctx, "--user-data %s: %s", optarg, err_msg());
			return CLI_ERROR;
		}
		b64 = base64_encode((unsigned char *)ud, len);
		json_object_set_new(b->body, "user_data", json_string(b64 ? b64 : ""));
		break;
	}
	case O_KEY:
		if (read_key(ctx, optarg, b->keys) < 0)
			return CLI_ERROR;
		break;
	case O_META: {
		char *eq = strchr(optarg, '=');

		if (!eq || eq == optarg)
			return cli_usage_error(ctx, boot_usage,
					       "--meta: expected KEY=VALUE, got '%s'", optarg);
		*eq = '\0';
		json_object_set_new(b->meta, optarg, json_string(eq + 1));
		break;
	}
	case CLI_OPT_HELP:
		printf("usage: %s %s\n", ctx->prog, boot_usage);
		b->help = true;
		return CLI_OK;
	default:
		return cli_usage_error(ctx, boot_usage, "boot: unknown option %s", argv[optind - 1]);
	}
	return CLI_OK;
}

/* The command line into b->body; CLI_OK (with b->help after --help) or
 * the exit code. */
static int boot_parse(struct cli_ctx *ctx, int argc, char **argv, struct boot_req *b)
{
	static const struct option opts[] = {
		{ "flavor", required_argument, NULL, O_FLAVOR },
		{ "image", required_argument, NULL, O_IMAGE },
		{ "user-data", required_argument, NULL, O_UD },
		{ "key", required_argument, NULL, O_KEY },
		{ "meta", required_argument, NULL, O_META },
		{ "count", required_argument, NULL, O_COUNT },
		{ "group", required_argument, NULL, O_GROUP },
		{ "group-policy", required_argument, NULL, O_GPOL },
		{ "az", required_argument, NULL, O_AZ },
		{ "seed", required_argument, NULL, O_SEED },
		{ "security-group", required_argument, NULL, O_SECGROUP },
		{ "volume", required_argument, NULL, O_VOLUME },
		{ "no-wait", no_argument, NULL, CLI_OPT_NO_WAIT },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = cli_common_opt(ctx, c, &b->co);

		if (r < 0)
			return CLI_USAGE;
		if (r == 0)
			continue;
		r = boot_opt(ctx, c, argv, b);
		if (r != CLI_OK || b->help)
			return r;
	}
	if (argc - optind != 1 || !json_object_get(b->body, "flavor") ||
	    !json_object_get(b->body, "image"))
		return cli_usage_error(ctx, boot_usage, "%s",
				       "boot: NAME, --flavor and --image are required");
	json_object_set_new(b->body, "project", json_string(b->co.project));
	json_object_set_new(b->body, "name", json_string(argv[optind]));
	if (json_array_size(b->keys))
		json_object_set(b->body, "ssh_keys", b->keys);
	if (json_object_size(b->meta))
		json_object_set(b->body, "metadata", b->meta);
	return CLI_OK;
}

/*
 * The user data, keys and metadata of the boot sealed to the scheduler's
 * box key (asked for with scheduler.keys): nobody else on stratus.api
 * reads them. Nothing secret: nothing asked.
 */
static int boot_seal(struct cli_session *ss, json_t *body)
{
	unsigned char key[CRYPTO_KEY_LEN];
	json_t *keys = NULL, *none;
	bool secret = false;
	int rc;

	for (size_t i = 0; bus_build_secret_fields[i]; i++)
		secret = secret || json_object_get(body, bus_build_secret_fields[i]);
	if (!secret)
		return CLI_OK;
	none = json_object();
	rc = none ? cli_request(ss, "scheduler.keys", none, &keys) : CLI_ERROR;
	json_decref(none);
	if (rc != CLI_OK)
		return rc;
	if (crypto_key_from_text(json_string_value(json_object_get(keys, "box_key")), key) < 0) {
		cli_error(ss->ctx, "boot: the scheduler published no valid box_key: not sending user "
			  "data and keys in clear");
		rc = CLI_ERROR;
	} else if (bus_seal_fields(body, bus_build_secret_fields, key, BUS_SEAL_BOOT) < 0) {
		cli_error(ss->ctx, "boot: %s", err_msg());
		rc = CLI_ERROR;
	}
	json_decref(keys);
	return rc;
}

/* Send the boot request, then follow its instances until active. */
static int boot_run(struct cli_ctx *ctx, struct boot_req *b)
{
	struct cli_session ss;
	struct target *tg = NULL;
	json_t *data = NULL;
	size_t n = 0;
	int rc = cli_session_open(&ss, ctx, b->co.timeout_s);

	if (rc == CLI_OK)
		rc = boot_seal(&ss, b->body);
	if (rc == CLI_OK)
		rc = cli_request(&ss, "instance.boot", b->body, &data);
	if (rc == CLI_OK) {
		json_t *list = json_object_get(data, "instances"), *it;
		size_t i;

		n = json_array_size(list);
		tg = calloc(n ? n : 1, sizeof(*tg));
		json_array_foreach(list, i, it) {
			snprintf(tg[i].uuid, sizeof(tg[i].uuid), "%s",
				 json_string_value(json_object_get(it, "uuid")));
			tg[i].name = strdup(json_string_value(json_object_get(it, "name")));
			if (!b->co.no_wait)
				target_update(ctx, &tg[i], "scheduling",
					      json_string_value(json_object_get(it, "host")), NULL,
					      "active");
			else if (!ctx->json)
				printf("%s %s\n", tg[i].uuid, tg[i].name);
		}
		if (!b->co.no_wait)
			rc = wait_states(&ss, b->co.project, tg, n, "active");
		if (ctx->json)
			cli_print_json(list);
	}
	cli_session_close(&ss);
	targets_free(tg, n);
	json_decref(data);
	return rc;
}

int cli_boot(struct cli_ctx *ctx, int argc, char **argv)
{
	struct boot_req b = {
		.co = { .project = cli_default_project(), .timeout_s = 600 },
		.body = json_object(),
		.keys = json_array(),
		.meta = json_object(),
	};
	int rc = boot_parse(ctx, argc, argv, &b);

	if (rc == CLI_OK && !b.help)
		rc = boot_run(ctx, &b);
	json_decref(b.body);
	json_decref(b.keys);
	json_decref(b.meta);
	return rc;
}

int cli_follow(struct cli_session *ss, const char *project, const char *uuid, const char *name,
	       const char *state, const char *host, const char *want)
{
	struct target t = { 0 };
	int rc = CLI_OK;

	snprintf(t.uuid, sizeof(t.uuid), "%s", uuid);
	t.name = strdup(name);
	if (!t.name)
		return CLI_ERROR;
	if (state && target_update(ss->ctx, &t, state, host, NULL, want) < 0)
		rc = CLI_ERROR;
	if (!t.done)
		rc = wait_states(ss, project, &t, 1, want);
	free(t.name);
	free(t.state);
	free(t.host);
	return rc;
}

/* ---- rebuild (issue 18) ------------------------------------------------ */

static const char rebuild_usage[] =
	"rebuild NAME|UUID [--image I] [--user-data FILE] [--project P] [--timeout S] [--no-wait]";

/* Send instance.rebuild (the user data sealed to the scheduler, as a
 * boot's), then follow the instance: rebuilding, then active. */
int cli_rebuild(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "image", required_argument, NULL, O_IMAGE },
		{ "user-data", required_argument, NULL, O_UD },
		{ "no-wait", no_argument, NULL, CLI_OPT_NO_WAIT },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	struct cli_common co = { .project = cli_default_project(), .timeout_s = 600 };
	const char *image = NULL, *ud_path = NULL;
	_cleanup_free_ char *ud = NULL, *b64 = NULL;
	struct target t = { 0 };
	struct cli_session ss;
	json_t *body, *data = NULL;
	size_t len = 0;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = cli_common_opt(ctx, c, &co);

		if (r < 0)
			return CLI_USAGE;
		if (r == 0)
			continue;
		if (c == CLI_OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, rebuild_usage);
			return CLI_OK;
		}
		if (c == O_IMAGE)
			image = optarg;
		else if (c == O_UD)
			ud_path = optarg;
		else
			return cli_usage_error(ctx, rebuild_usage, "unknown option %s", argv[optind - 1]);
	}
	if (argc - optind != 1)
		return cli_usage_error(ctx, rebuild_usage, "rebuild: one instance name or uuid is "
				       "required");
	if (ud_path && read_file(ud_path, 64 * 1024, &ud, &len) < 0) {
		cli_error(ctx, "--user-data %s: %s", ud_path, err_msg());
		return CLI_ERROR;
	}
	if (ud && !(b64 = base64_encode((unsigned char *)ud, len))) {
		cli_error(ctx, "--user-data %s: out of memory", ud_path);
		return CLI_ERROR;
	}
	body = json_pack("{s:s, s:s}", "project", co.project, "instance", argv[optind]);
	if (body && image)
		json_object_set_new(body, "image", json_string(image));
	if (body && b64)
		json_object_set_new(body, "user_data", json_string(b64));
	rc = cli_session_open(&ss, ctx, co.timeout_s);
	if (rc == CLI_OK)
		rc = boot_seal(&ss, body);
	if (rc == CLI_OK)
		rc = cli_request(&ss, "instance.rebuild", body, &data);
	if (rc == CLI_OK) {
		snprintf(t.uuid, sizeof(t.uuid), "%s", json_string_value(json_object_get(data, "uuid")));
		t.name = strdup(argv[optind]);
		if (!co.no_wait && t.name) {
			target_update(ctx, &t, "rebuilding",
				      json_string_value(json_object_get(data, "host")), NULL, "active");
			rc = wait_states(&ss, co.project, &t, 1, "active");
		} else if (!ctx->json) {
			printf("%s: rebuild requested\n", argv[optind]);
		}
		if (ctx->json)
			cli_print_json(data);
	}
	cli_session_close(&ss);
	free(t.name);
	free(t.state);
	free(t.host);
	json_decref(data);
	json_decref(body);
	return rc;
}

/* ---- commands on one instance ------------------------------------------ */

struct instance_op {
	const char *cmd;
	const char *type;
	const char *want;  /* state to wait for, NULL = no wait */
};

static const struct instance_op instance_ops[] = {
	{ "delete", "instance.delete", "deleted" },
	{ "stop", "instance.stop", "stopped" },
	{ "start", "instance.start", "active" },
	{ "reboot", "instance.reboot", NULL },
	{ "console", "instance.console", NULL },
	{ "show", "instance.show", NULL },
};

/*
 * reboot: follow the instance through rebooting to the host's outcome (the
 * observer started before the request, so none of its events is missed).
 * Only the states of our own request (its id: the host's events carry it)
 * count, so another client's stop or reboot of the same instance is not
 * taken for ours: an instance.state with "rebooted" (soft,
 * hard_after_timeout, ...) is done, printed with its reason; another after
 * rebooting is the failure the host reports (its reason says why).
 */
static int follow_reboot(struct cli_session *ss, const char *name, const char *uuid)
{
	bool seen = false;

	json_object_set_new(ss->w.uuids, uuid, json_true());
	for (;;) {
		size_t k;
		json_t *st;

		if (time_mono_ms() >= ss->deadline_ms) {
			cli_error(ss->ctx, "%s: timed out waiting for the reboot", name);
			return CLI_TIMEOUT;
		}
		cli_session_poll(ss, 100);
		if (ss->w.late_error) {
			const char *err = json_string_value(json_object_get(ss->w.late_error, "error"));

			cli_error(ss->ctx, "%s", err ? err : "refused by the host");
			return CLI_ERROR;
		}
		json_array_foreach(ss->w.states, k, st) {
			const char *state = json_string_value(json_object_get(st, "state"));
			const char *reason = json_string_value(json_object_get(st, "reason"));
			const char *rid = json_string_value(json_object_get(st, "request_id"));

			if (!state || !rid || strcmp(rid, ss->w.last_rid) != 0)
				continue;
			if (strcmp(state, "rebooting") == 0) {
				if (!seen && !ss->ctx->json) {
					printf("%s: rebooting\n", name);
					fflush(stdout);
				}
				seen = true;
				continue;
			}
			if (!seen)
				continue; /* before the host took ours */
			if (json_string_value(json_object_get(st, "rebooted"))) {
				if (!ss->ctx->json)
					printf("%s: %s (%s)\n", name, state, reason ? reason : "rebooted");
				return CLI_OK;
			}
			cli_error(ss->ctx, "%s: reboot failed: %s (%s)", name, reason ? reason : "?",
				  state);
			return CLI_ERROR;
		}
		json_array_clear(ss->w.states);
	}
}

static int instance_cmd(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "no-wait", no_argument, NULL, CLI_OPT_NO_WAIT },
		{ "lines", required_argument, NULL, CLI_OPT_LINES },
		{ "attach", no_argument, NULL, CLI_OPT_ATTACH },
		{ "url", no_argument, NULL, CLI_OPT_URL },
		{ "hard", no_argument, NULL, CLI_OPT_HARD },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	const struct instance_op *op = NULL;
	struct cli_common co = { .project = cli_default_project(), .timeout_s = 300 };
	struct cli_session ss;
	json_t *body = NULL, *data = NULL;
	char usage[160];
	long nlines = 0;
	bool attach = false, url = false, hard = false;
	int c, rc;

	for (size_t i = 0; i < ARRAY_SIZE(instance_ops); i++)
		if (strcmp(instance_ops[i].cmd, argv[0]) == 0)
			op = &instance_ops[i];
	if (!op)
		return CLI_USAGE;
	snprintf(usage, sizeof(usage), "%s NAME|UUID [--project P] [--timeout S]%s", op->cmd,
		 op->want ? " [--no-wait]" :
		 strcmp(op->cmd, "console") == 0 ? " [--lines N | --attach | --url]" :
		 strcmp(op->cmd, "reboot") == 0 ? " [--hard] [--no-wait]" : "");
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = cli_common_opt(ctx, c, &co);

		if (r < 0)
			return CLI_USAGE;
		if (r == 0)
			continue;
		if (c == CLI_OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, usage);
			return CLI_OK;
		}
		if (c == CLI_OPT_LINES && strcmp(op->cmd, "console") == 0) {
			if (parse_long(optarg, 1, 9999, &nlines) < 0)
				return cli_usage_error(ctx, usage,
						   "--lines: expected a count from 1 to 9999, got '%s'",
						   optarg);
			continue;
		}
		if ((c == CLI_OPT_ATTACH || c == CLI_OPT_URL) && strcmp(op->cmd, "console") == 0) {
			*(c == CLI_OPT_ATTACH ? &attach : &url) = true;
			continue;
		}
		if (c == CLI_OPT_HARD && strcmp(op->cmd, "reboot") == 0) {
			hard = true;
			continue;
		}
		return cli_usage_error(ctx, usage, "unknown option %s", argv[optind - 1]);
	}
	if (argc - optind != 1)
		return cli_usage_error(ctx, usage, "%s: one instance name or uuid is required", op->cmd);
	if ((attach || url) && (nlines > 0 || (attach && url)))
		return cli_usage_error(ctx, usage, "%s", "console: --lines, --attach and --url "
				       "exclude each other");
	body = json_pack("{s:s, s:s}", "project", co.project, "instance", argv[optind]);
	if (body && nlines > 0)
		json_object_set_new(body, "lines", json_integer(nlines));
	if (body && (attach || url))
		json_object_set_new(body, "attach", json_true());
	if (body && hard)
		json_object_set_new(body, "hard", json_true());
	rc = cli_session_open(&ss, ctx, co.timeout_s);
	if (rc == CLI_OK)
		rc = cli_request(&ss, op->type, body, &data);
	if (rc == CLI_OK && strcmp(op->cmd, "show") == 0) {
		if (ctx->json) {
			cli_print_json(data);
		} else {
			static const char *const keys[] = { "name", "uuid", "project", "state", "host",
							    "flavor", "image", "server_group",
							    "attempts", "reason", "created",
							    "updated" };
			char buf[64];

			for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
				printf("%-13s %s\n", keys[i], cli_field_text(data, keys[i], buf, sizeof(buf)));
			if (json_object_size(json_object_get(data, "faults"))) {
				const char *k;
				json_t *v;

				json_object_foreach(json_object_get(data, "faults"), k, v)
					printf("fault         %s: %s\n", k, json_string_value(v));
			}
		}
	} else if (rc == CLI_OK && (attach || url)) {
		/* the host's answer: {"uuid", "address", "token", "expires_in", "url"} */
		if (ctx->json)
			cli_print_json(data);
		else if (url)
			printf("%s\n", json_string_value(json_object_get(data, "url")) ?
					       json_string_value(json_object_get(data, "url")) : "");
		else
			rc = cli_console_attach(ctx, argv[optind], data);
	} else if (rc == CLI_OK && strcmp(op->cmd, "console") == 0) {
		/* the agent's answer: {"lines": ["...", ...]} */
		json_t *lines = json_object_get(data, "lines"), *ln;
		size_t k;

		if (ctx->json)
			cli_print_json(data);
		else
			json_array_foreach(lines, k, ln)
				printf("%s\n", json_string_value(ln) ? json_string_value(ln) : "");
	} else if (rc == CLI_OK) {
		struct target t = { 0 };

		snprintf(t.uuid, sizeof(t.uuid), "%s", json_string_value(json_object_get(data, "uuid")));
		t.name = strdup(argv[optind]);
		if (op->want && !co.no_wait && t.name) {
			rc = wait_states(&ss, co.project, &t, 1, op->want);
		} else if (strcmp(op->cmd, "reboot") == 0 && !co.no_wait && t.name) {
			rc = follow_reboot(&ss, t.name, t.uuid);
		} else if (!ctx->json) {
			printf("%s: %s requested\n", argv[optind], op->cmd);
		}
		if (ctx->json)
			cli_print_json(data);
		free(t.name);
		free(t.state);
		free(t.host);
	}
	cli_session_close(&ss);
	json_decref(data);
	json_decref(body);
	return rc;
}

int cli_delete(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }
int cli_stop(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }
int cli_start(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }
int cli_reboot(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }
int cli_console(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }
int cli_show(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }

/* ---- list ------------------------------------------------------------- */

int cli_list(struct cli_ctx *ctx, int argc, char **argv)
{
	static const char *const cols[] = { "name", "state", "host", "flavor", "image", "uuid", NULL };
	static const char *const heads[] = { "NAME", "STATE", "HOST", "FLAVOR", "IMAGE", "UUID" };
	struct cli_common co = { .project = cli_default_project(), .timeout_s = 30 };
	int i = cli_common_only(ctx, argc, argv, "list [--project P]", &co);

	if (i == -CLI_OK - 100)
		return CLI_OK;
	if (i < 0)
		return -i;
	if (i != argc)
		return cli_usage_error(ctx, "list [--project P]", "%s", "list: no operands");
	return cli_request_print(ctx, &co, "instance.list", json_pack("{s:s}", "project", co.project), cols,
		      heads);
}
