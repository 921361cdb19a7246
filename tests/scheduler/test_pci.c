/* PCI passthrough in the scheduler: flavors refused at create, the
 * pci_devices filter, NUMA affinity, claims that survive a restart and go
 * with the instance's delete. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "model/model.h"
#include "sched_test.h"

/* A host with 2 pCPUs on each of two nodes and the PCI devices DEVICES (a
 * JSON array). */
static __attribute__((noinline)) void report(struct env *e, const char *host, const char *devices)
{
	char json[2048];

	snprintf(json, sizeof(json),
		 "{\"host\":\"%s\",\"availability_zone\":\"az1\",\"inventory\":{"
		 "\"VCPU\":{\"total\":4,\"allocation_ratio\":4.0},\"PCPU\":{\"total\":4},"
		 "\"MEMORY_MB\":{\"total\":16384,\"reserved\":512},\"DISK_GB\":{\"total\":100},"
		 "\"numa\":[{\"node\":0,\"pcpus\":2,\"memory_mb\":8192},"
		 "{\"node\":1,\"pcpus\":2,\"memory_mb\":8192}],\"pci_devices\":%s},"
		 "\"box_key\":\"" TEST_HOST_BOX_PUB "\"}",
		 host, devices);
	assert_null(env_send(e, "host.report", NULL, json));
}

#define DEV(addr, alias, node, usable) \
	"{\"address\":\"" addr "\",\"alias\":\"" alias "\",\"numa_node\":" #node \
	",\"iommu_group\":1,\"usable\":" usable "}"
/* h1: a usable gpu on each node and an unusable one (split IOMMU group) */
#define H1_DEVICES "[" DEV("0000:3b:00.0", "gpu", 0, "true") "," \
	DEV("0000:d8:00.0", "gpu", 1, "true") "," DEV("0000:af:00.0", "gpu", 1, "false") "]"

static __attribute__((noinline)) void flavor_add(struct env *e, const char *json)
{
	json_t *res = env_req(e, "flavor.add", json);

	if (!res_ok(res))
		fail_msg("flavor.add %s: %s", json, res_error(res));
}

static __attribute__((noinline)) json_t *boot(struct env *e, const char *name, const char *flavor)
{
	char json[256];

	snprintf(json, sizeof(json),
		 "{\"project\":\"acme\",\"name\":\"%s\",\"flavor\":\"%s\",\"image\":\"debian\"}", name,
		 flavor);
	return env_req(e, "instance.boot", json);
}

static __attribute__((noinline)) void boot_ok(struct env *e, const char *name, const char *flavor,
					      char uuid[UUID_STRLEN])
{
	json_t *res = boot(e, name, flavor);
	json_t *inst;

	if (!res_ok(res))
		fail_msg("boot %s failed: %s", name, res_error(res));
	inst = json_array_get(json_object_get(json_object_get(res, "data"), "instances"), 0);
	snprintf(uuid, UUID_STRLEN, "%s", json_string_value(json_object_get(inst, "uuid")));
}

static long pci_used(struct sched *s, const char *host, int node)
{
	const struct sched_host *h = sched_host_find(s, host);
	long n = 0;

	for (int i = 0; h && i < h->n_pci; i++)
		if (strcmp(h->pci[i].alias, "gpu") == 0 && (node < -1 || h->pci[i].node == node))
			n += h->pci[i].used;
	return n;
}

/* Delete NAME (UUID) and confirm it as its agent would. */
static __attribute__((noinline)) void gone(struct env *e, const char *name, const char *uuid)
{
	char json[256];

	snprintf(json, sizeof(json), "{\"project\":\"acme\",\"instance\":\"%s\"}", name);
	assert_true(res_ok(env_req(e, "instance.delete", json)));
	snprintf(json, sizeof(json),
		 "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"h1\",\"state\":\"deleted\"}", uuid);
	assert_null(env_send(e, "instance.state", NULL, json));
}

static void test_flavor_refusals(void **state)
{
	static const struct {
		const char *specs, *error;
	} cases[] = {
		{ "\"pci_passthrough:alias\":\"gpu\"",
		  "flavor.add: flavor m1.bad: pci_passthrough:alias: 'gpu': expected NAME:COUNT with COUNT from 1 to 8" },
		{ "\"pci_passthrough:alias\":\"gpu:0\"",
		  "flavor.add: flavor m1.bad: pci_passthrough:alias: 'gpu:0': expected NAME:COUNT with COUNT from 1 to 8" },
		{ "\"pci_passthrough:alias\":\"gpu:9\"",
		  "flavor.add: flavor m1.bad: pci_passthrough:alias: 'gpu:9': expected NAME:COUNT with COUNT from 1 to 8" },
		{ "\"pci_passthrough:alias\":\"g/pu:1\"",
		  "flavor.add: flavor m1.bad: pci_passthrough:alias: invalid alias name 'g/pu' (accepted: 1 to 31 of A-Z a-z 0-9 _ -)" },
		{ "\"pci_passthrough:alias\":\"gpu:1,gpu:2\"",
		  "flavor.add: flavor m1.bad: pci_passthrough:alias: alias gpu given twice" },
		{ "\"pci_passthrough:alias\":\"gpu:5,nic:4\"",
		  "flavor.add: flavor m1.bad: pci_passthrough:alias: more than 8 devices in all" },
		{ "\"hw:pci_numa_affinity_policy\":\"socket\"",
		  "flavor.add: flavor m1.bad: hw:pci_numa_affinity_policy: invalid value 'socket' (accepted: legacy, required, preferred)" },
		{ "\"hw:cpu_mode\":\"host\"",
		  "flavor.add: flavor m1.bad: hw:cpu_mode: invalid value 'host' (accepted: host-passthrough, host-model, custom)" },
		{ "\"hw:cpu_mode\":\"custom\"",
		  "flavor.add: flavor m1.bad: hw:cpu_mode=custom needs hw:cpu_model (a libvirt CPU model name like Skylake-Server)" },
		{ "\"hw:cpu_mode\":\"host-passthrough\",\"hw:cpu_model\":\"EPYC\"",
		  "flavor.add: flavor m1.bad: hw:cpu_model=EPYC needs hw:cpu_mode=custom, not host-passthrough" },
		{ "\"hw:cpu_model\":\"Sky lake\"",
		  "flavor.add: flavor m1.bad: hw:cpu_model: invalid value 'Sky lake' (accepted: a libvirt CPU model name like Skylake-Server or EPYC, 1 to 47 of A-Z a-z 0-9 _ . -)" },
		{ "\"hw:cpu_model_extra_flags\":\"vmx,vmx\"",
		  "flavor.add: flavor m1.bad: hw:cpu_model_extra_flags: flag vmx given twice" },
		{ "\"hw:cpu_model_extra_flags\":\"+v;mx\"",
		  "flavor.add: flavor m1.bad: hw:cpu_model_extra_flags: invalid flag '+v;mx' (accepted: CPU flag names like vmx, svm, pcid, each optionally prefixed + or -)" },
	};
	struct env e;

	(void)state;
	env_open(&e, NULL);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char json[512];
		json_t *res;

		snprintf(json, sizeof(json),
			 "{\"name\":\"m1.bad\",\"vcpus\":1,\"ram_mb\":256,\"extra_specs\":{%s}}",
			 cases[i].specs);
		res = env_req(&e, "flavor.add", json);
		assert_false(res_ok(res));
		if (strcmp(res_error(res), cases[i].error) != 0)
			fail_msg("case %zu: got '%s'\n expected '%s'", i, res_error(res), cases[i].error);
		/* refused: nothing added */
		assert_null(sched_flavor_find(e.s, "m1.bad"));
	}
	/* the good forms are accepted */
	flavor_add(&e, "{\"name\":\"m1.good\",\"vcpus\":1,\"ram_mb\":256,\"extra_specs\":{"
		       "\"pci_passthrough:alias\":\"gpu:2, nic:1\",\"hw:pci_numa_affinity_policy\":"
		       "\"required\",\"hw:cpu_model\":\"Skylake-Server\","
		       "\"hw:cpu_model_extra_flags\":\"VMX,-hle\"}}");
	assert_int_equal(sched_flavor_find(e.s, "m1.good")->hw.n_pci, 2);
	assert_int_equal(sched_flavor_find(e.s, "m1.good")->hw.pci[0].count, 2);
	assert_string_equal(sched_flavor_find(e.s, "m1.good")->hw.cpu.flags[0].name, "vmx");
	env_close(&e);
}

static void test_filter_claim_restart_release(void **state)
{
	struct env e;
	char a[UUID_STRLEN], b[UUID_STRLEN], d[UUID_STRLEN], ev[256];
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	report(&e, "h1", H1_DEVICES);
	report(&e, "h2", "[]");
	flavor_add(&e, "{\"name\":\"m1.gpu\",\"vcpus\":1,\"ram_mb\":512,\"extra_specs\":{"
		       "\"pci_passthrough:alias\":\"gpu:1\"}}");
	/* h2 has none: every gpu instance goes to h1, as many as it has usable */
	boot_ok(&e, "a", "m1.gpu", a);
	assert_string_equal(build_host(&e, 0), "h1");
	boot_ok(&e, "b", "m1.gpu", b);
	assert_string_equal(build_host(&e, 0), "h1");
	assert_int_equal(pci_used(e.s, "h1", -2), 2);
	res = boot(&e, "c", "m1.gpu");
	assert_false(res_ok(res));
	assert_non_null(strstr(res_error(res), "h1: PCI: needs 1 gpu, 0 of 2 free"));
	assert_non_null(strstr(res_error(res), "h2: PCI: no usable device with alias gpu"));
	/* a new report keeps the claims */
	report(&e, "h1", H1_DEVICES);
	assert_int_equal(pci_used(e.s, "h1", -2), 2);
	/* claims survive a restart */
	env_reopen(&e);
	assert_int_equal(pci_used(e.s, "h1", -2), 2);
	e.now += 1000;
	report(&e, "h1", H1_DEVICES);
	report(&e, "h2", "[]");
	assert_false(res_ok(boot(&e, "c", "m1.gpu")));
	/* the delete, once the agent confirms it, gives the device back */
	res = env_req(&e, "instance.delete", "{\"project\":\"acme\",\"instance\":\"a\"}");
	assert_true(res_ok(res));
	assert_int_equal(pci_used(e.s, "h1", -2), 2);
	snprintf(ev, sizeof(ev), "{\"uuid\":\"%s\",\"project\":\"acme\",\"host\":\"h1\",\"state\":\"deleted\"}", a);
	assert_null(env_send(&e, "instance.state", NULL, ev));
	assert_int_equal(pci_used(e.s, "h1", -2), 1);
	env_reopen(&e);
	assert_int_equal(pci_used(e.s, "h1", -2), 1);
	e.now += 2000;
	report(&e, "h1", H1_DEVICES);
	report(&e, "h2", "[]");
	boot_ok(&e, "d", "m1.gpu", d);
	assert_string_equal(build_host(&e, 0), "h1");
	assert_int_equal(pci_used(e.s, "h1", -2), 2);
	env_close(&e);
}

static void test_numa_affinity(void **state)
{
	struct env e;
	char a[UUID_STRLEN], b[UUID_STRLEN];
	struct sched_alloc al = { 0 };
	json_t *res;

	(void)state;
	env_open(&e, NULL);
	/* the only gpu is on node 1 */
	report(&e, "h1", "[" DEV("0000:d8:00.0", "gpu", 1, "true") "]");
	flavor_add(&e, "{\"name\":\"m1.gpu-pinned\",\"vcpus\":2,\"ram_mb\":512,\"extra_specs\":{"
		       "\"hw:cpu_policy\":\"dedicated\",\"pci_passthrough:alias\":\"gpu:1\","
		       "\"hw:pci_numa_affinity_policy\":\"required\"}}");
	flavor_add(&e, "{\"name\":\"m1.pinned2\",\"vcpus\":2,\"ram_mb\":512,\"extra_specs\":{"
		       "\"hw:cpu_policy\":\"dedicated\"}}");
	/* node 0 fits the pCPUs first, but the device wants node 1 */
	boot_ok(&e, "a", "m1.gpu-pinned", a);
	assert_int_equal(sched_alloc_get(e.s, a, &al), 0);
	assert_int_equal(al.fit.node, 1);
	assert_int_equal(al.fit.n_pci, 1);
	assert_int_equal(al.fit.pci[0].node, 1);
	assert_int_equal(sched_host_find(e.s, "h1")->numa[1].pcpu_used, 2);
	free(al.host);
	/* the required device's node busy with another guest, node 0 free: no fit */
	boot_ok(&e, "b", "m1.pinned2", b); /* node 0 */
	gone(&e, "a", a);
	gone(&e, "b", b);
	boot_ok(&e, "x", "m1.pinned2", a); /* node 0 */
	boot_ok(&e, "y", "m1.pinned2", b); /* node 1 */
	gone(&e, "x", a);
	assert_int_equal(pci_used(e.s, "h1", 1), 0);
	res = boot(&e, "d", "m1.gpu-pinned");
	assert_false(res_ok(res));
	assert_non_null(strstr(res_error(res), "h1: NUMA: no node has 2 dedicated pCPUs free together "
				"with the PCI devices (hw:pci_numa_affinity_policy=required)"));
	/* preferred takes node 0 and the device on node 1 */
	flavor_add(&e, "{\"name\":\"m1.gpu-pref\",\"vcpus\":2,\"ram_mb\":512,\"extra_specs\":{"
		       "\"hw:cpu_policy\":\"dedicated\",\"pci_passthrough:alias\":\"gpu:1\","
		       "\"hw:pci_numa_affinity_policy\":\"preferred\"}}");
	boot_ok(&e, "p", "m1.gpu-pref", a);
	assert_int_equal(sched_alloc_get(e.s, a, &al), 0);
	assert_int_equal(al.fit.node, 0);
	assert_int_equal(al.fit.pci[0].node, 1);
	free(al.host);
	env_close(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flavor_refusals),
		cmocka_unit_test(test_filter_claim_restart_release),
		cmocka_unit_test(test_numa_affinity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
