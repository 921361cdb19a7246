/*
 * Host maintenance (issue 15): host.disable / host.enable (no new
 * instances: the `enabled` filter keeps a disabled host out of boots and
 * migrations) and host.drain (disable, then live-migrate every active
 * instance off, scheduler.migration.drain_concurrency at once, the next one
 * started as each ends; each reported with the scheduler's
 * instance.migration started / done / aborted). All admin.
 *
 * State: host_maint(name, disabled, reason, updated_ms, draining) and
 * drain_skip(host, uuid) (an instance the drain could not move: not tried
 * again by this drain); durable, so a restarted scheduler keeps the host
 * out of placement and a drain goes on with the next migration's end.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

static int exec_bind(struct sched *s, const char *sql, const char *a, const char *b, long n)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "host maintenance: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, a, -1, SQLITE_STATIC);
	if (b)
		sqlite3_bind_text(q, 2, b, -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(q) >= 3)
		sqlite3_bind_int64(q, 3, n);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "host maintenance: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

static int maint_put(struct sched *s, const struct sched_host *h, const char *reason,
		     int64_t now_ms)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db,
			       "INSERT OR REPLACE INTO host_maint(name, disabled, reason, updated_ms, "
			       "draining) VALUES (?1, ?2, ?3, ?4, ?5)",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "host maintenance: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, h->name, -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 2, h->disabled);
	sqlite3_bind_text(q, 3, reason, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 4, now_ms);
	sqlite3_bind_int(q, 5, h->draining);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "host maintenance: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

int sched_maint_load(struct sched *s)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT name, disabled, draining FROM host_maint", -1, &q,
			       NULL) != SQLITE_OK)
		return err_set(-EIO, "loading host maintenance: %s", sqlite3_errmsg(s->db));
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW) {
		struct sched_host *h = sched_host_get(s, (const char *)sqlite3_column_text(q, 0));

		if (!h) {
			r = err_set(-ENOMEM, "out of memory");
			break;
		}
		h->disabled = sqlite3_column_int(q, 1) != 0;
		h->draining = sqlite3_column_int(q, 2) != 0;
	}
	sqlite3_finalize(q);
	return r;
}

static struct sched_host *known_host(struct sched *s, struct sched_call *c, int *r)
{
	const char *name = sched_jstr(c->body, "host");
	struct sched_host *h = name ? sched_host_find(s, name) : NULL;

	*r = 0;
	if (!h)
		*r = sched_reject(s, c, "%s: host %s is not known", c->type, name ? name : "(none)");
	return h;
}

int sched_on_host_disable(struct sched *s, struct sched_call *c)
{
	bool disable = strcmp(c->type, "host.disable") == 0;
	const char *reason = sched_jstr(c->body, "reason");
	struct sched_host *h;
	bool was, was_draining;
	int r;

	h = known_host(s, c, &r);
	if (!h)
		return r;
	was = h->disabled;
	was_draining = h->draining;
	h->disabled = disable;
	h->draining = disable && h->draining; /* enable ends a drain */
	r = sched_tx_begin(s);
	if (r == 0)
		r = maint_put(s, h, reason, c->now_ms);
	if (r == 0)
		r = sched_accept(s, c, h->name,
				 json_pack("{s:s, s:s}", "host", h->name, "maintenance",
					   disable ? "disabled" : "-"));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r < 0) {
		h->disabled = was;
		h->draining = was_draining;
		return r;
	}
	log_info("host %s host=%s reason=\"%s\"", disable ? "disabled" : "enabled", h->name,
		 reason ? reason : "");
	return 0;
}

/* Migrations in flight out of HOST. */
static long in_flight(struct sched *s, const char *host)
{
	sqlite3_stmt *q = NULL;
	long n = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM migrations WHERE source = ?1", -1, &q,
			       NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(q, 1, host, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW)
		n = (long)sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	return n;
}

/* The next active instance on HOST the drain has not tried: 0 (*uuid
 * set), -ENOENT none left. */
static int next_instance(struct sched *s, const char *host, char uuid[UUID_STRLEN])
{
	sqlite3_stmt *q = NULL;
	int r = -ENOENT;

	if (sqlite3_prepare_v2(s->db,
			       "SELECT uuid FROM instances WHERE host = ?1 AND state = 'active' AND "
			       "uuid NOT IN (SELECT uuid FROM drain_skip WHERE host = ?1) "
			       "ORDER BY name, created LIMIT 1",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "drain: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, host, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW) {
		snprintf(uuid, UUID_STRLEN, "%s", (const char *)sqlite3_column_text(q, 0));
		r = 0;
	}
	sqlite3_finalize(q);
	return r;
}

int sched_drain_next(struct sched *s, struct sched_call *c, const char *host, const char *failed)
{
	struct sched_host *h = sched_host_find(s, host);
	long running = h ? in_flight(s, host) : 0;
	int r = 0;

	if (!h || !h->draining)
		return 0;
	if (failed)
		r = exec_bind(s, "INSERT OR IGNORE INTO drain_skip(host, uuid, ts_ms) "
			      "VALUES (?1, ?2, ?3)", host, failed, c->now_ms);
	while (r == 0 && running < s->cfg->migration.drain_concurrency) {
		char uuid[UUID_STRLEN], mid[UUID_STRLEN];
		struct inst_row row = { 0 };

		r = next_instance(s, host, uuid);
		if (r == -ENOENT) {
			r = 0;
			if (running == 0) {
				/* nothing left to move: the host stays disabled */
				h->draining = false;
				r = maint_put(s, h, "drained", c->now_ms);
				log_info("host drained host=%s", host);
			}
			break;
		}
		if (r == 0)
			r = sched_inst_get(s, uuid, &row);
		if (r == 0)
			r = sched_migration_start(s, c, &row, NULL, false);
		if (r == 1) {
			/* cannot move: said so, not tried again by this drain */
			_cleanup_free_ char *why = strdup(err_msg());

			log_warn("drain: instance not migrated host=%s instance=%s error=\"%s\"", host,
				 uuid, why ? why : "");
			uuid_generate_str(mid);
			r = exec_bind(s, "INSERT OR IGNORE INTO drain_skip(host, uuid, ts_ms) "
				      "VALUES (?1, ?2, ?3)", host, uuid, c->now_ms);
			if (r == 0)
				r = sched_out_add(c->out, BUS_TOPIC_EVENTS, uuid, "instance.migration",
						  mid,
						  json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "uuid", uuid,
							    "migration", mid, "phase", "aborted",
							    "source", host, "step", "schedule",
							    "error", why ? why : "not migrated"));
		} else if (r == 0) {
			running++;
		}
		inst_row_free(&row);
	}
	return r;
}

int sched_on_host_drain(struct sched *s, struct sched_call *c)
{
	struct sched_host *h;
	sqlite3_stmt *q = NULL;
	json_t *list;
	int r;

	h = known_host(s, c, &r);
	if (!h)
		return r;
	list = json_array();
	if (!list || sqlite3_prepare_v2(s->db,
					"SELECT uuid, name, project FROM instances WHERE host = ?1 "
					"AND state = 'active' ORDER BY name, created",
					-1, &q, NULL) != SQLITE_OK) {
		json_decref(list);
		return err_set(-EIO, "drain: %s", sqlite3_errmsg(s->db));
	}
	sqlite3_bind_text(q, 1, h->name, -1, SQLITE_STATIC);
	while (sqlite3_step(q) == SQLITE_ROW)
		json_array_append_new(list, json_pack("{s:s, s:s, s:s}", "uuid",
						      (const char *)sqlite3_column_text(q, 0), "name",
						      (const char *)sqlite3_column_text(q, 1), "project",
						      (const char *)sqlite3_column_text(q, 2)));
	sqlite3_finalize(q);
	h->disabled = true;
	h->draining = true;
	r = sched_tx_begin(s);
	if (r == 0)
		r = exec_bind(s, "DELETE FROM drain_skip WHERE host = ?1", h->name, NULL, 0);
	if (r == 0)
		r = maint_put(s, h, "draining", c->now_ms);
	if (r == 0)
		r = sched_accept(s, c, h->name,
				 json_pack("{s:s, s:O, s:I}", "host", h->name, "instances", list,
					   "concurrency",
					   (json_int_t)s->cfg->migration.drain_concurrency));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	json_decref(list);
	if (r < 0)
		return r;
	log_info("host draining host=%s", h->name);
	return sched_drain_next(s, c, h->name, NULL);
}
