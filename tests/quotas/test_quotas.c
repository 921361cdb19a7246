/* quotas: limits, overrides, claims, release, usage from allocations, and
 * the race: 100 parallel boots at quota minus one leave exactly one more. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "quotas/quotas.h"
#include "../scheduler/sched_test.h"

#define RACERS 100

static const struct quota_amounts defaults = { { 10, 20, 51200, 20, 51200, 3, 100 } };

static sqlite3 *open_db(const char *path)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 30000);
	assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL), SQLITE_OK);
	return db;
}

static void insert_alloc(sqlite3 *db, const char *project, const struct quota_amounts *a)
{
	char uuid[UUID_STRLEN], *sql = NULL;

	uuid_generate_str(uuid);
	assert_true(asprintf(&sql,
			     "INSERT INTO allocations(uuid, project, host, instances, cores, ram_mb, "
			     "pcpus, hugepages_mb) VALUES ('%s', '%s', 'h1', %ld, %ld, %ld, %ld, %ld)",
			     uuid, project, a->v[0], a->v[1], a->v[2], a->v[3], a->v[4]) > 0);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	free(sql);
}

static void test_limits_and_claims(void **state)
{
	char dir[] = "/tmp/quota-test-XXXXXX", path[64], cmd[64];
	struct quota_store *q = NULL;
	struct quota_amounts lim, used, req, set;
	enum quota_resource over = QUOTA_RESOURCE_LAST;
	sqlite3 *db;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/q.db", dir);
	db = open_db(path);
	assert_int_equal(quota_store_open(db, &defaults, &q), 0);
	assert_int_equal(quota_limits_get(q, "acme", &lim), 0);
	assert_int_equal(lim.v[QUOTA_CORES], 20);
	/* an override of one resource leaves the others at the default */
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
		set.v[i] = -2;
	set.v[QUOTA_RAM_MB] = 4096;
	set.v[QUOTA_PCPUS] = QUOTA_UNLIMITED;
	assert_int_equal(quota_limits_set(q, "acme", &set), 0);
	assert_int_equal(quota_limits_get(q, "acme", &lim), 0);
	assert_int_equal(lim.v[QUOTA_RAM_MB], 4096);
	assert_int_equal(lim.v[QUOTA_INSTANCES], 10);
	assert_int_equal(lim.v[QUOTA_PCPUS], -1);
	assert_int_equal(quota_limits_get(q, "other", &lim), 0);
	assert_int_equal(lim.v[QUOTA_RAM_MB], 51200);

	quota_amounts_for(&req, 2, 2048, true, true);
	assert_int_equal(req.v[QUOTA_PCPUS], 2);
	assert_int_equal(req.v[QUOTA_HUGEPAGES_MB], 2048);
	assert_int_equal(quota_claim(q, "acme", &req, NULL), 0);
	assert_int_equal(quota_claim(q, "acme", &req, NULL), 0);
	assert_int_equal(quota_claim(q, "acme", &req, &over), -EDQUOT);
	assert_int_equal(over, QUOTA_RAM_MB);
	assert_string_equal(err_msg(), "quota exceeded for project acme: ram_mb: requested 2048, "
				       "used 4096, limit 4096");
	assert_int_equal(quota_usage_get(q, "acme", &used), 0);
	assert_int_equal(used.v[QUOTA_INSTANCES], 2); /* the refused claim changed nothing */
	assert_int_equal(quota_release(q, "acme", &req), 0);
	assert_int_equal(quota_usage_get(q, "acme", &used), 0);
	assert_int_equal(used.v[QUOTA_CORES], 2);

	/* usage is what the allocations say */
	insert_alloc(db, "acme", &req);
	insert_alloc(db, "beta", &req);
	insert_alloc(db, "beta", &req);
	assert_int_equal(quota_usage_rebuild(q), 0);
	assert_int_equal(quota_usage_get(q, "acme", &used), 0);
	assert_int_equal(used.v[QUOTA_CORES], 2);
	assert_int_equal(quota_usage_get(q, "beta", &used), 0);
	assert_int_equal(used.v[QUOTA_INSTANCES], 2);
	assert_int_equal(used.v[QUOTA_HUGEPAGES_MB], 4096);
	assert_int_equal(quota_resource_parse("gpus", &over), -EINVAL);
	quota_store_free(q);
	sqlite3_close(db);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* ---- the race, at the quota API: 100 threads, 100 connections ----------- */

struct racer {
	const char *path;
	pthread_barrier_t *go;
	int result; /* 0 claimed, 1 over quota, 2 error */
};

static void *race_thread(void *arg)
{
	struct racer *r = arg;
	struct quota_store *q = NULL;
	struct quota_amounts one;
	sqlite3 *db = NULL;
	char uuid[UUID_STRLEN], *sql = NULL;
	int rc;

	r->result = 2;
	quota_amounts_for(&one, 1, 512, false, false);
	if (sqlite3_open(r->path, &db) != SQLITE_OK)
		goto out;
	sqlite3_busy_timeout(db, 60000);
	if (quota_store_open(db, &defaults, &q) < 0)
		goto out;
	pthread_barrier_wait(r->go);
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto out;
	rc = quota_claim(q, "acme", &one, NULL);
	if (rc == -EDQUOT) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		r->result = 1;
		goto out;
	}
	uuid_generate_str(uuid);
	if (rc < 0 || asprintf(&sql, "INSERT INTO allocations(uuid, project, host, instances, cores, "
				     "ram_mb, pcpus, hugepages_mb) VALUES ('%s', 'acme', 'h1', 1, 1, "
				     "512, 0, 0); COMMIT", uuid) < 0 ||
	    sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		goto out;
	}
	r->result = 0;
out:
	free(sql);
	quota_store_free(q);
	sqlite3_close(db);
	return NULL;
}

static long count_rows(const char *path, const char *sql)
{
	sqlite3 *db = open_db(path);
	sqlite3_stmt *st = NULL;
	long n = -1;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = (long)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

/* Volumes: claimed with their allocation row, refused over volumes or
 * gigabytes (nothing changed), released by uuid, rebuilt from the rows. */
static void test_volume_claims(void **state)
{
	char dir[] = "/tmp/quota-test-XXXXXX", path[64], cmd[64];
	struct quota_store *q = NULL;
	struct quota_amounts used, set;
	enum quota_resource over = QUOTA_RESOURCE_LAST;
	sqlite3 *db;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/q.db", dir);
	db = open_db(path);
	assert_int_equal(quota_store_open(db, &defaults, &q), 0);
	assert_int_equal(quota_volume_claim(q, "acme", "v1", 60, NULL), 0);
	assert_int_equal(quota_volume_claim(q, "acme", "v2", 50, &over), -EDQUOT);
	assert_int_equal(over, QUOTA_GIGABYTES);
	assert_string_equal(err_msg(), "quota exceeded for project acme: gigabytes: requested 50, "
				       "used 60, limit 100");
	assert_int_equal(quota_volume_claim(q, "acme", "v2", 20, NULL), 0);
	assert_int_equal(quota_volume_claim(q, "acme", "v3", 20, NULL), 0);
	assert_int_equal(quota_volume_claim(q, "acme", "v4", 1, &over), -EDQUOT);
	assert_int_equal(over, QUOTA_VOLUMES);
	assert_int_equal(quota_usage_get(q, "acme", &used), 0);
	assert_int_equal(used.v[QUOTA_VOLUMES], 3);
	assert_int_equal(used.v[QUOTA_GIGABYTES], 100);
	assert_int_equal(used.v[QUOTA_INSTANCES], 0);
	/* an override of gigabytes only */
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
		set.v[i] = -2;
	set.v[QUOTA_GIGABYTES] = 500;
	assert_int_equal(quota_limits_set(q, "acme", &set), 0);
	assert_int_equal(quota_limits_get(q, "acme", &used), 0);
	assert_int_equal(used.v[QUOTA_GIGABYTES], 500);
	assert_int_equal(used.v[QUOTA_VOLUMES], 3);
	assert_int_equal(used.v[QUOTA_CORES], 20);
	/* release: by uuid, twice is nothing */
	assert_int_equal(quota_volume_release(q, "v1"), 0);
	assert_int_equal(quota_volume_release(q, "v1"), 0);
	assert_int_equal(quota_usage_get(q, "acme", &used), 0);
	assert_int_equal(used.v[QUOTA_VOLUMES], 2);
	assert_int_equal(used.v[QUOTA_GIGABYTES], 40);
	/* the usage rows lost: rebuilt from volume_allocations */
	assert_int_equal(sqlite3_exec(db, "UPDATE quota_volume_usage SET volumes = 9, gigabytes = 9",
				      NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(quota_usage_rebuild(q), 0);
	assert_int_equal(quota_usage_get(q, "acme", &used), 0);
	assert_int_equal(used.v[QUOTA_VOLUMES], 2);
	assert_int_equal(used.v[QUOTA_GIGABYTES], 40);
	quota_store_free(q);
	sqlite3_close(db);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_race_threads(void **state)
{
	char dir[] = "/tmp/quota-race-XXXXXX", path[64], cmd[64];
	static struct racer racers[RACERS];
	static pthread_t th[RACERS];
	pthread_barrier_t go;
	struct quota_store *q = NULL;
	struct quota_amounts one, used;
	sqlite3 *db;
	int claimed = 0, over = 0;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/q.db", dir);
	db = open_db(path);
	assert_int_equal(quota_store_open(db, &defaults, &q), 0);
	quota_amounts_for(&one, 1, 512, false, false);
	for (int i = 0; i < 9; i++) /* quota 10, 9 used */
		insert_alloc(db, "acme", &one);
	assert_int_equal(quota_usage_rebuild(q), 0);
	assert_int_equal(pthread_barrier_init(&go, NULL, RACERS), 0);
	for (int i = 0; i < RACERS; i++) {
		racers[i] = (struct racer){ .path = path, .go = &go };
		assert_int_equal(pthread_create(&th[i], NULL, race_thread, &racers[i]), 0);
	}
	for (int i = 0; i < RACERS; i++) {
		pthread_join(th[i], NULL);
		claimed += racers[i].result == 0;
		over += racers[i].result == 1;
	}
	pthread_barrier_destroy(&go);
	print_message("threads: %d claimed, %d over quota\n", claimed, over);
	assert_int_equal(claimed, 1);
	assert_int_equal(over, RACERS - 1);
	assert_int_equal(quota_usage_get(q, "acme", &used), 0);
	assert_int_equal(used.v[QUOTA_INSTANCES], 10);
	assert_int_equal(count_rows(path, "SELECT COUNT(*) FROM allocations"), 10);
	quota_store_free(q);
	sqlite3_close(db);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* ---- the race through the scheduler: 100 processes, one state file ----- */

static void test_race_boots(void **state)
{
	struct env e;
	int go[2], claimed = 0, over = 0, other = 0;
	pid_t pids[RACERS];
	json_t *res;
	_cleanup_free_ char *db = NULL;

	(void)state;
	env_open(&e, NULL);
	for (int i = 0; i < 4; i++) {
		char h[8];

		snprintf(h, sizeof(h), "h%d", i);
		env_report(&e, h, false, 0);
	}
	for (int i = 0; i < 9; i++) {
		char json[256];

		snprintf(json, sizeof(json), "{\"project\":\"acme\",\"name\":\"pre-%d\","
			 "\"flavor\":\"m1.small\",\"image\":\"debian\"}", i);
		assert_true(res_ok(env_req(&e, "instance.boot", json)));
	}
	env_close_state(&e);
	assert_int_equal(pipe(go), 0);
	for (int i = 0; i < RACERS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			char json[256], c;
			int code = 2;

			close(go[1]);
			env_load(&e); /* own connection, own in-memory hosts */
			if (read(go[0], &c, 1) < 0)
				_exit(3);
			snprintf(json, sizeof(json), "{\"project\":\"acme\",\"name\":\"race-%d\","
				 "\"flavor\":\"m1.small\",\"image\":\"debian\"}", i);
			res = env_req(&e, "instance.boot", json);
			if (res_ok(res))
				code = 0;
			else if (strstr(res_error(res), "quota exceeded for project acme: instances: "
							"requested 1, used 10, limit 10"))
				code = 1;
			_exit(code);
		}
	}
	close(go[0]);
	usleep(200000);
	close(go[1]); /* all at once */
	for (int i = 0; i < RACERS; i++) {
		int st = 0;

		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			claimed++;
		else if (WIFEXITED(st) && WEXITSTATUS(st) == 1)
			over++;
		else
			other++;
	}
	print_message("processes: %d claimed, %d over quota, %d other\n", claimed, over, other);
	assert_int_equal(claimed, 1);
	assert_int_equal(over, RACERS - 1);
	env_load(&e);
	res = env_req(&e, "instance.list", "{\"project\":\"acme\"}");
	assert_int_equal(json_array_size(json_object_get(res, "data")), 10);
	res = env_req(&e, "quota.show", "{\"project\":\"acme\"}");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(
				 json_object_get(res, "data"), "usage"), "instances")), 10);
	assert_true(asprintf(&db, "%s/state.db", e.dir) > 0);
	assert_int_equal(count_rows(db, "SELECT COUNT(*) FROM allocations"), 10);
	env_close(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_limits_and_claims),
		cmocka_unit_test(test_volume_claims),
		cmocka_unit_test(test_race_threads),
		cmocka_unit_test(test_race_boots),
	};

	log_threshold = LOG_LVL_WARN;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
