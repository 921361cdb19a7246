/*
 * Resize (issue 18), Nova's flow on the instance's own host:
 *
 *   instance.resize {instance, flavor}: the new flavor checked (known, not
 *     the same, its disk not smaller than the instance's: a disk is never
 *     shrunk), the quota for the DELTA claimed, the new flavor placed on the
 *     instance's host beside the old one (both are held until the resize is
 *     confirmed or undone, as Nova holds both allocations), the allocation
 *     row made the new flavor's and the old kept in `resizes`; the instance
 *     `resizing`; instance.resize {uuid, flavor} to its host.
 *   the host's instance.state verify_resize: waiting for the answer (and
 *     for scheduler.resize_confirm_window, when set, then confirmed by us);
 *     any other state from `resizing` (rolled back, error): undone.
 *   instance.resize.confirm: the old claim released (usage stays the new
 *     flavor's), instance.resize.confirm to the host (it forgets the flavor
 *     before and says active or stopped).
 *   instance.resize.revert: `reverting`, instance.resize.revert to the host;
 *     its state after (the flavor before) undoes the accounting: the
 *     allocation and the usage back to the old flavor, the new claim
 *     released.
 *
 * Cross-host resize: the seam is sched_on_resize's placement. A resize
 * that does not fit its host is refused today; a cold migration would pick
 * another host there (sched_select with the new flavor, as migrate.c's
 * pick_dest does), claim it like sched_migration_start, and have the
 * destination prepare from the disk the source copies (the prepare/finish
 * commands of migrate.c, with the new flavor in the spec).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

static const char resize_schema[] =
	"CREATE TABLE IF NOT EXISTS resizes ("
	" uuid TEXT PRIMARY KEY, project TEXT NOT NULL, host TEXT NOT NULL,"
	" old_flavor TEXT NOT NULL, new_flavor TEXT NOT NULL, old_spec TEXT NOT NULL,"
	" cores INTEGER NOT NULL, ram_mb INTEGER NOT NULL, pcpus INTEGER NOT NULL,"
	" hugepages_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL, numa_node INTEGER NOT NULL,"
	" page_kb INTEGER NOT NULL, pages INTEGER NOT NULL, phase TEXT NOT NULL,"
	" started_ms INTEGER NOT NULL, verified_ms INTEGER, request_id TEXT) WITHOUT ROWID;";

/* One row of `resizes`: the claim of the flavor before (strings malloc'd). */
struct resize_row {
	char *project, *host, *old_flavor, *new_flavor, *old_spec, *phase;
	char *request_id; /* the resize's, then the revert's: the host answers with it */
	struct sched_alloc old; /* host NULL: use .host */
	int64_t verified_ms;
};

static void resize_row_free(struct resize_row *r)
{
	free(r->project);
	free(r->host);
	free(r->old_flavor);
	free(r->new_flavor);
	free(r->old_spec);
	free(r->phase);
	free(r->request_id);
	memset(r, 0, sizeof(*r));
}

static char *col(sqlite3_stmt *q, int i)
{
	const unsigned char *t = sqlite3_column_text(q, i);

	return t ? strdup((const char *)t) : NULL;
}

static int db_fail(struct sched *s, const char *what)
{
	return err_set(-EIO, "scheduler state: %s: %s", what, sqlite3_errmsg(s->db));
}

/* 0, -ENOENT (no resize) or another error. */
static int resize_get(struct sched *s, const char *uuid, struct resize_row *out)
{
	sqlite3_stmt *q = NULL;
	int rc, r = 0;

	if (sqlite3_prepare_v2(s->db,
			       "SELECT project, host, old_flavor, new_flavor, old_spec, phase, cores, "
			       "ram_mb, pcpus, hugepages_mb, disk_gb, numa_node, page_kb, pages, "
			       "verified_ms, request_id FROM resizes WHERE uuid = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return db_fail(s, "reading a resize");
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		struct resize_row z = { 0 };

		z.project = col(q, 0);
		z.host = col(q, 1);
		z.old_flavor = col(q, 2);
		z.new_flavor = col(q, 3);
		z.old_spec = col(q, 4);
		z.phase = col(q, 5);
		z.old.amt.v[QUOTA_INSTANCES] = 1;
		z.old.amt.v[QUOTA_CORES] = (long)sqlite3_column_int64(q, 6);
		z.old.amt.v[QUOTA_RAM_MB] = (long)sqlite3_column_int64(q, 7);
		z.old.amt.v[QUOTA_PCPUS] = (long)sqlite3_column_int64(q, 8);
		z.old.amt.v[QUOTA_HUGEPAGES_MB] = (long)sqlite3_column_int64(q, 9);
		z.old.disk_gb = (long)sqlite3_column_int64(q, 10);
		z.old.fit.node = sqlite3_column_int(q, 11);
		z.old.fit.page_kb = (long)sqlite3_column_int64(q, 12);
		z.old.fit.pages = (long)sqlite3_column_int64(q, 13);
		z.verified_ms = sqlite3_column_int64(q, 14);
		z.request_id = col(q, 15);
		if (!z.project || !z.host || !z.old_flavor || !z.new_flavor || !z.old_spec ||
		    !z.phase) {
			resize_row_free(&z);
			r = err_set(-ENOMEM, "out of memory");
		} else {
			*out = z;
		}
	} else if (rc == SQLITE_DONE) {
		r = -ENOENT;
	} else {
		r = db_fail(s, "reading a resize");
	}
	sqlite3_finalize(q);
	return r;
}

/* Run SQL binding UUID as ?1 and, when SQL has a ?2, N. */
static int exec_uuid(struct sched *s, const char *sql, const char *uuid, int64_t n)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return db_fail(s, "resize");
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(q) >= 2)
		sqlite3_bind_int64(q, 2, n);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = db_fail(s, "resize");
	sqlite3_finalize(q);
	return r;
}

static int exec_uuid_text(struct sched *s, const char *sql, const char *uuid, const char *text)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return db_fail(s, "resize");
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, text, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = db_fail(s, "resize");
	sqlite3_finalize(q);
	return r;
}

/* The allocation row of UUID set to AMT, DISK_GB and FIT. */
static int alloc_set(struct sched *s, const char *uuid, const struct quota_amounts *amt,
		     long disk_gb, const struct sched_fit *fit)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db,
			       "UPDATE allocations SET cores = ?2, ram_mb = ?3, pcpus = ?4, "
			       "hugepages_mb = ?5, disk_gb = ?6, numa_node = ?7, page_kb = ?8, "
			       "pages = ?9 WHERE uuid = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return db_fail(s, "resizing an allocation");
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 2, amt->v[QUOTA_CORES]);
	sqlite3_bind_int64(q, 3, amt->v[QUOTA_RAM_MB]);
	sqlite3_bind_int64(q, 4, amt->v[QUOTA_PCPUS]);
	sqlite3_bind_int64(q, 5, amt->v[QUOTA_HUGEPAGES_MB]);
	sqlite3_bind_int64(q, 6, disk_gb);
	sqlite3_bind_int(q, 7, fit->node);
	sqlite3_bind_int64(q, 8, fit->page_kb);
	sqlite3_bind_int64(q, 9, fit->pages);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = db_fail(s, "resizing an allocation");
	sqlite3_finalize(q);
	return r;
}

/* The instance row's flavor and spec (state: when not NULL). */
static int inst_set_flavor(struct sched *s, const char *uuid, const char *state,
			   const char *flavor, const char *spec)
{
	sqlite3_stmt *q = NULL;
	char ts[RFC3339_STRLEN];
	int r = 0;

	time_rfc3339_now(ts);
	if (sqlite3_prepare_v2(s->db,
			       "UPDATE instances SET state = COALESCE(?2, state), flavor = ?3, "
			       "spec = ?4, reason = CASE WHEN ?2 IS NULL THEN reason END, "
			       "updated = ?5 WHERE uuid = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return db_fail(s, "resizing an instance");
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	if (state)
		sqlite3_bind_text(q, 2, state, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, flavor, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, spec, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 5, ts, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = db_fail(s, "resizing an instance");
	sqlite3_finalize(q);
	return r;
}

/* ---- the held claims at start -------------------------------------------- */

int sched_resize_open(struct sched *s)
{
	sqlite3_stmt *q = NULL;
	char *msg = NULL;
	int r = 0;

	if (sqlite3_exec(s->db, resize_schema, NULL, NULL, &msg) != SQLITE_OK) {
		r = err_set(-EIO, "scheduler state: resizes: %s", msg ? msg : "?");
		sqlite3_free(msg);
		return r;
	}
	/* the flavor before is held on the host until confirm or undo */
	if (sqlite3_prepare_v2(s->db,
			       "SELECT host, cores, pcpus, ram_mb, disk_gb, numa_node, page_kb, "
			       "pages FROM resizes",
			       -1, &q, NULL) != SQLITE_OK)
		return db_fail(s, "loading resizes");
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW) {
		struct sched_host *h = sched_host_get(s, (const char *)sqlite3_column_text(q, 0));
		long cores = (long)sqlite3_column_int64(q, 1), pcpus = (long)sqlite3_column_int64(q, 2);
		struct sched_fit fit = { .node = sqlite3_column_int(q, 5),
					 .page_kb = (long)sqlite3_column_int64(q, 6),
					 .pages = (long)sqlite3_column_int64(q, 7) };

		if (!h)
			r = err_set(-ENOMEM, "out of memory");
		else
			sched_host_adjust(h, 1, cores - pcpus, pcpus, (long)sqlite3_column_int64(q, 3),
					  (long)sqlite3_column_int64(q, 4), &fit);
	}
	sqlite3_finalize(q);
	return r;
}

/* ---- instance.resize -------------------------------------------------------- */

struct resize_req {
	struct sched_flavor old_fl;
	struct sched_image img;
	bool have_old, have_img;
	struct sched_alloc alloc;   /* the instance's claim now (the old flavor) */
	struct sched_req req;       /* the new flavor on the host */
	struct sched_fit fit;
	struct quota_amounts delta; /* new - old */
	json_t *spec;               /* the stored spec with the new flavor */
};

static void resize_req_free(struct resize_req *z)
{
	if (z->have_old)
		sched_flavor_free(&z->old_fl);
	if (z->have_img)
		sched_image_free(&z->img);
	free(z->alloc.host);
	json_decref(z->spec);
}

/* Everything that can refuse, before anything changes: 0, or 1 with the
 * reason in WHY. */
static int resize_check(struct sched *s, struct sched_call *c, const struct inst_row *row,
			const struct sched_flavor *nf, struct resize_req *z, char *why,
			size_t whylen)
{
	struct sched_ctx ctx = { .cfg = s->cfg, .now_ms = c->now_ms };
	struct sched_host *h = row->host ? sched_host_find(s, row->host) : NULL;
	struct quota_amounts nq;
	char reason[512];
	int r;

	z->spec = json_loads(row->spec, 0, NULL);
	if (!z->spec || sched_flavor_from_json(json_object_get(z->spec, "flavor"), &z->old_fl) < 0)
		return snprintf(why, whylen, "instance %s: its stored spec does not parse", row->name),
		       1;
	z->have_old = true;
	if (sched_image_from_json(json_object_get(z->spec, "image"), &z->img) < 0)
		return snprintf(why, whylen, "instance %s: its stored image does not parse", row->name),
		       1;
	z->have_img = true;
	if (strcmp(nf->name, z->old_fl.name) == 0)
		return snprintf(why, whylen, "instance %s already has flavor %s", row->name, nf->name),
		       1;
	if (nf->disk_gb < z->old_fl.disk_gb || (z->old_fl.disk_gb > 0 && nf->disk_gb == 0))
		return snprintf(why, whylen, "resize %s to %s: disk %ld GB is smaller than the %ld GB "
				"of flavor %s: a disk is never shrunk", row->name, nf->name,
				nf->disk_gb, z->old_fl.disk_gb, z->old_fl.name), 1;
	/* the local disks (agent/localdisk) are made at build and rebuild only */
	if (nf->ephemeral_gb != z->old_fl.ephemeral_gb || nf->swap_mb != z->old_fl.swap_mb)
		return snprintf(why, whylen, "resize %s to %s: ephemeral %ld GB and swap %ld MB differ "
				"from flavor %s's %ld GB and %ld MB: a resize changes vCPUs, RAM and "
				"the root disk only", row->name, nf->name, nf->ephemeral_gb,
				nf->swap_mb, z->old_fl.name, z->old_fl.ephemeral_gb,
				z->old_fl.swap_mb), 1;
	if (nf->disk_gb > 0 && nf->disk_gb < z->img.min_disk_gb)
		return snprintf(why, whylen, "flavor %s: disk %ld GB is smaller than image %s min_disk "
				"%ld GB", nf->name, nf->disk_gb, z->img.name, z->img.min_disk_gb), 1;
	r = sched_alloc_get(s, row->uuid, &z->alloc);
	if (r < 0)
		return snprintf(why, whylen, "instance %s: %s", row->name, err_msg()), 1;
	if (!h)
		return snprintf(why, whylen, "instance %s: its host %s is not known", row->name,
				row->host ? row->host : "(none)"), 1;
	z->req.flavor = nf;
	z->req.image = &z->img;
	z->req.disk_gb = nf->disk_gb > z->img.min_disk_gb ? nf->disk_gb : z->img.min_disk_gb;
	z->fit = (struct sched_fit){ .node = -1 };
	/* the same host only; cross-host resize: see the comment at the top */
	if (sched_host_reject_reason(&ctx, h, &z->req, reason, sizeof(reason)))
		return snprintf(why, whylen, "resize %s to %s: its host %s cannot take the new flavor "
				"beside the old one (held until the resize is confirmed): %s",
				row->name, nf->name, h->name, reason), 1;
	if (!sched_numa_fit(h, &z->req, &z->fit))
		return snprintf(why, whylen, "resize %s to %s: its host %s cannot take the new flavor: "
				"no NUMA node fits its pCPUs and pages", row->name, nf->name,
				h->name), 1;
	if (z->fit.n_pci > 0 || z->alloc.fit.n_pci > 0)
		return snprintf(why, whylen, "resize %s to %s: instances with PCI devices cannot be "
				"resized", row->name, nf->name), 1;
	quota_amounts_for(&nq, nf->vcpus, nf->ram_mb, nf->dedicated, nf->page_kb != SCHED_PAGE_SMALL);
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
		z->delta.v[i] = i < QUOTA_INSTANCE_RESOURCES && i != QUOTA_INSTANCES
					? nq.v[i] - z->alloc.amt.v[i] : 0;
	json_object_set_new(z->spec, "flavor", sched_flavor_to_json(nf));
	return 0;
}

/* The durable part, in one transaction: quota delta, resizes row, the
 * allocation and the instance. 0, 1 refused (over quota: WHY), <0. */
static int resize_commit(struct sched *s, struct sched_call *c, const struct inst_row *row,
			 const struct sched_flavor *nf, struct resize_req *z, char *why,
			 size_t whylen)
{
	_cleanup_free_ char *text = json_dumps(z->spec, JSON_COMPACT);
	struct quota_amounts nq = z->alloc.amt;
	enum quota_resource over = QUOTA_RESOURCE_LAST;
	sqlite3_stmt *q = NULL;
	int r;

	if (!text)
		return err_set(-ENOMEM, "out of memory");
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
		nq.v[i] += z->delta.v[i];
	r = sched_tx_begin(s);
	if (r < 0)
		return r;
	r = quota_claim(s->quotas, row->project, &z->delta, &over);
	if (r == -EDQUOT) {
		snprintf(why, whylen, "resize %s to %s: %s", row->name, nf->name, err_msg());
		sched_tx_rollback(s);
		sched_metrics_quota_refused(over);
		return 1;
	}
	if (r == 0 && sqlite3_prepare_v2(s->db,
					 "INSERT OR REPLACE INTO resizes(uuid, project, host, "
					 "old_flavor, new_flavor, old_spec, cores, ram_mb, pcpus, "
					 "hugepages_mb, disk_gb, numa_node, page_kb, pages, phase, "
					 "started_ms, request_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
					 "?8, ?9, ?10, ?11, ?12, ?13, ?14, 'resizing', ?15, ?16)",
					 -1, &q, NULL) != SQLITE_OK)
		r = db_fail(s, "writing a resize");
	if (r == 0) {
		const struct sched_alloc *o = &z->alloc;

		sqlite3_bind_text(q, 1, row->uuid, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, row->project, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, row->host, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 4, z->old_fl.name, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 5, nf->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 6, row->spec, -1, SQLITE_STATIC);
		sqlite3_bind_int64(q, 7, o->amt.v[QUOTA_CORES]);
		sqlite3_bind_int64(q, 8, o->amt.v[QUOTA_RAM_MB]);
		sqlite3_bind_int64(q, 9, o->amt.v[QUOTA_PCPUS]);
		sqlite3_bind_int64(q, 10, o->amt.v[QUOTA_HUGEPAGES_MB]);
		sqlite3_bind_int64(q, 11, o->disk_gb);
		sqlite3_bind_int(q, 12, o->fit.node);
		sqlite3_bind_int64(q, 13, o->fit.page_kb);
		sqlite3_bind_int64(q, 14, o->fit.pages);
		sqlite3_bind_int64(q, 15, c->now_ms);
		sqlite3_bind_text(q, 16, c->rid, -1, SQLITE_STATIC);
		if (sqlite3_step(q) != SQLITE_DONE)
			r = db_fail(s, "writing a resize");
	}
	sqlite3_finalize(q);
	if (r == 0)
		r = alloc_set(s, row->uuid, &nq, z->req.disk_gb, &z->fit);
	if (r == 0)
		r = inst_set_flavor(s, row->uuid, "resizing", nf->name, text);
	if (r == 0)
		r = sched_accept(s, c, row->uuid,
				 json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "uuid", row->uuid, "name",
					   row->name, "state", "resizing", "host", row->host,
					   "flavor", nf->name, "old_flavor", z->old_fl.name));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	return r;
}

int sched_on_resize(struct sched *s, struct sched_call *c)
{
	const char *ref = sched_jstr(c->body, "instance"), *fname = sched_jstr(c->body, "flavor");
	struct inst_row row = { 0 };
	struct resize_req *z = NULL; /* on the heap: its fits outgrow a stack frame under ASan */
	const struct sched_flavor *nf;
	struct sched_host *h;
	char why[1024];
	int r;

	if (!c->project || !ref || !fname)
		return sched_reject(s, c, "instance.resize: project, instance and flavor are required");
	r = sched_inst_find(s, c->project, ref, &row);
	if (r == -EEXIST)
		return sched_reject(s, c, "%s", err_msg());
	if (r == -ENOENT)
		return sched_reject(s, c, "instance %s not found in project %s", ref, c->project);
	if (r < 0)
		return r;
	if (strcmp(row.state, "active") != 0 && strcmp(row.state, "stopped") != 0) {
		r = sched_reject(s, c, "instance %s is %s: resize needs it active or stopped",
				 row.name, row.state);
		goto out;
	}
	nf = sched_flavor_find(s, fname);
	if (!nf) {
		r = sched_reject(s, c, "flavor '%s' not found", fname);
		goto out;
	}
	z = calloc(1, sizeof(*z));
	if (!z) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	r = resize_check(s, c, &row, nf, z, why, sizeof(why));
	if (r == 0)
		r = resize_commit(s, c, &row, nf, z, why, sizeof(why));
	if (r == 1) {
		r = sched_reject(s, c, "%s", why);
		goto out;
	}
	if (r < 0)
		goto out;
	/* claimed before anything moves: no boot takes that room meanwhile */
	h = sched_host_find(s, row.host);
	if (h)
		sched_host_claim(h, &z->req, &z->fit);
	log_info("resize sent instance=%s host=%s flavor=%s old_flavor=%s request=%s", row.uuid,
		 row.host, nf->name, z->old_fl.name, c->rid);
	r = sched_emit_state(c->out, c->rid, row.uuid, row.project, row.host, "resizing", NULL);
	if (r == 0)
		r = sched_emit_host_cmd(c->out, row.host, "instance.resize", c->rid, row.uuid,
					json_pack("{s:s, s:o}", "uuid", row.uuid, "flavor",
						  sched_flavor_to_json(nf)));
out:
	if (z)
		resize_req_free(z);
	free(z);
	inst_row_free(&row);
	return r;
}

/* ---- confirm and revert ------------------------------------------------------ */

/* Release the old flavor's claim of Z on its host (in memory). */
static void release_old(struct sched *s, struct resize_row *z)
{
	z->old.host = z->host;
	sched_alloc_release(s, &z->old);
	z->old.host = NULL;
}

/* The instance named in C's body with a resize waiting for its answer:
 * 0 (ROW and Z filled), 1 refused (answered), <0. */
static int find_pending(struct sched *s, struct sched_call *c, const char *what,
			struct inst_row *row, struct resize_row *z)
{
	const char *ref = sched_jstr(c->body, "instance");
	int r;

	if (!c->project || !ref) {
		r = sched_reject(s, c, "instance.resize.%s: project and instance are required", what);
		return r < 0 ? r : 1;
	}
	r = sched_inst_find(s, c->project, ref, row);
	if (r == -EEXIST || r == -ENOENT) {
		r = r == -EEXIST ? sched_reject(s, c, "%s", err_msg())
				 : sched_reject(s, c, "instance %s not found in project %s", ref,
						c->project);
		return r < 0 ? r : 1;
	}
	if (r < 0)
		return r;
	r = resize_get(s, row->uuid, z);
	if (r == -ENOENT ||
	    (r == 0 && (strcmp(z->phase, "verify") != 0 || strcmp(row->state, "verify_resize") != 0))) {
		if (r == 0)
			resize_row_free(z);
		r = sched_reject(s, c, "instance %s is %s: no resize to %s (it needs verify_resize)",
				 row->name, row->state, what);
		return r < 0 ? r : 1;
	}
	return r;
}

int sched_on_resize_confirm(struct sched *s, struct sched_call *c)
{
	struct inst_row row = { 0 };
	struct resize_row z = { 0 };
	int r = find_pending(s, c, "confirm", &row, &z);

	if (r != 0)
		goto out;
	r = sched_tx_begin(s);
	if (r == 0)
		r = exec_uuid(s, "DELETE FROM resizes WHERE uuid = ?1", row.uuid, 0);
	if (r == 0)
		r = sched_accept(s, c, row.uuid,
				 json_pack("{s:s, s:s, s:s, s:s, s:s?}", "uuid", row.uuid, "name",
					   row.name, "flavor", z.new_flavor, "state", row.state, "host",
					   row.host));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r < 0)
		goto out;
	release_old(s, &z); /* the usage was the new flavor's since the resize */
	log_info("resize confirmed instance=%s flavor=%s request=%s", row.uuid, z.new_flavor,
		 c->rid);
	r = sched_emit_host_cmd(c->out, row.host, "instance.resize.confirm", c->rid, row.uuid,
				json_pack("{s:s}", "uuid", row.uuid));
out:
	resize_row_free(&z);
	inst_row_free(&row);
	return r < 0 ? r : 0;
}

int sched_on_resize_revert(struct sched *s, struct sched_call *c)
{
	struct inst_row row = { 0 };
	struct resize_row z = { 0 };
	int r = find_pending(s, c, "revert", &row, &z);

	if (r != 0)
		goto out;
	r = sched_tx_begin(s);
	if (r == 0)
		r = exec_uuid_text(s, "UPDATE resizes SET phase = 'reverting', request_id = ?2 "
				   "WHERE uuid = ?1", row.uuid, c->rid);
	if (r == 0)
		r = inst_set_flavor(s, row.uuid, "reverting", row.flavor, row.spec);
	if (r == 0)
		r = sched_accept(s, c, row.uuid,
				 json_pack("{s:s, s:s, s:s, s:s, s:s}", "uuid", row.uuid, "name",
					   row.name, "state", "reverting", "host", row.host, "flavor",
					   z.old_flavor));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r < 0)
		goto out;
	log_info("resize revert sent instance=%s flavor=%s request=%s", row.uuid, z.old_flavor,
		 c->rid);
	r = sched_emit_state(c->out, c->rid, row.uuid, row.project, row.host, "reverting", NULL);
	if (r == 0)
		r = sched_emit_host_cmd(c->out, row.host, "instance.resize.revert", c->rid, row.uuid,
					json_pack("{s:s}", "uuid", row.uuid));
out:
	resize_row_free(&z);
	inst_row_free(&row);
	return r < 0 ? r : 0;
}

/* ---- the host's answers (events.c, inside its transaction) ----------------- */

bool sched_resize_stale(struct sched *s, const char *uuid, const char *was,
			enum instance_state now, const char *rid)
{
	struct resize_row z = { 0 };
	bool stale;

	if ((strcmp(was, "resizing") != 0 && strcmp(was, "reverting") != 0) ||
	    now == INST_DELETED || now == INST_DELETING || resize_get(s, uuid, &z) < 0)
		return false;
	/* e.g. an agent restarted after a resize it rolled back answers that
	 * request again ("duplicate request") while the next one runs */
	stale = !rid || !z.request_id || strcmp(rid, z.request_id) != 0;
	if (stale)
		log_info("instance state ignored instance=%s state=%s request=%s: the host's answer "
			 "to another request than the %s one (%s)", uuid, instance_state_names[now],
			 rid ? rid : "-", was, z.request_id ? z.request_id : "-");
	resize_row_free(&z);
	return stale;
}

int sched_resize_settle(struct sched *s, const char *uuid, const char *was,
			enum instance_state now, int64_t now_ms)
{
	struct resize_row z = { 0 };
	struct sched_alloc cur = { 0 };
	struct quota_amounts delta;
	int r;

	if (strcmp(was, "resizing") != 0 && strcmp(was, "reverting") != 0 &&
	    strcmp(was, "verify_resize") != 0 && now != INST_DELETED)
		return 0; /* deleted: from deleting, whatever came before */
	r = resize_get(s, uuid, &z);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (now == INST_VERIFY_RESIZE) {
		r = exec_uuid(s, "UPDATE resizes SET phase = 'verify', verified_ms = ?2 "
			      "WHERE uuid = ?1 AND phase = 'resizing'", uuid, now_ms);
		goto out;
	}
	if (now == INST_RESIZING || now == INST_REVERTING ||
	    (strcmp(was, "verify_resize") == 0 && now != INST_DELETED && now != INST_ERROR))
		goto out; /* on its way, or a confirm's answer (no resize row then) */
	/* rolled back, failed, reverted or deleted: the flavor before again */
	r = sched_alloc_get(s, uuid, &cur);
	if (r == -ENOENT) {
		r = 0; /* deleted: its allocation went already */
	} else if (r == 0) {
		for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
			delta.v[i] = cur.amt.v[i] - z.old.amt.v[i];
		r = quota_release(s->quotas, z.project, &delta);
		if (r == 0)
			r = alloc_set(s, uuid, &z.old.amt, z.old.disk_gb, &z.old.fit);
		if (r == 0 && now != INST_DELETED)
			r = inst_set_flavor(s, uuid, NULL, z.old_flavor, z.old_spec);
		if (r == 0)
			sched_alloc_release(s, &cur); /* the new flavor's claim; the old one stays */
	}
	if (r == 0 && now == INST_DELETED)
		release_old(s, &z);
	if (r == 0)
		r = exec_uuid(s, "DELETE FROM resizes WHERE uuid = ?1", uuid, 0);
	if (r == 0)
		log_info("resize undone instance=%s flavor=%s state=%s", uuid, z.old_flavor,
			 instance_state_names[now]);
out:
	free(cur.host);
	resize_row_free(&z);
	return r;
}

/* ---- auto-confirm (scheduler.resize_confirm_window) ------------------------- */

int sched_resize_autoconfirm(struct sched *s, int64_t now_ms, struct sched_out *out)
{
	int64_t window = s->cfg->resize_confirm_window_ms;
	struct sched_strvec uuids = { 0 }, projects = { 0 };
	sqlite3_stmt *q = NULL;
	int r = 0, n = 0;

	if (window <= 0)
		return 0;
	if (sqlite3_prepare_v2(s->db,
			       "SELECT uuid, project FROM resizes WHERE phase = 'verify' AND "
			       "verified_ms <= ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return db_fail(s, "reading resizes");
	sqlite3_bind_int64(q, 1, now_ms - window);
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
		if (sched_strvec_add(&uuids, (const char *)sqlite3_column_text(q, 0)) < 0 ||
		    sched_strvec_add(&projects, (const char *)sqlite3_column_text(q, 1)) < 0)
			r = err_set(-ENOMEM, "out of memory");
	sqlite3_finalize(q);
	for (size_t i = 0; r == 0 && i < uuids.n; i++) {
		json_t *body = json_pack("{s:s, s:s}", "project", projects.v[i], "instance",
					 uuids.v[i]);
		char rid[UUID_STRLEN];

		uuid_generate_str(rid);
		log_info("resize auto-confirmed instance=%s window_ms=%lld", uuids.v[i],
			 (long long)window);
		r = body ? sched_handle(s, "instance.resize.confirm", rid, body, now_ms, out)
			 : err_set(-ENOMEM, "out of memory");
		json_decref(body);
		n++;
	}
	sched_strvec_free(&uuids);
	sched_strvec_free(&projects);
	return r < 0 ? r : n;
}

bool sched_resize_due(struct sched *s, int64_t now_ms)
{
	sqlite3_stmt *q = NULL;
	bool due = false;

	if (s->cfg->resize_confirm_window_ms <= 0 ||
	    sqlite3_prepare_v2(s->db,
			       "SELECT 1 FROM resizes WHERE phase = 'verify' AND verified_ms <= ?1 "
			       "LIMIT 1",
			       -1, &q, NULL) != SQLITE_OK)
		return false;
	sqlite3_bind_int64(q, 1, now_ms - s->cfg->resize_confirm_window_ms);
	due = sqlite3_step(q) == SQLITE_ROW;
	sqlite3_finalize(q);
	return due;
}
