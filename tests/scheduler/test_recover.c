/* Recovery (scheduler/recover.c): boots wait through the warm-up after a
 * restart; a host's re-announce after a broker change is reconciled with
 * the scheduler's instances there. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sched_test.h"

#define BOOT(name, flavor) \
	"{\"project\":\"acme\",\"name\":\"" name "\",\"flavor\":\"" flavor "\",\"image\":\"debian\"}"

static __attribute__((noinline)) long usage_of(struct env *e, const char *what)
{
	json_t *res = env_req(e, "quota.show", "{\"project\":\"acme\"}");

	return (long)json_integer_value(
		json_object_get(json_object_get(json_object_get(res, "data"), "usage"), what));
}

static __attribute__((noinline)) void boot(struct env *e, const char *name, char uuid[UUID_STRLEN])
{
	char json[256];
	json_t *res, *inst;

	snprintf(json, sizeof(json), BOOT("%s", "m1.small"), name);
	res = env_req(e, "instance.boot", json);
	if (!res_ok(res))
		fail_msg("boot %s: %s", name, res_error(res));
	inst = json_array_get(json_object_get(json_object_get(res, "data"), "instances"), 0);
	snprintf(uuid, UUID_STRLEN, "%s", json_string_value(json_object_get(inst, "uuid")));
}

static __attribute__((noinline)) void state(struct env *e, const char *uuid, const char *st)
{
	char ev[256];

	snprintf(ev, sizeof(ev),
		 "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"h1\",\"state\":\"%s\"}", uuid, st);
	assert_null(env_send(e, "instance.state", NULL, ev));
}

static __attribute__((noinline)) const char *show_state(struct env *e, const char *uuid)
{
	char q[128];
	json_t *res;

	snprintf(q, sizeof(q), "{\"project\":\"acme\",\"instance\":\"%s\"}", uuid);
	res = env_req(e, "instance.show", q);
	if (!res_ok(res))
		return "(not found)";
	return json_string_value(json_object_get(json_object_get(res, "data"), "state"));
}

static __attribute__((noinline)) const char *host_recovery(struct env *e, const char *host)
{
	json_t *res = env_req(e, "host.list", "{}"), *h;
	size_t i;

	json_array_foreach(json_object_get(res, "data"), i, h)
		if (strcmp(json_string_value(json_object_get(h, "name")), host) == 0)
			return json_string_value(json_object_get(h, "recovery"));
	fail_msg("host %s not listed", host);
	return NULL;
}

/* The state event for UUID in the last output, or NULL. */
static __attribute__((noinline)) json_t *state_event(struct env *e, const char *uuid)
{
	for (size_t i = 0; i < e->out.n; i++)
		if (strcmp(e->out.v[i].type, "instance.state") == 0 &&
		    strcmp(json_string_value(json_object_get(e->out.v[i].body, "uuid")), uuid) == 0)
			return e->out.v[i].body;
	return NULL;
}

static void test_warmup_waits_for_reports(void **unused)
{
	struct env e;
	char uuid[UUID_STRLEN];
	json_t *res;

	(void)unused;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	boot(&e, "first", uuid);
	/* killed; started again 40 s later: h1's last report is 40 s old */
	env_reopen(&e);
	e.now += 40000;
	assert_int_equal(sched_warmup_begin(e.s, e.now), 0);
	assert_string_equal(host_recovery(&e, "h1"), "stale");
	/* the boot waits: no answer, no build, nothing claimed */
	assert_null(env_send(&e, "instance.boot", "11111111-1111-4111-8111-111111111111",
			     BOOT("late", "m1.small")));
	assert_null(env_msg(&e, "instance.build", 0));
	assert_int_equal(usage_of(&e, "instances"), 1);
	/* the client's resend of it (same request id) waits as the same one */
	assert_int_equal(e.s->deferred, 1);
	assert_null(env_send(&e, "instance.boot", "11111111-1111-4111-8111-111111111111",
			     BOOT("late", "m1.small")));
	assert_int_equal(e.s->deferred, 1);
	assert_false(sched_warmup_over(e.s, e.now + 1000));
	/* a boot that can never work is refused at once, and changes nothing */
	res = env_req(&e, "instance.boot", BOOT("bad", "m1.nope"));
	assert_false(res_ok(res));
	assert_non_null(strstr(res_error(res), "flavor 'm1.nope' not found"));
	/* the host reports: the waiting boot is placed on it */
	e.now += 1000;
	env_report(&e, "h1", false, 0);
	assert_string_equal(host_recovery(&e, "h1"), "-");
	assert_true(sched_warmup_over(e.s, e.now));
	sched_out_clear(&e.out);
	assert_int_equal(sched_warmup_end(e.s, e.now, &e.out), 1);
	res = env_msg(&e, "request.result", 0)->body;
	assert_true(res_ok(res));
	assert_string_equal(env_msg(&e, "request.result", 0)->request_id,
			    "11111111-1111-4111-8111-111111111111");
	assert_string_equal(build_host(&e, 0), "h1");
	assert_int_equal(usage_of(&e, "instances"), 2);
	/* over: the next boot is placed at once */
	assert_false(sched_warmup_over(e.s, e.now));
	boot(&e, "later", uuid);
	assert_string_equal(build_host(&e, 0), "h1");
	env_close(&e);
}

static void test_warmup_ends_with_the_window(void **unused)
{
	struct env e;
	char uuid[UUID_STRLEN];
	json_t *res;

	(void)unused;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	boot(&e, "first", uuid);
	env_reopen(&e);
	e.now += 40000;
	assert_int_equal(sched_warmup_begin(e.s, e.now), 0);
	assert_null(env_send(&e, "instance.boot", "22222222-2222-4222-8222-222222222222",
			     BOOT("late", "m1.small")));
	/* a restart in between: the waiting boot is durable */
	env_reopen(&e);
	assert_int_equal(sched_warmup_begin(e.s, e.now), 0);
	assert_false(sched_warmup_over(e.s, e.now + 29999));
	/* h1 never reports: after 3 x 10 s it is judged down */
	e.now += 30000;
	assert_true(sched_warmup_over(e.s, e.now));
	sched_out_clear(&e.out);
	assert_int_equal(sched_warmup_end(e.s, e.now, &e.out), 1);
	res = env_msg(&e, "request.result", 0)->body;
	assert_false(res_ok(res));
	print_message("%s\n", res_error(res));
	assert_non_null(strstr(res_error(res), "no valid host for late (1 host): h1: down"));
	/* it ran once: nothing is left to run */
	sched_out_clear(&e.out);
	assert_int_equal(sched_warmup_end(e.s, e.now, &e.out), 0);
	env_close(&e);
}

/* A state file of the version before credentials: its deferred table has
 * no credential column. It is added; the row waiting there runs as before. */
static void test_old_deferred_table_upgraded(void **unused)
{
	struct env e;
	char path[128], uuid[UUID_STRLEN];
	sqlite3 *db = NULL;
	json_t *res;

	(void)unused;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	boot(&e, "first", uuid);
	env_close_state(&e);
	snprintf(path, sizeof(path), "%s/state.db", e.dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "DROP TABLE IF EXISTS deferred;"
				      "CREATE TABLE deferred (id INTEGER PRIMARY KEY, type TEXT NOT "
				      "NULL, request_id TEXT, body TEXT NOT NULL, received_ms INTEGER "
				      "NOT NULL);"
				      "INSERT INTO deferred(type, request_id, body, received_ms) VALUES "
				      "('instance.boot', '22222222-2222-4222-8222-222222222222', '"
				      BOOT("old", "m1.small") "', 0)",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	env_load(&e);
	e.now += 40000;
	assert_int_equal(sched_warmup_begin(e.s, e.now), 0);
	assert_int_equal(e.s->deferred, 1);
	e.now += 1000;
	env_report(&e, "h1", false, 0);
	sched_out_clear(&e.out);
	assert_int_equal(sched_warmup_end(e.s, e.now, &e.out), 1);
	res = env_msg(&e, "request.result", 0)->body;
	assert_true(res_ok(res));
	assert_string_equal(build_host(&e, 0), "h1");
	assert_int_equal(usage_of(&e, "instances"), 2);
	env_close(&e);
}

static void test_reannounce_reconciles(void **unused)
{
	struct env e;
	char sched[UUID_STRLEN], build[UUID_STRLEN], act[UUID_STRLEN], del[UUID_STRLEN];
	char kept[UUID_STRLEN], del2[UUID_STRLEN], rep[2048];
	const char *stranger = "99999999-9999-4999-8999-999999999999";
	json_t *ev;

	(void)unused;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	boot(&e, "sched", sched);      /* build sent, never arrived */
	boot(&e, "build", build);      /* the host gave it up */
	boot(&e, "act", act);          /* gone from the host */
	boot(&e, "del", del);          /* deleted, the event lost */
	boot(&e, "kept", kept);        /* there, as it should be */
	boot(&e, "del2", del2);        /* the delete command lost */
	state(&e, build, "building");
	state(&e, act, "active");
	state(&e, del, "active");
	state(&e, kept, "active");
	state(&e, del2, "active");
	assert_true(res_ok(env_req(&e, "instance.delete", "{\"project\":\"acme\",\"instance\":\"del\"}")));
	assert_true(res_ok(env_req(&e, "instance.delete", "{\"project\":\"acme\",\"instance\":\"del2\"}")));
	assert_int_equal(usage_of(&e, "instances"), 6);
	/* the broker moved; h1 is stale until it reports */
	e.now += 500;
	sched_broker_moved(e.s, e.now);
	assert_string_equal(host_recovery(&e, "h1"), "stale");
	snprintf(rep, sizeof(rep),
		 "{\"host\":\"h1\",\"inventory\":{\"VCPU\":4,\"MEMORY_MB\":16384,\"DISK_GB\":100},"
		 "\"box_key\":\"" TEST_HOST_BOX_PUB "\","
		 "\"reannounce\":{\"reason\":\"broker moved\",\"instances\":["
		 "{\"uuid\":\"%s\",\"state\":\"active\"},{\"uuid\":\"%s\",\"state\":\"active\"},"
		 "{\"uuid\":\"%s\",\"state\":\"active\"}]}}", kept, del2, stranger);
	e.now += 1000;
	assert_null(env_send(&e, "host.report", NULL, rep));
	/* scheduling: the build again, to the same host */
	assert_string_equal(build_host(&e, 0), "h1");
	assert_string_equal(json_string_value(json_object_get(env_msg(&e, "instance.build", 0)->body,
							      "uuid")), sched);
	assert_null(env_msg(&e, "instance.build", 1));
	/* building: rescheduled; no other host, so it failed, saying why */
	ev = state_event(&e, build);
	assert_non_null(ev);
	assert_string_equal(json_string_value(json_object_get(ev, "state")), "error");
	assert_non_null(strstr(json_string_value(json_object_get(ev, "reason")),
			       "h1: build gone from the host after a broker change"));
	/* active but gone: lost, said so */
	ev = state_event(&e, act);
	assert_non_null(ev);
	assert_string_equal(json_string_value(json_object_get(ev, "state")), "error");
	assert_non_null(strstr(json_string_value(json_object_get(ev, "reason")),
			       "host h1 no longer has it"));
	/* deleting but still there: the delete again */
	assert_string_equal(json_string_value(json_object_get(env_msg(&e, "instance.delete", 0)->body,
							      "uuid")), del2);
	assert_string_equal(env_msg(&e, "instance.delete", 0)->topic, "stratus.host.h1");
	/* deleting and gone: deleted (show no longer finds it) */
	assert_string_equal(show_state(&e, del), "(not found)");
	assert_string_equal(show_state(&e, kept), "active");
	assert_string_equal(show_state(&e, act), "error");
	assert_string_equal(show_state(&e, build), "error");
	assert_string_equal(show_state(&e, sched), "scheduling");
	/* claims and quota: sched, kept, del2 hold them; the stranger none */
	assert_int_equal(usage_of(&e, "instances"), 3);
	assert_int_equal(sched_host_find(e.s, "h1")->instances, 3);
	assert_int_equal(sched_host_find(e.s, "h1")->ram_used, 3 * 1024);
	assert_string_equal(host_recovery(&e, "h1"), "re-announced");
	/* the same re-announce again changes nothing more */
	assert_null(env_send(&e, "host.report", NULL, rep));
	assert_null(state_event(&e, act));
	assert_null(state_event(&e, build));
	assert_int_equal(usage_of(&e, "instances"), 3);
	/* the lost instance is deleted at once: it has no host */
	assert_true(res_ok(env_req(&e, "instance.delete", "{\"project\":\"acme\",\"instance\":\"act\"}")));
	assert_null(env_msg(&e, "instance.delete", 0));
	env_close(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_warmup_waits_for_reports),
		cmocka_unit_test(test_warmup_ends_with_the_window),
		cmocka_unit_test(test_old_deferred_table_upgraded),
		cmocka_unit_test(test_reannounce_reconciles),
	};

	log_threshold = LOG_LVL_WARN;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
