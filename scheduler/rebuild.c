/*
 * instance.rebuild (issue 18): the instance keeps its uuid, name, host,
 * claim and quota; its spec gets the (new) image, the new user data when
 * given, and a generation one higher (a new instance-id for cloud-init),
 * and goes to its host as instance.rebuild with its secrets sealed to the
 * host, like a build. The host does the rest (agent/rebuild.c) and reports
 * `active`, or `error` with the old disk kept.
 *
 * Refused, changing nothing: an instance that is not active or stopped
 * (building, deleting, rebuilding, error ...), an image the project may not
 * see ("not found", as at boot), an image larger than the flavor's disk,
 * bad user data, a host that published no box key.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

static const char rebuild_schema[] =
	"CREATE TABLE IF NOT EXISTS rebuilds ("
	" uuid TEXT PRIMARY KEY, image TEXT NOT NULL, spec TEXT NOT NULL) WITHOUT ROWID;";

/* Run SQL binding up to three texts. */
static int exec3(struct sched *s, const char *sql, const char *a, const char *b, const char *c)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: rebuild: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, a, -1, SQLITE_STATIC);
	if (b)
		sqlite3_bind_text(q, 2, b, -1, SQLITE_STATIC);
	if (c)
		sqlite3_bind_text(q, 3, c, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "scheduler state: rebuild: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

int sched_rebuild_settle(struct sched *s, const char *uuid, bool rolled_back)
{
	char *msg = NULL;
	int r;

	if (sqlite3_exec(s->db, rebuild_schema, NULL, NULL, &msg) != SQLITE_OK) {
		r = err_set(-EIO, "scheduler state: rebuilds: %s", msg ? msg : "?");
		sqlite3_free(msg);
		return r;
	}
	r = 0;
	if (rolled_back)
		r = exec3(s, "UPDATE instances SET image = (SELECT image FROM rebuilds WHERE "
			  "uuid = ?1), spec = (SELECT spec FROM rebuilds WHERE uuid = ?1) WHERE "
			  "uuid = ?1 AND EXISTS (SELECT 1 FROM rebuilds WHERE uuid = ?1)",
			  uuid, NULL, NULL);
	if (r == 0)
		r = exec3(s, "DELETE FROM rebuilds WHERE uuid = ?1", uuid, NULL, NULL);
	return r;
}

/* The spec before (ROW's) kept in `rebuilds` until the host settles it;
 * the row gets the new image and spec. */
static int store_rebuild(struct sched *s, const struct inst_row *row, const char *image,
			 const char *spec)
{
	sqlite3_stmt *q = NULL;
	char ts[RFC3339_STRLEN];
	char *msg = NULL;
	int r = 0;

	if (sqlite3_exec(s->db, rebuild_schema, NULL, NULL, &msg) != SQLITE_OK) {
		r = err_set(-EIO, "scheduler state: rebuilds: %s", msg ? msg : "?");
		sqlite3_free(msg);
		return r;
	}
	r = exec3(s, "INSERT OR REPLACE INTO rebuilds(uuid, image, spec) VALUES (?1, ?2, ?3)",
		  row->uuid, row->image, row->spec);
	if (r < 0)
		return r;
	const char *uuid = row->uuid;

	time_rfc3339_now(ts);
	if (sqlite3_prepare_v2(s->db,
			       "UPDATE instances SET state = 'rebuilding', image = ?2, spec = ?3, "
			       "reason = NULL, updated = ?4 WHERE uuid = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: rebuild: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, image, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, spec, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, ts, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "scheduler state: rebuild: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

/* The new spec from the stored one; NULL with *why set when refused. */
static json_t *rebuilt_spec(struct sched *s, struct sched_call *c, const struct inst_row *row,
			    const struct sched_image *im, char *why, size_t whylen)
{
	json_t *spec = json_loads(row->spec, 0, NULL), *ud = json_object_get(c->body, "user_data");
	json_int_t gen;
	long disk_gb;

	(void)s;
	if (!spec) {
		snprintf(why, whylen, "instance %s: its stored spec does not parse", row->name);
		return NULL;
	}
	disk_gb = (long)json_integer_value(json_object_get(json_object_get(spec, "flavor"),
							   "disk_gb"));
	if (disk_gb > 0 && disk_gb < im->min_disk_gb) {
		snprintf(why, whylen, "flavor %s: disk %ld GB is smaller than image %s min_disk "
			 "%ld GB", row->flavor, disk_gb, im->name, im->min_disk_gb);
		json_decref(spec);
		return NULL;
	}
	gen = json_integer_value(json_object_get(spec, "generation"));
	json_object_set_new(spec, "image", sched_image_to_json(im));
	json_object_set_new(spec, "generation", json_integer(gen + 1));
	if (ud)
		json_object_set(spec, "user_data", ud);
	return spec;
}

int sched_on_rebuild(struct sched *s, struct sched_call *c)
{
	const char *ref = sched_jstr(c->body, "instance"), *iname;
	struct inst_row row = { 0 };
	const struct sched_image *im;
	struct sched_host *h;
	_cleanup_free_ char *text = NULL;
	json_t *spec = NULL, *cmd;
	char why[512];
	int r;

	if (!c->project || !ref)
		return sched_reject(s, c, "instance.rebuild: project and instance are required");
	/* user data the client sealed to us: opened here, once */
	if (json_object_get(c->body, "sealed") &&
	    (bus_open_sealed(c->body, bus_build_secret_fields, s->keys.box_priv,
			     BUS_SEAL_BOOT) < 0 ||
	     bus_validate("instance.rebuild", BUS_TC_API, c->body) < 0))
		return sched_reject(s, c, "instance.rebuild: %s", err_msg());
	r = sched_inst_find(s, c->project, ref, &row);
	if (r == -EEXIST)
		return sched_reject(s, c, "%s", err_msg());
	if (r == -ENOENT)
		return sched_reject(s, c, "instance %s not found in project %s", ref, c->project);
	if (r < 0)
		return r;
	if (strcmp(row.state, "active") != 0 && strcmp(row.state, "stopped") != 0) {
		r = sched_reject(s, c, "instance %s is %s: rebuild needs it active or stopped",
				 row.name, row.state);
		goto out;
	}
	iname = sched_jstr(c->body, "image") ? sched_jstr(c->body, "image") : row.image;
	im = sched_image_lookup(s, iname, c->project, c->admin);
	if (!im) {
		_cleanup_free_ char *known = sched_image_names(s, c->project, c->admin);

		r = sched_reject(s, c, "image '%s' not found (known: %s)", iname, known ? known : "?");
		goto out;
	}
	h = row.host ? sched_host_find(s, row.host) : NULL;
	if (!h || !h->has_box_key) {
		r = sched_reject(s, c, "instance %s: its host %s has published no box key: the "
				 "rebuild's user data cannot be sealed to it", row.name,
				 row.host ? row.host : "(none)");
		goto out;
	}
	spec = rebuilt_spec(s, c, &row, im, why, sizeof(why));
	if (!spec) {
		r = sched_reject(s, c, "%s", why);
		goto out;
	}
	text = json_dumps(spec, JSON_COMPACT);
	cmd = json_deep_copy(spec);
	if (!text || !cmd) {
		json_decref(cmd);
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	if (sched_seal_build(s, h, cmd) < 0) {
		json_decref(cmd);
		r = sched_reject(s, c, "instance.rebuild: %s", err_msg());
		goto out;
	}
	r = sched_tx_begin(s);
	if (r == 0)
		r = store_rebuild(s, &row, im->name, text);
	if (r == 0)
		r = sched_accept(s, c, row.uuid,
				 json_pack("{s:s, s:s, s:s, s:s, s:I}", "uuid", row.uuid, "state",
					   "rebuilding", "host", row.host, "image", im->name,
					   "generation", json_integer_value(json_object_get(spec, "generation"))));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0)
		r = sched_emit_state(c->out, c->rid, row.uuid, row.project, row.host, "rebuilding",
				     NULL);
	if (r == 0)
		r = sched_emit_host_cmd(c->out, row.host, "instance.rebuild", c->rid, row.uuid, cmd);
	else
		json_decref(cmd);
	if (r == 0)
		log_info("rebuild sent instance=%s host=%s image=%s request=%s", row.uuid, row.host,
			 im->name, c->rid);
out:
	json_decref(spec);
	inst_row_free(&row);
	return r;
}
