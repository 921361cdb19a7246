/*
 * instance.snapshot (issue 18): the instance's disk as a new private image
 * of its project. The scheduler checks and reserves the image name (the
 * `snapshots` table), sends instance.snapshot to the instance's host, and
 * registers the image when the host says `uploaded` (the store's URL, the
 * sha256 and size of what the store serves): the source image's properties
 * and kernel keys, disk_format qcow2, min_disk the flavor's disk, owned by
 * the instance's project, as image.add --private would. Then it says
 * `registered` on stratus.events with the image record.
 *
 * Refused, changing nothing: a name taken (by any image: names are the
 * catalog's keys, so another project's private image takes it too, without
 * saying whose) or reserved by a snapshot in progress, a bad name, an
 * instance not in the caller's project, one not active or stopped, one
 * with a snapshot in progress. A host that says `failed` frees the name;
 * nothing is registered.
 */
#define LOG_TAG "scheduler"
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

#define SNAP_NAME_MAX 64

static const char snapshot_schema[] =
	"CREATE TABLE IF NOT EXISTS snapshots ("
	" id TEXT PRIMARY KEY, uuid TEXT NOT NULL, project TEXT NOT NULL,"
	" name TEXT NOT NULL UNIQUE, host TEXT NOT NULL, image TEXT NOT NULL,"
	" created TEXT NOT NULL) WITHOUT ROWID;";

struct snap_row {
	char *id, *uuid, *project, *name, *host, *image;
};

static void snap_row_free(struct snap_row *r)
{
	free(r->id);
	free(r->uuid);
	free(r->project);
	free(r->name);
	free(r->host);
	free(r->image);
}

static int open_table(struct sched *s)
{
	char *msg = NULL;
	int r = 0;

	if (sqlite3_exec(s->db, snapshot_schema, NULL, NULL, &msg) != SQLITE_OK) {
		r = err_set(-EIO, "scheduler state: snapshots: %s", msg ? msg : "?");
		sqlite3_free(msg);
	}
	return r;
}

static char *col(sqlite3_stmt *q, int i)
{
	const unsigned char *t = sqlite3_column_text(q, i);

	return t ? strdup((const char *)t) : NULL;
}

#define SNAP_COLUMNS "id, uuid, project, name, host, image"

/* The current row of a SELECT SNAP_COLUMNS into OUT: 0 or -ENOMEM. */
static int snap_read(sqlite3_stmt *q, struct snap_row *out)
{
	*out = (struct snap_row){ col(q, 0), col(q, 1), col(q, 2), col(q, 3), col(q, 4), col(q, 5) };
	if (!out->id || !out->uuid || !out->project || !out->name || !out->host || !out->image) {
		snap_row_free(out);
		return err_set(-ENOMEM, "out of memory");
	}
	return 0;
}

/* The row whose COLUMN (id, uuid or name) is V: 0, -ENOENT, <0. */
static int snap_get(struct sched *s, const char *column, const char *v, struct snap_row *out)
{
	char sql[160];
	sqlite3_stmt *q = NULL;
	int rc, r = 0;

	snprintf(sql, sizeof(sql), "SELECT " SNAP_COLUMNS " FROM snapshots WHERE %s = ?1", column);
	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: snapshots: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, v, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		r = snap_read(q, out);
	else
		r = rc == SQLITE_DONE ? -ENOENT
				      : err_set(-EIO, "scheduler state: snapshots: %s",
						sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

static int snap_exec(struct sched *s, const char *sql, const char *const *v, int n)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: snapshots: %s", sqlite3_errmsg(s->db));
	for (int i = 0; i < n; i++)
		sqlite3_bind_text(q, i + 1, v[i], -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "scheduler state: snapshots: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

/* The snapshot ID's row gone: done, failed or abandoned. */
static int snap_drop(struct sched *s, const char *id)
{
	return snap_exec(s, "DELETE FROM snapshots WHERE id = ?1", (const char *const[]){ id }, 1);
}

/* Letters, digits, '.', '_', '-'; at most SNAP_NAME_MAX; not starting with '.' or '-'. */
static bool name_ok(const char *n)
{
	size_t len = strlen(n);

	if (len == 0 || len > SNAP_NAME_MAX || n[0] == '.' || n[0] == '-')
		return false;
	for (const char *p = n; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
			return false;
	return true;
}

/* The new image's template: the instance's image (from its spec) with
 * min_disk the flavor's disk; url, checksum and format come at upload. */
static char *image_template(const struct inst_row *row)
{
	json_t *spec = json_loads(row->spec, 0, NULL);
	json_t *im = spec ? json_deep_copy(json_object_get(spec, "image")) : NULL;
	json_int_t disk = json_integer_value(json_object_get(json_object_get(spec, "flavor"),
							     "disk_gb"));
	char *text = NULL;

	if (im && json_is_object(im)) {
		json_int_t min = json_integer_value(json_object_get(im, "min_disk_gb"));

		json_object_set_new(im, "source", json_string(row->image));
		json_object_set_new(im, "min_disk_gb", json_integer(disk > min ? disk : min));
		text = json_dumps(im, JSON_COMPACT);
	}
	json_decref(im);
	json_decref(spec);
	return text;
}

/* 0 free; 1 refused (answered); <0 error. */
static int name_check(struct sched *s, struct sched_call *c, const char *name)
{
	struct snap_row other = { 0 };
	int r;

	if (!name_ok(name))
		return sched_reject(s, c, "instance.snapshot: image name '%.80s': expected 1 to %d "
				    "letters, digits, '.', '_' or '-' (not first: '.', '-')", name,
				    SNAP_NAME_MAX) ?: 1;
	if (sched_image_find(s, name))
		return sched_reject(s, c, "image name '%s' is taken: choose another name", name) ?: 1;
	r = snap_get(s, "name", name, &other);
	if (r == 0) {
		snap_row_free(&other);
		return sched_reject(s, c, "image name '%s' is taken by a snapshot in progress", name)
		       ?: 1;
	}
	return r == -ENOENT ? 0 : r;
}

int sched_on_snapshot(struct sched *s, struct sched_call *c)
{
	const char *ref = sched_jstr(c->body, "instance"), *name = sched_jstr(c->body, "name");
	struct inst_row row = { 0 };
	struct snap_row busy = { 0 };
	char id[UUID_STRLEN], ts[RFC3339_STRLEN];
	_cleanup_free_ char *tmpl = NULL;
	int r;

	if (!c->project || !ref || !name)
		return sched_reject(s, c, "instance.snapshot: project, instance and name are required");
	r = open_table(s);
	if (r < 0)
		return r;
	r = sched_inst_find(s, c->project, ref, &row);
	if (r == -EEXIST)
		return sched_reject(s, c, "%s", err_msg());
	if (r == -ENOENT)
		return sched_reject(s, c, "instance %s not found in project %s", ref, c->project);
	if (r < 0)
		return r;
	if (strcmp(row.state, "active") != 0 && strcmp(row.state, "stopped") != 0) {
		r = sched_reject(s, c, "instance %s is %s: snapshot needs it active or stopped",
				 row.name, row.state);
		goto out;
	}
	if (!row.host) {
		r = sched_reject(s, c, "instance %s has no host", row.name);
		goto out;
	}
	r = snap_get(s, "uuid", row.uuid, &busy);
	if (r == 0) {
		r = sched_reject(s, c, "instance %s: snapshot %s is in progress", row.name, busy.name);
		snap_row_free(&busy);
		goto out;
	}
	if (r != -ENOENT)
		goto out;
	r = name_check(s, c, name);
	if (r != 0) {
		r = r < 0 ? r : 0;
		goto out;
	}
	tmpl = image_template(&row);
	if (!tmpl) {
		r = sched_reject(s, c, "instance %s: its stored spec has no image", row.name);
		goto out;
	}
	uuid_generate_str(id);
	time_rfc3339_now(ts);
	r = sched_tx_begin(s);
	if (r == 0)
		r = snap_exec(s, "INSERT INTO snapshots(id, uuid, project, name, host, image, created) "
			      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
			      (const char *const[]){ id, row.uuid, row.project, name, row.host, tmpl,
						     ts }, 7);
	if (r == 0)
		r = sched_accept(s, c, row.uuid,
				 json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "snapshot", id, "uuid",
					   row.uuid, "instance", row.name, "name", name, "host",
					   row.host, "state", "snapshotting"));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0)
		r = sched_emit_host_cmd(c->out, row.host, "instance.snapshot", c->rid, row.uuid,
					json_pack("{s:s, s:s, s:s}", "uuid", row.uuid, "snapshot", id,
						  "name", name));
	if (r == 0)
		log_info("snapshot sent instance=%s host=%s snapshot=%s name=%s request=%s", row.uuid,
			 row.host, id, name, c->rid);
out:
	inst_row_free(&row);
	return r;
}

/* image.snapshot `registered` or `failed` from us (HOST NULL), with EXTRA
 * (taken) merged in. */
static int emit(struct sched_call *c, const struct snap_row *sr, const char *phase, json_t *extra)
{
	json_t *b = json_pack("{s:s, s:s, s:s, s:s, s:s}", "uuid", sr->uuid, "snapshot", sr->id,
			      "project", sr->project, "name", sr->name, "phase", phase);

	if (b && extra)
		json_object_update(b, extra);
	json_decref(extra);
	return sched_out_add(c->out, BUS_TOPIC_EVENTS, sr->uuid, "image.snapshot", c->rid, b);
}

/* The uploaded image into the catalog, private to the instance's project. */
static int register_image(struct sched *s, const struct snap_row *sr, const json_t *ev,
			  json_t **record)
{
	json_t *im = json_loads(sr->image, 0, NULL);
	struct sched_image img;
	int r;

	if (!im)
		return err_set(-EINVAL, "snapshot %s: its image template does not parse", sr->name);
	json_object_del(im, "source");
	json_object_set_new(im, "name", json_string(sr->name));
	json_object_set(im, "url", json_object_get(ev, "url"));
	json_object_set(im, "checksum", json_object_get(ev, "checksum"));
	json_object_set_new(im, "disk_format", json_string("qcow2"));
	r = sched_image_from_json(im, &img);
	json_decref(im);
	if (r < 0)
		return r;
	if (img_url_check(&s->cfg->image_url_filter, img.url) < 0) {
		r = err_prefix(-EACCES, "image %s", img.name);
		sched_image_free(&img);
		return r;
	}
	if (sched_image_find(s, img.name)) {
		r = err_set(-EEXIST, "image name '%s' is taken", img.name);
		sched_image_free(&img);
		return r;
	}
	*record = sched_image_to_json(&img);
	r = sched_catalog_add_image(s, &img);
	if (r == 0)
		r = sched_image_set_owner(s, sr->name, sr->project);
	if (r < 0) {
		json_decref(*record);
		*record = NULL;
		return r;
	}
	json_object_set_new(*record, "visibility", json_string("private"));
	json_object_set_new(*record, "owner", json_string(sr->project));
	json_object_set(*record, "size", json_object_get(ev, "size"));
	return 0;
}

int sched_on_snapshot_event(struct sched *s, struct sched_call *c)
{
	const char *id = sched_jstr(c->body, "snapshot"), *phase = sched_jstr(c->body, "phase");
	const char *host = sched_jstr(c->body, "host");
	struct snap_row sr = { 0 };
	json_t *record = NULL;
	int r;

	/* ours (registered, failed at register) and progress: nothing to do */
	if (!id || !phase || !host || (strcmp(phase, "uploaded") != 0 &&
				       strcmp(phase, "failed") != 0))
		return 0;
	r = open_table(s);
	if (r == 0)
		r = snap_get(s, "id", id, &sr);
	if (r == -ENOENT) {
		log_info("snapshot event for no snapshot in progress snapshot=%s phase=%s", id, phase);
		return 0;
	}
	if (r < 0)
		return r;
	if (strcmp(sr.host, host) != 0) {
		log_warn("snapshot event from another host snapshot=%s host=%s expected=%s", id,
			 host, sr.host);
		goto out;
	}
	r = sched_tx_begin(s);
	if (r < 0)
		goto out;
	if (strcmp(phase, "uploaded") == 0 && register_image(s, &sr, c->body, &record) < 0) {
		char why[512];

		snprintf(why, sizeof(why), "%s", err_msg());
		log_warn("snapshot not registered snapshot=%s name=%s error=\"%s\"", id, sr.name, why);
		r = emit(c, &sr, "failed", json_pack("{s:s, s:s}", "step", "register", "error", why));
	} else if (strcmp(phase, "uploaded") == 0) {
		log_info("snapshot registered snapshot=%s name=%s project=%s", id, sr.name,
			 sr.project);
		r = emit(c, &sr, "registered",
			 json_pack("{s:o, s:O}", "image", record, "quiesce",
				   json_object_get(c->body, "quiesce") ?: json_null()));
	}
	if (r == 0)
		r = snap_drop(s, id);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
out:
	snap_row_free(&sr);
	return r;
}

/* ---- snapshots of hosts that went down ------------------------------------ */

/* Is HOST down (or unknown) now, judged as placement judges it? Never
 * while the scheduler waits for its hosts' first reports. */
static bool host_gone(struct sched *s, const char *host, int64_t now_ms)
{
	struct sched_host *h = sched_host_find(s, host);

	return !sched_warming(s, now_ms) && (!h || !sched_host_up(h, s->cfg, now_ms));
}

bool sched_snapshot_orphaned(struct sched *s, int64_t now_ms)
{
	sqlite3_stmt *q = NULL;
	bool due = false;

	if (sqlite3_prepare_v2(s->db, "SELECT DISTINCT host FROM snapshots", -1, &q, NULL) !=
	    SQLITE_OK)
		return false; /* no table yet: no snapshot ever */
	while (!due && sqlite3_step(q) == SQLITE_ROW)
		due = host_gone(s, (const char *)sqlite3_column_text(q, 0), now_ms);
	sqlite3_finalize(q);
	return due;
}

int sched_snapshot_abandon(struct sched *s, int64_t now_ms, struct sched_out *out)
{
	struct snap_row *gone = NULL;
	size_t n = 0;
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT " SNAP_COLUMNS " FROM snapshots", -1, &q, NULL) !=
	    SQLITE_OK)
		return err_set(-EIO, "scheduler state: snapshots: %s", sqlite3_errmsg(s->db));
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW) {
		struct snap_row *g;

		if (!host_gone(s, (const char *)sqlite3_column_text(q, 4), now_ms))
			continue;
		g = realloc(gone, (n + 1) * sizeof(*gone));
		if (!g) {
			r = err_set(-ENOMEM, "out of memory");
			break;
		}
		gone = g;
		r = snap_read(q, &gone[n]);
		if (r == 0)
			n++;
	}
	sqlite3_finalize(q);
	for (size_t i = 0; r == 0 && i < n; i++) {
		struct snap_row *sr = &gone[i];
		char rid[UUID_STRLEN], why[256];
		struct sched_call c = { .out = out, .rid = rid };

		uuid_generate_str(rid);
		snprintf(why, sizeof(why), "host %s is down (no report within %lld ms): the "
			 "snapshot is abandoned and the name free; an upload it finishes later is "
			 "not registered", sr->host,
			 (long long)(s->cfg->heartbeat_interval_ms * s->cfg->missed_heartbeats));
		log_warn("snapshot abandoned snapshot=%s name=%s host=%s: host down", sr->id,
			 sr->name, sr->host);
		r = emit(&c, sr, "failed", json_pack("{s:s, s:s, s:s}", "step", "host", "error",
						     why, "host", sr->host));
		if (r == 0)
			r = snap_drop(s, sr->id);
	}
	for (size_t i = 0; i < n; i++)
		snap_row_free(&gone[i]);
	free(gone);
	return r < 0 ? r : (int)n;
}
