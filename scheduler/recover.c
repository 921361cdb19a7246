/*
 * Recovery: what the scheduler does after it restarts and after the broker
 * moved (docs/scheduler.md "Recovery").
 *
 * - Warm-up. For one heartbeat window (heartbeat_interval x
 *   missed_heartbeats) after a start or a broker move, hosts that have not
 *   reported since are `stale`, not judged down: a boot that arrives then
 *   waits, durable in the `deferred` table, and is run once every known
 *   host has reported or the window is over.
 * - Re-announce. An agent that followed the broker sends a host.report with
 *   `reannounce: {instances: [{uuid, state}]}`: the host's instances as its
 *   store holds them. The scheduler compares them with its instances on
 *   that host and answers what was in flight from its durable record.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

static const char deferred_sql[] =
	"CREATE TABLE IF NOT EXISTS deferred ("
	" id INTEGER PRIMARY KEY, type TEXT NOT NULL, request_id TEXT, body TEXT NOT NULL,"
	" received_ms INTEGER NOT NULL, credential TEXT)";

static int64_t window_ms(const struct sched *s)
{
	return s->cfg->heartbeat_interval_ms * s->cfg->missed_heartbeats;
}

bool sched_host_stale(const struct sched *s, const struct sched_host *h)
{
	return s->epoch_ms && h->last_report_ms < s->epoch_ms;
}

static size_t stale_hosts(const struct sched *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n_hosts; i++)
		n += sched_host_stale(s, s->hosts[i]);
	return n;
}

static void warmup_start(struct sched *s, int64_t now_ms)
{
	s->epoch_ms = now_ms;
	s->warm_until_ms = now_ms + window_ms(s);
}

int sched_warmup_begin(struct sched *s, int64_t now_ms)
{
	sqlite3_stmt *q = NULL;
	char *emsg = NULL;

	if (sqlite3_exec(s->db, deferred_sql, NULL, NULL, &emsg) != SQLITE_OK) {
		int r = err_set(-EIO, "scheduler state %s: creating the deferred table: %s",
				s->cfg->state_path, emsg ? emsg : "?");

		sqlite3_free(emsg);
		return r;
	}
	/* a state file of the version before credentials */
	if (sched_db_add_column(s, "deferred", "credential", "TEXT") < 0)
		return -EIO;
	/* requests a previous process deferred run after this warm-up */
	if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM deferred", -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state %s: counting deferred requests: %s",
			       s->cfg->state_path, sqlite3_errmsg(s->db));
	if (sqlite3_step(q) == SQLITE_ROW)
		s->deferred = (long)sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	warmup_start(s, now_ms);
	if (s->n_hosts)
		log_info("waiting for hosts to report before judging them down hosts=%zu "
			 "window_ms=%lld deferred=%ld", s->n_hosts, (long long)window_ms(s),
			 s->deferred);
	return 0;
}

void sched_broker_moved(struct sched *s, int64_t now_ms)
{
	warmup_start(s, now_ms);
	s->broker_moves++;
	log_warn("broker moved: hosts are stale until they report again hosts=%zu window_ms=%lld",
		 s->n_hosts, (long long)window_ms(s));
}

/* Waiting for reports: a known host has not reported since the start, or
 * no host is known yet (a first start beside its agents). */
bool sched_warming(const struct sched *s, int64_t now_ms)
{
	return s->warm_until_ms && now_ms < s->warm_until_ms &&
	       (s->n_hosts == 0 || stale_hosts(s) > 0);
}

bool sched_warmup_over(const struct sched *s, int64_t now_ms)
{
	return s->warm_until_ms && !sched_warming(s, now_ms);
}

/* A boot that arrived during the warm-up: kept until it ends, once (a
 * client's resend of the same request id waits as the first one). */
int sched_defer(struct sched *s, struct sched_call *c)
{
	_cleanup_free_ char *text = json_dumps(c->body, JSON_COMPACT);
	sqlite3_stmt *q = NULL;
	int r;

	if (!text)
		return err_set(-ENOMEM, "out of memory");
	if (sqlite3_prepare_v2(s->db, "INSERT INTO deferred(type, request_id, body, received_ms, "
			       "credential) SELECT ?1, ?2, ?3, ?4, ?5 WHERE ?2 IS NULL OR NOT EXISTS "
			       "(SELECT 1 FROM deferred WHERE request_id = ?2)",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "deferring a request: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, c->type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, c->rid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 4, c->now_ms);
	sqlite3_bind_text(q, 5, c->credential, -1, SQLITE_STATIC); /* who asked: run as them */
	r = sqlite3_step(q) == SQLITE_DONE ? 0
					   : err_set(-EIO, "deferring a request: %s",
						     sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	if (r == 0 && sqlite3_changes(s->db) == 0) {
		log_info("request already waits for hosts to report type=%s request=%s", c->type,
			 c->rid);
	} else if (r == 0) {
		s->deferred++;
		log_info("request waits for hosts to report type=%s request=%s stale_hosts=%zu "
			 "wait_ms=%lld", c->type, c->rid ? c->rid : "-", stale_hosts(s),
			 (long long)(s->warm_until_ms - c->now_ms));
	}
	return r;
}

/* Run the deferred requests (inside the caller's batch), oldest first. */
int sched_warmup_end(struct sched *s, int64_t now_ms, struct sched_out *out)
{
	sqlite3_stmt *q = NULL;
	int r = 0, n = 0;

	if (!sched_warmup_over(s, now_ms))
		return 0;
	s->warm_until_ms = 0;
	log_info("hosts judged again stale_hosts=%zu deferred=%ld", stale_hosts(s), s->deferred);
	if (!s->deferred)
		return 0;
	if (sqlite3_prepare_v2(s->db, "SELECT id, type, request_id, body, credential FROM deferred "
			       "ORDER BY id",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "reading deferred requests: %s", sqlite3_errmsg(s->db));
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW) {
		const char *type = (const char *)sqlite3_column_text(q, 1);
		const char *rid = (const char *)sqlite3_column_text(q, 2);
		json_t *body = json_loads((const char *)sqlite3_column_text(q, 3), 0, NULL);
		const char *cred = (const char *)sqlite3_column_text(q, 4);

		log_info("deferred request runs type=%s request=%s credential=%s", type,
			 rid ? rid : "-", cred ? cred : "-");
		/* as whoever asked, never with more rights than they have now */
		r = cred ? sched_handle_deferred(s, type, rid, body, cred, now_ms, out)
			 : sched_handle(s, type, rid, body, now_ms, out);
		json_decref(body);
		n++;
	}
	sqlite3_finalize(q);
	if (r == 0 && sqlite3_exec(s->db, "DELETE FROM deferred", NULL, NULL, NULL) != SQLITE_OK)
		r = err_set(-EIO, "clearing deferred requests: %s", sqlite3_errmsg(s->db));
	if (r == 0)
		s->deferred = 0;
	return r < 0 ? r : n;
}

/* ---- re-announce ------------------------------------------------------- */

/* A sub-call of the report's: a handler run on the scheduler's own body. */
static int run_handler(struct sched *s, struct sched_call *c, const char *type, json_t *body,
		       int (*fn)(struct sched *, struct sched_call *))
{
	struct sched_call sub = { .type = type, .body = body, .now_ms = c->now_ms, .out = c->out };
	int r;

	if (!body)
		return err_set(-ENOMEM, "out of memory");
	r = fn(s, &sub);
	json_decref(body);
	return r;
}

/* The host has no trace of an instance that was running there: it is
 * lost (error, no host, its claim and quota given back, like a build that
 * failed everywhere); a delete of it then finishes at once. */
static int lose_instance(struct sched *s, struct sched_call *c, struct inst_row *row,
			 const char *host)
{
	struct sched_alloc a = { 0 };
	_cleanup_free_ char *reason = NULL;
	char *old_state = row->state, *old_host = row->host, *old_reason = row->reason;
	bool have_alloc;
	int r;

	if (asprintf(&reason, "host %s no longer has it (re-announced after a broker change, "
		     "was %s)", host, old_state) < 0) {
		reason = NULL;
		return err_set(-ENOMEM, "out of memory");
	}
	r = sched_tx_begin(s);
	if (r < 0)
		return r;
	r = sched_alloc_get(s, row->uuid, &a);
	have_alloc = r == 0;
	if (r == -ENOENT)
		r = 0;
	if (have_alloc) {
		sqlite3_bind_text(s->st[SST_ALLOC_DEL], 1, row->uuid, -1, SQLITE_STATIC);
		r = sched_db_step_done(s, SST_ALLOC_DEL, "deleting an allocation");
		if (r == 0)
			r = quota_release(s->quotas, row->project, &a.amt);
	}
	row->state = (char *)"error";
	row->host = NULL;
	row->reason = reason;
	if (r == 0)
		r = sched_inst_update(s, row);
	row->state = old_state;
	row->host = old_host;
	row->reason = old_reason;
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0) {
		if (have_alloc)
			sched_alloc_release(s, &a);
		log_warn("instance lost instance=%s host=%s was=%s", row->uuid, host, old_state);
		r = sched_emit_state(c->out, row->request_id, row->uuid, row->project, NULL, "error",
				     reason);
	}
	free(a.host);
	return r;
}

/* One of our instances on HOST that the host's re-announce lacks. */
static int missing_on_host(struct sched *s, struct sched_call *c, struct inst_row *row,
			   const char *host)
{
	if (strcmp(row->state, "scheduling") == 0) {
		/* the build went down with the broker: send it again */
		struct sched_strvec one = { .v = (char *[]){ row->uuid }, .n = 1 };

		log_info("re-announce: build not on the host, sent again instance=%s host=%s",
			 row->uuid, host);
		return sched_resend_builds(s, &one, c->out);
	}
	if (strcmp(row->state, "building") == 0) {
		/* the host gave the build up (its reschedule went down with
		 * the broker): what that reschedule would have done */
		log_warn("re-announce: build gone from the host, rescheduling instance=%s host=%s",
			 row->uuid, host);
		return run_handler(s, c, "instance.reschedule",
				   json_pack("{s:s, s:s, s:s}", "uuid", row->uuid, "failed_host",
					     host, "reason", "build gone from the host after a "
					     "broker change"),
				   sched_on_reschedule);
	}
	if (strcmp(row->state, "deleting") == 0) {
		/* the delete finished; its event went down with the broker */
		log_info("re-announce: delete finished on the host instance=%s host=%s", row->uuid,
			 host);
		return run_handler(s, c, "instance.state",
				   json_pack("{s:s, s:s, s:s, s:s}", "uuid", row->uuid, "project",
					     row->project, "host", host, "state", "deleted"),
				   sched_on_state);
	}
	return lose_instance(s, c, row, host);
}

/* One of the host's instances: does the scheduler agree it is there? */
static int present_on_host(struct sched *s, struct sched_call *c, const char *uuid,
			   const char *state, const char *host)
{
	struct inst_row row = { 0 };
	int r = sched_inst_get(s, uuid, &row);

	if (r == -ENOENT) {
		log_warn("re-announce: instance unknown to the scheduler instance=%s host=%s "
			 "state=%s: left alone (not counted in the host's claims)", uuid, host, state);
		return 0;
	}
	if (r < 0)
		return r;
	if (!row.host || strcmp(row.host, host) != 0 || strcmp(row.state, "deleted") == 0) {
		log_warn("re-announce: instance the scheduler has %s instance=%s host=%s state=%s: "
			 "left alone", strcmp(row.state, "deleted") == 0 ? "deleted" : "elsewhere",
			 uuid, host, state);
	} else if (strcmp(row.state, "deleting") == 0 && strcmp(state, "deleting") != 0 &&
		   strcmp(state, "deleted") != 0) {
		/* the delete went down with the broker: send it again */
		char rid[UUID_STRLEN];

		uuid_generate_str(rid);
		log_info("re-announce: delete not on the host, sent again instance=%s host=%s",
			 uuid, host);
		r = sched_emit_host_cmd(c->out, host, "instance.delete", rid, uuid,
					json_pack("{s:s}", "uuid", uuid));
	}
	inst_row_free(&row);
	return r;
}

/* Our instances on HOST that are not deleted or failed. */
static int instances_on(struct sched *s, const char *host, struct sched_strvec *out)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT uuid FROM instances WHERE host = ?1 AND "
			       "state NOT IN ('deleted', 'error')", -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "reading a host's instances: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, host, -1, SQLITE_STATIC);
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
		r = sched_strvec_add(out, (const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	return r < 0 ? err_set(-ENOMEM, "out of memory") : 0;
}

int sched_reconcile_host(struct sched *s, struct sched_call *c, struct sched_host *h,
			 const json_t *reannounce)
{
	const json_t *list = json_object_get(reannounce, "instances");
	struct sched_strvec ours = { 0 };
	json_t *seen = json_object(), *it;
	size_t i, missing = 0;
	int r;

	if (!seen)
		return err_set(-ENOMEM, "out of memory");
	json_array_foreach(list, i, it) {
		const char *u = json_string_value(json_object_get(it, "uuid"));
		const char *st = json_string_value(json_object_get(it, "state"));

		if (u && uuid_valid(u))
			json_object_set_new(seen, u, json_string(st ? st : "unknown"));
	}
	h->reannounced_ms = c->now_ms;
	log_info("host re-announced after a broker change host=%s instances=%zu", h->name,
		 json_object_size(seen));
	r = instances_on(s, h->name, &ours);
	for (size_t k = 0; r == 0 && k < ours.n; k++) {
		struct inst_row row = { 0 };

		if (json_object_get(seen, ours.v[k]))
			continue;
		r = sched_inst_get(s, ours.v[k], &row);
		if (r == 0) {
			missing++;
			r = missing_on_host(s, c, &row, h->name);
		} else if (r == -ENOENT) {
			r = 0;
		}
		inst_row_free(&row);
	}
	for (void *iter = json_object_iter(seen); r == 0 && iter;
	     iter = json_object_iter_next(seen, iter))
		r = present_on_host(s, c, json_object_iter_key(iter),
				    json_string_value(json_object_iter_value(iter)), h->name);
	if (r == 0 && missing)
		log_warn("re-announce: instances the host lacks host=%s missing=%zu", h->name,
			 missing);
	sched_strvec_free(&ours);
	json_decref(seen);
	return r;
}
