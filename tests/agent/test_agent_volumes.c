/*
 * The agent's volumes without a daemon: its store, libvirt's test driver
 * and a mock broker for its events. The state machine of the commands
 * (create, attach, detach, delete, with their refusals and failures), the
 * volumes an instance's deletion leaves, and reconcile: a file without a
 * record is reported and kept, a record without its file is error, a disk
 * removed from the definition is attached again, an interrupted attach is
 * settled by what the definition says, and the rows survive a restart.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/agent_priv.h"

#define U1 "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d"      /* a stopped instance */
#define URUN "6695eb01-f6a4-8304-79aa-97f2502e193f"    /* the test driver's running "test" */
#define V1 "11111111-2222-4333-8444-555555555555"
#define V2 "22222222-3333-4444-8555-666666666666"
#define SERIAL1 "11111111-2222-4333-8"                 /* V1 cut to 20 characters */

struct fx {
	char dir[64], path[128];
	struct agent_config cfg;
	struct bus_config bus;
	struct bus_broker *broker;
	struct agent a;
};

static const char dom_xml[] =
	"<domain type='test'><name>vt1</name><uuid>" U1 "</uuid><memory>65536</memory>"
	"<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
	"<source file='/tmp/none.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>";

static void put_instance(struct fx *f, const char *uuid, enum instance_state st)
{
	struct store_instance row = { .state = st, .name = (char *)"web-1",
				      .project = (char *)"acme", .spec_json = (char *)"{}" };

	snprintf(row.uuid, sizeof(row.uuid), "%s", uuid);
	assert_int_equal(store_instance_put(f->a.store, &row), 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct broker_config bc = { .brokers = 1, .partitions = 1 };

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/agent-vol-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/agent.db", f->dir);
	f->cfg.host = (char *)"hv1";
	f->a.cfg = &f->cfg;
	f->a.source = (char *)"agent/hv1";
	assert_int_equal(bus_broker_start(&bc, &f->broker), 0);
	f->bus.bootstrap_servers = strdup(bus_broker_bootstraps(f->broker));
	f->bus.client_id = (char *)"agent-volumes-test";
	assert_int_equal(bus_producer_new(&f->bus, &f->a.prod), 0);
	assert_int_equal(store_open(f->path, false, &f->a.store), 0);
	assert_int_equal(vmm_open("test:///default", NULL, NULL, &f->a.conn), 0);
	assert_true(asprintf(&f->a.volume_dir, "%s/vol", f->dir) > 0);
	assert_int_equal(vmm_define(f->a.conn, dom_xml), 0);
	put_instance(f, U1, INST_STOPPED);
	put_instance(f, URUN, INST_ACTIVE);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	vmm_close(f->a.conn);
	store_close(f->a.store);
	bus_producer_free(f->a.prod);
	bus_broker_stop(f->broker);
	free(f->bus.bootstrap_servers);
	free(f->a.volume_dir);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* A command as the scheduler sends it (the edge's checks are trust.c's). */
static void command(struct fx *f, const char *type, const char *json)
{
	struct bus_envelope *e = NULL;
	char rid[UUID_STRLEN];

	uuid_generate_str(rid);
	assert_int_equal(bus_envelope_new(type, BUS_TC_HOST, "stratus-scheduler", rid,
					  json_loads(json, 0, NULL), &e), 0);
	assert_int_equal(agent_volume_handle(&f->a, e, json_string_value(json_object_get(e->body,
											 "uuid"))), 0);
	bus_envelope_free(e);
}

/* The row of UUID: state, instance, reason ("" when NULL). */
static void expect(struct fx *f, const char *uuid, const char *state, const char *instance,
		   const char *reason_part)
{
	struct store_volume v;

	assert_int_equal(store_volume_get(f->a.store, uuid, &v), 0);
	assert_string_equal(v.state, state);
	assert_string_equal(v.instance ? v.instance : "", instance);
	if (!reason_part)
		assert_null(v.reason);
	else if (!v.reason || !strstr(v.reason, reason_part))
		fail_msg("volume %s: reason '%s' lacks '%s'", uuid, v.reason ? v.reason : "(none)",
			 reason_part);
	store_volume_free(&v);
}

static bool in_config(struct fx *f, const char *uuid, const char *serial)
{
	bool cfg = false, live = true;

	assert_int_equal(vmm_disk_find(f->a.conn, uuid, serial, &cfg, &live), 0);
	assert_false(live); /* U1 does not run */
	return cfg;
}

static void test_commands(void **state)
{
	struct fx *f = *state;
	char file[160];
	struct stat st;

	snprintf(file, sizeof(file), "%s/vol/" V1 ".img", f->dir);
	command(f, "volume.create", "{\"uuid\":\"" V1 "\",\"project\":\"acme\",\"name\":\"data\","
		"\"size_gb\":2}");
	expect(f, V1, "available", "", NULL);
	assert_int_equal(stat(file, &st), 0);
	assert_int_equal(st.st_size, 2LL << 30);
	assert_true(st.st_blocks < 64); /* sparse */
	/* redelivered: nothing made again */
	command(f, "volume.create", "{\"uuid\":\"" V1 "\",\"project\":\"acme\",\"name\":\"data\","
		"\"size_gb\":2}");
	expect(f, V1, "available", "", NULL);

	/* refused and failed attaches leave it available, saying why */
	command(f, "volume.attach", "{\"uuid\":\"" V1 "\",\"instance\":\"" V2 "\"}");
	expect(f, V1, "available", "", "instance " V2 " is not on host hv1");
	command(f, "volume.attach", "{\"uuid\":\"" V1 "\",\"instance\":\"" URUN "\"}");
	expect(f, V1, "available", "", "attaching the disk"); /* no hot-plug in the test driver */
	command(f, "volume.detach", "{\"uuid\":\"" V1 "\"}");
	expect(f, V1, "available", "", "attaching the disk"); /* nothing to detach */

	/* a stopped instance: the disk goes into its definition, serial = the id */
	command(f, "volume.attach", "{\"uuid\":\"" V1 "\",\"instance\":\"" U1 "\"}");
	expect(f, V1, "in-use", U1, NULL);
	assert_true(in_config(f, U1, SERIAL1));
	/* in use: not deleted, not attached elsewhere */
	command(f, "volume.delete", "{\"uuid\":\"" V1 "\"}");
	expect(f, V1, "in-use", U1, NULL);
	assert_int_equal(access(file, F_OK), 0);
	command(f, "volume.attach", "{\"uuid\":\"" V1 "\",\"instance\":\"" URUN "\"}");
	expect(f, V1, "in-use", U1, NULL);

	/* detach: out of the definition */
	command(f, "volume.detach", "{\"uuid\":\"" V1 "\"}");
	expect(f, V1, "available", "", NULL);
	assert_false(in_config(f, U1, SERIAL1));

	/* the instance deleted: available again, the file kept */
	command(f, "volume.attach", "{\"uuid\":\"" V1 "\",\"instance\":\"" U1 "\"}");
	expect(f, V1, "in-use", U1, NULL);
	agent_volumes_instance_gone(&f->a, U1);
	expect(f, V1, "available", "", NULL);
	assert_int_equal(access(file, F_OK), 0);

	/* delete: file and row gone; again: no error */
	command(f, "volume.delete", "{\"uuid\":\"" V1 "\"}");
	assert_int_equal(access(file, F_OK), -1);
	{
		struct store_volume v;

		assert_int_equal(store_volume_get(f->a.store, V1, &v), -ENOENT);
	}
	command(f, "volume.delete", "{\"uuid\":\"" V1 "\"}");
}

static void test_reconcile(void **state)
{
	struct fx *f = *state;
	struct agent_volume_report rep;
	char file2[160], junk[160];
	FILE *fp;

	command(f, "volume.create", "{\"uuid\":\"" V1 "\",\"project\":\"acme\",\"name\":\"data\","
		"\"size_gb\":1}");
	command(f, "volume.create", "{\"uuid\":\"" V2 "\",\"project\":\"acme\",\"name\":\"logs\","
		"\"size_gb\":1}");
	command(f, "volume.attach", "{\"uuid\":\"" V1 "\",\"instance\":\"" U1 "\"}");
	expect(f, V1, "in-use", U1, NULL);
	assert_int_equal(agent_volumes_reconcile(&f->a, true, &rep), 0);
	assert_int_equal(rep.records, 2);
	assert_int_equal(rep.missing + rep.orphans + rep.fixed + rep.reattached, 0);

	/* the domain redefined without the disk: attached again */
	assert_int_equal(vmm_disk_detach(f->a.conn, U1, SERIAL1), 0);
	assert_false(in_config(f, U1, SERIAL1));
	assert_int_equal(agent_volumes_reconcile(&f->a, false, &rep), 0);
	assert_int_equal(rep.reattached, 1);
	assert_true(in_config(f, U1, SERIAL1));
	expect(f, V1, "in-use", U1, NULL);

	/* a file without a record: reported, not removed */
	snprintf(junk, sizeof(junk), "%s/vol/33333333-4444-4555-8666-777777777777.img", f->dir);
	fp = fopen(junk, "w");
	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(agent_volumes_reconcile(&f->a, false, &rep), 0);
	assert_int_equal(rep.orphans, 1);
	assert_int_equal(access(junk, F_OK), 0);

	/* a record without its file: error, saying so (once) */
	snprintf(file2, sizeof(file2), "%s/vol/" V2 ".img", f->dir);
	assert_int_equal(unlink(file2), 0);
	assert_int_equal(agent_volumes_reconcile(&f->a, false, &rep), 0);
	assert_int_equal(rep.missing, 1);
	expect(f, V2, "error", "", "its file");
	expect(f, V2, "error", "", "is missing");
	/* an attach of it is refused with the same reason */
	command(f, "volume.attach", "{\"uuid\":\"" V2 "\",\"instance\":\"" U1 "\"}");
	expect(f, V2, "error", "", "is missing");
	/* an error volume may be deleted */
	command(f, "volume.delete", "{\"uuid\":\"" V2 "\"}");
	{
		struct store_volume v;

		assert_int_equal(store_volume_get(f->a.store, V2, &v), -ENOENT);
	}

	/* an attach interrupted by a restart: the definition decides */
	{
		struct store_volume v;

		assert_int_equal(store_volume_get(f->a.store, V1, &v), 0);
		free(v.state);
		v.state = strdup("attaching");
		assert_int_equal(store_volume_put(f->a.store, &v), 0);
		store_volume_free(&v);
	}
	/* the agent restarts: its store again */
	store_close(f->a.store);
	assert_int_equal(store_open(f->path, false, &f->a.store), 0);
	assert_int_equal(agent_volumes_reconcile(&f->a, true, &rep), 0);
	assert_int_equal(rep.fixed, 1);
	expect(f, V1, "in-use", U1, NULL);
	/* ... and when the definition lacks it */
	assert_int_equal(vmm_disk_detach(f->a.conn, U1, SERIAL1), 0);
	{
		struct store_volume v;

		assert_int_equal(store_volume_get(f->a.store, V1, &v), 0);
		free(v.state);
		v.state = strdup("attaching");
		assert_int_equal(store_volume_put(f->a.store, &v), 0);
		store_volume_free(&v);
	}
	assert_int_equal(agent_volumes_reconcile(&f->a, true, &rep), 0);
	expect(f, V1, "available", "", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commands, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconcile, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
