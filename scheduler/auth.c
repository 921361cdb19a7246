/*
 * Who asks: credentials and signed requests (docs/bus.md "auth",
 * docs/scheduler.md "credentials").
 *
 * A credential is an id and a 32-byte secret bound to one project and one
 * role. The scheduler keeps, per credential, two keys derived from the
 * secret with HKDF-SHA256 (no salt): the signing key (info "stratus request
 * signing") that verifies the HMAC-SHA256 of a request's canonical bytes,
 * and the result key (info "stratus result") that seals results carrying
 * the tenant's data. They are keys, not password hashes: whoever reads the
 * state database can act as every credential, so the database is mode 0600
 * and only the scheduler's user may read it. The secret itself is never
 * stored.
 *
 * Replay: a request's timestamp must lie within scheduler.request_window of
 * the scheduler's clock, and its envelope id is remembered (api_seen, in the
 * request's transaction) for twice the window. The envelope id, not the
 * request id: a client's retry of the same request is a new envelope with
 * its own signature (and gets the first outcome); a captured envelope sent
 * again has the id it was signed with. The same message delivered again by
 * Kafka (same partition and offset) is no replay.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/crypto.h"
#include "scheduler/sched_priv.h"

#define INFO_SIGN "stratus request signing"
#define INFO_RESULT "stratus result"
#define SECRET_LEN 32
#define PRUNE_EVERY_MS 10000

const char *const sched_role_names[] = {
	[SCHED_ROLE_MEMBER] = "member", [SCHED_ROLE_ADMIN] = "admin", [SCHED_ROLE_LAST] = NULL,
};

/* Request types only an admin may send. */
static const char *const admin_types[] = {
	"quota.set",	    "flavor.add",	 "flavor.remove",     "image.add",
	"host.list",	    "credential.create", "credential.list",   "credential.revoke",
	"host.forget",	    "instance.migrate",	 "host.disable",      "host.enable", "host.drain",
	"host.evacuate",
};

enum auth_stmt { AST_CRED_GET, AST_SEEN_GET, AST_SEEN_PUT, AST_SEEN_PRUNE, AST_LAST };

static const char *const auth_sql[AST_LAST] = {
	[AST_CRED_GET] = "SELECT project, role, sign_key, result_key, revoked FROM credentials "
			 "WHERE id = ?1",
	[AST_SEEN_GET] = "SELECT origin FROM api_seen WHERE envelope_id = ?1",
	[AST_SEEN_PUT] = "INSERT OR IGNORE INTO api_seen(envelope_id, origin, ts_ms) "
			 "VALUES (?1, ?2, ?3)",
	[AST_SEEN_PRUNE] = "DELETE FROM api_seen WHERE ts_ms < ?1",
};

struct sched_auth {
	sqlite3_stmt *st[AST_LAST];
	int64_t last_prune_ms;
};

/* ---- small helpers ----------------------------------------------------- */

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Exactly 2n lower-case hex digits into OUT; -EINVAL otherwise. */
static int hex_decode(const char *in, unsigned char *out, size_t n)
{
	if (!in || strlen(in) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hex_nibble(in[2 * i]), lo = hex_nibble(in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

/* RFC 3339 (as time_rfc3339_valid accepts it) to milliseconds since 1970. */
static int rfc3339_ms(const char *s, int64_t *out)
{
	struct tm tm = { 0 };
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	int64_t ms = 0, scale = 100, off = 0;

	if (!p)
		return -EINVAL;
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++) {
			ms += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if ((*p == '+' || *p == '-') && strlen(p) == 6) {
		off = ((p[1] - '0') * 10 + (p[2] - '0')) * 60 + (p[4] - '0') * 10 + (p[5] - '0');
		off *= *p == '+' ? 60000 : -60000;
	} else if (!((*p == 'Z' || *p == 'z') && p[1] == '\0')) {
		return -EINVAL;
	}
	*out = (int64_t)timegm(&tm) * 1000 + ms - off;
	return 0;
}

int sched_cred_keys(const unsigned char *secret, size_t n, unsigned char sign_key[32],
		    unsigned char result_key[32])
{
	int r = crypto_hkdf_sha256(secret, n, NULL, 0, INFO_SIGN, sign_key);

	return r < 0 ? r : crypto_hkdf_sha256(secret, n, NULL, 0, INFO_RESULT, result_key);
}

static int role_parse(const char *name, enum sched_role *out)
{
	for (int i = 0; i < SCHED_ROLE_LAST; i++) {
		if (name && strcmp(sched_role_names[i], name) == 0) {
			*out = (enum sched_role)i;
			return 0;
		}
	}
	return -EINVAL;
}

static bool admin_only(const char *type)
{
	for (size_t i = 0; i < ARRAY_SIZE(admin_types); i++)
		if (strcmp(admin_types[i], type) == 0)
			return true;
	return false;
}

static int step_done(struct sched *s, enum auth_stmt st, const char *what)
{
	sqlite3_stmt *q = s->auth->st[st];
	int rc = sqlite3_step(q), r = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = err_set(-EIO, "scheduler state %s: %s: %s", s->cfg->state_path, what,
			    sqlite3_errmsg(s->db));
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return r;
}

/* ---- creating credentials ---------------------------------------------- */

/*
 * A new credential of PROJECT and ROLE: its row (keys only) in the state,
 * and *file the credential file's JSON {id, secret, project, role}, which
 * holds the secret and is the only place it exists (caller frees).
 */
static int cred_create(struct sched *s, const char *project, enum sched_role role,
		       char **file, char id_out[UUID_STRLEN])
{
	unsigned char secret[SECRET_LEN], sk[32], rk[32];
	char secret_hex[2 * SECRET_LEN + 1], sk_hex[65], rk_hex[65], ts[RFC3339_STRLEN];
	char id[UUID_STRLEN];
	sqlite3_stmt *q = NULL;
	json_t *o = NULL;
	int r;

	uuid_generate_str(id);
	r = crypto_random(secret, sizeof(secret));
	if (r == 0)
		r = sched_cred_keys(secret, sizeof(secret), sk, rk);
	if (r < 0)
		goto out;
	hex_encode(secret, sizeof(secret), secret_hex);
	hex_encode(sk, sizeof(sk), sk_hex);
	hex_encode(rk, sizeof(rk), rk_hex);
	time_rfc3339_now(ts);
	if (sqlite3_prepare_v2(s->db,
			       "INSERT INTO credentials(id, project, role, sign_key, result_key, "
			       "created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
			       -1, &q, NULL) != SQLITE_OK) {
		r = err_set(-EIO, "storing a credential: %s", sqlite3_errmsg(s->db));
		goto out;
	}
	sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, sched_role_names[role], -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, sk_hex, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 5, rk_hex, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 6, ts, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE) {
		r = err_set(-EIO, "storing a credential: %s", sqlite3_errmsg(s->db));
		goto out;
	}
	o = json_pack("{s:s, s:s, s:s, s:s}", "id", id, "secret", secret_hex, "project", project,
		      "role", sched_role_names[role]);
	*file = o ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	if (!*file)
		r = err_set(-ENOMEM, "out of memory");
	else
		snprintf(id_out, UUID_STRLEN, "%s", id);
out:
	sqlite3_finalize(q);
	json_decref(o);
	memset(secret, 0, sizeof(secret));
	memset(secret_hex, 0, sizeof(secret_hex));
	return r;
}

/* The bootstrap admin credential's path: configured, else beside the state. */
static char *admin_path(const struct sched_config *cfg)
{
	_cleanup_free_ char *dir = strdup(cfg->state_path);
	char *p = NULL;

	if (cfg->admin_credential)
		return strdup(cfg->admin_credential);
	if (!dir || asprintf(&p, "%s/admin.credential", dirname(dir)) < 0)
		return NULL;
	return p;
}

/* No credential at all yet: create the operator's first one. */
static int bootstrap(struct sched *s)
{
	sqlite3_stmt *q = NULL;
	_cleanup_free_ char *path = NULL, *file = NULL;
	char id[UUID_STRLEN];
	bool any;
	int r;

	if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM credentials LIMIT 1", -1, &q, NULL) !=
	    SQLITE_OK)
		return err_set(-EIO, "reading credentials: %s", sqlite3_errmsg(s->db));
	any = sqlite3_step(q) == SQLITE_ROW;
	sqlite3_finalize(q);
	if (any)
		return 0;
	path = admin_path(s->cfg);
	if (!path)
		return err_set(-ENOMEM, "out of memory");
	r = cred_create(s, "default", SCHED_ROLE_ADMIN, &file, id);
	if (r < 0)
		return r;
	r = write_file_durable(path, file, strlen(file), 0600);
	if (r < 0)
		return err_prefix(r, "scheduler: writing the admin credential %s", path);
	log_info("admin credential created credential=%s file=%s", id, path);
	return 0;
}

int sched_auth_open(struct sched *s)
{
	int r;

	s->auth = calloc(1, sizeof(*s->auth));
	if (!s->auth)
		return err_set(-ENOMEM, "out of memory");
	/* the database holds signing keys: the scheduler's user only */
	if (chmod(s->cfg->state_path, 0600) < 0)
		return err_sys(-errno, "scheduler state: chmod 0600 %s", s->cfg->state_path);
	for (int i = 0; i < AST_LAST; i++)
		if (sqlite3_prepare_v3(s->db, auth_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &s->auth->st[i], NULL) != SQLITE_OK)
			return err_set(-EIO, "scheduler state %s: preparing statements: %s",
				       s->cfg->state_path, sqlite3_errmsg(s->db));
	r = bootstrap(s);
	return r;
}

void sched_auth_close(struct sched *s)
{
	if (!s->auth)
		return;
	for (int i = 0; i < AST_LAST; i++)
		sqlite3_finalize(s->auth->st[i]);
	free(s->auth);
	s->auth = NULL;
}

/* ---- verifying a request ----------------------------------------------- */

/* The credential ID's row: 0, 1 refused (unknown, revoked), <0 error. */
static int cred_load(struct sched *s, const char *id, struct sched_cred *out,
		     unsigned char sign_key[32])
{
	sqlite3_stmt *q = s->auth->st[AST_CRED_GET];
	int rc, r = 0;

	sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const char *project = (const char *)sqlite3_column_text(q, 0);
		const char *role = (const char *)sqlite3_column_text(q, 1);

		if (sqlite3_column_type(q, 4) != SQLITE_NULL)
			r = err_set(1, "credential %s: revoked", id);
		else if (role_parse(role, &out->role) < 0 ||
			 hex_decode((const char *)sqlite3_column_text(q, 2), sign_key, 32) < 0 ||
			 hex_decode((const char *)sqlite3_column_text(q, 3), out->result_key, 32) < 0 ||
			 !project || strlen(project) >= sizeof(out->project))
			r = err_set(-EIO, "credential %s: its stored row is damaged", id);
		else {
			snprintf(out->id, sizeof(out->id), "%s", id);
			snprintf(out->project, sizeof(out->project), "%s", project);
		}
	} else if (rc == SQLITE_DONE) {
		r = err_set(1, "credential %s: unknown", id);
	} else {
		r = err_set(-EIO, "reading credential %s: %s", id, sqlite3_errmsg(s->db));
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return r;
}

/* The envelope id seen before (not as this very message): 1 refused. */
static int check_replay(struct sched *s, const struct bus_envelope *e, const char *origin,
			int64_t now_ms)
{
	sqlite3_stmt *q = s->auth->st[AST_SEEN_GET];
	int rc, r = 0;

	sqlite3_bind_text(q, 1, e->id, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const char *was = (const char *)sqlite3_column_text(q, 0);

		if (!origin || !was || strcmp(origin, was) != 0)
			r = err_set(1, "%s: envelope %s replayed: already received at %s",
				    e->type, e->id, was ? was : "an unknown offset");
	} else if (rc != SQLITE_DONE) {
		r = err_set(-EIO, "reading the replay window: %s", sqlite3_errmsg(s->db));
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	if (r != 0)
		return r;
	q = s->auth->st[AST_SEEN_PUT];
	sqlite3_bind_text(q, 1, e->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, origin, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, now_ms);
	r = step_done(s, AST_SEEN_PUT, "recording a request");
	if (r == 0 && now_ms - s->auth->last_prune_ms >= PRUNE_EVERY_MS) {
		/* a timestamp this old is refused anyway: forget its id */
		sqlite3_bind_int64(s->auth->st[AST_SEEN_PRUNE], 1,
				   now_ms - 2 * s->cfg->request_window_ms);
		r = step_done(s, AST_SEEN_PRUNE, "pruning the replay window");
		s->auth->last_prune_ms = now_ms;
	}
	return r;
}

int sched_auth_verify(struct sched *s, const struct bus_envelope *e, const char *origin,
		      int64_t now_ms, struct sched_cred *out)
{
	const char *id = e->auth ? json_string_value(json_object_get(e->auth, "credential")) : NULL;
	const char *sig = e->auth ? json_string_value(json_object_get(e->auth, "sig")) : NULL;
	unsigned char sign_key[32], want[CRYPTO_MAC_LEN], got[CRYPTO_MAC_LEN];
	_cleanup_free_ char *canon = NULL;
	struct sched_cred cred = { 0 };
	int64_t ts_ms;
	size_t len;
	int r;

	if (!e->auth)
		return err_set(1, "%s: unsigned request: every request on %s needs auth "
			       "{credential, sig} (docs/bus.md)", e->type, BUS_TOPIC_API);
	if (!id || !*id || !sig)
		return err_set(1, "%s: auth: credential and sig are required", e->type);
	if (hex_decode(sig, got, sizeof(got)) < 0)
		return err_set(1, "credential %s: sig: expected 64 lower-case hex digits", id);
	r = cred_load(s, id, &cred, sign_key);
	if (r != 0)
		return r;
	r = bus_envelope_canonical(e, &canon, &len);
	if (r == 0)
		r = crypto_hmac_sha256(sign_key, sizeof(sign_key), canon, len, want);
	memset(sign_key, 0, sizeof(sign_key));
	if (r < 0)
		return r;
	if (!crypto_equal(want, got, sizeof(want)))
		return err_set(1, "credential %s: bad signature", id);
	/* signed, so the timestamp and id are the sender's: check them */
	if (rfc3339_ms(e->ts, &ts_ms) < 0)
		return err_set(1, "%s: timestamp %s: not RFC 3339", e->type, e->ts);
	if (ts_ms < now_ms - s->cfg->request_window_ms || ts_ms > now_ms + s->cfg->request_window_ms)
		return err_set(1, "%s: timestamp %s is outside the scheduler's window of %lld s "
			       "(scheduler.request_window): stale or clock skew", e->type, e->ts,
			       (long long)(s->cfg->request_window_ms / 1000));
	r = check_replay(s, e, origin, now_ms);
	if (r != 0)
		return r;
	*out = cred;
	return 0;
}

int sched_auth_rebind(struct sched *s, const char *id, struct sched_call *c,
		      struct sched_cred *cred)
{
	unsigned char sign_key[32];
	int r = cred_load(s, id, cred, sign_key);

	memset(sign_key, 0, sizeof(sign_key));
	c->credential = id; /* named in a refusal; bind sets it again */
	return r == 0 ? sched_auth_bind(c, cred) : r;
}

int sched_auth_bind(struct sched_call *c, const struct sched_cred *cred)
{
	const char *asked = sched_jstr(c->body, "project");
	bool admin = cred->role == SCHED_ROLE_ADMIN;

	if (!admin && admin_only(c->type))
		return err_set(1, "%s: admin only: credential %s is a member of project %s",
			       c->type, cred->id, cred->project);
	if (!admin && asked && strcmp(asked, cred->project) != 0)
		return err_set(1, "%s: credential %s is a member of project %s, not of %s", c->type,
			       cred->id, cred->project, asked);
	c->admin = admin;
	c->project = admin && asked ? asked : cred->project;
	c->credential = cred->id;
	c->seal_key = cred->result_key;
	return 0;
}

json_t *sched_result_sealed(const struct sched_call *c, json_t *data)
{
	return bus_result_sealed(c->seal_key, c->rid, data);
}

/* ---- the credential requests ------------------------------------------- */

int sched_on_credential_create(struct sched *s, struct sched_call *c)
{
	const char *project = sched_jstr(c->body, "project");
	_cleanup_free_ char *file = NULL;
	enum sched_role role;
	char id[UUID_STRLEN];
	json_t *data;
	int r;

	if (!project || role_parse(sched_jstr(c->body, "role"), &role) < 0)
		return sched_reject(s, c, "credential.create: project and role (member or admin) "
				    "are required");
	r = sched_tx_begin(s);
	if (r < 0)
		return r;
	r = cred_create(s, project, role, &file, id);
	data = r == 0 ? json_loads(file, 0, NULL) : NULL;
	if (r == 0 && !data)
		r = err_set(-ENOMEM, "out of memory");
	if (r == 0)
		r = sched_accept(s, c, NULL, data);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (file)
		memset(file, 0, strlen(file));
	if (r == 0)
		log_info("credential created credential=%s project=%s role=%s by=%s request=%s", id,
			 project, sched_role_names[role], c->credential ? c->credential : "-",
			 c->rid);
	return r;
}

int sched_on_credential_list(struct sched *s, struct sched_call *c)
{
	sqlite3_stmt *q = NULL;
	json_t *arr = json_array();

	if (sqlite3_prepare_v2(s->db,
			       "SELECT id, project, role, created, revoked FROM credentials "
			       "ORDER BY project, created",
			       -1, &q, NULL) != SQLITE_OK) {
		json_decref(arr);
		return err_set(-EIO, "listing credentials: %s", sqlite3_errmsg(s->db));
	}
	while (arr && sqlite3_step(q) == SQLITE_ROW) {
		const char *rev = (const char *)sqlite3_column_text(q, 4);

		json_array_append_new(
			arr, json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", sqlite3_column_text(q, 0),
				       "project", sqlite3_column_text(q, 1), "role",
				       sqlite3_column_text(q, 2), "created",
				       sqlite3_column_text(q, 3), "revoked", rev ? rev : "-"));
	}
	sqlite3_finalize(q);
	return sched_accept(s, c, NULL, arr);
}

int sched_on_credential_revoke(struct sched *s, struct sched_call *c)
{
	const char *id = sched_jstr(c->body, "id");
	sqlite3_stmt *q = NULL;
	char ts[RFC3339_STRLEN];
	int r, changed;

	if (!id)
		return sched_reject(s, c, "credential.revoke: id is required");
	if (c->credential && strcmp(id, c->credential) == 0)
		return sched_reject(s, c, "credential %s: a credential cannot revoke itself", id);
	r = sched_tx_begin(s);
	if (r < 0)
		return r;
	time_rfc3339_now(ts);
	if (sqlite3_prepare_v2(s->db,
			       "UPDATE credentials SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL",
			       -1, &q, NULL) != SQLITE_OK) {
		sched_tx_rollback(s);
		return err_set(-EIO, "revoking a credential: %s", sqlite3_errmsg(s->db));
	}
	sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, ts, -1, SQLITE_STATIC);
	r = sqlite3_step(q) == SQLITE_DONE ? 0 : err_set(-EIO, "revoking a credential: %s",
							 sqlite3_errmsg(s->db));
	changed = sqlite3_changes(s->db);
	sqlite3_finalize(q);
	if (r == 0 && changed == 0)
		r = sched_reject(s, c, "credential %s: unknown or already revoked", id);
	else if (r == 0)
		r = sched_accept(s, c, NULL, json_pack("{s:s, s:s}", "id", id, "revoked", ts));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0 && changed)
		log_info("credential revoked credential=%s request=%s", id, c->rid);
	return r;
}
