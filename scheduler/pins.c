/*
 * Hosts' signing keys (docs/scheduler.md "Host keys"): every host.report
 * on stratus.metrics and every instance.state / instance.reschedule on
 * stratus.events is signed by its agent's Ed25519 key (agent/trust.c).
 * The scheduler pins one key per host name: the one in
 * scheduler.host_keys when configured, else the first one it sees in a
 * signed report (trust on first use, kept in the host_keys table). A
 * report or event for a pinned host that is unsigned, signed by another
 * key or changed after signing is refused before any handler runs:
 * nothing changes, a warning is logged, refused_total counts it. An event
 * about an instance is also refused unless it comes from the host the
 * instance is placed on. host.forget (admin) drops a TOFU pin.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/crypto.h"
#include "scheduler/sched_priv.h"

const char *const sched_refusal_names[] = {
	[SCHED_REFUSED_UNSIGNED] = "unsigned",
	[SCHED_REFUSED_UNKNOWN_KEY] = "unknown_key",
	[SCHED_REFUSED_BAD_SIGNATURE] = "bad_signature",
	[SCHED_REFUSED_WRONG_HOST] = "wrong_host",
	[SCHED_REFUSED_NOT_PINNED] = "not_pinned",
	[SCHED_REFUSED_LAST] = NULL,
};

static const char pins_schema[] =
	"CREATE TABLE IF NOT EXISTS host_keys (host TEXT PRIMARY KEY, key TEXT NOT NULL, "
	"pinned_ms INTEGER NOT NULL)";

enum pin_stmt { PST_GET, PST_PUT, PST_DEL, PST_LAST };

static const char *const pin_sql[PST_LAST] = {
	[PST_GET] = "SELECT key FROM host_keys WHERE host = ?1",
	[PST_PUT] = "INSERT OR REPLACE INTO host_keys(host, key, pinned_ms) VALUES (?1, ?2, ?3)",
	[PST_DEL] = "DELETE FROM host_keys WHERE host = ?1",
};

struct sched_pins {
	sqlite3_stmt *st[PST_LAST];
	/* scheduler.host_keys, parsed: names are the config's */
	unsigned char (*cfg_keys)[BUS_KEY_LEN];
};

/* One scheduler.host_keys value: base64 key text, or a file holding it. */
static int parse_host_key(const char *host, const char *entry, unsigned char key[BUS_KEY_LEN])
{
	char what[300];

	snprintf(what, sizeof(what), "scheduler.host_keys.%s", host);
	return crypto_key_from_entry(what, entry, "the agent's host-sign.pub", key);
}

int sched_pins_check_config(const struct sched_config *cfg)
{
	unsigned char key[BUS_KEY_LEN];

	for (size_t i = 0; i < cfg->host_keys.n; i++) {
		int r = parse_host_key(cfg->host_keys.keys[i], cfg->host_keys.vals[i], key);

		if (r < 0)
			return r;
	}
	return 0;
}

int sched_pins_open(struct sched *s)
{
	const struct cfg_map *m = &s->cfg->host_keys;
	char *emsg = NULL;
	int r;

	s->pins = calloc(1, sizeof(*s->pins));
	if (!s->pins)
		return err_set(-ENOMEM, "out of memory");
	if (sqlite3_exec(s->db, pins_schema, NULL, NULL, &emsg) != SQLITE_OK) {
		r = err_set(-EIO, "scheduler state %s: %s", s->cfg->state_path, emsg ? emsg : "?");
		sqlite3_free(emsg);
		return r;
	}
	for (int i = 0; i < PST_LAST; i++)
		if (sqlite3_prepare_v3(s->db, pin_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &s->pins->st[i], NULL) != SQLITE_OK)
			return err_set(-EIO, "scheduler state %s: preparing statements: %s",
				       s->cfg->state_path, sqlite3_errmsg(s->db));
	if (m->n) {
		s->pins->cfg_keys = calloc(m->n, sizeof(*s->pins->cfg_keys));
		if (!s->pins->cfg_keys)
			return err_set(-ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < m->n; i++) {
		char id[BUS_KEY_ID_LEN + 1];

		r = parse_host_key(m->keys[i], m->vals[i], s->pins->cfg_keys[i]);
		if (r < 0)
			return r;
		bus_key_id(s->pins->cfg_keys[i], id);
		log_info("host key from config host=%s key=%s", m->keys[i], id);
	}
	return 0;
}

void sched_pins_close(struct sched *s)
{
	if (!s->pins)
		return;
	for (int i = 0; i < PST_LAST; i++)
		sqlite3_finalize(s->pins->st[i]);
	free(s->pins->cfg_keys);
	free(s->pins);
	s->pins = NULL;
}

static const unsigned char *config_key(const struct sched *s, const char *host)
{
	const struct cfg_map *m = &s->cfg->host_keys;

	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->keys[i], host) == 0)
			return s->pins->cfg_keys[i];
	return NULL;
}

/* HOST's TOFU pin: 0 found, -ENOENT none, <0 error. */
static int pin_get(struct sched *s, const char *host, unsigned char key[BUS_KEY_LEN])
{
	sqlite3_stmt *q = s->pins->st[PST_GET];
	int rc, r = -ENOENT;

	sqlite3_bind_text(q, 1, host, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		r = crypto_key_from_text((const char *)sqlite3_column_text(q, 0), key) == 0
			    ? 0
			    : err_set(-EIO, "host %s: the pinned key in the state is not base64",
				      host);
	else if (rc != SQLITE_DONE)
		r = err_set(-EIO, "reading host %s's key: %s", host, sqlite3_errmsg(s->db));
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return r;
}

static int pin_put(struct sched *s, const char *host, const char *key_text, int64_t now_ms)
{
	sqlite3_stmt *q = s->pins->st[PST_PUT];
	int rc;

	sqlite3_bind_text(q, 1, host, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, key_text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, now_ms);
	rc = sqlite3_step(q);
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	if (rc != SQLITE_DONE)
		return err_set(-EIO, "pinning host %s's key: %s", host, sqlite3_errmsg(s->db));
	return 0;
}

/* The host an envelope speaks for: body.host (reschedule: failed_host). */
static const char *speaker(const struct bus_envelope *e)
{
	const char *f = strcmp(e->type, "instance.reschedule") == 0 ? "failed_host" : "host";

	return json_string_value(json_object_get(e->body, f));
}

/* Whether E is signed by KEY: 0, or the refusal (>0) with err_msg(). */
static int signed_by(const struct bus_envelope *e, const char *host, const unsigned char *key)
{
	const char *kid = json_string_value(json_object_get(e->auth, "key"));
	unsigned char keys[1][BUS_KEY_LEN];
	char id[BUS_KEY_ID_LEN + 1];

	memcpy(keys[0], key, BUS_KEY_LEN);
	bus_key_id(key, id);
	if (!e->auth || !kid)
		return err_set(SCHED_REFUSED_UNSIGNED, "unsigned: host %s's messages must be "
			       "signed by its key %s", host, id);
	if (strcmp(kid, id) != 0)
		return err_set(SCHED_REFUSED_UNKNOWN_KEY, "signed by key %.32s, not by host %s's "
			       "pinned key %s", kid, host, id);
	if (bus_envelope_verify(e, (const unsigned char (*)[BUS_KEY_LEN])keys, 1) < 0)
		return err_set(SCHED_REFUSED_BAD_SIGNATURE, "bad signature by host %s's key %s: "
			       "changed after signing, or forged", host, id);
	return 0;
}

/* A report from a host with no pin: signed by the key it announces, pinned. */
static int first_use(struct sched *s, const struct bus_envelope *e, const char *host,
		     int64_t now_ms)
{
	const char *text = json_string_value(json_object_get(e->body, "sign_key"));
	unsigned char key[BUS_KEY_LEN];
	char id[BUS_KEY_ID_LEN + 1];
	int r;

	if (strcmp(e->type, "host.report") != 0)
		return err_set(SCHED_REFUSED_NOT_PINNED, "host %s has no pinned key yet: its "
			       "first signed host.report pins one", host);
	if (!text || crypto_key_from_text(text, key) < 0)
		return err_set(SCHED_REFUSED_UNSIGNED, "host %s's first report carries no "
			       "sign_key (a base64 Ed25519 public key) to pin", host);
	r = signed_by(e, host, key);
	if (r != 0)
		return r;
	r = pin_put(s, host, text, now_ms);
	if (r < 0)
		return r;
	bus_key_id(key, id);
	log_info("host key pinned on first use host=%s key=%s", host, id);
	return 0;
}

/* An event about an instance: from the host it is placed on. */
static int owner_check(struct sched *s, const struct bus_envelope *e, const char *host)
{
	const char *uuid = json_string_value(json_object_get(e->body, "uuid"));
	struct inst_row row = { 0 };
	int r;

	if (strcmp(e->type, "host.report") == 0 || !uuid)
		return 0;
	r = sched_inst_get(s, uuid, &row);
	if (r == -ENOENT)
		return 0; /* unknown: the handler ignores it */
	if (r < 0)
		return r;
	if (row.host && strcmp(row.host, host) != 0 && strcmp(e->type, "instance.migration") == 0) {
		/* a migration's destination speaks for the instance coming to it */
		struct sched_migration m = { 0 };

		if (sched_migration_get(s, uuid, &m) == 0 && strcmp(m.dest, host) == 0) {
			sched_migration_free(&m);
			inst_row_free(&row);
			return 0;
		}
		sched_migration_free(&m);
	}
	if (row.host && strcmp(row.host, host) != 0 && strcmp(e->type, "instance.state") == 0 &&
	    json_is_string(json_object_get(e->body, "state")) &&
	    strcmp(json_string_value(json_object_get(e->body, "state")), "deleted") == 0 &&
	    sched_evacuation_pending(s, uuid, host)) {
		/* an evacuated instance's old host: its stale copy is gone */
		inst_row_free(&row);
		return 0;
	}
	if (!row.host || strcmp(row.host, host) != 0)
		r = err_set(SCHED_REFUSED_WRONG_HOST, "instance %s is placed on %s, not on host %s",
			    uuid, row.host ? row.host : "no host", host);
	inst_row_free(&row);
	return r;
}

static int check(struct sched *s, const struct bus_envelope *e, const char *host, int64_t now_ms)
{
	const unsigned char *cfg = config_key(s, host);
	unsigned char pinned[BUS_KEY_LEN];
	const char *announced = json_string_value(json_object_get(e->body, "sign_key"));
	char text[48];
	int r;

	if (!cfg) {
		r = pin_get(s, host, pinned);
		if (r == -ENOENT) {
			r = first_use(s, e, host, now_ms);
			return r != 0 ? r : owner_check(s, e, host);
		}
		if (r < 0)
			return r;
	}
	r = signed_by(e, host, cfg ? cfg : pinned);
	if (r != 0)
		return r;
	crypto_key_to_text(cfg ? cfg : pinned, text);
	if (announced && strcmp(announced, text) != 0)
		return err_set(SCHED_REFUSED_UNKNOWN_KEY, "host %s announces sign_key %.44s, not "
			       "its pinned key", host, announced);
	return owner_check(s, e, host);
}

/* The scheduler's own instance.state (sign.c signs them): handled as before. */
static bool ours(const struct sched *s, const struct bus_envelope *e)
{
	const char *kid = json_string_value(json_object_get(e->auth, "key"));

	return kid && strcmp(kid, s->keys.key_id) == 0 &&
	       bus_envelope_verify(e, (const unsigned char (*)[BUS_KEY_LEN])&s->keys.sign_pub,
				   1) == 0;
}

int sched_pins_check(struct sched *s, const struct bus_envelope *e, int64_t now_ms)
{
	const char *host = speaker(e);
	const char *src = e->source;
	int r;

	if (ours(s, e))
		return 0;
	if (!host)
		r = err_set(SCHED_REFUSED_WRONG_HOST, "%s names no host", e->type);
	else if (src && strncmp(src, "agent/", 6) == 0 && strcmp(src + 6, host) != 0)
		r = err_set(SCHED_REFUSED_WRONG_HOST, "source %.64s speaks for host %s", src,
			    host);
	else
		r = check(s, e, host, now_ms);
	if (r <= 0)
		return r;
	log_warn("%s refused host=%s reason=%s error=\"%s\"", e->type, host ? host : "-",
		 sched_refusal_names[r], err_msg());
	sched_metrics_refused((enum sched_refusal)r);
	return 1;
}

int sched_on_host_forget(struct sched *s, struct sched_call *c)
{
	const char *host = sched_jstr(c->body, "host");
	unsigned char key[BUS_KEY_LEN];
	struct sched_host *h;
	int r;

	if (!host)
		return sched_reject(s, c, "host.forget: body.host: required");
	if (config_key(s, host))
		return sched_reject(s, c, "host %s: its key is set in scheduler.host_keys: change "
				    "the config to replace it", host);
	r = pin_get(s, host, key);
	if (r == -ENOENT)
		return sched_reject(s, c, "host %s: no pinned key to forget", host);
	if (r < 0)
		return r;
	sqlite3_bind_text(s->pins->st[PST_DEL], 1, host, -1, SQLITE_STATIC);
	r = sqlite3_step(s->pins->st[PST_DEL]) == SQLITE_DONE
		    ? 0
		    : err_set(-EIO, "forgetting host %s's key: %s", host, sqlite3_errmsg(s->db));
	sqlite3_reset(s->pins->st[PST_DEL]);
	sqlite3_clear_bindings(s->pins->st[PST_DEL]);
	if (r < 0)
		return r;
	/* nothing is sealed to the old host's box key until the new one reports */
	h = sched_host_find(s, host);
	if (h)
		h->has_box_key = false;
	log_warn("host key forgotten host=%s credential=%s: its next report pins a new key", host,
		 c->credential ? c->credential : "-");
	return sched_accept(s, c, NULL, json_pack("{s:s}", "host", host));
}
