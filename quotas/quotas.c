/*
 * quotas: limits, usage and the check-and-claim. See quotas/quotas.h and
 * docs/quotas.md.
 *
 * Usage is kept as one row per project, updated in the caller's write
 * transaction together with the allocation rows it stands for: a claim is
 * one read of two rows and one upsert, whatever the project's size.
 */
#define LOG_TAG "quotas"
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "quotas/quotas.h"

const char *const quota_resource_names[] = {
	[QUOTA_INSTANCES] = "instances",
	[QUOTA_CORES] = "cores",
	[QUOTA_RAM_MB] = "ram_mb",
	[QUOTA_PCPUS] = "pcpus",
	[QUOTA_HUGEPAGES_MB] = "hugepages_mb",
	[QUOTA_VOLUMES] = "volumes",
	[QUOTA_GIGABYTES] = "gigabytes",
	[QUOTA_RESOURCE_LAST] = NULL,
};

int quota_resource_parse(const char *name, enum quota_resource *out)
{
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++) {
		if (name && strcmp(name, quota_resource_names[i]) == 0) {
			*out = (enum quota_resource)i;
			return 0;
		}
	}
	return err_set(-EINVAL, "unknown quota resource '%s' (expected instances, cores, ram_mb, "
		       "pcpus, hugepages_mb, volumes or gigabytes)", name ? name : "");
}

#define QF(name, idx, d)                                                                   \
	{ .key = (name), .type = CFG_INT,                                                  \
	  .offset = offsetof(struct quota_amounts, v) + (idx) * sizeof(long), .min = -1,     \
	  .max = 1L << 40, .def = (d) }

/* Nova's defaults for instances, cores and RAM; dedicated pCPUs and huge
 * pages get limits of the same order. -1 = unlimited. */
const struct cfg_field quota_default_fields[] = {
	QF("instances", QUOTA_INSTANCES, "10"),
	QF("cores", QUOTA_CORES, "20"),
	QF("ram_mb", QUOTA_RAM_MB, "51200"),
	QF("pcpus", QUOTA_PCPUS, "20"),
	QF("hugepages_mb", QUOTA_HUGEPAGES_MB, "51200"),
	QF("volumes", QUOTA_VOLUMES, "10"),      /* Cinder's defaults */
	QF("gigabytes", QUOTA_GIGABYTES, "1000"),
	{ 0 },
};

enum {
	ST_LIMITS_GET,
	ST_USAGE_GET,
	ST_USAGE_ADD,
	ST_VUSAGE_ADD,
	ST_VALLOC_PUT,
	ST_VALLOC_GET,
	ST_VALLOC_DEL,
	ST_LAST
};

static const char *const stmt_sql[ST_LAST] = {
	/* one row always (NULL: no value); columns in enum quota_resource order */
	[ST_LIMITS_GET] = "SELECT l.instances, l.cores, l.ram_mb, l.pcpus, l.hugepages_mb, "
			  "v.volumes, v.gigabytes FROM (SELECT ?1 AS p) "
			  "LEFT JOIN quota_limits l ON l.project = p "
			  "LEFT JOIN quota_volume_limits v ON v.project = p",
	[ST_USAGE_GET] = "SELECT u.instances, u.cores, u.ram_mb, u.pcpus, u.hugepages_mb, "
			 "v.volumes, v.gigabytes FROM (SELECT ?1 AS p) "
			 "LEFT JOIN quota_usage u ON u.project = p "
			 "LEFT JOIN quota_volume_usage v ON v.project = p",
	[ST_USAGE_ADD] = "INSERT INTO quota_usage(project, instances, cores, ram_mb, pcpus, "
			 "hugepages_mb) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
			 "ON CONFLICT(project) DO UPDATE SET "
			 "instances = instances + excluded.instances, "
			 "cores = cores + excluded.cores, ram_mb = ram_mb + excluded.ram_mb, "
			 "pcpus = pcpus + excluded.pcpus, "
			 "hugepages_mb = hugepages_mb + excluded.hugepages_mb",
	[ST_VUSAGE_ADD] = "INSERT INTO quota_volume_usage(project, volumes, gigabytes) "
			  "VALUES (?1, ?2, ?3) ON CONFLICT(project) DO UPDATE SET "
			  "volumes = volumes + excluded.volumes, "
			  "gigabytes = gigabytes + excluded.gigabytes",
	[ST_VALLOC_PUT] = "INSERT INTO volume_allocations(uuid, project, gigabytes) "
			  "VALUES (?1, ?2, ?3)",
	[ST_VALLOC_GET] = "SELECT project, gigabytes FROM volume_allocations WHERE uuid = ?1",
	[ST_VALLOC_DEL] = "DELETE FROM volume_allocations WHERE uuid = ?1",
};

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS quota_limits ("
	" project TEXT PRIMARY KEY, instances INTEGER, cores INTEGER, ram_mb INTEGER,"
	" pcpus INTEGER, hugepages_mb INTEGER) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS quota_usage ("
	" project TEXT PRIMARY KEY, instances INTEGER NOT NULL DEFAULT 0,"
	" cores INTEGER NOT NULL DEFAULT 0, ram_mb INTEGER NOT NULL DEFAULT 0,"
	" pcpus INTEGER NOT NULL DEFAULT 0, hugepages_mb INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS allocations ("
	" uuid TEXT PRIMARY KEY, project TEXT NOT NULL, host TEXT,"
	" instances INTEGER NOT NULL, cores INTEGER NOT NULL, ram_mb INTEGER NOT NULL,"
	" pcpus INTEGER NOT NULL, hugepages_mb INTEGER NOT NULL,"
	" disk_gb INTEGER NOT NULL DEFAULT 0, numa_node INTEGER NOT NULL DEFAULT -1,"
	" page_kb INTEGER NOT NULL DEFAULT 0, pages INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS quota_volume_limits ("
	" project TEXT PRIMARY KEY, volumes INTEGER, gigabytes INTEGER) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS quota_volume_usage ("
	" project TEXT PRIMARY KEY, volumes INTEGER NOT NULL DEFAULT 0,"
	" gigabytes INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS volume_allocations ("
	" uuid TEXT PRIMARY KEY, project TEXT NOT NULL, gigabytes INTEGER NOT NULL) WITHOUT ROWID;";

/* The table holding resource I's limit column. */
static const char *limits_table(int i)
{
	return i >= QUOTA_VOLUMES ? "quota_volume_limits" : "quota_limits";
}

struct quota_store {
	sqlite3 *db;
	struct quota_amounts defaults;
	sqlite3_stmt *st[ST_LAST];
};

static int db_error(sqlite3 *db, const char *what)
{
	return err_set(-EIO, "quotas: %s: %s", what, sqlite3_errmsg(db));
}

void quota_store_free(struct quota_store *q)
{
	if (!q)
		return;
	for (int i = 0; i < ST_LAST; i++)
		sqlite3_finalize(q->st[i]);
	free(q);
}

int quota_store_open(sqlite3 *db, const struct quota_amounts *defaults, struct quota_store **out)
{
	struct quota_store *q;
	char *emsg = NULL;

	if (sqlite3_exec(db, schema_sql, NULL, NULL, &emsg) != SQLITE_OK) {
		int r = err_set(-EIO, "quotas: creating tables: %s", emsg ? emsg : "?");

		sqlite3_free(emsg);
		return r;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return err_set(-ENOMEM, "out of memory");
	q->db = db;
	q->defaults = *defaults;
	for (int i = 0; i < ST_LAST; i++) {
		if (sqlite3_prepare_v3(db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &q->st[i],
				       NULL) != SQLITE_OK) {
			int r = db_error(db, "preparing statements");

			quota_store_free(q);
			return r;
		}
	}
	*out = q;
	return 0;
}

/* Read one row of the amounts for PROJECT; NULL = the default (limits) or 0. */
static int read_row(struct quota_store *q, int st, const char *project, struct quota_amounts *a,
		    bool null_is_default)
{
	sqlite3_stmt *s = q->st[st];
	int rc, r = 0;

	sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		for (int i = 0; i < QUOTA_RESOURCE_LAST; i++) {
			if (sqlite3_column_type(s, i) == SQLITE_NULL)
				a->v[i] = null_is_default ? q->defaults.v[i] : 0;
			else
				a->v[i] = (long)sqlite3_column_int64(s, i);
		}
	} else if (rc == SQLITE_DONE) {
		for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
			a->v[i] = null_is_default ? q->defaults.v[i] : 0;
	} else {
		r = db_error(q->db, "reading quota rows");
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

int quota_limits_get(struct quota_store *q, const char *project, struct quota_amounts *out)
{
	struct quota_amounts a;
	int r = read_row(q, ST_LIMITS_GET, project, &a, true);

	if (r == 0)
		*out = a;
	return r;
}

int quota_usage_get(struct quota_store *q, const char *project, struct quota_amounts *out)
{
	struct quota_amounts a;
	int r = read_row(q, ST_USAGE_GET, project, &a, false);

	if (r == 0)
		*out = a;
	return r;
}

int quota_limits_set(struct quota_store *q, const char *project, const struct quota_amounts *set)
{
	sqlite3_stmt *s = NULL;
	int r = 0;

	for (int t = 0; r == 0 && t < 2; t++) {
		if (sqlite3_prepare_v2(q->db, t ? "INSERT OR IGNORE INTO quota_volume_limits(project) "
						  "VALUES (?1)"
						: "INSERT OR IGNORE INTO quota_limits(project) VALUES (?1)",
				       -1, &s, NULL) != SQLITE_OK)
			return db_error(q->db, "setting limits");
		sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
		if (sqlite3_step(s) != SQLITE_DONE)
			r = db_error(q->db, "setting limits");
		sqlite3_finalize(s);
	}
	for (int i = 0; r == 0 && i < QUOTA_RESOURCE_LAST; i++) {
		_cleanup_free_ char *sql = NULL;

		if (set->v[i] < QUOTA_UNLIMITED)
			continue;
		/* the column name comes from our own table, never from input */
		if (asprintf(&sql, "UPDATE %s SET %s = ?2 WHERE project = ?1", limits_table(i),
			     quota_resource_names[i]) < 0)
			return err_set(-ENOMEM, "out of memory");
		if (sqlite3_prepare_v2(q->db, sql, -1, &s, NULL) != SQLITE_OK)
			return db_error(q->db, "setting limits");
		sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, set->v[i]);
		if (sqlite3_step(s) != SQLITE_DONE)
			r = db_error(q->db, "setting limits");
		sqlite3_finalize(s);
	}
	return r;
}

static int usage_add(struct quota_store *q, const char *project, const struct quota_amounts *a,
		     long sign)
{
	sqlite3_stmt *s = q->st[ST_USAGE_ADD];
	int r = 0;

	sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
	for (int i = 0; i < QUOTA_VOLUMES; i++)
		sqlite3_bind_int64(s, 2 + i, sign * a->v[i]);
	if (sqlite3_step(s) != SQLITE_DONE)
		r = db_error(q->db, "updating usage");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (r < 0 || (a->v[QUOTA_VOLUMES] == 0 && a->v[QUOTA_GIGABYTES] == 0))
		return r;
	s = q->st[ST_VUSAGE_ADD];
	sqlite3_bind_text(s, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, sign * a->v[QUOTA_VOLUMES]);
	sqlite3_bind_int64(s, 3, sign * a->v[QUOTA_GIGABYTES]);
	if (sqlite3_step(s) != SQLITE_DONE)
		r = db_error(q->db, "updating volume usage");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

int quota_claim(struct quota_store *q, const char *project, const struct quota_amounts *req,
		enum quota_resource *over)
{
	struct quota_amounts lim, used;
	int r;

	r = quota_limits_get(q, project, &lim);
	if (r < 0)
		return r;
	r = quota_usage_get(q, project, &used);
	if (r < 0)
		return r;
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++) {
		if (req->v[i] <= 0 || lim.v[i] == QUOTA_UNLIMITED)
			continue;
		if (used.v[i] + req->v[i] > lim.v[i]) {
			if (over)
				*over = (enum quota_resource)i;
			return err_set(-EDQUOT,
				       "quota exceeded for project %s: %s: requested %ld, used %ld, "
				       "limit %ld",
				       project, quota_resource_names[i], req->v[i], used.v[i],
				       lim.v[i]);
		}
	}
	return usage_add(q, project, req, 1);
}

int quota_release(struct quota_store *q, const char *project, const struct quota_amounts *amt)
{
	return usage_add(q, project, amt, -1);
}

int quota_usage_rebuild(struct quota_store *q)
{
	static const char sql[] =
		"BEGIN IMMEDIATE;"
		"DELETE FROM quota_usage;"
		"INSERT INTO quota_usage(project, instances, cores, ram_mb, pcpus, hugepages_mb) "
		"SELECT project, SUM(instances), SUM(cores), SUM(ram_mb), SUM(pcpus), "
		"SUM(hugepages_mb) FROM allocations GROUP BY project;"
		"DELETE FROM quota_volume_usage;"
		"INSERT INTO quota_volume_usage(project, volumes, gigabytes) "
		"SELECT project, COUNT(*), SUM(gigabytes) FROM volume_allocations GROUP BY project;"
		"COMMIT;";
	char *emsg = NULL;

	if (sqlite3_exec(q->db, sql, NULL, NULL, &emsg) != SQLITE_OK) {
		int r = err_set(-EIO, "quotas: rebuilding usage: %s", emsg ? emsg : "?");

		sqlite3_free(emsg);
		sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
		return r;
	}
	return 0;
}

/* Run statement ST with uuid (and project, gb when PROJECT) bound; 0 / <0. */
static int valloc_step(struct quota_store *q, int st, const char *uuid, const char *project,
		       long gb)
{
	sqlite3_stmt *s = q->st[st];
	int r = 0;

	sqlite3_bind_text(s, 1, uuid, -1, SQLITE_STATIC);
	if (project) {
		sqlite3_bind_text(s, 2, project, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, gb);
	}
	if (sqlite3_step(s) != SQLITE_DONE)
		r = db_error(q->db, "writing a volume allocation");
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

int quota_volume_claim(struct quota_store *q, const char *project, const char *uuid, long gb,
		       enum quota_resource *over)
{
	struct quota_amounts req = { { 0 } };
	int r;

	req.v[QUOTA_VOLUMES] = 1;
	req.v[QUOTA_GIGABYTES] = gb;
	r = quota_claim(q, project, &req, over);
	if (r == 0)
		r = valloc_step(q, ST_VALLOC_PUT, uuid, project, gb);
	return r;
}

int quota_volume_release(struct quota_store *q, const char *uuid)
{
	struct quota_amounts amt = { { 0 } };
	sqlite3_stmt *s = q->st[ST_VALLOC_GET];
	char *project = NULL;
	int rc, r = 0;

	sqlite3_bind_text(s, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		project = strdup((const char *)sqlite3_column_text(s, 0));
		amt.v[QUOTA_VOLUMES] = 1;
		amt.v[QUOTA_GIGABYTES] = (long)sqlite3_column_int64(s, 1);
		if (!project)
			r = err_set(-ENOMEM, "out of memory");
	} else if (rc != SQLITE_DONE) {
		r = db_error(q->db, "reading a volume allocation");
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (r == 0 && project)
		r = valloc_step(q, ST_VALLOC_DEL, uuid, NULL, 0);
	if (r == 0 && project)
		r = usage_add(q, project, &amt, -1);
	free(project);
	return r;
}

void quota_amounts_for(struct quota_amounts *out, long vcpus, long ram_mb, bool dedicated,
		       bool hugepages)
{
	out->v[QUOTA_INSTANCES] = 1;
	out->v[QUOTA_CORES] = vcpus;
	out->v[QUOTA_RAM_MB] = ram_mb;
	out->v[QUOTA_PCPUS] = dedicated ? vcpus : 0;
	out->v[QUOTA_HUGEPAGES_MB] = hugepages ? ram_mb : 0;
	out->v[QUOTA_VOLUMES] = 0;
	out->v[QUOTA_GIGABYTES] = 0;
}
