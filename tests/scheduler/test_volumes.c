/* Volumes in the scheduler over a real state database: every refused
 * input (bad size, over quota, another host's instance, another project's
 * volume, delete of an attached volume, a transition from the wrong
 * state) changes nothing and sends nothing; the state machine follows the
 * agents' volume.state events; the quota is claimed and given back, and
 * survives a restart (rebuilt from volume_allocations). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "model/model.h"
#include "sched_test.h"

#define QUOTAS "    volumes: 2\n    gigabytes: 10\n"

/* Boot NAME, make it active on its host; its uuid and host. */
static void boot_active(struct env *e, const char *name, char uuid[UUID_STRLEN], char host[32])
{
	char json[512];
	json_t *res;
	const char *h;

	snprintf(json, sizeof(json),
		 "{\"project\":\"acme\",\"name\":\"%s\",\"flavor\":\"m1.small\",\"image\":\"debian\"}",
		 name);
	res = env_req(e, "instance.boot", json);
	if (!res_ok(res))
		fail_msg("boot %s: %s", name, res_error(res));
	snprintf(uuid, UUID_STRLEN, "%s",
		 json_string_value(json_object_get(
			 json_array_get(json_object_get(json_object_get(res, "data"), "instances"), 0),
			 "uuid")));
	h = build_host(e, 0);
	assert_non_null(h);
	snprintf(host, 32, "%s", h);
	snprintf(json, sizeof(json),
		 "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"%s\",\"state\":\"active\"}", uuid,
		 host);
	env_send(e, "instance.state", NULL, json);
}

/* The volume's state in the scheduler ("" when there is no such row). */
static const char *vol_state(struct env *e, const char *name)
{
	static char st[32];
	sqlite3_stmt *q = NULL;

	st[0] = '\0';
	assert_int_equal(sqlite3_prepare_v2(e->s->db, "SELECT state FROM volumes WHERE name = ?1",
					    -1, &q, NULL), SQLITE_OK);
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW)
		snprintf(st, sizeof(st), "%s", (const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	return st;
}

static void usage_is(struct env *e, long vols, long gb)
{
	struct quota_amounts u;

	assert_int_equal(quota_usage_get(e->s->quotas, "acme", &u), 0);
	assert_int_equal(u.v[QUOTA_VOLUMES], vols);
	assert_int_equal(u.v[QUOTA_GIGABYTES], gb);
}

/* A refused request: its error, and no command to any host. */
static void refused(struct env *e, const char *type, const char *json, const char *error)
{
	json_t *res = env_req(e, type, json);

	assert_false(res_ok(res));
	assert_string_equal(res_error(res), error);
	for (size_t i = 0; i < e->out.n; i++)
		assert_true(strncmp(e->out.v[i].topic, "stratus.host.", 13) != 0);
}

/* The agent's event for volume UUID. */
static void agent_says(struct env *e, const char *uuid, const char *host, const char *state,
		       const char *instance)
{
	char json[512];

	snprintf(json, sizeof(json),
		 "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"%s\",\"state\":\"%s\"%s%s%s}",
		 uuid, host, state, instance ? ",\"instance\":\"" : "", instance ? instance : "",
		 instance ? "\"" : "");
	assert_null(env_send(e, "volume.state", NULL, json));
}

static void test_volume_lifecycle(void **state)
{
	char a[UUID_STRLEN], b[UUID_STRLEN], ha[32], hb[32], vid[UUID_STRLEN], json[512], err[512];
	struct sched_msg *m;
	struct env e;
	json_t *res;

	(void)state;
	env_open(&e, QUOTAS);
	env_report(&e, "h1", false, 0);
	env_report(&e, "h2", false, 0);
	boot_active(&e, "web-1", a, ha);
	boot_active(&e, "web-2", b, hb);
	for (int i = 3; strcmp(ha, hb) == 0 && i < 8; i++) {
		char n[16];

		snprintf(n, sizeof(n), "web-%d", i);
		boot_active(&e, n, b, hb);
	}
	assert_string_not_equal(ha, hb);

	/* bad sizes and names: refused by the handler too (in-process callers) */
	refused(&e, "volume.create", "{\"project\":\"acme\",\"name\":\"v\",\"size_gb\":0}",
		"volume v: size_gb: expected an integer from 1 to 65536");
	refused(&e, "volume.create", "{\"project\":\"acme\",\"name\":\"v\",\"size_gb\":\"4\"}",
		"volume v: size_gb: expected an integer from 1 to 65536");
	refused(&e, "volume.create", "{\"project\":\"acme\",\"name\":\"v\",\"size_gb\":70000}",
		"volume v: size_gb: expected an integer from 1 to 65536");
	refused(&e, "volume.create", "{\"project\":\"acme\",\"size_gb\":1}",
		"volume.create: project and name are required");
	refused(&e, "volume.create", "{\"project\":\"acme\",\"name\":\"v\",\"size_gb\":1,\"host\":\"h9\"}",
		"volume v: host h9 is not known");
	refused(&e, "volume.create", "{\"project\":\"acme\",\"name\":\"v\",\"size_gb\":200}",
		"volume v: 200 GB do not fit: host h1 has 95 GB of disk free (the most of any host)");
	usage_is(&e, 0, 0);

	/* create on web-1's host: creating, the command to that host, quota claimed */
	snprintf(json, sizeof(json), "{\"project\":\"acme\",\"name\":\"data\",\"size_gb\":4,"
		 "\"host\":\"%s\"}", ha);
	res = env_req(&e, "volume.create", json);
	assert_true(res_ok(res));
	snprintf(vid, sizeof(vid), "%s",
		 json_string_value(json_object_get(json_object_get(res, "data"), "uuid")));
	assert_string_equal(vol_state(&e, "data"), "creating");
	m = env_msg(&e, "volume.create", 0);
	assert_non_null(m);
	snprintf(json, sizeof(json), "stratus.host.%s", ha);
	assert_string_equal(m->topic, json);
	assert_int_equal(json_integer_value(json_object_get(m->body, "size_gb")), 4);
	assert_int_equal(bus_validate("volume.create", BUS_TC_HOST, m->body), 0);
	usage_is(&e, 1, 4);
	/* from the wrong host: ignored; from its host: available */
	agent_says(&e, vid, hb, "available", NULL);
	assert_string_equal(vol_state(&e, "data"), "creating");
	agent_says(&e, vid, ha, "available", NULL);
	assert_string_equal(vol_state(&e, "data"), "available");

	/* over quota: gigabytes, then volumes; nothing created */
	refused(&e, "volume.create", "{\"project\":\"acme\",\"name\":\"big\",\"size_gb\":7}",
		"volume big: quota exceeded for project acme: gigabytes: requested 7, used 4, limit 10");
	refused(&e, "volume.create", "{\"project\":\"acme\",\"name\":\"data\",\"size_gb\":1}",
		"volume data already exists in project acme");
	assert_true(res_ok(env_req(&e, "volume.create",
				   "{\"project\":\"acme\",\"name\":\"logs\",\"size_gb\":1}")));
	refused(&e, "volume.create", "{\"project\":\"acme\",\"name\":\"v3\",\"size_gb\":1}",
		"volume v3: quota exceeded for project acme: volumes: requested 1, used 2, limit 2");
	assert_string_equal(vol_state(&e, "v3"), "");
	usage_is(&e, 2, 5);

	/* attach: not across hosts, not another project's, not before available */
	snprintf(json, sizeof(json), "{\"project\":\"acme\",\"volume\":\"data\",\"instance\":\"%s\"}", b);
	res = env_req(&e, "volume.attach", json);
	assert_false(res_ok(res));
	assert_non_null(strstr(res_error(res), "a volume attaches only to an instance on its host"));
	assert_non_null(strstr(res_error(res), ha));
	assert_null(env_msg(&e, "volume.attach", 0));
	refused(&e, "volume.attach", "{\"project\":\"other\",\"volume\":\"data\",\"instance\":\"web-1\"}",
		"volume data not found in project other");
	refused(&e, "volume.show", "{\"project\":\"other\",\"volume\":\"data\"}",
		"volume data not found in project other");
	refused(&e, "volume.attach", "{\"project\":\"acme\",\"volume\":\"logs\",\"instance\":\"web-1\"}",
		"volume logs is creating: attach needs it available");
	refused(&e, "volume.attach", "{\"project\":\"acme\",\"volume\":\"data\",\"instance\":\"nope\"}",
		"volume data: instance nope not found in project acme");
	refused(&e, "volume.detach", "{\"project\":\"acme\",\"volume\":\"data\"}",
		"volume data is available: detach needs it in-use");

	/* attach to web-1: attaching, the command names the instance */
	snprintf(json, sizeof(json), "{\"project\":\"acme\",\"volume\":\"data\",\"instance\":\"%s\"}", a);
	assert_true(res_ok(env_req(&e, "volume.attach", json)));
	m = env_msg(&e, "volume.attach", 0);
	assert_non_null(m);
	assert_string_equal(json_string_value(json_object_get(m->body, "instance")), a);
	assert_string_equal(vol_state(&e, "data"), "attaching");
	refused(&e, "volume.delete", "{\"project\":\"acme\",\"volume\":\"data\"}",
		"volume data is attaching: delete needs it available or error");
	agent_says(&e, vid, ha, "in-use", a);
	snprintf(err, sizeof(err), "volume data is in-use (attached to instance %s): detach it first", a);
	refused(&e, "volume.delete", "{\"project\":\"acme\",\"volume\":\"data\"}", err);
	res = env_req(&e, "volume.show", "{\"project\":\"acme\",\"volume\":\"data\"}");
	assert_string_equal(json_string_value(json_object_get(json_object_get(res, "data"), "instance")), a);

	/* detach, delete: the row and the claim go with the agent's deleted */
	assert_true(res_ok(env_req(&e, "volume.detach", "{\"project\":\"acme\",\"volume\":\"data\"}")));
	assert_non_null(env_msg(&e, "volume.detach", 0));
	assert_string_equal(vol_state(&e, "data"), "detaching");
	agent_says(&e, vid, ha, "available", NULL);
	assert_true(res_ok(env_req(&e, "volume.delete", "{\"project\":\"acme\",\"volume\":\"data\"}")));
	assert_non_null(env_msg(&e, "volume.delete", 0));
	assert_string_equal(vol_state(&e, "data"), "deleting");
	usage_is(&e, 2, 5);
	agent_says(&e, vid, ha, "deleted", NULL);
	assert_string_equal(vol_state(&e, "data"), "");
	usage_is(&e, 1, 1);
	res = env_req(&e, "volume.list", "{\"project\":\"acme\"}");
	assert_int_equal(json_array_size(json_object_get(res, "data")), 1);

	/* a restart: the usage is rebuilt from the volume allocations */
	env_reopen(&e);
	usage_is(&e, 1, 1);
	res = env_req(&e, "quota.show", "{\"project\":\"acme\"}");
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(json_object_get(res, "data"), "limits"), "gigabytes")), 10);
	env_close(&e);
}

/* boot --volume: placed on the volume's host only, the volume reserved,
 * attached once the instance is active; a failed boot gives it back. */
static void test_boot_with_volume(void **state)
{
	char vid[UUID_STRLEN], inst[UUID_STRLEN], json[512];
	struct sched_msg *m;
	struct env e;
	json_t *res;

	(void)state;
	env_open(&e, QUOTAS);
	env_report(&e, "h1", false, 0);
	env_report(&e, "h2", false, 0);
	res = env_req(&e, "volume.create", "{\"project\":\"acme\",\"name\":\"db\",\"size_gb\":1,"
		      "\"host\":\"h2\"}");
	assert_true(res_ok(res));
	snprintf(vid, sizeof(vid), "%s",
		 json_string_value(json_object_get(json_object_get(res, "data"), "uuid")));
	refused(&e, "instance.boot", "{\"project\":\"acme\",\"name\":\"x\",\"flavor\":\"m1.small\","
		"\"image\":\"debian\",\"volume\":\"db\"}",
		"instance.boot: volume db is creating: a boot needs it available");
	agent_says(&e, vid, "h2", "available", NULL);
	refused(&e, "instance.boot", "{\"project\":\"acme\",\"name\":\"x\",\"flavor\":\"m1.small\","
		"\"image\":\"debian\",\"volume\":\"db\",\"count\":2}",
		"instance.boot: volume db attaches to one instance: count must be 1, not 2");
	refused(&e, "instance.boot", "{\"project\":\"acme\",\"name\":\"x\",\"flavor\":\"m1.small\","
		"\"image\":\"debian\",\"volume\":\"nope\"}",
		"instance.boot: volume nope not found in project acme");
	/* three boots: every one lands on h2, whatever the weighers prefer */
	for (int i = 0; i < 3; i++) {
		snprintf(json, sizeof(json), "{\"project\":\"acme\",\"name\":\"db-%d\","
			 "\"flavor\":\"m1.small\",\"image\":\"debian\",\"volume\":\"db\"}", i);
		res = env_req(&e, "instance.boot", json);
		assert_true(res_ok(res));
		assert_string_equal(build_host(&e, 0), "h2");
		snprintf(inst, sizeof(inst), "%s", json_string_value(json_object_get(json_array_get(
			json_object_get(json_object_get(res, "data"), "instances"), 0), "uuid")));
		assert_string_equal(vol_state(&e, "db"), "attaching");
		if (i == 2)
			break;
		/* the build failed: the volume is given back */
		snprintf(json, sizeof(json), "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"h2\","
			 "\"state\":\"error\"}", inst);
		env_send(&e, "instance.state", NULL, json);
		assert_string_equal(vol_state(&e, "db"), "available");
		assert_null(env_msg(&e, "volume.attach", 0));
	}
	/* active: the attach goes to h2 for that instance */
	snprintf(json, sizeof(json), "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"h2\","
		 "\"state\":\"active\"}", inst);
	env_send(&e, "instance.state", NULL, json);
	m = env_msg(&e, "volume.attach", 0);
	assert_non_null(m);
	assert_string_equal(m->topic, "stratus.host.h2");
	assert_string_equal(json_string_value(json_object_get(m->body, "instance")), inst);
	assert_string_equal(json_string_value(json_object_get(m->body, "uuid")), vid);
	assert_int_equal(bus_validate("volume.attach", BUS_TC_HOST, m->body), 0);
	agent_says(&e, vid, "h2", "in-use", inst);
	assert_string_equal(vol_state(&e, "db"), "in-use");
	env_close(&e);
}

/* A host's volumes take its disk: an instance that would fit without them
 * is refused by the disk filter naming them, and fits again once the
 * volume is deleted; the count survives a scheduler restart. */
static void test_volumes_take_disk(void **state)
{
	char json[512], vid[UUID_STRLEN];
	struct env e;
	json_t *res;

	(void)state;
	env_open(&e, "    volumes: 2\n    gigabytes: 200\n");
	env_report(&e, "h1", false, 0); /* 100 GB of disk */
	res = env_req(&e, "volume.create",
		      "{\"project\":\"acme\",\"name\":\"big\",\"size_gb\":97,\"host\":\"h1\"}");
	assert_true(res_ok(res));
	snprintf(vid, sizeof(vid), "%s",
		 json_string_value(json_object_get(json_object_get(res, "data"), "uuid")));
	assert_int_equal(sched_host_find(e.s, "h1")->vol_gb, 97);
	env_reopen(&e); /* the count comes back from the volumes table */
	env_report(&e, "h1", false, 0);
	assert_non_null(sched_host_find(e.s, "h1"));
	assert_int_equal(sched_host_find(e.s, "h1")->vol_gb, 97);
	res = env_req(&e, "instance.boot",
		      "{\"project\":\"acme\",\"name\":\"w\",\"flavor\":\"m1.small\",\"image\":\"debian\"}");
	assert_false(res_ok(res));
	assert_non_null(strstr(res_error(res), "3 GB free (97 GB of volumes)"));
	agent_says(&e, vid, "h1", "deleted", NULL);
	assert_int_equal(sched_host_find(e.s, "h1")->vol_gb, 0);
	snprintf(json, sizeof(json),
		 "{\"project\":\"acme\",\"name\":\"w\",\"flavor\":\"m1.small\",\"image\":\"debian\"}");
	res = env_req(&e, "instance.boot", json);
	assert_true(res_ok(res));
	env_close(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_volume_lifecycle),
		cmocka_unit_test(test_boot_with_volume),
		cmocka_unit_test(test_volumes_take_disk),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
