/* The agent's SQLite store: instances, addresses, processed requests. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "store/store.h"

static char dbpath[64];

static int setup(void **state)
{
	struct store *st;

	snprintf(dbpath, sizeof(dbpath), "/tmp/stratus-store-test-%d.db", (int)getpid());
	unlink(dbpath);
	if (store_open(dbpath, false, &st) < 0)
		return -1;
	*state = st;
	return 0;
}

static int teardown(void **state)
{
	char p[96];

	store_close(*state);
	unlink(dbpath);
	snprintf(p, sizeof(p), "%s-wal", dbpath);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", dbpath);
	unlink(p);
	return 0;
}

static int count_cb(const struct store_instance *i, void *ud)
{
	(void)i;
	(*(int *)ud)++;
	return 0;
}

static void test_instances(void **state)
{
	struct store *st = *state;
	struct store_instance in = { .uuid = "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d",
				     .state = INST_BUILDING };
	struct store_instance out;
	int n = 0;

	in.name = (char *)(uintptr_t)"web-1";
	in.project = (char *)(uintptr_t)"acme";
	in.spec_json = (char *)(uintptr_t)"{\"name\":\"web-1\"}";
	in.step = (char *)(uintptr_t)"claim";
	assert_int_equal(store_instance_put(st, &in), 0);
	assert_int_equal(store_instance_get(st, in.uuid, &out), 0);
	assert_string_equal(out.name, "web-1");
	assert_int_equal(out.state, INST_BUILDING);
	assert_string_equal(out.step, "claim");
	assert_null(out.overlay_path);
	int64_t created = out.created_ms;
	store_instance_free(&out);

	assert_int_equal(store_instance_set_state(st, in.uuid, INST_ACTIVE, "done", NULL), 0);
	assert_int_equal(store_instance_get(st, in.uuid, &out), 0);
	assert_int_equal(out.state, INST_ACTIVE);
	assert_string_equal(out.step, "done");
	assert_true(out.created_ms == created);
	store_instance_free(&out);

	/* put again keeps created_ms */
	assert_int_equal(store_instance_put(st, &in), 0);
	assert_int_equal(store_instance_get(st, in.uuid, &out), 0);
	assert_true(out.created_ms == created);
	store_instance_free(&out);

	assert_int_equal(store_instance_foreach(st, count_cb, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_instance_set_state(st, "00000000-0000-4000-8000-000000000000",
						      INST_ACTIVE, NULL, NULL),
			 -ENOENT);
	assert_int_equal(store_instance_delete(st, in.uuid), 0);
	assert_int_equal(store_instance_get(st, in.uuid, &out), -ENOENT);
}

static void test_addresses(void **state)
{
	struct store *st = *state;
	struct in_addr a;
	uint32_t first, last;
	char addr[32];
	int n = -1;

	inet_pton(AF_INET, "10.77.0.10", &a);
	first = ntohl(a.s_addr);
	last = first + 2; /* three addresses */
	assert_int_equal(store_address_allocate(st, "u1", first, last, 24, "52:54:00:00:00:01",
						addr, sizeof(addr)), 0);
	assert_string_equal(addr, "10.77.0.10/24");
	assert_int_equal(store_address_allocate(st, "u2", first, last, 24, "52:54:00:00:00:02",
						addr, sizeof(addr)), 0);
	assert_string_equal(addr, "10.77.0.11/24");
	/* idempotent for the same instance */
	assert_int_equal(store_address_allocate(st, "u1", first, last, 24, "52:54:00:00:00:01",
						addr, sizeof(addr)), 0);
	assert_string_equal(addr, "10.77.0.10/24");
	assert_int_equal(store_address_allocate(st, "u3", first, last, 24, "52:54:00:00:00:03",
						addr, sizeof(addr)), 0);
	assert_string_equal(addr, "10.77.0.12/24");
	assert_int_equal(store_address_allocate(st, "u4", first, last, 24, "52:54:00:00:00:04",
						addr, sizeof(addr)), -ENOSPC);
	assert_string_equal(err_msg(),
			    "no free address left in the range starting at 10.77.0.10 (3 addresses)");
	/* a released address is reused, lowest first */
	assert_int_equal(store_address_release(st, "u2"), 0);
	assert_int_equal(store_address_allocate(st, "u4", first, last, 24, "52:54:00:00:00:04",
						addr, sizeof(addr)), 0);
	assert_string_equal(addr, "10.77.0.11/24");
	assert_int_equal(store_address_count(st, &n), 0);
	assert_int_equal(n, 3);

	/* the metadata service's lookup: address -> instance */
	struct store_instance in = { .uuid = "u4", .state = INST_ACTIVE };
	struct store_instance out;

	in.spec_json = (char *)(uintptr_t)"{}";
	assert_int_equal(store_instance_put(st, &in), 0);
	assert_int_equal(store_instance_by_ip(st, "10.77.0.11", &out), 0);
	assert_string_equal(out.uuid, "u4");
	store_instance_free(&out);
	assert_int_equal(store_instance_by_ip(st, "10.77.0.12", &out), -ENOENT);
	assert_int_equal(store_instance_by_ip(st, "nope", &out), -EINVAL);
}

static void test_requests_and_reopen(void **state)
{
	struct store *st = *state, *ro;
	char *o = NULL;

	assert_int_equal(store_request_get(st, "r1", &o), -ENOENT);
	assert_int_equal(store_request_put(st, "r1", "u1", "instance.build", "{\"ok\":true}"), 0);
	assert_int_equal(store_request_get(st, "r1", &o), 0);
	assert_string_equal(o, "{\"ok\":true}");
	free(o);
	/* a second reader, read-only, as stratus-metadata opens it */
	assert_int_equal(store_open(dbpath, true, &ro), 0);
	assert_int_equal(store_request_get(ro, "r1", &o), 0);
	free(o);
	assert_true(store_request_put(ro, "r2", "u", "t", "{}") < 0);
	store_close(ro);
	/* a store from a newer agent is refused, not misread */
	{
		struct store *bad;
		char p[96];

		snprintf(p, sizeof(p), "%s.new", dbpath);
		unlink(p);
		assert_int_equal(store_open(p, false, &bad), 0);
		store_close(bad);
		char cmd[200];
		snprintf(cmd, sizeof(cmd), "sqlite3 %s 'PRAGMA user_version = 99'", p);
		assert_int_equal(system(cmd), 0);
		assert_int_equal(store_open(p, false, &bad), -EPROTO);
		assert_non_null(strstr(err_msg(), "schema version 99 is newer"));
		unlink(p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_instances, setup, teardown),
		cmocka_unit_test_setup_teardown(test_addresses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_requests_and_reopen, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
