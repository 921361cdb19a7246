/*
 * The scheduler's state: the SQLite database (the durable record) and the
 * in-memory hosts and catalogs that decisions read.
 *
 * Tables (besides the quota tables of quotas/):
 *   hosts(name PK, report, last_report_ms)       last report of each host
 *   instances(uuid PK, project, name, state, host, flavor, image,
 *             server_group, request_id, spec, alternates, faults,
 *             attempts, reason, created, updated)
 *   requests(request_id PK, type, result, ts)    outcome of each request
 *   flavors(name PK, def, removed), images(name PK, def, removed)
 *   server_groups(project, name, policy)
 *   credentials(id PK, project, role, sign_key, result_key, created, revoked)
 *   api_seen(envelope_id PK, origin, ts_ms)     the replay window (auth.c)
 *   migrations(uuid PK, migration, project, source, dest, phase, numa_node,
 *              page_kb, pages, started_ms, request_id, cold, stopped)  moving
 *              (migrate.c)
 *   instance_ports(uuid PK, mac, address)       addresses hosts gave
 *   host_maint(name PK, disabled, reason, updated_ms, draining),
 *   drain_skip(host, uuid, ts_ms)               host maintenance (maint.c)
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/crypto.h"
#include "scheduler/sched_priv.h"

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS hosts ("
	" name TEXT PRIMARY KEY, report TEXT NOT NULL, last_report_ms INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS instances ("
	" uuid TEXT PRIMARY KEY, project TEXT NOT NULL, name TEXT NOT NULL,"
	" state TEXT NOT NULL, host TEXT, flavor TEXT NOT NULL, image TEXT NOT NULL,"
	" server_group TEXT, request_id TEXT NOT NULL, spec TEXT NOT NULL,"
	" alternates TEXT NOT NULL DEFAULT '[]', faults TEXT NOT NULL DEFAULT '{}',"
	" attempts INTEGER NOT NULL DEFAULT 1, reason TEXT,"
	" created TEXT NOT NULL, updated TEXT NOT NULL, az TEXT);"
	"CREATE INDEX IF NOT EXISTS instances_name ON instances(project, name);"
	"CREATE INDEX IF NOT EXISTS instances_group ON instances(project, server_group)"
	" WHERE server_group IS NOT NULL;"
	"CREATE TABLE IF NOT EXISTS requests ("
	" request_id TEXT PRIMARY KEY, type TEXT NOT NULL, result TEXT NOT NULL, ts TEXT NOT NULL)"
	" WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS flavors ("
	" name TEXT PRIMARY KEY, def TEXT NOT NULL, removed INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS images ("
	" name TEXT PRIMARY KEY, def TEXT NOT NULL, removed INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS server_groups ("
	" project TEXT NOT NULL, name TEXT NOT NULL, policy TEXT NOT NULL,"
	" PRIMARY KEY(project, name));"
	/* auth.c: keys derived from each secret (never the secret) */
	"CREATE TABLE IF NOT EXISTS credentials ("
	" id TEXT PRIMARY KEY, project TEXT NOT NULL, role TEXT NOT NULL,"
	" sign_key TEXT NOT NULL, result_key TEXT NOT NULL, created TEXT NOT NULL, revoked TEXT)"
	" WITHOUT ROWID;"
	/* auth.c: envelope ids of signed requests within the window */
	"CREATE TABLE IF NOT EXISTS api_seen ("
	" envelope_id TEXT PRIMARY KEY, origin TEXT, ts_ms INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS api_seen_ts ON api_seen(ts_ms);"
	/* migrate.c (issue 15): instances moving, and the addresses hosts gave */
	"CREATE TABLE IF NOT EXISTS migrations ("
	" uuid TEXT PRIMARY KEY, migration TEXT NOT NULL, project TEXT NOT NULL,"
	" source TEXT NOT NULL, dest TEXT NOT NULL, phase TEXT NOT NULL,"
	" numa_node INTEGER NOT NULL, page_kb INTEGER NOT NULL, pages INTEGER NOT NULL,"
	" started_ms INTEGER NOT NULL, request_id TEXT, cold INTEGER NOT NULL DEFAULT 0,"
	" stopped INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS instance_ports ("
	" uuid TEXT PRIMARY KEY, mac TEXT NOT NULL, address TEXT NOT NULL);"
	/* maint.c: hosts an operator disabled */
	"CREATE TABLE IF NOT EXISTS host_maint ("
	" name TEXT PRIMARY KEY, disabled INTEGER NOT NULL, reason TEXT, updated_ms INTEGER,"
	" draining INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS drain_skip ("
	" host TEXT NOT NULL, uuid TEXT NOT NULL, ts_ms INTEGER, PRIMARY KEY(host, uuid));";

#define INST_COLS "uuid, project, name, state, host, flavor, image, server_group, request_id, " \
		  "spec, alternates, faults, attempts, reason, created, updated, az"

static const char *const stmt_sql[SST_LAST] = {
	[SST_BEGIN] = "BEGIN IMMEDIATE",
	[SST_COMMIT] = "COMMIT",
	[SST_ROLLBACK] = "ROLLBACK",
	[SST_REQ_GET] = "SELECT result FROM requests WHERE request_id = ?1",
	[SST_REQ_PUT] = "INSERT OR IGNORE INTO requests(request_id, type, result, ts) "
			"VALUES (?1, ?2, ?3, ?4)",
	[SST_INST_INSERT] = "INSERT INTO instances(" INST_COLS ") VALUES "
			    "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
	/* two index searches (an OR would scan the project's instances) */
	[SST_INST_FIND] = "SELECT uuid, created FROM instances WHERE project = ?1 AND name = ?2 "
			  "AND state != 'deleted' UNION SELECT uuid, created FROM instances "
			  "WHERE uuid = ?2 AND project = ?1 AND state != 'deleted' ORDER BY 2 LIMIT 2",
	[SST_INST_GET] = "SELECT " INST_COLS " FROM instances WHERE uuid = ?1",
	[SST_INST_UPDATE] = "UPDATE instances SET state = ?2, host = ?3, faults = ?4, "
			    "attempts = ?5, reason = ?6, updated = ?7 WHERE uuid = ?1",
	[SST_ALLOC_INSERT] = "INSERT INTO allocations(uuid, project, host, instances, cores, "
			     "ram_mb, pcpus, hugepages_mb, disk_gb, numa_node, page_kb, pages) "
			     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
	[SST_ALLOC_GET] = "SELECT project, host, instances, cores, ram_mb, pcpus, hugepages_mb, "
			  "disk_gb, numa_node, page_kb, pages FROM allocations WHERE uuid = ?1",
	[SST_ALLOC_MOVE] = "UPDATE allocations SET host = ?2, numa_node = ?3, page_kb = ?4, "
			   "pages = ?5 WHERE uuid = ?1",
	[SST_ALLOC_DEL] = "DELETE FROM allocations WHERE uuid = ?1",
	[SST_HOST_PUT] = "INSERT INTO hosts(name, report, last_report_ms) VALUES (?1, ?2, ?3) "
			 "ON CONFLICT(name) DO UPDATE SET report = excluded.report, "
			 "last_report_ms = excluded.last_report_ms",
	[SST_GROUP_HOSTS] = "SELECT DISTINCT a.host FROM instances i JOIN allocations a "
			    "ON a.uuid = i.uuid WHERE i.project = ?1 AND i.server_group = ?2 "
			    "AND a.host IS NOT NULL",
	[SST_SAVEPOINT] = "SAVEPOINT request",
	[SST_RELEASE] = "RELEASE request",
	[SST_ROLLBACK_TO] = "ROLLBACK TO request",
};

/* ---- database helpers -------------------------------------------------- */

static int db_err(struct sched *s, const char *what)
{
	return err_set(-EIO, "scheduler state %s: %s: %s", s->cfg->state_path, what,
		       sqlite3_errmsg(s->db));
}

int sched_db_add_column(struct sched *s, const char *table, const char *column,
			const char *decl)
{
	_cleanup_free_ char *alter = NULL;
	sqlite3_stmt *q = NULL;
	bool have = false;

	/* the names are ours (constants), never a user's */
	if (sqlite3_prepare_v2(s->db, "SELECT name FROM pragma_table_info(?1)", -1, &q, NULL) !=
	    SQLITE_OK)
		return err_set(-EIO, "scheduler state %s: reading table %s: %s", s->cfg->state_path,
			       table, sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
	while (sqlite3_step(q) == SQLITE_ROW)
		have |= strcmp((const char *)sqlite3_column_text(q, 0), column) == 0;
	sqlite3_finalize(q);
	if (have)
		return 0;
	if (asprintf(&alter, "ALTER TABLE %s ADD COLUMN %s %s", table, column, decl) < 0) {
		alter = NULL;
		return err_set(-ENOMEM, "out of memory");
	}
	if (sqlite3_exec(s->db, alter, NULL, NULL, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state %s: adding %s.%s: %s", s->cfg->state_path,
			       table, column, sqlite3_errmsg(s->db));
	log_info("scheduler state upgraded: %s.%s added", table, column);
	return 0;
}

int sched_db_step_done(struct sched *s, enum sched_stmt st, const char *what)
{
	sqlite3_stmt *q = s->st[st];
	int rc = sqlite3_step(q), r = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = db_err(s, what);
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return r;
}

/*
 * One request's transaction: BEGIN IMMEDIATE ... COMMIT, or inside a batch
 * (group commit) a savepoint of the batch's transaction, so that a request
 * that fails rolls back alone and the batch commits once.
 */
int sched_tx_begin(struct sched *s)
{
	int r;

	if (!s->in_batch)
		return sched_db_step_done(s, SST_BEGIN, "begin");
	r = sched_db_step_done(s, SST_SAVEPOINT, "savepoint");
	s->sp_open = r == 0;
	return r;
}

int sched_tx_commit(struct sched *s)
{
	int r;

	if (s->in_batch) {
		r = sched_db_step_done(s, SST_RELEASE, "release");
		if (r < 0)
			sched_tx_rollback(s);
		s->sp_open = false;
		return r;
	}
	r = sched_db_step_done(s, SST_COMMIT, "commit");
	if (r < 0)
		sched_tx_rollback(s);
	return r;
}

void sched_tx_rollback(struct sched *s)
{
	if (s->in_batch) {
		if (s->sp_open) {
			sched_db_step_done(s, SST_ROLLBACK_TO, "rollback");
			sched_db_step_done(s, SST_RELEASE, "release");
		}
		s->sp_open = false;
		return;
	}
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

int sched_batch_begin(struct sched *s)
{
	int r;

	if (s->in_batch)
		return 0;
	r = sched_db_step_done(s, SST_BEGIN, "begin");
	s->in_batch = r == 0;
	return r;
}

int sched_batch_commit(struct sched *s)
{
	int r;

	if (!s->in_batch)
		return 0;
	s->in_batch = false;
	s->sp_open = false;
	r = sched_db_step_done(s, SST_COMMIT, "commit");
	if (r < 0 && !sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return r;
}

bool sched_in_batch(const struct sched *s)
{
	return s->in_batch;
}

static char *col_dup(sqlite3_stmt *q, int i)
{
	const unsigned char *t = sqlite3_column_text(q, i);

	return t ? strdup((const char *)t) : NULL;
}

void inst_row_free(struct inst_row *r)
{
	if (!r)
		return;
	free(r->project);
	free(r->name);
	free(r->state);
	free(r->host);
	free(r->flavor);
	free(r->image);
	free(r->server_group);
	free(r->request_id);
	free(r->spec);
	free(r->alternates);
	free(r->faults);
	free(r->reason);
	free(r->created);
	free(r->updated);
	free(r->az);
	memset(r, 0, sizeof(*r));
}

int sched_inst_get(struct sched *s, const char *uuid, struct inst_row *out)
{
	sqlite3_stmt *q = s->st[SST_INST_GET];
	struct inst_row r = { 0 };
	int rc, ret;

	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const char *u = (const char *)sqlite3_column_text(q, 0);

		snprintf(r.uuid, sizeof(r.uuid), "%s", u ? u : "");
		char **cols[] = { NULL,	      &r.project,    &r.name,	    &r.state,
				  &r.host,    &r.flavor,     &r.image,	    &r.server_group,
				  &r.request_id, &r.spec,    &r.alternates, &r.faults };

		for (int i = 1; i < (int)ARRAY_SIZE(cols); i++)
			*cols[i] = col_dup(q, i);
		r.attempts = (long)sqlite3_column_int64(q, 12);
		r.reason = col_dup(q, 13);
		r.created = col_dup(q, 14);
		r.updated = col_dup(q, 15);
		r.az = col_dup(q, 16);
		if (!r.project || !r.name || !r.state || !r.spec) {
			inst_row_free(&r);
			ret = err_set(-ENOMEM, "out of memory");
		} else {
			*out = r;
			ret = 0;
		}
	} else if (rc == SQLITE_DONE) {
		ret = err_set(-ENOENT, "instance %s not found", uuid);
	} else {
		ret = db_err(s, "reading an instance");
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return ret;
}

int sched_inst_find(struct sched *s, const char *project, const char *ref, struct inst_row *out)
{
	sqlite3_stmt *q = s->st[SST_INST_FIND];
	char uuid[UUID_STRLEN] = "";
	int rc, n = 0, ret = 0;

	sqlite3_bind_text(q, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, ref, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (n++ == 0)
			snprintf(uuid, sizeof(uuid), "%s", (const char *)sqlite3_column_text(q, 0));
	}
	if (rc != SQLITE_DONE)
		ret = db_err(s, "finding an instance");
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	if (ret < 0)
		return ret;
	if (n == 0)
		return err_set(-ENOENT, "instance %s not found in project %s", ref, project);
	if (n > 1)
		return err_set(-EEXIST, "instance name %s is ambiguous in project %s: use its uuid",
			       ref, project);
	return sched_inst_get(s, uuid, out);
}

int sched_inst_update(struct sched *s, const struct inst_row *r)
{
	sqlite3_stmt *q = s->st[SST_INST_UPDATE];
	char ts[RFC3339_STRLEN];

	time_rfc3339_now(ts);
	sqlite3_bind_text(q, 1, r->uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, r->state, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, r->host, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, r->faults ? r->faults : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 5, r->attempts);
	sqlite3_bind_text(q, 6, r->reason, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 7, ts, -1, SQLITE_TRANSIENT);
	return sched_db_step_done(s, SST_INST_UPDATE, "updating an instance");
}

/* ---- hosts ------------------------------------------------------------- */

static size_t name_hash(const char *s)
{
	size_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static int ht_grow(struct sched *s)
{
	size_t cap = s->ht_cap ? s->ht_cap * 2 : 64;
	size_t *ht = calloc(cap, sizeof(*ht));

	if (!ht)
		return -ENOMEM;
	for (size_t i = 0; i < s->n_hosts; i++) {
		size_t p = name_hash(s->hosts[i]->name) & (cap - 1);

		while (ht[p])
			p = (p + 1) & (cap - 1);
		ht[p] = i + 1;
	}
	free(s->ht);
	s->ht = ht;
	s->ht_cap = cap;
	return 0;
}

struct sched_host *sched_host_find(struct sched *s, const char *name)
{
	if (!s->ht_cap || !name)
		return NULL;
	for (size_t p = name_hash(name) & (s->ht_cap - 1); s->ht[p]; p = (p + 1) & (s->ht_cap - 1)) {
		struct sched_host *h = s->hosts[s->ht[p] - 1];

		if (strcmp(h->name, name) == 0)
			return h;
	}
	return NULL;
}

struct sched_host *sched_host_get(struct sched *s, const char *name)
{
	struct sched_host *h = sched_host_find(s, name);
	size_t p;

	if (h)
		return h;
	if ((s->n_hosts + 1) * 2 > s->ht_cap && ht_grow(s) < 0)
		return NULL;
	if (s->n_hosts == s->cap_hosts) {
		size_t cap = s->cap_hosts ? s->cap_hosts * 2 : 16;
		struct sched_host **v = realloc(s->hosts, cap * sizeof(*v));

		if (!v)
			return NULL;
		s->hosts = v;
		s->cap_hosts = cap;
	}
	h = calloc(1, sizeof(*h));
	if (!h || !(h->name = strdup(name))) {
		free(h);
		return NULL;
	}
	h->vcpu_ratio = s->cfg->cpu_allocation_ratio;
	h->ram_ratio = s->cfg->ram_allocation_ratio;
	h->ram_reserved = s->cfg->reserved_host_memory_mb;
	h->vol_gb = sched_volumes_gb_on(s, name);
	s->hosts[s->n_hosts++] = h;
	p = name_hash(name) & (s->ht_cap - 1);
	while (s->ht[p])
		p = (p + 1) & (s->ht_cap - 1);
	s->ht[p] = s->n_hosts;
	return h;
}

static void host_free(struct sched_host *h)
{
	if (!h)
		return;
	free(h->name);
	free(h->az);
	free(h->pci);
	free(h);
}

/* ---- catalogs ---------------------------------------------------------- */

const struct sched_flavor *sched_flavor_find(const struct sched *s, const char *name)
{
	for (size_t i = 0; name && i < s->n_flavors; i++)
		if (strcmp(s->flavors[i].name, name) == 0)
			return &s->flavors[i];
	return NULL;
}

const struct sched_image *sched_image_find(const struct sched *s, const char *name)
{
	for (size_t i = 0; name && i < s->n_images; i++)
		if (strcmp(s->images[i].name, name) == 0)
			return &s->images[i];
	return NULL;
}

static int catalog_store(struct sched *s, bool flavor, const char *name, json_t *def,
			 bool only_if_not_removed)
{
	_cleanup_free_ char *text = json_dumps(def, JSON_COMPACT | JSON_SORT_KEYS);
	const char *sql = flavor
		? (only_if_not_removed
			   ? "INSERT INTO flavors(name, def) VALUES (?1, ?2) ON CONFLICT(name) DO "
			     "UPDATE SET def = excluded.def WHERE removed = 0"
			   : "INSERT INTO flavors(name, def) VALUES (?1, ?2) ON CONFLICT(name) DO "
			     "UPDATE SET def = excluded.def, removed = 0")
		: (only_if_not_removed
			   ? "INSERT INTO images(name, def) VALUES (?1, ?2) ON CONFLICT(name) DO "
			     "UPDATE SET def = excluded.def WHERE removed = 0"
			   : "INSERT INTO images(name, def) VALUES (?1, ?2) ON CONFLICT(name) DO "
			     "UPDATE SET def = excluded.def, removed = 0");
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (!text)
		return err_set(-ENOMEM, "out of memory");
	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return db_err(s, "storing the catalog");
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, text, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = db_err(s, "storing the catalog");
	sqlite3_finalize(q);
	return r;
}

static int mem_add_flavor(struct sched *s, struct sched_flavor *f)
{
	struct sched_flavor *v;

	for (size_t i = 0; i < s->n_flavors; i++) {
		if (strcmp(s->flavors[i].name, f->name) == 0) {
			sched_flavor_free(&s->flavors[i]);
			s->flavors[i] = *f;
			return 0;
		}
	}
	v = realloc(s->flavors, (s->n_flavors + 1) * sizeof(*v));
	if (!v)
		return err_set(-ENOMEM, "out of memory");
	s->flavors = v;
	s->flavors[s->n_flavors++] = *f;
	return 0;
}

static int mem_add_image(struct sched *s, struct sched_image *im)
{
	struct sched_image *v;

	for (size_t i = 0; i < s->n_images; i++) {
		if (strcmp(s->images[i].name, im->name) == 0) {
			sched_image_free(&s->images[i]);
			s->images[i] = *im;
			return 0;
		}
	}
	v = realloc(s->images, (s->n_images + 1) * sizeof(*v));
	if (!v)
		return err_set(-ENOMEM, "out of memory");
	s->images = v;
	s->images[s->n_images++] = *im;
	return 0;
}

int sched_catalog_add_flavor(struct sched *s, struct sched_flavor *f)
{
	json_t *def = sched_flavor_to_json(f);
	int r;

	r = def ? catalog_store(s, true, f->name, def, false) : err_set(-ENOMEM, "out of memory");
	json_decref(def);
	if (r == 0)
		r = mem_add_flavor(s, f);
	if (r < 0)
		sched_flavor_free(f);
	return r;
}

int sched_catalog_add_image(struct sched *s, struct sched_image *i)
{
	json_t *def = sched_image_to_json(i);
	int r;

	r = def ? catalog_store(s, false, i->name, def, false) : err_set(-ENOMEM, "out of memory");
	json_decref(def);
	if (r == 0)
		r = mem_add_image(s, i);
	if (r < 0)
		sched_image_free(i);
	return r;
}

int sched_catalog_remove(struct sched *s, bool flavor, const char *name)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (flavor ? !sched_flavor_find(s, name) : !sched_image_find(s, name))
		return -ENOENT;
	if (sqlite3_prepare_v2(s->db,
			       flavor ? "UPDATE flavors SET removed = 1 WHERE name = ?1"
				      : "UPDATE images SET removed = 1 WHERE name = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return db_err(s, "removing from the catalog");
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = db_err(s, "removing from the catalog");
	sqlite3_finalize(q);
	if (r < 0)
		return r;
	if (flavor) {
		for (size_t i = 0; i < s->n_flavors; i++) {
			if (strcmp(s->flavors[i].name, name) == 0) {
				sched_flavor_free(&s->flavors[i]);
				s->flavors[i] = s->flavors[--s->n_flavors];
				break;
			}
		}
	} else {
		for (size_t i = 0; i < s->n_images; i++) {
			if (strcmp(s->images[i].name, name) == 0) {
				sched_image_free(&s->images[i]);
				s->images[i] = s->images[--s->n_images];
				break;
			}
		}
	}
	return 0;
}

/* Config entries go in unless removed over the bus; then load the table. */
static int load_catalogs(struct sched *s)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	for (size_t k = 0; r == 0 && k < s->cfg->flavors.n; k++) {
		struct sched_flavor f;
		json_t *def;

		r = sched_flavor_parse(s->cfg->flavors.keys[k], s->cfg->flavors.vals[k], &f);
		if (r < 0)
			return err_prefix(r, "scheduler.flavors.%s", s->cfg->flavors.keys[k]);
		def = sched_flavor_to_json(&f);
		r = def ? catalog_store(s, true, f.name, def, true) : -ENOMEM;
		json_decref(def);
		sched_flavor_free(&f);
	}
	for (size_t k = 0; r == 0 && k < s->cfg->images.n; k++) {
		struct sched_image im;
		json_t *def;

		r = sched_image_parse(s->cfg->images.keys[k], s->cfg->images.vals[k], &im);
		if (r < 0)
			return err_prefix(r, "scheduler.images.%s", s->cfg->images.keys[k]);
		def = sched_image_to_json(&im);
		r = def ? catalog_store(s, false, im.name, def, true) : -ENOMEM;
		json_decref(def);
		sched_image_free(&im);
	}
	if (r < 0)
		return r;
	for (int pass = 0; pass < 2 && r == 0; pass++) {
		const char *sql = pass == 0 ? "SELECT def FROM flavors WHERE removed = 0"
					    : "SELECT def FROM images WHERE removed = 0";

		if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
			return db_err(s, "loading the catalog");
		while (r == 0 && sqlite3_step(q) == SQLITE_ROW) {
			json_t *def = json_loads((const char *)sqlite3_column_text(q, 0), 0, NULL);
			struct sched_flavor f;
			struct sched_image im;

			if (!def)
				continue;
			if (pass == 0) {
				if (sched_flavor_from_json(def, &f) == 0 && mem_add_flavor(s, &f) < 0) {
					sched_flavor_free(&f);
					r = -ENOMEM;
				}
			} else {
				if (sched_image_from_json(def, &im) == 0 && mem_add_image(s, &im) < 0) {
					sched_image_free(&im);
					r = -ENOMEM;
				}
			}
			json_decref(def);
		}
		sqlite3_finalize(q);
	}
	return r;
}

/* Hosts from their last reports, then the claims from the allocations. */
static int load_hosts(struct sched *s)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT name, report, last_report_ms FROM hosts", -1, &q,
			       NULL) != SQLITE_OK)
		return db_err(s, "loading hosts");
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW) {
		struct sched_host *h = sched_host_get(s, (const char *)sqlite3_column_text(q, 0));
		json_t *rep = json_loads((const char *)sqlite3_column_text(q, 1), 0, NULL);

		if (!h)
			r = err_set(-ENOMEM, "out of memory");
		else if (rep)
			sched_host_apply_report(h, rep, s->cfg, sqlite3_column_int64(q, 2));
		json_decref(rep);
	}
	sqlite3_finalize(q);
	if (r < 0)
		return r;
	if (sqlite3_prepare_v2(s->db,
			       "SELECT host, cores, pcpus, ram_mb, disk_gb, numa_node, page_kb, pages "
			       "FROM allocations WHERE host IS NOT NULL UNION ALL "
			       /* an instance migrating holds room on its destination too */
			       "SELECT m.dest, a.cores, a.pcpus, a.ram_mb, a.disk_gb, m.numa_node, "
			       "m.page_kb, m.pages FROM migrations m JOIN allocations a "
			       "ON a.uuid = m.uuid",
			       -1, &q, NULL) != SQLITE_OK)
		return db_err(s, "loading allocations");
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW) {
		struct sched_host *h = sched_host_get(s, (const char *)sqlite3_column_text(q, 0));
		long cores = (long)sqlite3_column_int64(q, 1), pcpus = (long)sqlite3_column_int64(q, 2);
		struct sched_fit fit = { .node = sqlite3_column_int(q, 5),
					 .page_kb = (long)sqlite3_column_int64(q, 6),
					 .pages = (long)sqlite3_column_int64(q, 7) };

		if (!h) {
			r = err_set(-ENOMEM, "out of memory");
			break;
		}
		sched_host_adjust(h, 1, cores - pcpus, pcpus, (long)sqlite3_column_int64(q, 3),
				  (long)sqlite3_column_int64(q, 4), &fit);
	}
	sqlite3_finalize(q);
	return r < 0 ? r : sched_pci_load(s);
}

/*
 * Copy the WAL back into the database every 50 ms from a connection of
 * its own (PASSIVE: never blocks the writer), so that a decision never
 * pays for a checkpoint; the writer's own auto-checkpoint is only a
 * safety net for a WAL that grows past 64 MiB.
 */
static void *ckpt_main(void *arg)
{
	struct sched *s = arg;
	sqlite3 *db = NULL;

	if (sqlite3_open_v2(s->cfg->state_path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		log_warn("checkpointer: cannot open %s", s->cfg->state_path);
		sqlite3_close(db);
		return NULL;
	}
	pthread_mutex_lock(&s->ckpt_mu);
	while (!s->ckpt_stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->ckpt_cv, &s->ckpt_mu, &ts);
		if (s->ckpt_stop)
			break;
		pthread_mutex_unlock(&s->ckpt_mu);
		sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		pthread_mutex_lock(&s->ckpt_mu);
	}
	pthread_mutex_unlock(&s->ckpt_mu);
	sqlite3_close(db);
	return NULL;
}

void sched_close(struct sched *s)
{
	if (!s)
		return;
	crypto_sealer_free(s->build_sealer);
	if (s->ckpt_started) {
		pthread_mutex_lock(&s->ckpt_mu);
		s->ckpt_stop = true;
		pthread_cond_signal(&s->ckpt_cv);
		pthread_mutex_unlock(&s->ckpt_mu);
		pthread_join(s->ckpt, NULL);
		pthread_mutex_destroy(&s->ckpt_mu);
		pthread_cond_destroy(&s->ckpt_cv);
	}
	sched_auth_close(s);
	sched_pins_close(s);
	sched_stmts_close(s);
	sched_sg_close(s);
	for (int i = 0; i < SST_LAST; i++)
		sqlite3_finalize(s->st[i]);
	quota_store_free(s->quotas);
	if (s->db)
		sqlite3_close(s->db);
	for (size_t i = 0; i < s->n_hosts; i++)
		host_free(s->hosts[i]);
	free(s->hosts);
	free(s->ht);
	for (size_t i = 0; i < s->n_flavors; i++)
		sched_flavor_free(&s->flavors[i]);
	free(s->flavors);
	for (size_t i = 0; i < s->n_images; i++)
		sched_image_free(&s->images[i]);
	free(s->images);
	explicit_bzero(&s->keys, sizeof(s->keys));
	free(s);
}

int sched_open(const struct sched_config *cfg, struct sched **out)
{
	struct sched *s = calloc(1, sizeof(*s));
	_cleanup_free_ char *dir = NULL;
	char *emsg = NULL;
	int r;

	if (!s)
		return err_set(-ENOMEM, "out of memory");
	s->cfg = cfg;
	dir = strdup(cfg->state_path);
	if (!dir) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	if (strcmp(dirname(dir), ".") != 0 && mkdir_p(dir, 0755) < 0) {
		r = err_sys(-errno, "scheduler state: creating %s", dir);
		goto fail;
	}
	/* NOMUTEX: this connection is the main thread's alone (the checkpointer
	 * opens its own, the metrics thread reads a copy), so SQLite's
	 * per-call connection mutex is pure cost on every step */
	if (sqlite3_open_v2(cfg->state_path, &s->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		r = err_set(-EIO, "scheduler state %s: %s", cfg->state_path,
			    s->db ? sqlite3_errmsg(s->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 10000);
	if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL", NULL, NULL, &emsg) != SQLITE_OK ||
	    sqlite3_exec(s->db,
			 cfg->sync == SCHED_SYNC_FULL ? "PRAGMA synchronous=FULL"
						      : "PRAGMA synchronous=NORMAL",
			 NULL, NULL, &emsg) != SQLITE_OK ||
	    /* hosts and hot pages stay in memory: reads do not become syscalls */
	    sqlite3_exec(s->db, "PRAGMA cache_size=-65536; PRAGMA mmap_size=268435456; "
			 "PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=16384", NULL, NULL,
			 &emsg) != SQLITE_OK ||
	    sqlite3_exec(s->db, schema_sql, NULL, NULL, &emsg) != SQLITE_OK) {
		r = err_set(-EIO, "scheduler state %s: %s", cfg->state_path, emsg ? emsg : "?");
		sqlite3_free(emsg);
		goto fail;
	}
	/* the migrations table of a version before cold migration */
	r = sched_db_add_column(s, "migrations", "cold", "INTEGER NOT NULL DEFAULT 0");
	if (r == 0)
		r = sched_db_add_column(s, "migrations", "stopped", "INTEGER NOT NULL DEFAULT 0");
	if (r == 0)
		r = sched_keys_open(cfg, &s->keys);
	if (r == 0)
		r = quota_store_open(s->db, &cfg->default_quotas, &s->quotas);
	if (r == 0)
		r = sched_pci_open(s); /* after allocations: its trigger is on them */
	if (r == 0)
		r = sched_volumes_open(s);
	if (r < 0)
		goto fail;
	for (int i = 0; i < SST_LAST; i++) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
				       NULL) != SQLITE_OK) {
			r = db_err(s, "preparing statements");
			goto fail;
		}
	}
	r = quota_usage_rebuild(s->quotas);
	if (r == 0)
		r = sched_auth_open(s);
	if (r == 0)
		r = sched_pins_open(s);
	if (r == 0)
		r = sched_sg_open(s);
	if (r == 0)
		r = sched_image_access_open(s);
	if (r == 0)
		r = load_catalogs(s);
	if (r == 0)
		r = load_hosts(s);
	if (r == 0)
		r = sched_resize_open(s); /* after the hosts: the old flavors' claims */
	if (r == 0)
		r = sched_maint_load(s);
	if (r < 0)
		goto fail;
	pthread_mutex_init(&s->ckpt_mu, NULL);
	pthread_cond_init(&s->ckpt_cv, NULL);
	if (pthread_create(&s->ckpt, NULL, ckpt_main, s) == 0) {
		s->ckpt_started = true;
	} else {
		pthread_mutex_destroy(&s->ckpt_mu);
		pthread_cond_destroy(&s->ckpt_cv);
		log_warn("no checkpointer thread: the writer checkpoints the WAL itself");
	}
	*out = s;
	return 0;
fail:
	sched_close(s);
	return r;
}

/* ---- the rest of the public API ---------------------------------------- */

void sched_tick(struct sched *s, int64_t now_ms)
{
	for (size_t i = 0; i < s->n_hosts; i++) {
		struct sched_host *h = s->hosts[i];
		bool up = sched_host_up(h, s->cfg, now_ms);

		if (up == h->was_up)
			continue;
		h->was_up = up;
		if (up)
			log_info("host up host=%s", h->name);
		else
			log_warn("host down host=%s missed=%ld interval_ms=%lld", h->name,
				 s->cfg->missed_heartbeats, (long long)s->cfg->heartbeat_interval_ms);
	}
}

void sched_get_stats(const struct sched *s, int64_t now_ms, struct sched_stats *out)
{
	*out = s->stats;
	out->hosts = s->n_hosts;
	out->hosts_up = 0;
	for (size_t i = 0; i < s->n_hosts; i++)
		if (sched_host_up(s->hosts[i], s->cfg, now_ms))
			out->hosts_up++;
}
