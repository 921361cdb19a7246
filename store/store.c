/* The agent's SQLite store. */
#define LOG_TAG "store"
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>

#include "store/store.h"

struct store {
	sqlite3 *db;
	char *path;
	/* One connection serves every thread: a statement of one thread run
	 * while another holds a transaction open would join that transaction,
	 * so each public function holds this lock for its whole duration. */
	pthread_mutex_t lock;
	/* the agent's hot path (put, get, request put) prepared once: its SQL
	 * (a string constant, found by address) and statement */
	struct {
		const char *sql;
		sqlite3_stmt *q;
	} cache[4];
};

static void unlockp(pthread_mutex_t **m)
{
	if (*m)
		pthread_mutex_unlock(*m);
}

#define STORE_LOCKED(st)                                                              \
	__attribute__((cleanup(unlockp))) pthread_mutex_t *store_lock_ = &(st)->lock; \
	pthread_mutex_lock(store_lock_)

/* The cached statement of SQL (a string constant), prepared on first
 * use; the caller holds the lock and gives it back with stmt_done(). */
static int stmt_cached(struct store *st, const char *sql, sqlite3_stmt **out)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(st->cache) && st->cache[i].sql; i++) {
		if (st->cache[i].sql == sql) {
			*out = st->cache[i].q;
			return SQLITE_OK;
		}
	}
	if (i == ARRAY_SIZE(st->cache)) /* full: an uncached statement */
		return sqlite3_prepare_v2(st->db, sql, -1, out, NULL);
	if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
		return SQLITE_ERROR;
	st->cache[i].sql = sql;
	st->cache[i].q = *out;
	return SQLITE_OK;
}

/* Reset a statement from stmt_cached() (finalize an uncached one). */
static void stmt_done(struct store *st, sqlite3_stmt *q)
{
	for (size_t i = 0; i < ARRAY_SIZE(st->cache); i++) {
		if (st->cache[i].q == q) {
			sqlite3_reset(q);
			sqlite3_clear_bindings(q);
			return;
		}
	}
	sqlite3_finalize(q);
}

/* Each entry migrates from version i to i + 1. */
static const char *const migrations[] = {
	"CREATE TABLE instances ("
	"  uuid TEXT PRIMARY KEY, name TEXT, project TEXT, spec_json TEXT NOT NULL,"
	"  state TEXT NOT NULL, step TEXT, placement_json TEXT, address TEXT, mac TEXT,"
	"  overlay_path TEXT, seed_path TEXT, error TEXT, request_id TEXT,"
	"  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
	"CREATE TABLE addresses ("
	"  ip INTEGER PRIMARY KEY, prefix INTEGER NOT NULL, uuid TEXT NOT NULL UNIQUE,"
	"  mac TEXT NOT NULL);"
	"CREATE TABLE requests ("
	"  request_id TEXT PRIMARY KEY, uuid TEXT, type TEXT, outcome_json TEXT,"
	"  ts_ms INTEGER NOT NULL);",
	/* issue 15: one row per instance moving in or out of this host */
	"CREATE TABLE migrations ("
	"  uuid TEXT PRIMARY KEY, migration TEXT NOT NULL, role TEXT NOT NULL,"
	"  peer TEXT NOT NULL, phase TEXT NOT NULL, dest_uri TEXT, domain_xml TEXT,"
	"  request_id TEXT, params_json TEXT, updated_ms INTEGER NOT NULL);",
	/* volumes (issue 19): one row per volume file in agent.volume_dir */
	"CREATE TABLE volumes ("
	"  uuid TEXT PRIMARY KEY, project TEXT NOT NULL, name TEXT NOT NULL,"
	"  size_gb INTEGER NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL,"
	"  instance TEXT, reason TEXT, created_ms INTEGER NOT NULL,"
	"  updated_ms INTEGER NOT NULL);",
};

static int db_err(struct store *st, int rc, const char *what)
{
	int code = rc == SQLITE_BUSY ? -EBUSY : rc == SQLITE_CONSTRAINT ? -EEXIST : -EIO;

	return err_set(code, "store %s: %s: %s", st->path, what, sqlite3_errmsg(st->db));
}

static int exec(struct store *st, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(st->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		int r = err_set(-EIO, "store %s: %s", st->path, msg ? msg : sqlite3_errstr(rc));

		sqlite3_free(msg);
		return r;
	}
	return 0;
}

static int migrate(struct store *st)
{
	sqlite3_stmt *q = NULL;
	int version = 0, r;

	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &q, NULL) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "read schema version");
	if (sqlite3_step(q) == SQLITE_ROW)
		version = sqlite3_column_int(q, 0);
	sqlite3_finalize(q);
	if (version > (int)ARRAY_SIZE(migrations))
		return err_set(-EPROTO,
			       "store %s: schema version %d is newer than this agent knows (%zu)",
			       st->path, version, ARRAY_SIZE(migrations));
	for (; version < (int)ARRAY_SIZE(migrations); version++) {
		char pragma[64];

		if ((r = exec(st, "BEGIN IMMEDIATE")) < 0)
			return r;
		snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", version + 1);
		if ((r = exec(st, migrations[version])) < 0 || (r = exec(st, pragma)) < 0) {
			exec(st, "ROLLBACK");
			return r;
		}
		if ((r = exec(st, "COMMIT")) < 0)
			return r;
	}
	return 0;
}

int store_open(const char *path, bool readonly, struct store **out)
{
	struct store *st = calloc(1, sizeof(*st));
	int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	int r;

	if (!st || !(st->path = strdup(path))) {
		free(st);
		return err_set(-ENOMEM, "out of memory");
	}
	pthread_mutexattr_t ma;

	/* recursive: foreach callbacks may call the store again */
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&st->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	if (sqlite3_open_v2(path, &st->db, flags | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
		r = err_set(-EIO, "store %s: %s", path,
			    st->db ? sqlite3_errmsg(st->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(st->db, 5000);
	if (!readonly) {
		if ((r = exec(st, "PRAGMA journal_mode = WAL")) < 0 ||
		    (r = exec(st, "PRAGMA synchronous = NORMAL")) < 0 || (r = migrate(st)) < 0)
			goto fail;
	}
	*out = st;
	return 0;
fail:
	store_close(st);
	return r;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(st->cache); i++)
		sqlite3_finalize(st->cache[i].q);
	sqlite3_close(st->db);
	pthread_mutex_destroy(&st->lock);
	free(st->path);
	free(st);
}

void store_instance_free(struct store_instance *i)
{
	if (!i)
		return;
	free(i->name);
	free(i->project);
	free(i->spec_json);
	free(i->step);
	free(i->placement_json);
	free(i->address);
	free(i->mac);
	free(i->overlay_path);
	free(i->seed_path);
	free(i->error);
	free(i->request_id);
	memset(i, 0, sizeof(*i));
}

static void bind_text(sqlite3_stmt *q, int idx, const char *s)
{
	if (s)
		sqlite3_bind_text(q, idx, s, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(q, idx);
}

int store_instance_put(struct store *st, const struct store_instance *i)
{
	STORE_LOCKED(st);

	static const char sql[] =
		"INSERT OR REPLACE INTO instances (uuid, name, project, spec_json, state, step,"
		" placement_json, address, mac, overlay_path, seed_path, error, request_id,"
		" created_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,"
		" COALESCE((SELECT created_ms FROM instances WHERE uuid = ?1), ?14), ?15)";
	sqlite3_stmt *q = NULL;
	int64_t now = time_wall_ms();
	int rc;

	if ((unsigned)i->state >= INST_STATE_LAST || !i->spec_json)
		return err_set(-EINVAL, "instance %s: bad state or no spec", i->uuid);
	if (stmt_cached(st, sql, &q) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	bind_text(q, 1, i->uuid);
	bind_text(q, 2, i->name);
	bind_text(q, 3, i->project);
	bind_text(q, 4, i->spec_json);
	bind_text(q, 5, instance_state_names[i->state]);
	bind_text(q, 6, i->step);
	bind_text(q, 7, i->placement_json);
	bind_text(q, 8, i->address);
	bind_text(q, 9, i->mac);
	bind_text(q, 10, i->overlay_path);
	bind_text(q, 11, i->seed_path);
	bind_text(q, 12, i->error);
	bind_text(q, 13, i->request_id);
	sqlite3_bind_int64(q, 14, i->created_ms ? i->created_ms : now);
	sqlite3_bind_int64(q, 15, now);
	rc = sqlite3_step(q);
	stmt_done(st, q);
	if (rc != SQLITE_DONE)
		return db_err(st, rc, "save instance");
	return 0;
}

static char *col_dup(sqlite3_stmt *q, int c)
{
	const unsigned char *t = sqlite3_column_text(q, c);

	return t ? strdup((const char *)t) : NULL;
}

static int row_to_instance(sqlite3_stmt *q, struct store_instance *i)
{
	const unsigned char *uuid = sqlite3_column_text(q, 0);
	const unsigned char *state = sqlite3_column_text(q, 4);

	memset(i, 0, sizeof(*i));
	snprintf(i->uuid, sizeof(i->uuid), "%s", uuid ? (const char *)uuid : "");
	i->name = col_dup(q, 1);
	i->project = col_dup(q, 2);
	i->spec_json = col_dup(q, 3);
	if (!state || instance_state_parse((const char *)state, &i->state) < 0)
		i->state = INST_ERROR;
	i->step = col_dup(q, 5);
	i->placement_json = col_dup(q, 6);
	i->address = col_dup(q, 7);
	i->mac = col_dup(q, 8);
	i->overlay_path = col_dup(q, 9);
	i->seed_path = col_dup(q, 10);
	i->error = col_dup(q, 11);
	i->request_id = col_dup(q, 12);
	i->created_ms = sqlite3_column_int64(q, 13);
	i->updated_ms = sqlite3_column_int64(q, 14);
	if (!i->spec_json) {
		store_instance_free(i);
		return err_set(-ENOMEM, "out of memory");
	}
	return 0;
}

#define INSTANCE_COLS \
	"uuid, name, project, spec_json, state, step, placement_json, address, mac," \
	" overlay_path, seed_path, error, request_id, created_ms, updated_ms"

static int get_one(struct store *st, const char *sql, const char *key,
		   struct store_instance *out)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int rc, r;

	if (stmt_cached(st, sql, &q) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	bind_text(q, 1, key);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		r = row_to_instance(q, out);
	else if (rc == SQLITE_DONE)
		r = err_set(-ENOENT, "instance %s: not in the store", key);
	else
		r = db_err(st, rc, "read instance");
	stmt_done(st, q);
	return r;
}

int store_instance_get(struct store *st, const char *uuid, struct store_instance *out)
{
	static const char sql[] = "SELECT " INSTANCE_COLS " FROM instances WHERE uuid = ?";

	return get_one(st, sql, uuid, out);
}

int store_instance_by_ip(struct store *st, const char *ip, struct store_instance *out)
{
	struct in_addr a;

	if (inet_pton(AF_INET, ip, &a) != 1)
		return err_set(-EINVAL, "'%s' is not an IPv4 address", ip);
	/* addresses.ip is the host-order integer; compare through it */
	char key[16];

	snprintf(key, sizeof(key), "%u", ntohl(a.s_addr));
	return get_one(st,
		       "SELECT " INSTANCE_COLS " FROM instances WHERE uuid ="
		       " (SELECT uuid FROM addresses WHERE ip = CAST(?1 AS INTEGER))",
		       key, out);
}

int store_instance_set_state(struct store *st, const char *uuid, enum instance_state s,
			     const char *step, const char *error)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int rc;

	if ((unsigned)s >= INST_STATE_LAST)
		return err_set(-EINVAL, "instance %s: bad state %d", uuid, (int)s);
	if (sqlite3_prepare_v2(st->db,
			       "UPDATE instances SET state = ?, step = COALESCE(?, step), error = ?,"
			       " updated_ms = ? WHERE uuid = ?",
			       -1, &q, NULL) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	bind_text(q, 1, instance_state_names[s]);
	bind_text(q, 2, step);
	bind_text(q, 3, error);
	sqlite3_bind_int64(q, 4, time_wall_ms());
	bind_text(q, 5, uuid);
	rc = sqlite3_step(q);
	sqlite3_finalize(q);
	if (rc != SQLITE_DONE)
		return db_err(st, rc, "update instance");
	if (sqlite3_changes(st->db) == 0)
		return err_set(-ENOENT, "instance %s: not in the store", uuid);
	return 0;
}

int store_instance_delete(struct store *st, const char *uuid)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int rc;

	if (sqlite3_prepare_v2(st->db, "DELETE FROM instances WHERE uuid = ?", -1, &q, NULL) !=
	    SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	bind_text(q, 1, uuid);
	rc = sqlite3_step(q);
	sqlite3_finalize(q);
	return rc == SQLITE_DONE ? 0 : db_err(st, rc, "delete instance");
}

int store_instance_foreach(struct store *st,
			   int (*fn)(const struct store_instance *i, void *ud), void *ud)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int rc, r = 0;

	if (sqlite3_prepare_v2(st->db,
			       "SELECT " INSTANCE_COLS " FROM instances ORDER BY created_ms, uuid",
			       -1, &q, NULL) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		struct store_instance i;

		if ((r = row_to_instance(q, &i)) < 0)
			break;
		r = fn(&i, ud);
		store_instance_free(&i);
		if (r)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = db_err(st, rc, "list instances");
	sqlite3_finalize(q);
	return r;
}

void store_mac_for_ip(uint32_t ip, char out[18])
{
	snprintf(out, 18, "52:54:00:%02x:%02x:%02x", (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
}

int store_address_allocate(struct store *st, const char *uuid, uint32_t first,
			   uint32_t last, int prefix, const char *mac, char *addr_out,
			   size_t addr_len)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int64_t ip = -1;
	int rc, r;
	struct in_addr a;
	char buf[INET_ADDRSTRLEN];

	if (first > last || prefix < 0 || prefix > 32)
		return err_set(-EINVAL, "address range is empty or the prefix is invalid");
	if ((r = exec(st, "BEGIN IMMEDIATE")) < 0)
		return r;
	/* already has one? */
	if (sqlite3_prepare_v2(st->db, "SELECT ip FROM addresses WHERE uuid = ?", -1, &q, NULL) !=
	    SQLITE_OK) {
		r = db_err(st, SQLITE_ERROR, "prepare");
		goto rollback;
	}
	bind_text(q, 1, uuid);
	if (sqlite3_step(q) == SQLITE_ROW)
		ip = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	if (ip < 0) {
		/* the lowest free address: first itself, or one past a used one */
		static const char sql[] =
			"SELECT MIN(c) FROM (SELECT ?1 AS c UNION ALL SELECT ip + 1 FROM addresses"
			" WHERE ip >= ?1 AND ip < ?2) WHERE c <= ?2 AND"
			" c NOT IN (SELECT ip FROM addresses)";

		if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK) {
			r = db_err(st, SQLITE_ERROR, "prepare");
			goto rollback;
		}
		sqlite3_bind_int64(q, 1, first);
		sqlite3_bind_int64(q, 2, last);
		rc = sqlite3_step(q);
		if (rc == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL)
			ip = sqlite3_column_int64(q, 0);
		sqlite3_finalize(q);
		if (ip < 0) {
			a.s_addr = htonl(first);
			inet_ntop(AF_INET, &a, buf, sizeof(buf));
			r = err_set(-ENOSPC, "no free address left in the range starting at %s (%u addresses)",
				    buf, last - first + 1);
			goto rollback;
		}
		if (sqlite3_prepare_v2(st->db,
				       "INSERT INTO addresses (ip, prefix, uuid, mac) VALUES (?,?,?,?)",
				       -1, &q, NULL) != SQLITE_OK) {
			r = db_err(st, SQLITE_ERROR, "prepare");
			goto rollback;
		}
		sqlite3_bind_int64(q, 1, ip);
		char derived[18];

		store_mac_for_ip((uint32_t)ip, derived);
		sqlite3_bind_int(q, 2, prefix);
		bind_text(q, 3, uuid);
		bind_text(q, 4, mac ? mac : derived);
		rc = sqlite3_step(q);
		sqlite3_finalize(q);
		if (rc != SQLITE_DONE) {
			r = db_err(st, rc, "allocate address");
			goto rollback;
		}
	}
	if ((r = exec(st, "COMMIT")) < 0)
		goto rollback;
	a.s_addr = htonl((uint32_t)ip);
	inet_ntop(AF_INET, &a, buf, sizeof(buf));
	if (snprintf(addr_out, addr_len, "%s/%d", buf, prefix) >= (int)addr_len)
		return err_set(-ENOBUFS, "address buffer too small");
	return 0;
rollback:
	exec(st, "ROLLBACK");
	return r;
}

int store_address_release(struct store *st, const char *uuid)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int rc;

	if (sqlite3_prepare_v2(st->db, "DELETE FROM addresses WHERE uuid = ?", -1, &q, NULL) !=
	    SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	bind_text(q, 1, uuid);
	rc = sqlite3_step(q);
	sqlite3_finalize(q);
	return rc == SQLITE_DONE ? 0 : db_err(st, rc, "release address");
}

int store_address_count(struct store *st, int *n)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int rc;

	if (sqlite3_prepare_v2(st->db, "SELECT COUNT(*) FROM addresses", -1, &q, NULL) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		*n = sqlite3_column_int(q, 0);
	sqlite3_finalize(q);
	return rc == SQLITE_ROW ? 0 : db_err(st, rc, "count addresses");
}

int store_request_get(struct store *st, const char *request_id, char **outcome_json)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int rc, r;

	if (sqlite3_prepare_v2(st->db, "SELECT outcome_json FROM requests WHERE request_id = ?", -1,
			       &q, NULL) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	bind_text(q, 1, request_id);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		*outcome_json = col_dup(q, 0);
		r = 0;
	} else if (rc == SQLITE_DONE) {
		r = -ENOENT;
	} else {
		r = db_err(st, rc, "read request");
	}
	sqlite3_finalize(q);
	return r;
}

int store_request_put(struct store *st, const char *request_id, const char *uuid,
		      const char *type, const char *outcome_json)
{
	STORE_LOCKED(st);

	static const char sql[] = "INSERT OR REPLACE INTO requests (request_id, uuid, type,"
				  " outcome_json, ts_ms) VALUES (?,?,?,?,?)";
	sqlite3_stmt *q = NULL;
	int rc;

	if (stmt_cached(st, sql, &q) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	bind_text(q, 1, request_id);
	bind_text(q, 2, uuid);
	bind_text(q, 3, type);
	bind_text(q, 4, outcome_json);
	sqlite3_bind_int64(q, 5, time_wall_ms());
	rc = sqlite3_step(q);
	stmt_done(st, q);
	return rc == SQLITE_DONE ? 0 : db_err(st, rc, "record request");
}

int store_request_foreach_pending(struct store *st,
					int (*fn)(const char *request_id, const char *uuid,
						  const char *type, void *ud),
					void *ud)
{
	STORE_LOCKED(st);
	sqlite3_stmt *q = NULL;
	int rc, r = 0;

	if (sqlite3_prepare_v2(st->db,
			       "SELECT request_id, uuid, type FROM requests WHERE outcome_json IS NULL"
			       " ORDER BY ts_ms",
			       -1, &q, NULL) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		r = fn((const char *)sqlite3_column_text(q, 0), (const char *)sqlite3_column_text(q, 1),
		       (const char *)sqlite3_column_text(q, 2), ud);
		if (r)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = db_err(st, rc, "list pending requests");
	sqlite3_finalize(q);
	return r;
}

/* ---- migrations (issue 15) ------------------------------------------------- */

void store_migration_free(struct store_migration *m)
{
	if (!m)
		return;
	free(m->migration);
	free(m->role);
	free(m->peer);
	free(m->phase);
	free(m->dest_uri);
	free(m->domain_xml);
	free(m->request_id);
	free(m->params_json);
	memset(m, 0, sizeof(*m));
}

int store_migration_put(struct store *st, const struct store_migration *m)
{
	STORE_LOCKED(st);

	static const char sql[] = "INSERT OR REPLACE INTO migrations (uuid, migration, role, peer,"
				  " phase, dest_uri, domain_xml, request_id, params_json, updated_ms)"
				  " VALUES (?,?,?,?,?,?,?,?,?,?)";
	sqlite3_stmt *q = NULL;
	int rc;

	if (stmt_cached(st, sql, &q) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	bind_text(q, 1, m->uuid);
	bind_text(q, 2, m->migration);
	bind_text(q, 3, m->role);
	bind_text(q, 4, m->peer);
	bind_text(q, 5, m->phase);
	bind_text(q, 6, m->dest_uri);
	bind_text(q, 7, m->domain_xml);
	bind_text(q, 8, m->request_id);
	bind_text(q, 9, m->params_json);
	sqlite3_bind_int64(q, 10, time_wall_ms());
	rc = sqlite3_step(q);
	stmt_done(st, q);
	return rc == SQLITE_DONE ? 0 : db_err(st, rc, "record migration");
}

int store_migration_get(struct store *st, const char *uuid, struct store_migration *out)
{
	STORE_LOCKED(st);

	static const char sql[] = "SELECT uuid, migration, role, peer, phase, dest_uri, domain_xml,"
				  " request_id, params_json FROM migrations WHERE uuid = ?";
	sqlite3_stmt *q = NULL;
	int rc, r = 0;

	if (stmt_cached(st, sql, &q) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	bind_text(q, 1, uuid);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		struct store_migration m = { 0 };
		const unsigned char *u = sqlite3_column_text(q, 0);

		snprintf(m.uuid, sizeof(m.uuid), "%s", u ? (const char *)u : "");
		m.migration = col_dup(q, 1);
		m.role = col_dup(q, 2);
		m.peer = col_dup(q, 3);
		m.phase = col_dup(q, 4);
		m.dest_uri = col_dup(q, 5);
		m.domain_xml = col_dup(q, 6);
		m.request_id = col_dup(q, 7);
		m.params_json = col_dup(q, 8);
		if (!m.migration || !m.role || !m.peer || !m.phase) {
			store_migration_free(&m);
			r = err_set(-ENOMEM, "out of memory");
		} else {
			*out = m;
		}
	} else if (rc == SQLITE_DONE) {
		r = err_set(-ENOENT, "instance %s: no migration in the store", uuid);
	} else {
		r = db_err(st, rc, "read migration");
	}
	stmt_done(st, q);
	return r;
}

int store_migration_delete(struct store *st, const char *uuid)
{
	STORE_LOCKED(st);

	static const char sql[] = "DELETE FROM migrations WHERE uuid = ?";
	sqlite3_stmt *q = NULL;
	int rc;

	if (stmt_cached(st, sql, &q) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	bind_text(q, 1, uuid);
	rc = sqlite3_step(q);
	stmt_done(st, q);
	return rc == SQLITE_DONE ? 0 : db_err(st, rc, "delete migration");
}

/* ---- volumes --------------------------------------------------------------- */

#define VOLUME_COLS "uuid, project, name, size_gb, path, state, instance, reason, created_ms, " \
		    "updated_ms"

static char *vcol(sqlite3_stmt *q, int i)
{
	const unsigned char *t = sqlite3_column_text(q, i);

	return t ? strdup((const char *)t) : NULL;
}

static int row_to_volume(sqlite3_stmt *q, struct store_volume *v)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->uuid, sizeof(v->uuid), "%s", (const char *)sqlite3_column_text(q, 0));
	v->project = vcol(q, 1);
	v->name = vcol(q, 2);
	v->size_gb = (long)sqlite3_column_int64(q, 3);
	v->path = vcol(q, 4);
	v->state = vcol(q, 5);
	v->instance = vcol(q, 6);
	v->reason = vcol(q, 7);
	v->created_ms = sqlite3_column_int64(q, 8);
	v->updated_ms = sqlite3_column_int64(q, 9);
	if (!v->project || !v->name || !v->path || !v->state) {
		store_volume_free(v);
		return err_set(-ENOMEM, "out of memory");
	}
	return 0;
}

void store_volume_free(struct store_volume *v)
{
	if (!v)
		return;
	free(v->project);
	free(v->name);
	free(v->path);
	free(v->state);
	free(v->instance);
	free(v->reason);
	memset(v, 0, sizeof(*v));
}

int store_volume_put(struct store *st, const struct store_volume *v)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int64_t now = time_wall_ms();
	int rc;

	if (sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO volumes(" VOLUME_COLS ") VALUES "
				       "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
			       -1, &q, NULL) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	sqlite3_bind_text(q, 1, v->uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, v->project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, v->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 4, v->size_gb);
	sqlite3_bind_text(q, 5, v->path, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 6, v->state, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 7, v->instance, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 8, v->reason, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 9, v->created_ms ? v->created_ms : now);
	sqlite3_bind_int64(q, 10, now);
	rc = sqlite3_step(q);
	sqlite3_finalize(q);
	return rc == SQLITE_DONE ? 0 : db_err(st, rc, "write volume");
}

int store_volume_get(struct store *st, const char *uuid, struct store_volume *out)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int rc, r;

	if (sqlite3_prepare_v2(st->db, "SELECT " VOLUME_COLS " FROM volumes WHERE uuid = ?1", -1,
			       &q, NULL) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		r = row_to_volume(q, out);
	else if (rc == SQLITE_DONE)
		r = err_set(-ENOENT, "volume %s: not on this host", uuid);
	else
		r = db_err(st, rc, "read volume");
	sqlite3_finalize(q);
	return r;
}

int store_volume_delete(struct store *st, const char *uuid)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int rc;

	if (sqlite3_prepare_v2(st->db, "DELETE FROM volumes WHERE uuid = ?1", -1, &q, NULL) !=
	    SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	sqlite3_finalize(q);
	return rc == SQLITE_DONE ? 0 : db_err(st, rc, "delete volume");
}

int store_volume_foreach(struct store *st, int (*fn)(const struct store_volume *v, void *ud),
			 void *ud)
{
	STORE_LOCKED(st);

	sqlite3_stmt *q = NULL;
	int rc, r = 0;

	if (sqlite3_prepare_v2(st->db, "SELECT " VOLUME_COLS " FROM volumes ORDER BY created_ms, "
				       "uuid", -1, &q, NULL) != SQLITE_OK)
		return db_err(st, SQLITE_ERROR, "prepare");
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		struct store_volume v;

		if ((r = row_to_volume(q, &v)) < 0)
			break;
		r = fn(&v, ud);
		store_volume_free(&v);
		if (r)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = db_err(st, rc, "list volumes");
	sqlite3_finalize(q);
	return r;
}
