/*
 * host.evacuate (admin, issue 15): a host that is DOWN (no report within
 * heartbeat_interval x missed_heartbeats) has its instances rebuilt
 * elsewhere from their images, as Nova's evacuate without shared storage:
 * each keeps its uuid, name, metadata, security groups and user data (the
 * stored spec, its secrets sealed to the new host like a build's) and asks
 * for its address (the new host takes it when it lies in its own range and
 * is free, else gives a new one: the instance's reason says which). It is
 * placed by the boot's filters and weighers (the dead host left out), its
 * claim moves, and it goes through `scheduling -> building -> active` on the
 * new host. Local disk contents are lost: the answer and the instance's
 * reason say so.
 *
 * The dead host's stale copies: an `instance.delete` to its topic at once
 * (the broker keeps it until the agent comes back) and again when the host
 * reports after being down, until its `deleted` event for the instance
 * arrives (the instance lives elsewhere, so the event changes nothing else).
 * The agent never starts a guest by itself at start (reconcile only marks a
 * vanished or stopped guest), so the stale copy is destroyed, not resumed.
 *
 * State: evacuations(uuid, source, dest, old_address, ts_ms, cleaned): the
 * note for the instance's reason and the copies still to destroy.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

static const char evac_schema[] =
	"CREATE TABLE IF NOT EXISTS evacuations ("
	" uuid TEXT PRIMARY KEY, source TEXT NOT NULL, dest TEXT NOT NULL, old_address TEXT,"
	" ts_ms INTEGER NOT NULL, cleaned INTEGER NOT NULL DEFAULT 0,"
	" stop_after INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;";

static int evac_open(struct sched *s)
{
	char *msg = NULL;
	int r = 0;

	if (s->evac_ready)
		return 0;
	if (sqlite3_exec(s->db, evac_schema, NULL, NULL, &msg) != SQLITE_OK) {
		r = err_set(-EIO, "scheduler state: evacuations: %s", msg ? msg : "?");
		sqlite3_free(msg);
	}
	if (r == 0) /* the table of a version before stop_after */
		r = sched_db_add_column(s, "evacuations", "stop_after", "INTEGER NOT NULL DEFAULT 0");
	s->evac_ready = r == 0;
	return r;
}

/* ---- one instance -------------------------------------------------------- */

struct evac_one {
	struct inst_row row;
	struct sched_flavor fl;
	struct sched_image img;
	struct sched_req req;
	struct sched_alloc alloc;
	struct sched_strvec tried, ghosts;
	struct sched_host *to;
	struct sched_fit fit;
	char rid[UUID_STRLEN];
	char *spec_text, *alts_text, *faults_text, *reason, *old_address;
};

static void evac_one_free(struct evac_one *e)
{
	inst_row_free(&e->row);
	sched_flavor_free(&e->fl);
	sched_image_free(&e->img);
	free(e->alloc.host);
	sched_strvec_free(&e->tried);
	sched_strvec_free(&e->ghosts);
	free(e->spec_text);
	free(e->alts_text);
	free(e->faults_text);
	free(e->reason);
	free(e->old_address);
}

/* A volume attached to UUID (its storage is local to the dead host):
 * its name (malloc'd) or NULL. */
static char *attached_volume(struct sched *s, const char *uuid)
{
	sqlite3_stmt *q = NULL;
	char *name = NULL;

	if (sqlite3_prepare_v2(s->db, "SELECT name FROM volumes WHERE instance = ?1 AND "
			       "state NOT IN ('deleted', 'error', 'available') LIMIT 1",
			       -1, &q, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_text(q, 0))
		name = strdup((const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	return name;
}

/* The address the dead host gave it: {mac, address} (new reference) or NULL. */
static json_t *old_port(struct sched *s, const char *uuid)
{
	sqlite3_stmt *q = NULL;
	json_t *o = NULL;

	if (sqlite3_prepare_v2(s->db, "SELECT mac, address FROM instance_ports WHERE uuid = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_text(q, 0) && sqlite3_column_text(q, 1))
		o = json_pack("{s:s, s:s}", "mac", (const char *)sqlite3_column_text(q, 0),
			      "address", (const char *)sqlite3_column_text(q, 1));
	sqlite3_finalize(q);
	return o;
}

/*
 * What E's instance asks of a host and where it goes: 0 placed (e->to,
 * e->fit, the texts), 1 not evacuated (*why says so), <0 failed.
 */
static int evac_plan(struct sched *s, struct sched_call *c, const char *dead, struct evac_one *e,
		     char *why, size_t whylen)
{
	struct sched_ctx ctx = { .cfg = s->cfg, .now_ms = c->now_ms };
	size_t pick[8], n, scanned = 0, max_alt = (size_t)s->cfg->max_attempts;
	_cleanup_free_ char *vol = attached_volume(s, e->row.uuid);
	json_t *spec = NULL, *port, *alts, *faults;
	int r;

	if (vol) {
		snprintf(why, whylen, "its volume %s is local storage of host %s: detach it or wait "
			 "for the host", vol, dead);
		return 1;
	}
	spec = json_loads(e->row.spec, 0, NULL);
	if (!spec || sched_flavor_from_json(json_object_get(spec, "flavor"), &e->fl) < 0 ||
	    sched_image_from_json(json_object_get(spec, "image"), &e->img) < 0) {
		snprintf(why, whylen, "its stored spec does not parse");
		json_decref(spec);
		return 1;
	}
	r = sched_alloc_get(s, e->row.uuid, &e->alloc);
	if (r < 0) {
		snprintf(why, whylen, "it has no claim on host %s", dead);
		json_decref(spec);
		return r == -ENOENT ? 1 : r;
	}
	if (sched_strvec_add(&e->tried, dead) < 0) {
		json_decref(spec);
		return err_set(-ENOMEM, "out of memory");
	}
	e->req.flavor = &e->fl;
	e->req.image = &e->img;
	e->req.az = e->row.az;
	e->req.disk_gb = e->alloc.disk_gb;
	e->req.tried_hosts = (const char *const *)e->tried.v;
	e->req.n_tried_hosts = e->tried.n;
	if (e->row.server_group) {
		enum sched_group_policy pol;

		if (sched_group_policy(s, e->row.project, e->row.server_group, NULL, &pol) == 0 &&
		    sched_group_hosts(s, e->row.project, e->row.server_group, &e->ghosts) == 0) {
			e->req.group_policy = pol;
			e->req.group_hosts = (const char *const *)e->ghosts.v;
			e->req.n_group_hosts = e->ghosts.n;
		}
	}
	if (max_alt > ARRAY_SIZE(pick))
		max_alt = ARRAY_SIZE(pick);
	n = sched_select(&ctx, s->hosts, s->n_hosts, &e->req, &s->cursor, pick, max_alt, &scanned);
	e->fit = (struct sched_fit){ .node = -1 };
	if (n == 0 || !sched_numa_fit(s->hosts[pick[0]], &e->req, &e->fit)) {
		_cleanup_free_ char *reason =
			sched_no_host_reason(&ctx, s->hosts, s->n_hosts, &e->req, e->row.name);

		snprintf(why, whylen, "%s", reason ? reason : "no valid host");
		json_decref(spec);
		return 1;
	}
	e->to = s->hosts[pick[0]];
	if (!e->to->has_box_key) {
		snprintf(why, whylen, "host %s published no box key: its user data cannot be "
			 "sealed to it", e->to->name);
		json_decref(spec);
		return 1;
	}
	/* the same address, asked for (the new host decides: agent/build.c) */
	port = old_port(s, e->row.uuid);
	if (port) {
		e->old_address = strdup(json_string_value(json_object_get(port, "address")));
		json_object_set_new(spec, "network", port);
	}
	alts = json_array();
	for (size_t k = 1; alts && k < n; k++)
		json_array_append_new(alts, json_string(s->hosts[pick[k]]->name));
	faults = json_pack("{s:s}", dead, "host down: evacuated");
	e->spec_text = json_dumps(spec, JSON_COMPACT);
	e->alts_text = alts ? json_dumps(alts, JSON_COMPACT) : NULL;
	e->faults_text = faults ? json_dumps(faults, JSON_COMPACT) : NULL;
	json_decref(alts);
	json_decref(faults);
	json_decref(spec);
	uuid_generate_str(e->rid); /* a build of its own: the new host never saw this id */
	if (asprintf(&e->reason, "evacuated from host %s (down) to %s: rebuilt from image %s, "
		     "local disk contents lost", dead, e->to->name, e->img.name) < 0)
		e->reason = NULL;
	if (!e->spec_text || !e->alts_text || !e->faults_text || !e->reason ||
	    (port && !e->old_address))
		return err_set(-ENOMEM, "out of memory");
	return 0;
}

/* E's rows in the caller's transaction: instance rescheduled to e->to,
 * allocation moved, evacuation recorded. */
static int evac_store(struct sched *s, struct sched_call *c, const char *dead,
		      const struct evac_one *e)
{
	sqlite3_stmt *q = s->st[SST_ALLOC_MOVE], *u = NULL;
	char ts[RFC3339_STRLEN];
	int r;

	sqlite3_bind_text(q, 1, e->row.uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, e->to->name, -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 3, e->fit.node);
	sqlite3_bind_int64(q, 4, e->fit.page_kb);
	sqlite3_bind_int64(q, 5, e->fit.pages);
	r = sched_db_step_done(s, SST_ALLOC_MOVE, "moving an allocation");
	if (r == 0)
		r = sched_pci_rows_put(s, e->row.uuid, e->to->name, &e->fit);
	if (r < 0)
		return r;
	time_rfc3339_now(ts);
	if (sqlite3_prepare_v2(s->db,
			       "UPDATE instances SET state = 'scheduling', host = ?2, spec = ?3, "
			       "request_id = ?4, alternates = ?5, faults = ?6, attempts = 1, "
			       "reason = ?7, updated = ?8 WHERE uuid = ?1",
			       -1, &u, NULL) != SQLITE_OK)
		return err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(u, 1, e->row.uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 2, e->to->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 3, e->spec_text, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 4, e->rid, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 5, e->alts_text, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 6, e->faults_text, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 7, e->reason, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 8, ts, -1, SQLITE_STATIC);
	if (sqlite3_step(u) != SQLITE_DONE)
		r = err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(u);
	if (r < 0)
		return r;
	if (sqlite3_prepare_v2(s->db,
			       "INSERT OR REPLACE INTO evacuations(uuid, source, dest, old_address, "
			       "ts_ms, cleaned, stop_after) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
			       -1, &u, NULL) != SQLITE_OK)
		return err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(u, 1, e->row.uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 2, dead, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 3, e->to->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 4, e->old_address, -1, SQLITE_STATIC);
	sqlite3_bind_int64(u, 5, c->now_ms);
	/* a stopped instance is rebuilt, then powered off again (Nova's way) */
	sqlite3_bind_int(u, 6, strcmp(e->row.state, "stopped") == 0);
	if (sqlite3_step(u) != SQLITE_DONE)
		r = err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(u);
	return r;
}

/* The stale copy of UUID on DEAD: destroyed when its agent reads this. */
static int send_destroy(struct sched_out *out, const char *dead, const char *uuid)
{
	char rid[UUID_STRLEN];

	uuid_generate_str(rid);
	return sched_emit_host_cmd(out, dead, "instance.delete", rid, uuid,
				   json_pack("{s:s}", "uuid", uuid));
}

/* Evacuate instance UUID off DEAD: added to LIST (moved) or SKIPPED. */
static int evac_instance(struct sched *s, struct sched_call *c, const char *dead,
			 const char *uuid, json_t *list, json_t *skipped)
{
	struct evac_one e = { 0 };
	char why[1024];
	int r = sched_inst_get(s, uuid, &e.row);

	if (r < 0)
		return r == -ENOENT ? 0 : r;
	r = evac_plan(s, c, dead, &e, why, sizeof(why));
	if (r == 1) {
		log_warn("evacuate: instance not moved host=%s instance=%s error=\"%s\"", dead, uuid,
			 why);
		json_array_append_new(skipped, json_pack("{s:s, s:s, s:s, s:s}", "uuid", uuid,
							 "name", e.row.name, "project",
							 e.row.project, "reason", why));
		r = 0;
		goto out;
	}
	if (r < 0)
		goto out;
	r = sched_tx_begin(s);
	if (r == 0)
		r = evac_store(s, c, dead, &e);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r < 0)
		goto out;
	sched_alloc_release(s, &e.alloc); /* the dead host's room */
	sched_host_claim(e.to, &e.req, &e.fit);
	log_warn("instance evacuated instance=%s name=%s from=%s to=%s image=%s", uuid, e.row.name,
		 dead, e.to->name, e.img.name);
	json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?}", "uuid", uuid,
					      "name", e.row.name, "project", e.row.project, "dest",
					      e.to->name, "image", e.img.name, "address",
					      e.old_address));
	r = sched_emit_state(c->out, e.rid, uuid, e.row.project, e.to->name, "scheduling",
			     e.reason);
	if (r == 0)
		r = sched_sg_send_build(s, c->out, e.to, e.spec_text, e.row.project, e.rid, 1,
					&e.fit);
	if (r == 0)
		r = send_destroy(c->out, dead, uuid);
out:
	evac_one_free(&e);
	return r;
}

/* The instances on HOST an evacuation moves. */
static int evac_candidates(struct sched *s, const char *host, struct sched_strvec *out)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db,
			       "SELECT uuid FROM instances WHERE host = ?1 AND state IN ('active', "
			       "'stopped', 'rebooting', 'building', 'scheduling') ORDER BY name, "
			       "created",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, host, -1, SQLITE_STATIC);
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
		r = sched_strvec_add(out, (const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	return r < 0 ? err_set(-ENOMEM, "out of memory") : 0;
}

/* Instances on HOST in a state an evacuation leaves alone: SKIPPED. */
static void evac_left(struct sched *s, const char *host, json_t *skipped)
{
	sqlite3_stmt *q = NULL;

	if (sqlite3_prepare_v2(s->db,
			       "SELECT uuid, name, project, state FROM instances WHERE host = ?1 "
			       "AND state IN ('migrating', 'rebuilding', 'deleting') ORDER BY name",
			       -1, &q, NULL) != SQLITE_OK)
		return;
	sqlite3_bind_text(q, 1, host, -1, SQLITE_STATIC);
	while (sqlite3_step(q) == SQLITE_ROW) {
		char why[128];

		snprintf(why, sizeof(why), "it is %s: not evacuated",
			 (const char *)sqlite3_column_text(q, 3));
		json_array_append_new(skipped,
				      json_pack("{s:s, s:s, s:s, s:s}", "uuid",
						(const char *)sqlite3_column_text(q, 0), "name",
						(const char *)sqlite3_column_text(q, 1), "project",
						(const char *)sqlite3_column_text(q, 2), "reason", why));
	}
	sqlite3_finalize(q);
}

int sched_on_host_evacuate(struct sched *s, struct sched_call *c)
{
	const char *name = sched_jstr(c->body, "host");
	struct sched_host *h = name ? sched_host_find(s, name) : NULL;
	struct sched_strvec uuids = { 0 };
	json_t *list = NULL, *skipped = NULL;
	int r;

	if (!h)
		return sched_reject(s, c, "host.evacuate: host %s is not known", name ? name : "(none)");
	if (sched_host_up(h, s->cfg, c->now_ms))
		return sched_reject(s, c, "host.evacuate: host %s is up (reported %.1f s ago; down "
				    "after %.1f s without a report): evacuate only a host that is "
				    "down; migrate its instances or drain it instead", h->name,
				    (double)(c->now_ms - h->last_report_ms) / 1e3,
				    (double)(s->cfg->heartbeat_interval_ms * s->cfg->missed_heartbeats) /
					    1e3);
	if (sched_host_stale(s, h) && sched_warming(s, c->now_ms))
		return sched_reject(s, c, "host.evacuate: host %s has not reported since the "
				    "scheduler started: wait %.1f s for the warm-up before judging it "
				    "down", h->name, (double)(s->warm_until_ms - c->now_ms) / 1e3);
	r = evac_open(s);
	if (r == 0)
		r = evac_candidates(s, h->name, &uuids);
	list = json_array();
	skipped = json_array();
	if (r == 0 && (!list || !skipped))
		r = err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < uuids.n; i++)
		r = evac_instance(s, c, h->name, uuids.v[i], list, skipped);
	if (r == 0) {
		evac_left(s, h->name, skipped);
		r = sched_tx_begin(s);
		if (r == 0)
			r = sched_accept(s, c, h->name,
					 json_pack("{s:s, s:O, s:O, s:s}", "host", h->name,
						   "instances", list, "skipped", skipped, "warning",
						   "local disk contents are lost: each instance is "
						   "rebuilt from its image"));
		if (r == 0)
			r = sched_tx_commit(s);
		else
			sched_tx_rollback(s);
	}
	if (r == 0)
		log_warn("host evacuated host=%s moved=%zu skipped=%zu", h->name,
			 json_array_size(list), json_array_size(skipped));
	json_decref(list);
	json_decref(skipped);
	sched_strvec_free(&uuids);
	return r;
}

/* ---- afterwards: the instance's reason, the stale copies ------------------ */

char *sched_evacuation_note(struct sched *s, const char *uuid, const char *host,
			    const char *address)
{
	sqlite3_stmt *q = NULL;
	char *note = NULL;

	if (evac_open(s) < 0 ||
	    sqlite3_prepare_v2(s->db, "SELECT source, old_address FROM evacuations WHERE uuid = ?1 "
			       "AND dest = ?2", -1, &q, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, host, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW) {
		const char *src = (const char *)sqlite3_column_text(q, 0);
		const char *old = (const char *)sqlite3_column_text(q, 1);
		int n;

		if (!old)
			n = asprintf(&note, "evacuated from host %s (down): rebuilt from its image, "
				     "local disk contents lost", src);
		else if (address && strcmp(old, address) == 0)
			n = asprintf(&note, "evacuated from host %s (down): rebuilt from its image, "
				     "local disk contents lost; address %s kept", src, old);
		else
			n = asprintf(&note, "evacuated from host %s (down): rebuilt from its image, "
				     "local disk contents lost; address changed from %s to %s "
				     "(not free or not in host %s's network)", src, old,
				     address ? address : "?", host);
		if (n < 0)
			note = NULL;
	}
	sqlite3_finalize(q);
	return note;
}

int sched_evacuation_settle(struct sched *s, struct sched_out *out, const char *uuid,
			    const char *host)
{
	sqlite3_stmt *q = NULL;
	char rid[UUID_STRLEN];
	int r = 0;

	if (evac_open(s) < 0)
		return 0;
	/* on whichever host it became active (a failed build there reschedules) */
	if (sqlite3_prepare_v2(s->db, "UPDATE evacuations SET stop_after = 0 WHERE uuid = ?1 AND "
			       "stop_after = 1", -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	else if (sqlite3_changes(s->db) > 0) {
		log_info("evacuated instance was stopped: stopping it again instance=%s host=%s",
			 uuid, host);
		uuid_generate_str(rid);
		r = sched_emit_host_cmd(out, host, "instance.stop", rid, uuid,
					json_pack("{s:s}", "uuid", uuid));
	}
	sqlite3_finalize(q);
	return r;
}

int sched_evacuation_moved(struct sched *s, const char *uuid, const char *from, const char *to)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (evac_open(s) < 0)
		return -EIO;
	if (sqlite3_prepare_v2(s->db, "UPDATE evacuations SET dest = ?3 WHERE uuid = ?1 AND "
			       "dest = ?2", -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, from, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, to, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

int sched_evacuation_cleaned(struct sched *s, const char *uuid, const char *host)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (evac_open(s) < 0)
		return 0;
	if (sqlite3_prepare_v2(s->db, "UPDATE evacuations SET cleaned = 1 WHERE uuid = ?1 AND "
			       "source = ?2 AND cleaned = 0", -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, host, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "evacuate: %s", sqlite3_errmsg(s->db));
	else if (sqlite3_changes(s->db) > 0)
		log_info("evacuated instance's stale copy destroyed instance=%s host=%s", uuid, host);
	sqlite3_finalize(q);
	return r;
}

int sched_evacuation_comeback(struct sched *s, struct sched_call *c, const char *host)
{
	sqlite3_stmt *q = NULL;
	struct sched_strvec uuids = { 0 };
	int r = 0;

	if (evac_open(s) < 0 ||
	    sqlite3_prepare_v2(s->db, "SELECT uuid FROM evacuations WHERE source = ?1 AND "
			       "cleaned = 0", -1, &q, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(q, 1, host, -1, SQLITE_STATIC);
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
		r = sched_strvec_add(&uuids, (const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	if (r < 0)
		r = err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < uuids.n; i++) {
		log_warn("host back after an evacuation: destroying its stale copy host=%s "
			 "instance=%s", host, uuids.v[i]);
		r = send_destroy(c->out, host, uuids.v[i]);
	}
	sched_strvec_free(&uuids);
	return r;
}

bool sched_evacuation_pending(struct sched *s, const char *uuid, const char *host)
{
	sqlite3_stmt *q = NULL;
	bool pending = false;

	if (evac_open(s) < 0 ||
	    sqlite3_prepare_v2(s->db, "SELECT 1 FROM evacuations WHERE uuid = ?1 AND source = ?2 "
			       "AND cleaned = 0", -1, &q, NULL) != SQLITE_OK)
		return false;
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, host, -1, SQLITE_STATIC);
	pending = sqlite3_step(q) == SQLITE_ROW;
	sqlite3_finalize(q);
	return pending;
}
