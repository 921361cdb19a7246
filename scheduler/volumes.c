/*
 * Volumes: volume.create / list / show / delete / attach / detach on
 * stratus.api, and the agents' volume.state events.
 *
 * A volume lives on one host (a file in the agent's volume_dir). The
 * scheduler keeps the `volumes` table (its own table, keyed by uuid) as the
 * mirror of what the agents report: a request moves a volume into a
 * transitional state (creating, attaching, detaching, deleting) and sends
 * the signed command to the volume's host; the agent's volume.state event
 * gives the outcome (available, in-use, error, deleted). The quota claim
 * (volumes 1, gigabytes SIZE) is made in the transaction that inserts the
 * row and released in the one that deletes it (quotas/quotas.h).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

#define VOL_MAX_GB 65536L /* 64 TiB: a size beyond is a typo, not a volume */

static const char volumes_sql[] =
	"CREATE TABLE IF NOT EXISTS volumes ("
	" uuid TEXT PRIMARY KEY, project TEXT NOT NULL, name TEXT NOT NULL,"
	" size_gb INTEGER NOT NULL, host TEXT NOT NULL, state TEXT NOT NULL,"
	" instance TEXT, reason TEXT, created TEXT NOT NULL, updated TEXT NOT NULL);"
	"CREATE INDEX IF NOT EXISTS volumes_by_project ON volumes(project, name);";

int sched_volumes_open(struct sched *s)
{
	char *emsg = NULL;

	if (sqlite3_exec(s->db, volumes_sql, NULL, NULL, &emsg) != SQLITE_OK) {
		int r = err_set(-EIO, "scheduler state: creating the volumes table: %s",
				emsg ? emsg : "?");

		sqlite3_free(emsg);
		return r;
	}
	for (size_t i = 0; i < s->n_hosts; i++) /* hosts the state knew before */
		s->hosts[i]->vol_gb = sched_volumes_gb_on(s, s->hosts[i]->name);
	return 0;
}

/* GB of the volumes on HOST (0 before the table exists). */
long sched_volumes_gb_on(struct sched *s, const char *host)
{
	sqlite3_stmt *q = NULL;
	long gb = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT COALESCE(SUM(size_gb), 0) FROM volumes WHERE host = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(q, 1, host, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW)
		gb = (long)sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	return gb;
}

/* Volume GB on HOST changed by DELTA (a create or a delete committed). */
static void vol_gb_add(struct sched *s, const char *host, long delta)
{
	struct sched_host *h = sched_host_find(s, host);

	if (h)
		h->vol_gb += delta;
}

/* ---- rows ---------------------------------------------------------------- */

struct vol_row {
	char uuid[UUID_STRLEN];
	char *project, *name, *host, *state, *instance, *reason, *created, *updated;
	long size_gb;
};

static void vol_row_free(struct vol_row *v)
{
	free(v->project);
	free(v->name);
	free(v->host);
	free(v->state);
	free(v->instance);
	free(v->reason);
	free(v->created);
	free(v->updated);
	memset(v, 0, sizeof(*v));
}

static char *col_dup(sqlite3_stmt *q, int i)
{
	const unsigned char *t = sqlite3_column_text(q, i);

	return t ? strdup((const char *)t) : NULL;
}

#define VOL_COLS "uuid, project, name, size_gb, host, state, instance, reason, created, updated"

static void vol_from_stmt(sqlite3_stmt *q, struct vol_row *v)
{
	snprintf(v->uuid, sizeof(v->uuid), "%s", (const char *)sqlite3_column_text(q, 0));
	v->project = col_dup(q, 1);
	v->name = col_dup(q, 2);
	v->size_gb = (long)sqlite3_column_int64(q, 3);
	v->host = col_dup(q, 4);
	v->state = col_dup(q, 5);
	v->instance = col_dup(q, 6);
	v->reason = col_dup(q, 7);
	v->created = col_dup(q, 8);
	v->updated = col_dup(q, 9);
}

/* The volume PROJECT calls REF (name or uuid; PROJECT NULL: by uuid in any
 * project). 0, -ENOENT, -EEXIST (ambiguous name) or <0. */
static int vol_find(struct sched *s, const char *project, const char *ref, struct vol_row *out)
{
	sqlite3_stmt *q = NULL;
	int rc, n = 0, r = 0;

	if (sqlite3_prepare_v2(s->db,
			       project ? "SELECT " VOL_COLS " FROM volumes WHERE project = ?1 AND "
					 "(uuid = ?2 OR name = ?2)"
				       : "SELECT " VOL_COLS " FROM volumes WHERE uuid = ?2",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "finding a volume: %s", sqlite3_errmsg(s->db));
	if (project)
		sqlite3_bind_text(q, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, ref, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (n++ == 0)
			vol_from_stmt(q, out);
	}
	if (rc != SQLITE_DONE)
		r = err_set(-EIO, "finding a volume: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	if (r == 0 && n == 0)
		r = err_set(-ENOENT, "volume %s not found in project %s", ref,
			    project ? project : "(any)");
	else if (r == 0 && n > 1)
		r = err_set(-EEXIST, "volume name %s is ambiguous in project %s: use its uuid", ref,
			    project);
	if (r < 0 && n > 0)
		vol_row_free(out);
	return r;
}

static int vol_put(struct sched *s, const struct vol_row *v)
{
	sqlite3_stmt *q = NULL;
	char ts[RFC3339_STRLEN];
	int r = 0;

	time_rfc3339_now(ts);
	if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO volumes(" VOL_COLS ") VALUES "
				      "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "writing a volume: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, v->uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, v->project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, v->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 4, v->size_gb);
	sqlite3_bind_text(q, 5, v->host, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 6, v->state, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 7, v->instance, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 8, v->reason, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 9, v->created ? v->created : ts, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(q, 10, ts, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "writing volume %s: %s", v->uuid, sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

static int vol_delete_row(struct sched *s, const char *uuid)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "DELETE FROM volumes WHERE uuid = ?1", -1, &q, NULL) !=
	    SQLITE_OK)
		return err_set(-EIO, "deleting a volume: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "deleting volume %s: %s", uuid, sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

static json_t *vol_json(const struct vol_row *v)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "uuid", v->uuid, "name",
			      v->name, "project", v->project, "size_gb", (json_int_t)v->size_gb,
			      "host", v->host, "state", v->state, "created",
			      v->created ? v->created : "");

	if (!o)
		return NULL;
	json_object_set_new(o, "instance", v->instance ? json_string(v->instance) : json_null());
	json_object_set_new(o, "reason", v->reason ? json_string(v->reason) : json_null());
	json_object_set_new(o, "updated", json_string(v->updated ? v->updated : ""));
	return o;
}

/* The volume the request names; rejects (returns 1) when absent. */
static int find_volume(struct sched *s, struct sched_call *c, struct vol_row *v)
{
	const char *ref = sched_jstr(c->body, "volume");
	int r;

	if (!c->project || !ref) {
		r = sched_reject(s, c, "%s: project and volume are required", c->type);
		return r < 0 ? r : 1;
	}
	r = vol_find(s, c->project, ref, v);
	if (r == -ENOENT || r == -EEXIST) {
		r = sched_reject(s, c, "%s", err_msg());
		return r < 0 ? r : 1;
	}
	return r;
}

/* Move V to STATE (and INSTANCE), answer, send TYPE to its host: one
 * transaction for the row and the stored answer. CMD is taken. */
static int vol_transition(struct sched *s, struct sched_call *c, struct vol_row *v,
			  const char *state, const char *type, json_t *cmd)
{
	char *old = v->state;
	int r;

	v->state = (char *)(uintptr_t)state;
	r = sched_tx_begin(s);
	if (r == 0)
		r = vol_put(s, v);
	if (r == 0)
		r = sched_accept(s, c, v->uuid, vol_json(v));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	v->state = old;
	if (r == 0)
		return sched_emit_host_cmd(c->out, v->host, type, c->rid, v->uuid, cmd);
	json_decref(cmd);
	return r;
}

/* ---- volume.create ------------------------------------------------------- */

/* The host for a new volume of GB: the one asked for (up), else the up
 * host with the most free disk. NULL after a rejection (*r set). */
static const char *pick_host(struct sched *s, struct sched_call *c, const char *name, long gb,
			     int *r)
{
	const char *want = sched_jstr(c->body, "host");
	const struct sched_host *best = NULL;
	long best_free = 0;

	for (size_t i = 0; i < s->n_hosts; i++) {
		const struct sched_host *h = s->hosts[i];
		long free_gb;

		if (want && strcmp(h->name, want) != 0)
			continue;
		if (!sched_host_up(h, s->cfg, c->now_ms) || h->degraded) {
			if (want) {
				*r = sched_reject(s, c, "volume %s: host %s is %s", name, want,
						  h->degraded ? "degraded" : "down");
				return NULL;
			}
			continue;
		}
		free_gb = sched_host_disk_cap(h) - h->disk_used - h->vol_gb;
		if (!best || free_gb > best_free) {
			best = h;
			best_free = free_gb;
		}
	}
	if (!best) {
		*r = want ? sched_reject(s, c, "volume %s: host %s is not known", name, want)
			  : sched_reject(s, c, "volume %s: no host is up", name);
		return NULL;
	}
	if (best_free < gb) {
		*r = sched_reject(s, c, "volume %s: %ld GB do not fit: host %s has %ld GB of disk "
				  "free%s", name, gb, best->name, best_free < 0 ? 0 : best_free,
				  want ? "" : " (the most of any host)");
		return NULL;
	}
	return best->name;
}

int sched_on_volume_create(struct sched *s, struct sched_call *c)
{
	const char *name = sched_jstr(c->body, "name");
	json_t *size = json_object_get(c->body, "size_gb");
	struct vol_row v = { 0 }, dup = { 0 };
	enum quota_resource over = QUOTA_RESOURCE_LAST;
	const char *host;
	long gb;
	int r = 0;

	if (!c->project || !name)
		return sched_reject(s, c, "volume.create: project and name are required");
	if (!json_is_integer(size) || json_integer_value(size) < 1 ||
	    json_integer_value(size) > VOL_MAX_GB)
		return sched_reject(s, c, "volume %s: size_gb: expected an integer from 1 to %ld",
				    name, VOL_MAX_GB);
	gb = (long)json_integer_value(size);
	if (sched_jstr(c->body, "host") && !c->admin)
		return sched_reject(s, c, "volume %s: host: only an admin chooses the host of a "
				    "volume", name);
	r = vol_find(s, c->project, name, &dup);
	if (r == 0 || r == -EEXIST) {
		vol_row_free(&dup);
		return sched_reject(s, c, "volume %s already exists in project %s", name,
				    c->project);
	}
	if (r != -ENOENT)
		return r;
	host = pick_host(s, c, name, gb, &r);
	if (!host)
		return r;
	uuid_generate_str(v.uuid);
	v.project = (char *)(uintptr_t)c->project;
	v.name = (char *)(uintptr_t)name;
	v.host = (char *)(uintptr_t)host;
	v.state = (char *)(uintptr_t) "creating";
	v.size_gb = gb;
	r = sched_tx_begin(s);
	if (r == 0)
		r = quota_volume_claim(s->quotas, c->project, v.uuid, gb, &over);
	if (r == -EDQUOT) {
		char msg[512];

		snprintf(msg, sizeof(msg), "volume %s: %s", name, err_msg());
		sched_tx_rollback(s);
		sched_metrics_quota_refused(over);
		return sched_reject(s, c, "%s", msg);
	}
	if (r == 0)
		r = vol_put(s, &v);
	if (r == 0)
		r = sched_accept(s, c, v.uuid, vol_json(&v));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0) {
		vol_gb_add(s, host, gb);
		log_info("volume create volume=%s name=%s project=%s host=%s size_gb=%ld", v.uuid,
			 name, c->project, host, gb);
		r = sched_emit_host_cmd(c->out, host, "volume.create", c->rid, v.uuid,
					json_pack("{s:s, s:s, s:s, s:I}", "uuid", v.uuid, "project",
						  c->project, "name", name, "size_gb",
						  (json_int_t)gb));
	}
	return r;
}

/* ---- list, show ---------------------------------------------------------- */

int sched_on_volume_list(struct sched *s, struct sched_call *c)
{
	sqlite3_stmt *q = NULL;
	json_t *arr;

	if (!c->project)
		return sched_reject(s, c, "volume.list: project is required");
	if (sqlite3_prepare_v2(s->db, "SELECT " VOL_COLS " FROM volumes WHERE project = ?1 "
				      "ORDER BY name, created", -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "listing volumes: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, c->project, -1, SQLITE_STATIC);
	arr = json_array();
	while (arr && sqlite3_step(q) == SQLITE_ROW) {
		struct vol_row v = { 0 };

		vol_from_stmt(q, &v);
		json_array_append_new(arr, vol_json(&v));
		vol_row_free(&v);
	}
	sqlite3_finalize(q);
	return sched_accept(s, c, NULL, arr);
}

int sched_on_volume_show(struct sched *s, struct sched_call *c)
{
	struct vol_row v = { 0 };
	int r = find_volume(s, c, &v);

	if (r != 0)
		return r < 0 ? r : 0;
	r = sched_accept(s, c, v.uuid, vol_json(&v));
	vol_row_free(&v);
	return r;
}

/* ---- delete, attach, detach ---------------------------------------------- */

int sched_on_volume_delete(struct sched *s, struct sched_call *c)
{
	struct vol_row v = { 0 };
	int r = find_volume(s, c, &v);

	if (r != 0)
		return r < 0 ? r : 0;
	if (strcmp(v.state, "in-use") == 0)
		r = sched_reject(s, c, "volume %s is in-use (attached to instance %s): detach it "
				 "first", v.name, v.instance ? v.instance : "?");
	else if (strcmp(v.state, "available") != 0 && strcmp(v.state, "error") != 0)
		r = sched_reject(s, c, "volume %s is %s: delete needs it available or error",
				 v.name, v.state);
	else
		r = vol_transition(s, c, &v, "deleting", "volume.delete",
				   json_pack("{s:s}", "uuid", v.uuid));
	vol_row_free(&v);
	return r;
}

int sched_on_volume_attach(struct sched *s, struct sched_call *c)
{
	const char *ref = sched_jstr(c->body, "instance");
	struct inst_row inst = { 0 };
	struct vol_row v = { 0 };
	char *old_instance;
	int r;

	if (!ref)
		return sched_reject(s, c, "volume.attach: instance is required");
	r = find_volume(s, c, &v);
	if (r != 0)
		return r < 0 ? r : 0;
	r = sched_inst_find(s, c->project, ref, &inst);
	if (r == -ENOENT || r == -EEXIST) {
		r = sched_reject(s, c, "volume %s: %s", v.name, err_msg());
		goto out;
	}
	if (r < 0)
		goto out;
	if (strcmp(v.state, "available") != 0)
		r = sched_reject(s, c, "volume %s is %s%s%s: attach needs it available", v.name,
				 v.state, v.instance ? " on instance " : "",
				 v.instance ? v.instance : "");
	else if (!inst.host || strcmp(inst.host, v.host) != 0)
		r = sched_reject(s, c, "volume %s is on host %s, instance %s on %s: a volume "
				 "attaches only to an instance on its host", v.name, v.host,
				 inst.name, inst.host ? inst.host : "no host");
	else if (strcmp(inst.state, "active") != 0 && strcmp(inst.state, "stopped") != 0)
		r = sched_reject(s, c, "instance %s is %s: attach needs it active or stopped",
				 inst.name, inst.state);
	else {
		old_instance = v.instance;
		v.instance = inst.uuid;
		r = vol_transition(s, c, &v, "attaching", "volume.attach",
				   json_pack("{s:s, s:s}", "uuid", v.uuid, "instance", inst.uuid));
		v.instance = old_instance;
	}
out:
	inst_row_free(&inst);
	vol_row_free(&v);
	return r;
}

int sched_on_volume_detach(struct sched *s, struct sched_call *c)
{
	struct vol_row v = { 0 };
	int r = find_volume(s, c, &v);

	if (r != 0)
		return r < 0 ? r : 0;
	if (strcmp(v.state, "in-use") != 0)
		r = sched_reject(s, c, "volume %s is %s: detach needs it in-use", v.name, v.state);
	else
		r = vol_transition(s, c, &v, "detaching", "volume.detach",
				   json_pack("{s:s}", "uuid", v.uuid));
	vol_row_free(&v);
	return r;
}

/* ---- the agents' volume.state --------------------------------------------- */

int sched_on_volume_state(struct sched *s, struct sched_call *c)
{
	const char *uuid = sched_jstr(c->body, "uuid"), *state = sched_jstr(c->body, "state");
	const char *host = sched_jstr(c->body, "host");
	struct vol_row v = { 0 };
	int r;

	if (!uuid || !state)
		return 0;
	r = vol_find(s, NULL, uuid, &v);
	if (r == -ENOENT) {
		log_warn("volume state for a volume we do not know volume=%s host=%s state=%s", uuid,
			 host ? host : "-", state);
		return 0;
	}
	if (r < 0)
		return r;
	if (!host || strcmp(host, v.host) != 0) {
		log_warn("volume state from another host ignored volume=%s host=%s volume_host=%s",
			 uuid, host ? host : "-", v.host);
		vol_row_free(&v);
		return 0;
	}
	r = sched_tx_begin(s);
	if (r == 0 && strcmp(state, "deleted") == 0) {
		r = vol_delete_row(s, uuid);
		if (r == 0)
			r = quota_volume_release(s->quotas, uuid);
	} else if (r == 0) {
		const char *inst = sched_jstr(c->body, "instance");
		const char *reason = sched_jstr(c->body, "reason");

		free(v.state);
		free(v.instance);
		free(v.reason);
		v.state = strdup(state);
		v.instance = inst ? strdup(inst) : NULL;
		v.reason = reason ? strdup(reason) : NULL;
		r = v.state ? vol_put(s, &v) : err_set(-ENOMEM, "out of memory");
	}
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0 && strcmp(state, "deleted") == 0)
		vol_gb_add(s, v.host, -v.size_gb);
	if (r == 0)
		log_info("volume state volume=%s host=%s state=%s", uuid, v.host, state);
	vol_row_free(&v);
	return r;
}

/* ---- boot --volume ---------------------------------------------------------- */

int sched_volume_for_boot(struct sched *s, struct sched_call *c, const char *ref, long count,
			  char uuid[UUID_STRLEN], char **host)
{
	struct vol_row v = { 0 };
	int r = vol_find(s, c->project, ref, &v);

	if (r == -ENOENT || r == -EEXIST) {
		r = sched_reject(s, c, "instance.boot: %s", err_msg());
		return r < 0 ? r : 1;
	}
	if (r < 0)
		return r;
	if (count != 1)
		r = sched_reject(s, c, "instance.boot: volume %s attaches to one instance: count "
				 "must be 1, not %ld", v.name, count);
	else if (strcmp(v.state, "available") != 0)
		r = sched_reject(s, c, "instance.boot: volume %s is %s: a boot needs it available",
				 v.name, v.state);
	else {
		snprintf(uuid, UUID_STRLEN, "%s", v.uuid);
		*host = v.host;
		v.host = NULL;
		vol_row_free(&v);
		return 0;
	}
	vol_row_free(&v);
	return r < 0 ? r : 1;
}

int sched_volume_reserve(struct sched *s, const char *uuid, const char *instance)
{
	struct vol_row v = { 0 };
	int r = vol_find(s, NULL, uuid, &v);

	if (r == 0) {
		free(v.state);
		free(v.instance);
		free(v.reason);
		v.state = strdup("attaching");
		v.instance = strdup(instance);
		v.reason = NULL;
		r = v.state && v.instance ? vol_put(s, &v) : err_set(-ENOMEM, "out of memory");
	}
	if (r == 0)
		log_info("volume reserved for a boot volume=%s instance=%s", uuid, instance);
	vol_row_free(&v);
	return r;
}

int sched_volumes_instance_state(struct sched *s, struct sched_call *c, const char *instance,
				 const char *host, const char *state)
{
	bool active = strcmp(state, "active") == 0;
	bool gone = strcmp(state, "error") == 0 || strcmp(state, "deleted") == 0;
	struct sched_strvec ids = { 0 };
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (!active && !gone)
		return 0;
	if (sqlite3_prepare_v2(s->db, "SELECT uuid FROM volumes WHERE instance = ?1 AND "
				      "state = 'attaching'", -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "finding volumes: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, instance, -1, SQLITE_STATIC);
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
		r = sched_strvec_add(&ids, (const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	for (size_t i = 0; r == 0 && i < ids.n; i++) {
		struct vol_row v = { 0 };

		if (vol_find(s, NULL, ids.v[i], &v) < 0)
			continue;
		if (active && host && strcmp(host, v.host) == 0) {
			log_info("volume attach sent for a booted instance volume=%s instance=%s",
				 v.uuid, instance);
			r = sched_emit_host_cmd(c->out, v.host, "volume.attach", NULL, v.uuid,
						json_pack("{s:s, s:s}", "uuid", v.uuid, "instance",
							  instance));
		} else if (gone) {
			free(v.state);
			free(v.instance);
			v.state = strdup("available");
			v.instance = NULL;
			r = v.state ? vol_put(s, &v) : err_set(-ENOMEM, "out of memory");
			log_info("volume given back by a failed boot volume=%s instance=%s state=%s",
				 v.uuid, instance, state);
		}
		vol_row_free(&v);
	}
	sched_strvec_free(&ids);
	return r;
}
