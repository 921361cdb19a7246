/* The request handlers over a real state database: boots, errors,
 * duplicates, deletes, reschedules, groups, down hosts, restarts. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/crypto.h"
#include "model/model.h"
#include "sched_test.h"

#define BOOT(name, flavor) \
	"{\"project\":\"acme\",\"name\":\"" name "\",\"flavor\":\"" flavor "\",\"image\":\"debian\"}"

static __attribute__((noinline)) const char *boot_host(struct env *e, const char *json, char uuid[UUID_STRLEN])
{
	json_t *res = env_req(e, "instance.boot", json);
	json_t *inst;

	if (!res_ok(res))
		fail_msg("boot failed: %s", res_error(res));
	inst = json_array_get(json_object_get(json_object_get(res, "data"), "instances"), 0);
	if (uuid)
		snprintf(uuid, UUID_STRLEN, "%s", json_string_value(json_object_get(inst, "uuid")));
	return build_host(e, 0);
}

static void test_boot_build_spec(void **state)
{
	struct env e;
	struct sched_msg *b, *st;
	struct instance_spec spec;
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	res = env_req(&e, "instance.boot",
		      "{\"project\":\"acme\",\"name\":\"web-1\",\"flavor\":\"m1.small\","
		      "\"image\":\"debian\",\"user_data\":\"I2Nsb3VkLWNvbmZpZwo=\","
		      "\"ssh_keys\":[{\"name\":\"k1\",\"key\":\"ssh-ed25519 AAAA me\"}],"
		      "\"metadata\":{\"role\":\"web\"}}");
	assert_true(res_ok(res));
	st = env_msg(&e, "instance.state", 0);
	assert_non_null(st);
	assert_string_equal(json_string_value(json_object_get(st->body, "state")), "scheduling");
	b = env_msg(&e, "instance.build", 0);
	assert_non_null(b);
	assert_string_equal(b->topic, "stratus.host.h1");
	/* the secrets travel sealed to h1's key only: no clear field, and the
	 * box opens with h1's private key alone */
	assert_null(json_object_get(b->body, "user_data"));
	assert_null(json_object_get(b->body, "ssh_keys"));
	assert_null(json_object_get(b->body, "metadata"));
	assert_non_null(json_string_value(json_object_get(b->body, "sealed")));
	{
		unsigned char priv[CRYPTO_KEY_LEN], other[CRYPTO_KEY_LEN], pub[CRYPTO_KEY_LEN];

		assert_int_equal(crypto_x25519_keygen(pub, other), 0);
		assert_int_equal(bus_open_sealed(b->body, bus_build_secret_fields, other,
						 BUS_SEAL_BUILD), -EBADMSG);
		assert_non_null(json_object_get(b->body, "sealed")); /* unchanged */
		assert_int_equal(crypto_key_from_text(TEST_HOST_BOX_PRIV, priv), 0);
		assert_int_equal(bus_open_sealed(b->body, bus_build_secret_fields, priv,
						 BUS_SEAL_BUILD), 0);
		assert_null(json_object_get(b->body, "sealed"));
	}
	/* the build body is the instance spec plus request fields */
	if (model_spec_parse(b->body, &spec) < 0)
		fail_msg("spec: %s", err_msg());
	assert_string_equal(spec.name, "web-1");
	assert_string_equal(spec.project, "acme");
	assert_string_equal(spec.availability_zone, "az1");
	assert_int_equal(spec.flavor.vcpus, 1);
	assert_string_equal(spec.image.disk_format, "qcow2");
	assert_int_equal(spec.user_data_len, 14);
	assert_int_equal(spec.n_ssh_keys, 1);
	assert_string_equal(b->key, spec.uuid);
	assert_int_equal(json_integer_value(json_object_get(b->body, "attempt")), 1);
	model_spec_free(&spec);
	/* show and list */
	res = env_req(&e, "instance.show", "{\"project\":\"acme\",\"instance\":\"web-1\"}");
	assert_true(res_ok(res));
	assert_string_equal(json_string_value(json_object_get(json_object_get(res, "data"), "state")),
			    "scheduling");
	res = env_req(&e, "instance.list", "{\"project\":\"acme\"}");
	assert_int_equal(json_array_size(json_object_get(res, "data")), 1);
	res = env_req(&e, "instance.list", "{\"project\":\"other\"}");
	assert_int_equal(json_array_size(json_object_get(res, "data")), 0);
	/* the same name again */
	res = env_req(&e, "instance.boot", BOOT("web-1", "m1.small"));
	assert_false(res_ok(res));
	assert_string_equal(res_error(res), "instance web-1 already exists in project acme");
	env_close(&e);
}

/* A boot whose secrets stratusctl sealed to the scheduler's box key: opened,
 * placed, sealed again to the host; a tampered box and a host without a
 * key are refused, naming why, with nothing placed. */
static void test_sealed_boot(void **state)
{
	struct env e;
	json_t *body, *res;
	struct sched_msg *b;
	char *text;
	const char *box;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	body = json_loads("{\"project\":\"acme\",\"name\":\"s1\",\"flavor\":\"m1.small\","
			  "\"image\":\"debian\",\"user_data\":\"I2Nsb3VkLWNvbmZpZwo=\","
			  "\"metadata\":{\"role\":\"db\"}}", 0, NULL);
	assert_int_equal(bus_seal_fields(body, bus_build_secret_fields, e.s->keys.box_pub,
					 BUS_SEAL_BOOT), 0);
	assert_null(json_object_get(body, "user_data"));
	/* tampered: one byte of the ciphertext changed */
	{
		json_t *bad = json_deep_copy(body);
		char *t = strdup(json_string_value(json_object_get(bad, "sealed")));

		t[60] = t[60] == 'A' ? 'B' : 'A';
		json_object_set_new(bad, "sealed", json_string(t));
		free(t);
		text = json_dumps(bad, JSON_COMPACT);
		res = env_req(&e, "instance.boot", text);
		free(text);
		json_decref(bad);
		assert_false(res_ok(res));
		assert_non_null(strstr(res_error(res), "sealed: the box does not open"));
		assert_null(env_msg(&e, "instance.build", 0));
	}
	text = json_dumps(body, JSON_COMPACT);
	res = env_req(&e, "instance.boot", text);
	free(text);
	json_decref(body);
	assert_true(res_ok(res));
	b = env_msg(&e, "instance.build", 0);
	assert_non_null(b);
	box = json_string_value(json_object_get(b->body, "sealed"));
	assert_non_null(box);
	/* nothing of the user data in clear on the host topic */
	text = json_dumps(b->body, JSON_COMPACT);
	assert_null(strstr(text, "I2Nsb3VkLWNvbmZpZwo="));
	assert_null(strstr(text, "\"db\""));
	free(text);
	{
		unsigned char priv[CRYPTO_KEY_LEN];
		struct instance_spec spec;

		assert_int_equal(crypto_key_from_text(TEST_HOST_BOX_PRIV, priv), 0);
		assert_int_equal(bus_open_sealed(b->body, bus_build_secret_fields, priv,
						 BUS_SEAL_BUILD), 0);
		assert_int_equal(model_spec_parse(b->body, &spec), 0);
		assert_int_equal(spec.user_data_len, 14);
		assert_int_equal(spec.n_metadata, 1);
		model_spec_free(&spec);
	}
	/* a host that reports no key gets no build, and says why */
	env_send(&e, "host.report", NULL, "{\"host\":\"h1\",\"inventory\":{}}");
	res = env_req(&e, "instance.boot", BOOT("s2", "m1.small"));
	assert_false(res_ok(res));
	assert_non_null(strstr(res_error(res), "h1: no box_key in its report"));
	env_close(&e);
}

static void test_errors(void **state)
{
	struct env e;
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	res = env_req(&e, "instance.boot", BOOT("a", "m9.huge"));
	assert_false(res_ok(res));
	assert_string_equal(res_error(res),
			    "flavor 'm9.huge' not found (known: m1.small, m1.large, m1.pinned)");
	res = env_req(&e, "instance.boot",
		      "{\"project\":\"acme\",\"name\":\"a\",\"flavor\":\"m1.small\",\"image\":\"arch\"}");
	assert_false(res_ok(res));
	assert_string_equal(res_error(res), "image 'arch' not found (known: debian)");
	assert_null(env_msg(&e, "instance.build", 0));
	res = env_req(&e, "instance.show", "{\"project\":\"acme\",\"instance\":\"nope\"}");
	assert_string_equal(res_error(res), "instance nope not found in project acme");
	res = env_req(&e, "instance.boot", BOOT("big", "m1.large"));
	assert_true(res_ok(res));
	res = env_req(&e, "instance.stop", "{\"project\":\"acme\",\"instance\":\"big\"}");
	assert_string_equal(res_error(res), "instance big is scheduling: stop needs it active");
	env_close(&e);
}

static void test_over_quota(void **state)
{
	struct env e;
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	env_report(&e, "h2", false, 0);
	res = env_req(&e, "quota.set", "{\"project\":\"acme\",\"limits\":{\"instances\":2}}");
	assert_true(res_ok(res));
	assert_true(res_ok(env_req(&e, "instance.boot", BOOT("a", "m1.small"))));
	assert_true(res_ok(env_req(&e, "instance.boot", BOOT("b", "m1.small"))));
	res = env_req(&e, "instance.boot", BOOT("c", "m1.small"));
	assert_false(res_ok(res));
	assert_string_equal(res_error(res), "quota exceeded for project acme: instances: requested 1, "
					    "used 2, limit 2");
	res = env_req(&e, "quota.set",
		      "{\"project\":\"acme\",\"limits\":{\"instances\":-1,\"cores\":5}}");
	assert_true(res_ok(res));
	res = env_req(&e, "instance.boot", BOOT("d", "m1.large"));
	assert_false(res_ok(res));
	assert_string_equal(res_error(res), "quota exceeded for project acme: cores: requested 4, "
					    "used 2, limit 5");
	res = env_req(&e, "instance.boot",
		      "{\"project\":\"acme\",\"name\":\"p\",\"flavor\":\"m1.pinned\",\"image\":\"debian\"}");
	assert_true(res_ok(res) || strstr(res_error(res), "no valid host"));
	res = env_req(&e, "quota.show", "{\"project\":\"acme\"}");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(
				 json_object_get(res, "data"), "limits"), "cores")), 5);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(
				 json_object_get(res, "data"), "usage"), "instances")), 2);
	res = env_req(&e, "quota.set", "{\"project\":\"acme\",\"limits\":{\"gpus\":1}}");
	assert_false(res_ok(res));
	assert_non_null(strstr(res_error(res), "unknown quota resource 'gpus'"));
	env_close(&e);
}

static void test_duplicate_request(void **state)
{
	struct env e;
	json_t *res;
	_cleanup_free_ char *first = NULL, *second = NULL;
	const char *rid = "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d";

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	res = env_send(&e, "instance.boot", rid, BOOT("a", "m1.small"));
	first = json_dumps(res, JSON_SORT_KEYS);
	res = env_send(&e, "instance.boot", rid, BOOT("a", "m1.small"));
	second = json_dumps(res, JSON_SORT_KEYS);
	assert_string_equal(first, second);
	/* the build goes out again (the agent drops a build it has) */
	assert_non_null(env_msg(&e, "instance.build", 0));
	res = env_req(&e, "instance.list", "{\"project\":\"acme\"}");
	assert_int_equal(json_array_size(json_object_get(res, "data")), 1);
	res = env_req(&e, "quota.show", "{\"project\":\"acme\"}");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(
				 json_object_get(res, "data"), "usage"), "instances")), 1);
	env_close(&e);
}

static __attribute__((noinline)) long usage_of(struct env *e, const char *what)
{
	json_t *res = env_req(e, "quota.show", "{\"project\":\"acme\"}");

	return (long)json_integer_value(
		json_object_get(json_object_get(json_object_get(res, "data"), "usage"), what));
}

static void test_delete_releases_on_confirm(void **state)
{
	struct env e;
	char uuid[UUID_STRLEN], ev[256];
	struct sched_host *h;
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	boot_host(&e, BOOT("a", "m1.large"), uuid);
	h = sched_host_find(e.s, "h1");
	assert_int_equal(h->ram_used, 8192);
	res = env_req(&e, "instance.delete", "{\"project\":\"acme\",\"instance\":\"a\"}");
	assert_true(res_ok(res));
	assert_string_equal(env_msg(&e, "instance.delete", 0)->topic, "stratus.host.h1");
	/* not yet released */
	assert_int_equal(usage_of(&e, "cores"), 4);
	assert_int_equal(h->ram_used, 8192);
	/* a stale event from another host changes nothing */
	snprintf(ev, sizeof(ev), "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"h9\",\"state\":\"deleted\"}", uuid);
	assert_null(env_send(&e, "instance.state", NULL, ev));
	assert_int_equal(usage_of(&e, "cores"), 4);
	snprintf(ev, sizeof(ev), "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"h1\",\"state\":\"deleted\"}", uuid);
	assert_null(env_send(&e, "instance.state", NULL, ev));
	assert_int_equal(usage_of(&e, "cores"), 0);
	assert_int_equal(usage_of(&e, "instances"), 0);
	assert_int_equal(h->ram_used, 0);
	assert_int_equal(h->instances, 0);
	/* twice is harmless */
	assert_null(env_send(&e, "instance.state", NULL, ev));
	assert_int_equal(usage_of(&e, "cores"), 0);
	res = env_req(&e, "instance.list", "{\"project\":\"acme\"}");
	assert_int_equal(json_array_size(json_object_get(res, "data")), 0);
	env_close(&e);
}

static __attribute__((noinline)) void reschedule(struct env *e, const char *uuid, const char *host, const char *why)
{
	char ev[512];

	snprintf(ev, sizeof(ev),
		 "{\"uuid\":\"%s\",\"project\":\"acme\",\"failed_host\":\"%s\",\"reason\":\"%s\"}",
		 uuid, host, why);
	assert_null(env_send(e, "instance.reschedule", NULL, ev));
}

/* An evacuated instance whose rebuild fails on its first destination is
 * rescheduled: its note ("evacuated from ...") becomes active with it on the
 * next host. */
static void test_evacuation_note_follows_reschedule(void **state)
{
	struct env e;
	char uuid[UUID_STRLEN], dead[16], first[16], ev[256], q[128];
	const char *h, *reason;
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	env_report(&e, "h2", false, 0);
	env_report(&e, "h3", false, 0);
	h = boot_host(&e, BOOT("a", "m1.small"), uuid);
	snprintf(dead, sizeof(dead), "%s", h);
	snprintf(ev, sizeof(ev), "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"%s\","
		 "\"state\":\"active\"}", uuid, dead);
	assert_null(env_send(&e, "instance.state", NULL, ev));
	/* its host falls silent past the heartbeat window; the others report */
	e.now += 31000;
	for (int i = 1; i <= 3; i++) {
		char n[4];

		snprintf(n, sizeof(n), "h%d", i);
		if (strcmp(n, dead) != 0)
			env_report(&e, n, false, 0);
	}
	snprintf(q, sizeof(q), "{\"host\":\"%s\"}", dead);
	res = env_req(&e, "host.evacuate", q);
	assert_true(res_ok(res));
	assert_non_null(build_host(&e, 0));
	snprintf(first, sizeof(first), "%s", build_host(&e, 0));
	reschedule(&e, uuid, first, "disk: no space");
	assert_non_null(build_host(&e, 0));
	h = build_host(&e, 0);
	assert_string_not_equal(h, first);
	assert_string_not_equal(h, dead);
	snprintf(ev, sizeof(ev), "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"%s\","
		 "\"state\":\"active\"}", uuid, h);
	assert_null(env_send(&e, "instance.state", NULL, ev));
	snprintf(q, sizeof(q), "{\"project\":\"acme\",\"instance\":\"%s\"}", uuid);
	res = env_req(&e, "instance.show", q);
	assert_true(res_ok(res));
	reason = json_string_value(json_object_get(json_object_get(res, "data"), "reason"));
	assert_non_null(reason);
	assert_non_null(strstr(reason, "evacuated from host "));
	assert_non_null(strstr(reason, dead));
	env_close(&e);
}

static void test_reschedule_then_error(void **state)
{
	struct env e;
	char uuid[UUID_STRLEN];
	const char *h1;
	char first[16], second[16];
	struct sched_msg *m;
	const char *reason;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	env_report(&e, "h2", false, 0);
	env_report(&e, "h3", false, 0);
	h1 = boot_host(&e, BOOT("a", "m1.small"), uuid);
	snprintf(first, sizeof(first), "%s", h1);
	reschedule(&e, uuid, first, "NUMA fit: no node has 2 pCPUs");
	m = env_msg(&e, "instance.build", 0);
	assert_non_null(m);
	snprintf(second, sizeof(second), "%s", build_host(&e, 0));
	assert_string_not_equal(first, second);
	assert_int_equal(json_integer_value(json_object_get(m->body, "attempt")), 2);
	/* the first host's claim is gone, the second holds it */
	assert_int_equal(sched_host_find(e.s, first)->ram_used, 0);
	assert_int_equal(sched_host_find(e.s, second)->ram_used, 1024);
	/* a duplicate of the first reschedule is ignored */
	reschedule(&e, uuid, first, "NUMA fit: no node has 2 pCPUs");
	assert_null(env_msg(&e, "instance.build", 0));
	reschedule(&e, uuid, second, "image download failed");
	assert_non_null(env_msg(&e, "instance.build", 0));
	reschedule(&e, uuid, build_host(&e, 0), "disk full");
	/* three attempts: error, with every host's reason */
	assert_null(env_msg(&e, "instance.build", 0));
	m = env_msg(&e, "instance.state", 0);
	assert_non_null(m);
	assert_string_equal(json_string_value(json_object_get(m->body, "state")), "error");
	reason = json_string_value(json_object_get(m->body, "reason"));
	print_message("error reason: %s\n", reason);
	assert_non_null(strstr(reason, "3 of 3 attempts"));
	assert_non_null(strstr(reason, "NUMA fit: no node has 2 pCPUs"));
	assert_non_null(strstr(reason, "image download failed"));
	assert_non_null(strstr(reason, "disk full"));
	assert_int_equal(usage_of(&e, "instances"), 0);
	for (int i = 1; i <= 3; i++) {
		char n[4];

		snprintf(n, sizeof(n), "h%d", i);
		assert_int_equal(sched_host_find(e.s, n)->ram_used, 0);
		assert_int_equal(sched_host_find(e.s, n)->recent_failures, 1);
	}
	/* an errored instance without a host is deleted at once */
	assert_true(res_ok(env_req(&e, "instance.delete", "{\"project\":\"acme\",\"instance\":\"a\"}")));
	assert_null(env_msg(&e, "instance.delete", 0));
	env_close(&e);
}

static void test_spread_pack(void **state)
{
	struct env e;
	char hosts[3][16];

	(void)state;
	env_open(&e, NULL); /* spread */
	env_report(&e, "h1", false, 0);
	env_report(&e, "h2", false, 0);
	env_report(&e, "h3", false, 0);
	snprintf(hosts[0], 16, "%s", boot_host(&e, BOOT("a", "m1.small"), NULL));
	snprintf(hosts[1], 16, "%s", boot_host(&e, BOOT("b", "m1.small"), NULL));
	snprintf(hosts[2], 16, "%s", boot_host(&e, BOOT("c", "m1.small"), NULL));
	assert_string_not_equal(hosts[0], hosts[1]);
	assert_string_not_equal(hosts[1], hosts[2]);
	assert_string_not_equal(hosts[0], hosts[2]);
	env_close(&e);

	env_open(&e, "  placement: pack\n");
	env_report(&e, "h1", false, 0);
	env_report(&e, "h2", false, 0);
	env_report(&e, "h3", false, 0);
	snprintf(hosts[0], 16, "%s", boot_host(&e, BOOT("a", "m1.small"), NULL));
	assert_string_equal(boot_host(&e, BOOT("b", "m1.small"), NULL), hosts[0]);
	assert_string_equal(boot_host(&e, BOOT("c", "m1.small"), NULL), hosts[0]);
	env_close(&e);
}

static void test_down_host(void **state)
{
	struct env e;
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	e.now += 20000;
	env_report(&e, "h2", false, 0);
	e.now += 11000; /* h1: 31 s without a report, 3 x 10 s missed */
	for (int i = 0; i < 3; i++) {
		char name[8], json[256];

		snprintf(name, sizeof(name), "x%d", i);
		snprintf(json, sizeof(json), BOOT("%s", "m1.small"), name);
		assert_string_equal(boot_host(&e, json, NULL), "h2");
	}
	/* only the down host could take it: the error says why, host by host */
	res = env_req(&e, "instance.boot", BOOT("big", "m1.large"));
	assert_true(res_ok(res));
	res = env_req(&e, "instance.boot", BOOT("big2", "m1.large"));
	assert_false(res_ok(res));
	print_message("%s\n", res_error(res));
	assert_non_null(strstr(res_error(res), "no valid host for big2 (2 hosts): h1: down (last report 31 s ago"));
	assert_non_null(strstr(res_error(res), "h2: RAM: needs 8192 MB, 4608 MB free"));
	/* h1 reports again: back in */
	env_report(&e, "h1", false, 0);
	res = env_req(&e, "instance.boot", BOOT("big3", "m1.large"));
	assert_true(res_ok(res));
	assert_string_equal(build_host(&e, 0), "h1");
	env_close(&e);
}

static void test_groups(void **state)
{
	struct env e;
	json_t *res, *list;
	const char *seen[3];

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	env_report(&e, "h2", false, 0);
	env_report(&e, "h3", false, 0);
	res = env_req(&e, "instance.boot",
		      "{\"project\":\"acme\",\"name\":\"db\",\"flavor\":\"m1.small\",\"image\":\"debian\","
		      "\"server_group\":\"g\",\"server_group_policy\":\"anti-affinity\",\"count\":3}");
	assert_true(res_ok(res));
	list = json_object_get(json_object_get(res, "data"), "instances");
	assert_int_equal(json_array_size(list), 3);
	for (int i = 0; i < 3; i++)
		seen[i] = json_string_value(json_object_get(json_array_get(list, i), "host"));
	assert_string_not_equal(seen[0], seen[1]);
	assert_string_not_equal(seen[1], seen[2]);
	assert_string_not_equal(seen[0], seen[2]);
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 2), "name")), "db-3");
	assert_int_equal(e.out.n, 1 + 3 + 3); /* one outcome, three states, three builds */
	res = env_req(&e, "instance.boot",
		      "{\"project\":\"acme\",\"name\":\"db-4\",\"flavor\":\"m1.small\",\"image\":\"debian\","
		      "\"server_group\":\"g\"}");
	assert_false(res_ok(res));
	assert_non_null(strstr(res_error(res), "server group anti-affinity"));
	res = env_req(&e, "instance.boot",
		      "{\"project\":\"acme\",\"name\":\"x\",\"flavor\":\"m1.small\",\"image\":\"debian\","
		      "\"server_group\":\"g\",\"server_group_policy\":\"affinity\"}");
	assert_string_equal(res_error(res), "server group g has policy anti-affinity, not affinity");
	/* affinity: all on one host */
	res = env_req(&e, "instance.boot",
		      "{\"project\":\"acme\",\"name\":\"web\",\"flavor\":\"m1.small\",\"image\":\"debian\","
		      "\"server_group\":\"w\",\"server_group_policy\":\"affinity\",\"count\":3}");
	assert_true(res_ok(res));
	list = json_object_get(json_object_get(res, "data"), "instances");
	for (int i = 0; i < 3; i++)
		seen[i] = json_string_value(json_object_get(json_array_get(list, i), "host"));
	assert_string_equal(seen[0], seen[1]);
	assert_string_equal(seen[0], seen[2]);
	env_close(&e);
}

/* The security-group view of a host names each port once with each group
 * once, also while the instance's allocation and its migration row both
 * name that host (a move's end, before the row goes). */
static void test_sg_view_no_duplicates(void **state)
{
	struct env e;
	char uuid[UUID_STRLEN], sql[512];
	const char *host;
	json_t *view, *ports, *groups;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	host = boot_host(&e, BOOT("web", "m1.small"), uuid);
	assert_string_equal(host, "h1");
	snprintf(sql, sizeof(sql),
		 "INSERT INTO migrations(uuid, migration, project, source, dest, phase, numa_node, "
		 "page_kb, pages, started_ms) "
		 "VALUES ('%s', 'm-1', 'acme', 'h0', 'h1', 'prepare', 0, 4, 0, 0)", uuid);
	assert_int_equal(sqlite3_exec(e.s->db, sql, NULL, NULL, NULL), SQLITE_OK);
	view = sched_sg_view(e.s, "acme", "h1");
	assert_non_null(view);
	ports = json_object_get(view, "ports");
	assert_int_equal(json_array_size(ports), 1);
	groups = json_object_get(json_array_get(ports, 0), "groups");
	assert_int_equal(json_array_size(groups), 1);
	assert_int_equal(json_array_size(json_object_get(view, "groups")), 1);
	json_decref(view);
	env_close(&e);
}

static void test_numa_hugepages(void **state)
{
	struct env e;
	struct sched_msg *b;
	json_t *claim;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	env_report(&e, "h2", true, 0);
	assert_string_equal(boot_host(&e, BOOT("p1", "m1.pinned"), NULL), "h2");
	b = env_msg(&e, "instance.build", 0);
	claim = json_object_get(b->body, "claim");
	assert_int_equal(json_integer_value(json_object_get(claim, "numa_node")), 1);
	assert_int_equal(json_integer_value(json_object_get(claim, "page_kb")), 2048);
	assert_int_equal(json_integer_value(json_object_get(claim, "pages")), 1024);
	assert_int_equal(usage_of(&e, "pcpus"), 2);
	assert_int_equal(usage_of(&e, "hugepages_mb"), 2048);
	/* node 1 has no pCPUs left: the next one has nowhere to go */
	assert_false(res_ok(env_req(&e, "instance.boot", BOOT("p2", "m1.pinned"))));
	env_close(&e);
}

static void test_restart(void **state)
{
	struct env e;
	char uuid[UUID_STRLEN];
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", true, 2.0);
	env_report(&e, "h2", false, 0);
	boot_host(&e, BOOT("a", "m1.large"), uuid);
	boot_host(&e, BOOT("b", "m1.pinned"), NULL);
	res = env_req(&e, "flavor.add", "{\"name\":\"m2.tiny\",\"vcpus\":1,\"ram_mb\":256,\"disk_gb\":1}");
	assert_true(res_ok(res));
	res = env_req(&e, "flavor.remove", "{\"name\":\"m1.small\"}");
	assert_true(res_ok(res));
	env_reopen(&e);
	/* claims rebuilt from allocations, hosts from their last reports */
	assert_int_equal(sched_host_find(e.s, "h1")->ram_used + sched_host_find(e.s, "h2")->ram_used,
			 8192 + 2048);
	assert_int_equal(sched_host_find(e.s, "h1")->pcpu_used, 2);
	assert_int_equal(sched_host_find(e.s, "h1")->numa[1].pages[0].used, 1024);
	assert_int_equal(usage_of(&e, "instances"), 2);
	/* catalog changes made over the bus survive a restart */
	assert_non_null(sched_flavor_find(e.s, "m2.tiny"));
	assert_null(sched_flavor_find(e.s, "m1.small"));
	/* builds still scheduling go out again */
	sched_out_clear(&e.out);
	assert_int_equal(sched_resume(e.s, &e.out), 0);
	assert_int_equal(e.out.n, 2);
	assert_string_equal(e.out.v[0].type, "instance.build");
	/* and the instance carries on: the agent confirms */
	{
		char ev[256];

		snprintf(ev, sizeof(ev), "{\"uuid\":\"%s\",\"project\":\"acme\",\"state\":\"active\"}", uuid);
		assert_null(env_send(&e, "instance.state", NULL, ev));
		res = env_req(&e, "instance.show", "{\"project\":\"acme\",\"instance\":\"a\"}");
		assert_string_equal(json_string_value(json_object_get(json_object_get(res, "data"), "state")),
				    "active");
		sched_out_clear(&e.out);
		assert_int_equal(sched_resume(e.s, &e.out), 0);
		assert_int_equal(e.out.n, 1);
	}
	res = env_req(&e, "host.list", "{}");
	assert_int_equal(json_array_size(json_object_get(res, "data")), 2);
	env_close(&e);
}

/* reboot's "hard": a boolean, forwarded to the host; anything else refused
 * with nothing sent */
static void test_reboot_hard(void **state)
{
	struct env e;
	struct sched_msg *m;
	json_t *res;
	char uuid[UUID_STRLEN], ev[256];

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	assert_string_equal(boot_host(&e, BOOT("r", "m1.small"), uuid), "h1");
	snprintf(ev, sizeof(ev), "{\"uuid\":\"%s\",\"project\":\"acme\",\"state\":\"active\"}", uuid);
	assert_null(env_send(&e, "instance.state", NULL, ev));

	res = env_req(&e, "instance.reboot", "{\"project\":\"acme\",\"instance\":\"r\",\"hard\":\"yes\"}");
	assert_false(res_ok(res));
	assert_string_equal(res_error(res), "instance.reboot: hard: expected true or false");
	assert_null(env_msg(&e, "instance.reboot", 0));

	res = env_req(&e, "instance.reboot", "{\"project\":\"acme\",\"instance\":\"r\",\"hard\":true}");
	assert_true(res_ok(res));
	m = env_msg(&e, "instance.reboot", 0);
	assert_non_null(m);
	assert_string_equal(m->topic, "stratus.host.h1");
	assert_true(json_is_true(json_object_get(m->body, "hard")));
	assert_int_equal(bus_validate("instance.reboot", BUS_TC_HOST, m->body), 0);

	res = env_req(&e, "instance.reboot", "{\"project\":\"acme\",\"instance\":\"r\"}");
	assert_true(res_ok(res));
	m = env_msg(&e, "instance.reboot", 0);
	assert_non_null(m);
	assert_null(json_object_get(m->body, "hard")); /* soft first */
	env_close(&e);
}

static void test_catalog_requests(void **state)
{
	struct env e;
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	res = env_req(&e, "host.list", "{}"); /* no host yet */
	assert_int_equal(json_array_size(json_object_get(res, "data")), 0);
	res = env_req(&e, "flavor.list", "{}");
	assert_int_equal(json_array_size(json_object_get(res, "data")), 3);
	res = env_req(&e, "flavor.add", "{\"name\":\"m1.small\",\"vcpus\":1,\"ram_mb\":256}");
	assert_string_equal(res_error(res), "flavor m1.small already exists");
	res = env_req(&e, "flavor.add", "{\"name\":\"x\",\"vcpus\":1,\"ram_mb\":256,"
					"\"extra_specs\":{\"hw:cpu_policy\":\"weird\"}}");
	assert_string_equal(res_error(res), "flavor.add: flavor x: hw:cpu_policy: expected shared or dedicated, got 'weird'");
	/* the URL filter: loopback refused, naming the rule; nothing added */
	res = env_req(&e, "image.add", "{\"name\":\"alpine\",\"url\":\"http://127.0.0.1/a.qcow2\","
				       "\"checksum\":\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\"disk_format\":\"qcow2\"}");
	assert_non_null(strstr(res_error(res), "127.0.0.1, a loopback address: denied by the URL filter"));
	res = env_req(&e, "image.add", "{\"name\":\"alpine\",\"url\":\"http://192.0.2.10/a.qcow2\","
				       "\"checksum\":\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\"disk_format\":\"qcow2\"}");
	assert_true(res_ok(res));
	res = env_req(&e, "image.list", "{}");
	assert_int_equal(json_array_size(json_object_get(res, "data")), 2);
	res = env_req(&e, "image.remove", "{\"name\":\"nope\"}");
	assert_string_equal(res_error(res), "image 'nope' not found");
	env_close(&e);
}

/* Group commit: each request is a savepoint; a refused one rolls back alone. */
static void test_batch(void **state)
{
	struct env e;
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	env_report(&e, "h1", false, 0);
	assert_true(res_ok(env_req(&e, "quota.set", "{\"project\":\"acme\",\"limits\":{\"cores\":5}}")));
	assert_int_equal(sched_batch_begin(e.s), 0);
	assert_true(sched_in_batch(e.s));
	assert_true(res_ok(env_req(&e, "instance.boot", BOOT("a", "m1.large"))));
	res = env_req(&e, "instance.boot", BOOT("b", "m1.large"));
	assert_false(res_ok(res));
	assert_non_null(strstr(res_error(res), "cores: requested 4, used 4, limit 5"));
	assert_true(res_ok(env_req(&e, "instance.boot", BOOT("c", "m1.small"))));
	assert_int_equal(sched_batch_commit(e.s), 0);
	assert_false(sched_in_batch(e.s));
	env_reopen(&e);
	res = env_req(&e, "instance.list", "{\"project\":\"acme\"}");
	assert_int_equal(json_array_size(json_object_get(res, "data")), 2);
	assert_int_equal(usage_of(&e, "cores"), 5);
	assert_int_equal(sched_host_find(e.s, "h1")->ram_used, 8192 + 1024);
	env_close(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_boot_build_spec),
		cmocka_unit_test(test_sealed_boot),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_over_quota),
		cmocka_unit_test(test_duplicate_request),
		cmocka_unit_test(test_delete_releases_on_confirm),
		cmocka_unit_test(test_reschedule_then_error),
		cmocka_unit_test(test_evacuation_note_follows_reschedule),
		cmocka_unit_test(test_spread_pack),
		cmocka_unit_test(test_down_host),
		cmocka_unit_test(test_groups),
		cmocka_unit_test(test_sg_view_no_duplicates),
		cmocka_unit_test(test_numa_hugepages),
		cmocka_unit_test(test_restart),
		cmocka_unit_test(test_catalog_requests),
		cmocka_unit_test(test_reboot_hard),
		cmocka_unit_test(test_batch),
	};

	log_threshold = LOG_LVL_WARN;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
