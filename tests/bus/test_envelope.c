/* The envelope and the message type table: round trips, and every way a
 * message can be wrong rejected with the error a user reads. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"

#define UUID1 "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d"
#define UUID2 "9d6e2f7a-1b2c-4d3e-8f90-a1b2c3d4e5f6"
#define SUM "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* DESIGN.md's instance spec */
#define SPEC_FIELDS \
	"\"uuid\":\"" UUID1 "\",\"name\":\"web-1\",\"hostname\":\"web-1\",\"project\":\"acme\"," \
	"\"availability_zone\":\"az1\"," \
	"\"flavor\":{\"name\":\"m1.pinned\",\"vcpus\":2,\"ram_mb\":1024,\"disk_gb\":4," \
	"\"extra_specs\":{\"hw:cpu_policy\":\"dedicated\",\"hw:mem_page_size\":\"2MB\"}}," \
	"\"image\":{\"name\":\"debian-12\",\"url\":\"http://10.0.0.1:8080/debian-12.qcow2\"," \
	"\"checksum\":\"" SUM "\",\"disk_format\":\"qcow2\",\"min_disk_gb\":2}," \
	"\"user_data\":\"I2Nsb3VkLWNvbmZpZwo=\"," \
	"\"ssh_keys\":[{\"name\":\"k1\",\"key\":\"ssh-ed25519 AAAA me@laptop\"}]," \
	"\"metadata\":{\"role\":\"web\"},\"seed\":\"nocloud\"," \
	"\"network\":{\"mac\":\"52:54:00:12:34:56\",\"address\":\"10.0.0.5/24\"," \
	"\"gateway\":\"10.0.0.1\",\"dns\":[\"10.0.0.1\"]}"
static const char spec_json[] = "{" SPEC_FIELDS "}";

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);

	if (!j)
		fail_msg("test JSON does not load: %s: %s", e.text, text);
	return j;
}

/* An envelope text with version v, TYPE and BODY (JSON text). malloc'd. */
static char *env_text(long v, const char *type, const char *body)
{
	json_t *root = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:o}", "v", (json_int_t)v, "id",
				 UUID2, "type", type, "ts", "2026-11-23T09:15:08.123Z", "source",
				 "test", "request_id", UUID1, "body", load(body));
	char *s = json_dumps(root, JSON_COMPACT);

	json_decref(root);
	return s;
}

static void test_round_trip(void **state)
{
	struct bus_envelope *e = NULL, *back = NULL;
	char *text = NULL, *again = NULL;
	size_t len;

	(void)state;
	assert_int_equal(bus_envelope_new("instance.build", BUS_TC_HOST, "scheduler", UUID1,
					  load(spec_json), &e), 0);
	assert_int_equal(e->v, 1);
	assert_true(uuid_valid(e->id));
	assert_true(time_rfc3339_valid(e->ts));
	assert_string_equal(e->request_id, UUID1);
	assert_string_equal(bus_envelope_default_key(e), UUID1);
	assert_int_equal(bus_envelope_serialize(e, &text, &len), 0);
	assert_int_equal(strlen(text), len);
	assert_non_null(strstr(text, "{\"v\":1,\"id\":\""));

	assert_int_equal(bus_envelope_parse(text, len, "stratus.host.node-1", &back), 0);
	assert_string_equal(back->id, e->id);
	assert_string_equal(back->type, "instance.build");
	assert_string_equal(back->ts, e->ts);
	assert_string_equal(back->source, "scheduler");
	assert_string_equal(back->request_id, UUID1);
	assert_int_equal(back->tc, BUS_TC_HOST);
	assert_true(json_equal(back->body, e->body));
	assert_int_equal(bus_envelope_serialize(back, &again, NULL), 0);
	assert_string_equal(again, text);
	free(text);
	free(again);
	bus_envelope_free(e);
	bus_envelope_free(back);

	/* a new request gets a fresh request id; parse without a topic */
	assert_int_equal(bus_envelope_new("instance.list", BUS_TC_LAST, "cli", NULL,
					  load("{\"project\":\"acme\"}"), &e), 0);
	assert_true(uuid_valid(e->request_id));
	assert_int_equal(e->tc, BUS_TC_API);
	assert_string_equal(bus_envelope_default_key(e), "acme");
	assert_int_equal(bus_envelope_serialize(e, &text, &len), 0);
	assert_int_equal(bus_envelope_parse(text, len, NULL, &back), 0);
	assert_string_equal(back->type, "instance.list");
	free(text);
	bus_envelope_free(e);
	bus_envelope_free(back);
	bus_envelope_free(NULL);
}

/* One valid body for every row of the table: the table and the schemas agree. */
static void test_every_type_has_a_valid_body(void **state)
{
	static const struct {
		const char *type;
		enum bus_topic_class tc;
		const char *body;
	} ok[] = {
		{ "instance.boot", BUS_TC_API,
		  "{\"project\":\"acme\",\"name\":\"web\",\"flavor\":\"m1\",\"image\":\"deb\","
		  "\"user_data\":\"aGk=\",\"ssh_keys\":[{\"name\":\"k\",\"key\":\"ssh-ed25519 A\"}],"
		  "\"metadata\":{\"a\":\"b\"},\"server_group\":\"g\",\"count\":2,\"seed\":\"none\"}" },
		{ "instance.delete", BUS_TC_API, "{\"project\":\"acme\",\"instance\":\"web\"}" },
		{ "instance.stop", BUS_TC_API, "{\"project\":\"acme\",\"instance\":\"web\"}" },
		{ "instance.start", BUS_TC_API, "{\"project\":\"acme\",\"instance\":\"web\"}" },
		{ "instance.reboot", BUS_TC_API,
		  "{\"project\":\"acme\",\"instance\":\"web\",\"hard\":false}" },
		{ "instance.console", BUS_TC_API, "{\"project\":\"acme\",\"instance\":\"web\"}" },
		{ "instance.show", BUS_TC_API, "{\"project\":\"acme\",\"instance\":\"" UUID1 "\"}" },
		{ "instance.list", BUS_TC_API, "{\"project\":\"acme\"}" },
		{ "quota.show", BUS_TC_API, "{\"project\":\"acme\"}" },
		{ "quota.set", BUS_TC_API, "{\"project\":\"acme\",\"limits\":{\"instances\":10}}" },
		{ "flavor.list", BUS_TC_API, "{}" },
		{ "flavor.add", BUS_TC_API,
		  "{\"name\":\"m1\",\"vcpus\":1,\"ram_mb\":512,\"disk_gb\":1}" },
		{ "flavor.remove", BUS_TC_API, "{\"name\":\"m1\"}" },
		{ "image.list", BUS_TC_API, "{}" },
		{ "image.add", BUS_TC_API,
		  "{\"name\":\"d\",\"url\":\"http://x/d.qcow2\",\"checksum\":\"sha256:1\","
		  "\"disk_format\":\"raw\"}" },
		{ "image.remove", BUS_TC_API, "{\"name\":\"d\"}" },
		{ "image.share", BUS_TC_API, "{\"name\":\"d\",\"with\":\"beta\"}" },
		{ "image.unshare", BUS_TC_API, "{\"name\":\"d\",\"with\":\"beta\"}" },
		{ "instance.rebuild", BUS_TC_API,
		  "{\"project\":\"acme\",\"instance\":\"web-1\",\"image\":\"debian\","
		  "\"user_data\":\"I2Nsb3VkLWNvbmZpZwo=\"}" },
		{ "host.list", BUS_TC_API, "{}" },
		{ "host.forget", BUS_TC_API, "{\"host\":\"hv1\"}" },
		{ "credential.create", BUS_TC_API, "{\"project\":\"acme\",\"role\":\"member\"}" },
		{ "credential.list", BUS_TC_API, "{}" },
		{ "credential.revoke", BUS_TC_API, "{\"id\":\"" UUID1 "\"}" },
		{ "scheduler.keys", BUS_TC_API, "{}" },
		{ "secgroup.create", BUS_TC_API, "{\"project\":\"acme\",\"name\":\"web\"}" },
		{ "secgroup.list", BUS_TC_API, "{\"project\":\"acme\"}" },
		{ "secgroup.show", BUS_TC_API, "{\"project\":\"acme\",\"group\":\"web\"}" },
		{ "secgroup.delete", BUS_TC_API, "{\"project\":\"acme\",\"group\":\"web\"}" },
		{ "secgroup.rule.add", BUS_TC_API,
		  "{\"project\":\"acme\",\"group\":\"web\",\"direction\":\"ingress\","
		  "\"protocol\":\"tcp\",\"port_range_min\":80,\"remote_ip_prefix\":\"0.0.0.0/0\"}" },
		{ "secgroup.rule.delete", BUS_TC_API, "{\"project\":\"acme\",\"id\":\"" UUID1 "\"}" },
		{ "host.disable", BUS_TC_API, "{\"host\":\"n1\",\"reason\":\"kernel update\"}" },
		{ "host.enable", BUS_TC_API, "{\"host\":\"n1\"}" },
		{ "host.drain", BUS_TC_API, "{\"host\":\"n1\"}" },
		{ "host.evacuate", BUS_TC_API, "{\"host\":\"n1\"}" },
		{ "instance.migrate", BUS_TC_API,
		  "{\"project\":\"acme\",\"instance\":\"web\",\"host\":\"n2\"}" },
		{ "volume.create", BUS_TC_API,
		  "{\"project\":\"acme\",\"name\":\"data\",\"size_gb\":10,\"host\":\"n1\"}" },
		{ "volume.list", BUS_TC_API, "{\"project\":\"acme\"}" },
		{ "volume.show", BUS_TC_API, "{\"project\":\"acme\",\"volume\":\"data\"}" },
		{ "volume.delete", BUS_TC_API, "{\"project\":\"acme\",\"volume\":\"data\"}" },
		{ "volume.attach", BUS_TC_API,
		  "{\"project\":\"acme\",\"volume\":\"data\",\"instance\":\"web-1\"}" },
		{ "volume.detach", BUS_TC_API, "{\"project\":\"acme\",\"volume\":\"data\"}" },
		{ "instance.resize", BUS_TC_API,
		  "{\"project\":\"acme\",\"instance\":\"web-1\",\"flavor\":\"m1.small\"}" },
		{ "instance.resize.confirm", BUS_TC_API, "{\"project\":\"acme\",\"instance\":\"web-1\"}" },
		{ "instance.resize.revert", BUS_TC_API, "{\"project\":\"acme\",\"instance\":\"web-1\"}" },
		{ "instance.resize", BUS_TC_HOST,
		  "{\"uuid\":\"" UUID1 "\",\"flavor\":{\"name\":\"m1.small\",\"vcpus\":2,"
		  "\"ram_mb\":1024,\"disk_gb\":2,\"extra_specs\":{}}}" },
		{ "instance.resize.confirm", BUS_TC_HOST, "{\"uuid\":\"" UUID1 "\"}" },
		{ "instance.resize.revert", BUS_TC_HOST, "{\"uuid\":\"" UUID1 "\"}" },
		{ "instance.snapshot", BUS_TC_API,
		  "{\"project\":\"acme\",\"instance\":\"web-1\",\"name\":\"web-1-snap\"}" },
		{ "instance.build", BUS_TC_HOST, spec_json },
		{ "instance.rebuild", BUS_TC_HOST, spec_json },
		{ "instance.delete", BUS_TC_HOST, "{\"uuid\":\"" UUID1 "\"}" },
		{ "instance.stop", BUS_TC_HOST, "{\"uuid\":\"" UUID1 "\"}" },
		{ "instance.start", BUS_TC_HOST, "{\"uuid\":\"" UUID1 "\"}" },
		{ "instance.reboot", BUS_TC_HOST, "{\"uuid\":\"" UUID1 "\",\"hard\":true}" },
		{ "instance.console", BUS_TC_HOST, "{\"uuid\":\"" UUID1 "\"}" },
		{ "secgroup.apply", BUS_TC_HOST,
		  "{\"project\":\"acme\",\"ports\":[{\"uuid\":\"" UUID1 "\",\"groups\":[\"" UUID1
		  "\"]}],\"groups\":[{\"id\":\"" UUID1 "\",\"name\":\"default\",\"rules\":[]}],"
		  "\"members\":{},\"seq\":4294967297}" },
		{ "instance.migrate.prepare", BUS_TC_HOST,
		  "{" SPEC_FIELDS ",\"migration\":\"" UUID2 "\",\"source_host\":\"n1\","
		  "\"secgroups\":{\"project\":\"acme\",\"ports\":[],\"groups\":[],\"members\":{},"
		  "\"seq\":4294967298}}" },
		{ "instance.migrate.perform", BUS_TC_HOST,
		  "{\"uuid\":\"" UUID1 "\",\"migration\":\"" UUID2 "\",\"dest_host\":\"n2\","
		  "\"dest_uri\":\"qemu+tcp://n2/system\",\"domain_xml\":\"<domain/>\","
		  "\"limits\":{\"downtime_ms\":500,\"downtime_steps\":10,\"downtime_delay_ms\":150000,"
		  "\"completion_timeout_ms\":1600000,\"timeout_action\":\"abort\","
		  "\"auto_converge\":true}}" },
		{ "instance.migrate.finish", BUS_TC_HOST,
		  "{\"uuid\":\"" UUID1 "\",\"migration\":\"" UUID2 "\",\"outcome\":\"commit\"}" },
		{ "volume.create", BUS_TC_HOST,
		  "{\"uuid\":\"" UUID1 "\",\"project\":\"acme\",\"name\":\"data\",\"size_gb\":10}" },
		{ "volume.delete", BUS_TC_HOST, "{\"uuid\":\"" UUID1 "\"}" },
		{ "volume.attach", BUS_TC_HOST,
		  "{\"uuid\":\"" UUID1 "\",\"instance\":\"" UUID1 "\"}" },
		{ "volume.detach", BUS_TC_HOST, "{\"uuid\":\"" UUID1 "\"}" },
		{ "instance.snapshot", BUS_TC_HOST,
		  "{\"uuid\":\"" UUID1 "\",\"snapshot\":\"" UUID2 "\",\"name\":\"web-1-snap\"}" },
		{ "instance.state", BUS_TC_EVENTS,
		  "{\"uuid\":\"" UUID1 "\",\"project\":\"acme\",\"host\":\"n1\",\"state\":\"active\","
		  "\"reason\":\"built\"}" },
		{ "request.result", BUS_TC_EVENTS, "{\"ok\":true,\"data\":[1,2]}" },
		{ "instance.reschedule", BUS_TC_EVENTS,
		  "{\"uuid\":\"" UUID1 "\",\"failed_host\":\"n1\",\"attempt\":1}" },
		{ "instance.migration", BUS_TC_EVENTS,
		  "{\"uuid\":\"" UUID1 "\",\"migration\":\"" UUID2 "\",\"phase\":\"progress\","
		  "\"host\":\"n1\",\"memory_processed\":1048576,\"memory_remaining\":0}" },
		{ "volume.state", BUS_TC_EVENTS,
		  "{\"uuid\":\"" UUID1 "\",\"project\":\"acme\",\"host\":\"n1\",\"state\":\"in-use\","
		  "\"instance\":\"" UUID1 "\"}" },
		{ "image.snapshot", BUS_TC_EVENTS,
		  "{\"uuid\":\"" UUID1 "\",\"snapshot\":\"" UUID2 "\",\"project\":\"acme\","
		  "\"phase\":\"progress\",\"host\":\"n1\",\"bytes\":1048576,\"total\":4194304}" },
		{ "host.report", BUS_TC_METRICS, "{\"host\":\"n1\",\"inventory\":{}}" },
	};
	size_t n;

	(void)state;
	bus_type_table(&n);
	assert_int_equal(n, ARRAY_SIZE(ok)); /* a new row needs a case here */
	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		json_t *b = load(ok[i].body);
		const struct bus_type *row = NULL;

		if (bus_type_validate(ok[i].type, ok[i].tc, b, &row) < 0)
			fail_msg("%s: %s", ok[i].type, err_msg());
		assert_int_equal(row->tc, ok[i].tc);
		json_decref(b);
	}
}

/* Every rejection, with the exact text a user reads. */
static void test_rejections(void **state)
{
	static const struct {
		const char *name;
		long v;
		const char *type, *body, *topic;
		const char *err;
	} bad[] = {
		{ "unknown version", 2, "instance.list", "{\"project\":\"a\"}", NULL,
		  "envelope: v: unsupported version 2 (this build speaks 1)" },
		{ "volume size zero", 1, "volume.create", "{\"project\":\"a\",\"name\":\"d\",\"size_gb\":0}",
		  NULL, "volume.create: body.size_gb: expected a positive integer" },
		{ "volume state unknown", 1, "volume.state",
		  "{\"uuid\":\"" UUID1 "\",\"project\":\"a\",\"host\":\"n1\",\"state\":\"melted\"}",
		  "stratus.events", "volume.state: body.state: expected one of creating, available, "
		  "attaching, in-use, detaching, deleting, error or deleted" },
		{ "secgroup view numbered below zero", 1, "secgroup.apply",
		  "{\"project\":\"a\",\"ports\":[],\"groups\":[],\"members\":{},\"seq\":-1}",
		  "stratus.host.n1", "secgroup.apply: body.seq: expected a non-negative integer" },
		{ "prepare's groups not an object", 1, "instance.migrate.prepare",
		  "{\"uuid\":\"" UUID1 "\",\"migration\":\"" UUID2 "\",\"source_host\":\"n1\","
		  "\"secgroups\":[]}",
		  "stratus.host.n1", "instance.migrate.prepare: body.secgroups: expected an object" },
		{ "unknown type", 1, "instance.explode", "{}", NULL,
		  "envelope: type: unknown message type 'instance.explode'" },
		{ "vcpus zero", 1, "instance.build",
		  "{\"uuid\":\"" UUID1 "\",\"name\":\"w\",\"project\":\"a\","
		  "\"flavor\":{\"name\":\"m\",\"vcpus\":0,\"ram_mb\":512,\"disk_gb\":1},"
		  "\"image\":{\"url\":\"http://x/d.qcow2\",\"checksum\":\"" SUM "\",\"disk_format\":\"qcow2\"}}",
		  "stratus.host.n1", "instance.build: body.flavor.vcpus: expected an integer from 1 to 1024, got 0" },
		{ "spec without image", 1, "instance.build",
		  "{\"uuid\":\"" UUID1 "\",\"name\":\"w\",\"project\":\"a\","
		  "\"flavor\":{\"name\":\"m\",\"vcpus\":1,\"ram_mb\":512,\"disk_gb\":1}}",
		  "stratus.host.n1", "instance.build: body.image: missing" },
		{ "spec bad disk format", 1, "instance.build",
		  "{\"uuid\":\"" UUID1 "\",\"name\":\"w\",\"project\":\"a\","
		  "\"flavor\":{\"name\":\"m\",\"vcpus\":1,\"ram_mb\":512,\"disk_gb\":1},"
		  "\"image\":{\"url\":\"http://x/d.qcow2\",\"checksum\":\"" SUM "\",\"disk_format\":\"vmdk\"}}",
		  "stratus.host.n1", "instance.build: body.image.disk_format: expected one of qcow2, raw, got 'vmdk'" },
		{ "spec uuid", 1, "instance.build", "{\"uuid\":\"web-1\"}", "stratus.host.n1",
		  "instance.build: body.uuid: expected a UUID like 0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d, got 'web-1'" },
		{ "boot without image", 1, "instance.boot",
		  "{\"project\":\"a\",\"name\":\"w\",\"flavor\":\"m1\"}", NULL,
		  "instance.boot: body.image: required field is missing" },
		{ "boot ssh key", 1, "instance.boot",
		  "{\"project\":\"a\",\"name\":\"w\",\"flavor\":\"m1\",\"image\":\"i\","
		  "\"ssh_keys\":[{\"name\":\"k\",\"key\":\"x\"},{\"name\":\"k2\"}]}", NULL,
		  "instance.boot: body.ssh_keys[1].key: required field is missing" },
		{ "boot metadata", 1, "instance.boot",
		  "{\"project\":\"a\",\"name\":\"w\",\"flavor\":\"m1\",\"image\":\"i\","
		  "\"metadata\":{\"role\":5}}", NULL,
		  "instance.boot: body.metadata.role: expected a string" },
		{ "boot user_data", 1, "instance.boot",
		  "{\"project\":\"a\",\"name\":\"w\",\"flavor\":\"m1\",\"image\":\"i\","
		  "\"user_data\":\"not base64!\"}", NULL,
		  "instance.boot: body.user_data: expected a base64 string" },
		{ "boot count", 1, "instance.boot",
		  "{\"project\":\"a\",\"name\":\"w\",\"flavor\":\"m1\",\"image\":\"i\",\"count\":\"2\"}",
		  NULL, "instance.boot: body.count: expected a positive integer" },
		{ "boot seed", 1, "instance.boot",
		  "{\"project\":\"a\",\"name\":\"w\",\"flavor\":\"m1\",\"image\":\"i\",\"seed\":\"cd\"}",
		  NULL, "instance.boot: body.seed: expected one of nocloud, configdrive or none" },
		{ "reboot hard", 1, "instance.reboot",
		  "{\"project\":\"a\",\"instance\":\"w\",\"hard\":\"yes\"}", NULL,
		  "instance.reboot: body.hard: expected true or false" },
		{ "reboot hard on the host topic", 1, "instance.reboot",
		  "{\"uuid\":\"" UUID1 "\",\"hard\":1}", "stratus.host.n1",
		  "instance.reboot: body.hard: expected true or false" },
		{ "migrate cold", 1, "instance.migrate",
		  "{\"project\":\"a\",\"instance\":\"w\",\"cold\":\"yes\"}", NULL,
		  "instance.migrate: body.cold: expected true or false" },
		{ "body not an object", 1, "instance.list", "[1]", NULL,
		  "instance.list: body: expected an object" },
		{ "state", 1, "instance.state",
		  "{\"uuid\":\"" UUID1 "\",\"project\":\"a\",\"state\":\"running\"}", NULL,
		  "instance.state: body.state: expected one of scheduling, building, active, stopped, "
		  "rebooting, deleting, deleted, error, rebuilding, migrating, resizing, verify_resize "
		  "or reverting" },
		{ "result without error", 1, "request.result", "{\"ok\":false}", NULL,
		  "request.result: body.error: required when ok is false" },
		{ "quota limit", 1, "quota.set", "{\"project\":\"a\",\"limits\":{\"cores\":-1}}", NULL,
		  "quota.set: body.limits.cores: expected a non-negative integer" },
		{ "wrong topic", 1, "instance.boot",
		  "{\"project\":\"a\",\"name\":\"w\",\"flavor\":\"m1\",\"image\":\"i\"}",
		  "stratus.events", "instance.boot: does not travel on stratus.events" },
		{ "api body on a host topic", 1, "instance.delete",
		  "{\"project\":\"a\",\"instance\":\"w\"}", "stratus.host.n1",
		  "instance.delete: body.uuid: required field is missing" },
		{ "not a stratus topic", 1, "instance.list", "{\"project\":\"a\"}", "orders",
		  "topic orders: not a Stratus topic (expected stratus.api, stratus.events, "
		  "stratus.metrics or stratus.host.<host>)" },
	};
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *text = env_text(bad[i].v, bad[i].type, bad[i].body);
		struct bus_envelope *e = NULL;
		int r = bus_envelope_parse(text, strlen(text), bad[i].topic, &e);

		if (r >= 0)
			fail_msg("%s: accepted", bad[i].name);
		assert_null(e);
		if (strcmp(err_msg(), bad[i].err) != 0)
			fail_msg("%s:\n  got      '%s'\n  expected '%s'", bad[i].name, err_msg(),
				 bad[i].err);
		free(text);
	}
	/* the same body is fine on stratus.api */
	{
		char *text = env_text(1, "instance.delete", "{\"project\":\"a\",\"instance\":\"w\"}");
		struct bus_envelope *e = NULL;

		assert_int_equal(bus_envelope_parse(text, strlen(text), "stratus.api", &e), 0);
		assert_int_equal(e->tc, BUS_TC_API);
		bus_envelope_free(e);
		free(text);
	}
}

static void expect_parse_error(const char *text, size_t len, const char *err_start)
{
	struct bus_envelope *e = NULL;

	assert_true(bus_envelope_parse(text, len, NULL, &e) < 0);
	assert_null(e);
	if (strncmp(err_msg(), err_start, strlen(err_start)) != 0)
		fail_msg("got '%s', expected it to start with '%s'", err_msg(), err_start);
}

static void test_envelope_fields(void **state)
{
	(void)state;
	expect_parse_error("{\"v\":1,", 7, "envelope: not valid JSON (line 1 column 7:");
	expect_parse_error("", 0, "envelope: not valid JSON");
	expect_parse_error("[1,2]", 5, "envelope: expected a JSON object");
	expect_parse_error("{}", 2, "envelope: v: required field is missing");
	expect_parse_error("{\"v\":\"1\"}", 9, "envelope: v: expected the integer 1");
	expect_parse_error("{\"v\":1,\"v\":1}", 13, "envelope: not valid JSON");
	expect_parse_error("{\"v\":1}", 7, "envelope: type: required field is missing");
	{
		const char *t = "{\"v\":1,\"type\":\"host.list\",\"id\":\"x\"}";

		expect_parse_error(t, strlen(t), "envelope: id: expected a UUID");
	}
	{
		const char *t = "{\"v\":1,\"type\":\"host.list\",\"id\":\"" UUID1 "\",\"ts\":\"today\"}";

		expect_parse_error(t, strlen(t), "envelope: ts: expected an RFC 3339 time");
	}
	{
		const char *t = "{\"v\":1,\"type\":\"host.list\",\"id\":\"" UUID1
				"\",\"ts\":\"2026-11-23T09:15:08Z\",\"source\":\"x\",\"request_id\":\""
				UUID1 "\"}";

		expect_parse_error(t, strlen(t), "host.list: body: required field is missing");
	}
}

/* auth travels with the envelope, outside what the signature covers */
static void test_auth_field(void **state)
{
	struct bus_envelope *e = NULL, *back = NULL;
	char *text = NULL, *c1 = NULL, *c2 = NULL, *big = NULL;
	size_t n, n1, n2;

	(void)state;
	assert_int_equal(bus_envelope_new("instance.list", BUS_TC_API, "t", NULL,
					  load("{\"project\":\"acme\"}"), &e), 0);
	assert_int_equal(bus_envelope_canonical(e, &c1, &n1), 0);
	assert_int_equal(bus_envelope_set_auth(e, json_pack("{s:s, s:s}", "credential", "c1", "sig",
							     "00ff")), 0);
	assert_int_equal(bus_envelope_serialize(e, &text, &n), 0);
	assert_int_equal(bus_envelope_parse(text, n, BUS_TOPIC_API, &back), 0);
	assert_non_null(back->auth);
	assert_string_equal(json_string_value(json_object_get(back->auth, "sig")), "00ff");
	/* the canonical bytes do not change with auth, and are sorted */
	assert_int_equal(bus_envelope_canonical(back, &c2, &n2), 0);
	assert_int_equal(n1, n2);
	assert_memory_equal(c1, c2, n1);
	assert_true(strncmp(c2, "{\"body\":{\"project\":\"acme\"},\"id\":", 30) == 0);
	free(text);
	bus_envelope_free(back);
	back = NULL;

	/* refused: auth not an object, a member not a string, too large */
	assert_int_equal(bus_envelope_set_auth(e, json_string("x")), -EINVAL);
	assert_string_equal(err_msg(), "envelope: auth: expected an object");
	assert_int_equal(bus_envelope_set_auth(e, json_pack("{s:i}", "sig", 1)), -EINVAL);
	assert_string_equal(err_msg(), "envelope: auth.sig: expected a string");
	big = calloc(1, BUS_AUTH_MAX + 1);
	memset(big, 'a', BUS_AUTH_MAX);
	assert_int_equal(bus_envelope_set_auth(e, json_pack("{s:s}", "sig", big)), -EINVAL);
	assert_string_equal(err_msg(), "envelope: auth: more than 1024 bytes");
	/* the auth set before the refusals is still there */
	assert_string_equal(json_string_value(json_object_get(e->auth, "credential")), "c1");
	free(text = NULL);
	json_object_set_new(e->auth, "sig", json_integer(5)); /* bypass the setter */
	assert_int_equal(bus_envelope_serialize(e, &text, &n), 0);
	assert_true(bus_envelope_parse(text, n, BUS_TOPIC_API, &back) < 0);
	assert_string_equal(err_msg(), "envelope: auth.sig: expected a string");
	free(text);
	free(big);
	free(c1);
	free(c2);
	bus_envelope_free(e);
}

/* The canonical bytes written directly are those of the envelope's object
 * through bus_canonical_json; a source that is not UTF-8 is refused. */
static void test_canonical_direct(void **state)
{
	struct bus_envelope *e = NULL;
	char *direct = NULL, *via = NULL;
	size_t nd, nv;
	json_t *root;

	(void)state;
	assert_int_equal(bus_envelope_new("instance.list", BUS_TC_API, "h\u00e9te \"q\"\\\t", NULL,
					  load("{\"project\":\"acme\"}"), &e), 0);
	/* a body no schema would take, to exercise the canonical form alone */
	json_decref(e->body);
	e->body = load("{\"z\":[1,-2,null,false],\"a\":\"\\u0001\\u00e9\\n\",\"m\":{\"b\":true,"
		       "\"B\":{}}}");
	e->v = -12;
	assert_int_equal(bus_envelope_canonical(e, &direct, &nd), 0);
	root = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:O}", "v", e->v, "id", e->id, "type",
			 e->type, "ts", e->ts, "source", e->source, "request_id", e->request_id,
			 "body", e->body);
	assert_non_null(root);
	assert_int_equal(bus_canonical_json(root, BUS_MAX_MESSAGE, &via, &nv), 0);
	assert_int_equal(nd, nv);
	assert_memory_equal(direct, via, nd);
	assert_non_null(strstr(direct, ",\"source\":\"h\u00e9te \\\"q\\\"\\\\\\t\","));
	assert_true(nd > 9 && strcmp(direct + nd - 9, ",\"v\":-12}") == 0);
	assert_true(strncmp(direct, "{\"body\":{\"a\":\"\\u0001\u00e9\\n\",\"m\":{\"B\":{},", 29) == 0);
	json_decref(root);
	free(direct);
	free(via);
	free(e->source);
	e->source = strdup("h\xc3\x28"); /* a broken two-byte sequence */
	assert_non_null(e->source);
	direct = NULL;
	assert_int_equal(bus_envelope_canonical(e, &direct, &nd), -EINVAL);
	assert_null(direct);
	assert_non_null(strstr(err_msg(), "source: not UTF-8"));
	free(e->source);
	e->source = strdup("\xed\xa0\x80"); /* a surrogate, U+D800 */
	assert_int_equal(bus_envelope_canonical(e, &direct, &nd), -EINVAL);
	bus_envelope_free(e);
}

static void test_size_caps(void **state)
{
	size_t big = BUS_MAX_MESSAGE + 1, ud_len;
	char *text = malloc(big + 1), *body = NULL, *ud;
	struct bus_envelope *e = NULL;

	(void)state;
	memset(text, ' ', big);
	text[big] = '\0';
	expect_parse_error(text, big, "envelope: 1048577 bytes, more than the limit of 1048576");
	free(text);

	/* user_data: 64 KiB decoded is fine, 3 bytes more are not */
	ud_len = (BUS_MAX_USER_DATA + 3) / 3 * 4;
	ud = malloc(ud_len + 1);
	memset(ud, 'A', ud_len);
	ud[ud_len] = '\0';
	assert_true(asprintf(&body, "{\"project\":\"a\",\"name\":\"w\",\"flavor\":\"m\",\"image\":\"i\","
			     "\"user_data\":\"%s\"}", ud) > 0);
	assert_int_equal(bus_envelope_new("instance.boot", BUS_TC_API, "t", NULL, load(body), &e),
			 -E2BIG);
	assert_string_equal(err_msg(), "instance.boot: body.user_data: 65538 bytes decoded, "
			    "more than the limit of 65536");
	free(body);
	ud[BUS_MAX_USER_DATA / 3 * 4] = '\0'; /* 65535 bytes */
	assert_true(asprintf(&body, "{\"project\":\"a\",\"name\":\"w\",\"flavor\":\"m\",\"image\":\"i\","
			     "\"user_data\":\"%s\"}", ud) > 0);
	assert_int_equal(bus_envelope_new("instance.boot", BUS_TC_API, "t", NULL, load(body), &e), 0);
	bus_envelope_free(e);
	free(body);
	free(ud);

	/* serialize refuses an envelope that would exceed the cap */
	{
		json_t *b = json_pack("{s:b, s:s}", "ok", 1, "pad", "");
		char *pad = malloc(BUS_MAX_MESSAGE + 1), *out = NULL;

		memset(pad, 'x', BUS_MAX_MESSAGE);
		pad[BUS_MAX_MESSAGE] = '\0';
		json_object_set_new(b, "data", json_string(pad));
		assert_int_equal(bus_envelope_new("request.result", BUS_TC_EVENTS, "t", NULL, b, &e), 0);
		assert_int_equal(bus_envelope_serialize(e, &out, NULL), -E2BIG);
		assert_null(out);
		bus_envelope_free(e);
		free(pad);
	}
}

/* Truncations and byte flips of a valid envelope: an error or a valid
 * envelope, never a crash (ASan/UBSan watch this under SANITIZE). */
static void test_garbage_never_crashes(void **state)
{
	struct bus_envelope *e = NULL;
	char *text = NULL;
	size_t len;
	unsigned seed = 12345;
	int accepted = 0;

	(void)state;
	assert_int_equal(bus_envelope_new("instance.build", BUS_TC_HOST, "s", NULL, load(spec_json),
					  &e), 0);
	assert_int_equal(bus_envelope_serialize(e, &text, &len), 0);
	bus_envelope_free(e);
	for (size_t n = 0; n < len; n++) {
		e = NULL;
		assert_true(bus_envelope_parse(text, n, "stratus.host.h", &e) < 0);
		assert_null(e);
	}
	for (int i = 0; i < 3000; i++) {
		char *copy = malloc(len);

		memcpy(copy, text, len);
		for (int k = 0; k < 3; k++) {
			seed = seed * 1103515245 + 12345;
			copy[(seed >> 8) % len] = (char)(seed >> 20);
		}
		e = NULL;
		if (bus_envelope_parse(copy, len, NULL, &e) == 0) {
			accepted++;
			bus_envelope_free(e);
		} else {
			assert_true(strlen(err_msg()) > 0);
		}
		free(copy);
	}
	free(text);
	(void)accepted;
}

static void test_topics(void **state)
{
	enum bus_topic_class tc;
	char *t;

	(void)state;
	t = bus_topic_host("node-1.example");
	assert_string_equal(t, "stratus.host.node-1.example");
	assert_int_equal(bus_topic_classify(t, &tc), 0);
	assert_int_equal(tc, BUS_TC_HOST);
	free(t);
	assert_null(bus_topic_host("bad host"));
	assert_string_equal(err_msg(), "host 'bad host': not a valid host name for a topic "
			    "(letters, digits, '.', '_', '-', at most 200 characters)");
	assert_null(bus_topic_host(""));
	assert_int_equal(bus_topic_classify("stratus.api", &tc), 0);
	assert_int_equal(tc, BUS_TC_API);
	assert_int_equal(bus_topic_classify("stratus.metrics", &tc), 0);
	assert_int_equal(tc, BUS_TC_METRICS);
	assert_true(bus_topic_classify("stratus.host.", &tc) < 0);
	assert_int_equal(bus_type_topic_class("instance.state", &tc), 0);
	assert_int_equal(tc, BUS_TC_EVENTS);
	assert_true(bus_type_topic_class("nope", &tc) < 0);
}

static void test_bootstrap_resolution(void **state)
{
	struct bus_config cfg = { 0 };
	char *b = NULL;
	char path[] = "/tmp/stratus-test-addr-XXXXXX";
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "127.0.0.1:1234\n", 15), 15);
	close(fd);
	cfg.address_file = path;
	assert_int_equal(bus_bootstrap(&cfg, &b), 0);
	assert_string_equal(b, "127.0.0.1:1234");
	free(b);
	cfg.bootstrap_servers = (char *)(uintptr_t)"k1:9092,k2:9092";
	assert_int_equal(bus_bootstrap(&cfg, &b), 0);
	assert_string_equal(b, "k1:9092,k2:9092");
	free(b);
	unlink(path);
	cfg.bootstrap_servers = NULL;
	b = NULL;
	assert_true(bus_bootstrap(&cfg, &b) < 0);
	assert_null(b);
	assert_non_null(strstr(err_msg(), "is stratus-bus running?"));
	cfg.address_file = NULL;
	setenv(BUS_ADDR_FILE_ENV, "/nonexistent/bus.addr", 1);
	assert_string_equal(bus_address_file(NULL), "/nonexistent/bus.addr");
	unsetenv(BUS_ADDR_FILE_ENV);
	assert_string_equal(bus_address_file(NULL), BUS_DEFAULT_ADDR_FILE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_every_type_has_a_valid_body),
		cmocka_unit_test(test_rejections),
		cmocka_unit_test(test_envelope_fields),
		cmocka_unit_test(test_size_caps),
		cmocka_unit_test(test_auth_field),
		cmocka_unit_test(test_canonical_direct),
		cmocka_unit_test(test_garbage_never_crashes),
		cmocka_unit_test(test_topics),
		cmocka_unit_test(test_bootstrap_resolution),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
