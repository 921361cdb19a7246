/* vmm units: CPU lists, topology fixtures, fitting with claims, config,
 * accel choice, stats parsing, rates and steal. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmm/vmm_priv.h"

static void test_cpuset(void **state)
{
	struct vmm_cpuset s;
	char *f;

	(void)state;
	assert_int_equal(vmm_cpuset_parse("0-3,8,10-11", &s), 0);
	assert_int_equal(vmm_cpuset_count(&s), 7);
	f = vmm_cpuset_format(&s);
	assert_string_equal(f, "0-3,8,10-11");
	free(f);
	assert_int_equal(vmm_cpuset_parse("0-7,^2,^5-6", &s), 0);
	f = vmm_cpuset_format(&s);
	assert_string_equal(f, "0-1,3-4,7");
	free(f);
	assert_int_equal(vmm_cpuset_parse("0-1\n", &s), 0);
	assert_int_equal(vmm_cpuset_count(&s), 2);
	assert_int_equal(vmm_cpuset_parse("", &s), 0);
	assert_true(vmm_cpuset_empty(&s));
	f = vmm_cpuset_format(&s);
	assert_string_equal(f, "");
	free(f);
	assert_int_equal(vmm_cpuset_parse("3-1", &s), -EINVAL);
	assert_non_null(strstr(err_msg(), "expected a CPU list"));
	assert_int_equal(vmm_cpuset_parse("a", &s), -EINVAL);
	assert_int_equal(vmm_cpuset_parse("1,,2", &s), -EINVAL);
	assert_int_equal(vmm_cpuset_parse("5000", &s), -EINVAL);
}

static void test_topology(void **state)
{
	struct vmm_topology *t = NULL;

	(void)state;
	assert_int_equal(vmm_topology_load("tests/vmm/sysfs/2node-ht", &t), 0);
	assert_int_equal(t->n_cpus, 16);
	assert_int_equal(t->n_nodes, 2);
	assert_true(t->smt);
	assert_true(vmm_cpuset_has(&t->cpus[0].siblings, 8));
	assert_int_equal(vmm_cpuset_count(&t->cpus[0].siblings), 2);
	assert_int_equal(t->cpus[12].node, 1);
	assert_int_equal(t->cpus[12].socket, 1);
	assert_int_equal(t->nodes[1].pool[VMM_PAGE_2M].total, 512);
	assert_int_equal(t->nodes[0].mem_total_kib, 16 * 1024 * 1024);
	/* 4K pool: memory not reserved as hugepages */
	assert_int_equal(t->nodes[0].pool[VMM_PAGE_4K].total, (16ull - 4) * 1024 * 1024 / 4);
	vmm_topology_free(t);

	assert_int_equal(vmm_topology_load("tests/vmm/sysfs/1g", &t), 0);
	assert_false(t->smt);
	assert_int_equal(t->nodes[1].pool[VMM_PAGE_1G].total, 4);
	assert_int_equal(t->nodes[1].pool[VMM_PAGE_1G].free, 2);
	vmm_topology_free(t);

	assert_int_equal(vmm_topology_load("tests/vmm/sysfs/nonexistent", &t), -ENOENT);
	assert_non_null(strstr(err_msg(), "nonexistent/devices/system/cpu/online"));
	/* this host: whatever it is, it has a CPU and a node */
	assert_int_equal(vmm_topology_load(NULL, &t), 0);
	assert_true(t->n_cpus >= 1 && t->n_nodes >= 1);
	vmm_topology_free(t);
}

static struct instance_spec spec_with(const char *const *kv, long vcpus, long ram)
{
	json_error_t je;
	json_t *j = json_load_file("tests/data/spec-basic.json", 0, &je);
	json_t *es = json_object();
	struct instance_spec s;

	assert_non_null(j);
	for (; kv && kv[0]; kv += 2)
		json_object_set_new(es, kv[0], json_string(kv[1]));
	json_object_set_new(json_object_get(j, "flavor"), "extra_specs", es);
	json_object_set_new(json_object_get(j, "flavor"), "vcpus", json_integer(vcpus));
	json_object_set_new(json_object_get(j, "flavor"), "ram_mb", json_integer(ram));
	assert_int_equal(model_spec_parse(j, &s), 0);
	json_decref(j);
	return s;
}

static void test_policy(void **state)
{
	static const char *const ok[] = { "hw:cpu_policy", "dedicated", "hw:cpu_thread_policy",
					  "isolate", "hw:emulator_threads_policy", "isolate",
					  "hw:mem_page_size", "1GB", "hw:numa_nodes", "2", NULL };
	static const char *const bad[] = { "hw:mem_page_size", "huge", NULL };
	struct instance_spec s = spec_with(ok, 2, 2048);
	struct vmm_policy p;

	(void)state;
	assert_int_equal(vmm_policy_from_spec(&s, &p), 0);
	assert_int_equal(p.cpu, VMM_CPU_DEDICATED);
	assert_int_equal(p.thread, VMM_THREAD_ISOLATE);
	assert_int_equal(p.emu, VMM_EMU_ISOLATE);
	assert_int_equal(p.page, VMM_PAGE_REQ_1GB);
	assert_int_equal(p.numa_nodes, 2);
	model_spec_free(&s);
	s = spec_with(bad, 2, 2048);
	assert_int_equal(vmm_policy_from_spec(&s, &p), -EINVAL);
	assert_string_equal(err_msg(), "flavor m1.pinned: hw:mem_page_size: invalid value 'huge' "
				       "(accepted: small, large, any, 2MB, 1GB)");
	model_spec_free(&s);
}

/* Claims: the second instance gets other pCPUs, the host fills up, a
 * release gives everything back, JSON round trips. */
static void test_fit_claims(void **state)
{
	static const char *const ded[] = { "hw:cpu_policy", "dedicated", "hw:mem_page_size", "2MB",
					   NULL };
	struct vmm_topology *t = NULL;
	struct vmm_host_usage u;
	struct instance_spec a = spec_with(ded, 2, 1024), b = spec_with(ded, 2, 1024);
	static struct vmm_placement pa, pb, pc, back; /* big: off the stack */
	json_t *j;

	(void)state;
	snprintf(b.uuid, sizeof(b.uuid), "%s", "11111111-2222-4333-8444-555555555555");
	assert_int_equal(vmm_topology_load("tests/vmm/sysfs/1node", &t), 0);
	assert_int_equal(vmm_usage_init(&u, t), 0);

	assert_int_equal(vmm_fit(t, NULL, &u, &a, &pa), 0);
	assert_true(pa.pinned);
	assert_int_equal(pa.pcpu[0], 0);
	assert_int_equal(pa.pcpu[1], 1);
	assert_int_equal(pa.page, VMM_PAGE_2M);
	assert_int_equal(vmm_usage_claim(&u, t, &pa), 0);
	assert_string_equal(u.cpu_owner[0], a.uuid);
	assert_int_equal(u.pages[0][VMM_PAGE_2M], 512);
	/* claiming again conflicts */
	assert_int_equal(vmm_usage_claim(&u, t, &pa), -EBUSY);

	assert_int_equal(vmm_fit(t, NULL, &u, &b, &pb), 0);
	assert_int_equal(pb.pcpu[0], 2);
	assert_int_equal(pb.pcpu[1], 3);
	assert_int_equal(vmm_usage_claim(&u, t, &pb), 0);
	assert_int_equal(u.pages[0][VMM_PAGE_2M], 1024);

	/* full: no pCPUs and no 2MB pages left */
	assert_int_equal(vmm_fit(t, NULL, &u, &a, &pc), -ENOSPC);
	assert_non_null(strstr(err_msg(), "(node0: 0 pCPUs, 0 MiB)"));

	/* b's placement survives the agent's store */
	j = vmm_placement_to_json(&pb, t);
	assert_int_equal(vmm_placement_from_json(j, t, &back), 0);
	json_decref(j);
	assert_int_equal(back.pcpu[1], 3);
	assert_int_equal(back.cells[0].mem_mib, 1024);
	vmm_usage_release(&u, &back);
	assert_string_equal(u.cpu_owner[2], "");
	assert_string_equal(u.cpu_owner[0], a.uuid);
	assert_int_equal(u.pages[0][VMM_PAGE_2M], 512);
	assert_int_equal(vmm_fit(t, NULL, &u, &b, &pc), 0);
	assert_int_equal(pc.pcpu[0], 2);

	vmm_placement_free(&pa);
	vmm_placement_free(&pb);
	vmm_placement_free(&pc);
	vmm_placement_free(&back);
	vmm_usage_release(&u, &pa);
	assert_int_equal(u.pages[0][VMM_PAGE_2M], 0);
	vmm_usage_free(&u);
	vmm_topology_free(t);
	model_spec_free(&a);
	model_spec_free(&b);
}

/* Isolate claims the sibling threads: a prefer instance cannot take them. */
static void test_fit_isolate_siblings(void **state)
{
	static const char *const iso[] = { "hw:cpu_policy", "dedicated", "hw:cpu_thread_policy",
					   "isolate", NULL };
	static const char *const pref[] = { "hw:cpu_policy", "dedicated", NULL };
	struct vmm_topology *t = NULL;
	struct vmm_host_usage u;
	struct instance_spec a = spec_with(iso, 4, 1024), b = spec_with(pref, 8, 1024);
	static struct vmm_placement pa, pb;

	(void)state;
	snprintf(b.uuid, sizeof(b.uuid), "%s", "11111111-2222-4333-8444-555555555555");
	assert_int_equal(vmm_topology_load("tests/vmm/sysfs/2node-ht", &t), 0);
	assert_int_equal(vmm_usage_init(&u, t), 0);
	assert_int_equal(vmm_fit(t, NULL, &u, &a, &pa), 0);
	assert_int_equal(vmm_cpuset_count(&pa.claimed), 8); /* 4 cores x 2 threads */
	assert_int_equal(vmm_usage_claim(&u, t, &pa), 0);
	/* node0 is full: 8 vCPUs go to node1 */
	assert_int_equal(vmm_fit(t, NULL, &u, &b, &pb), 0);
	assert_int_equal(pb.cells[0].node_id, 1);
	for (int v = 0; v < 8; v++)
		assert_false(vmm_cpuset_has(&pa.claimed, pb.pcpu[v]));
	vmm_placement_free(&pa);
	vmm_placement_free(&pb);
	vmm_usage_free(&u);
	vmm_topology_free(t);
	model_spec_free(&a);
	model_spec_free(&b);
}

static void test_config(void **state)
{
	static const char yaml[] = "vmm:\n  uri: test:///default\n  accel: qemu\n"
				   "  cpu_dedicated_set: 2-7,^5\n  cpu_shared_set: 0-1\n"
				   "  hugepage_pools: 2M\n  shutdown_timeout: 5s\n"
				   "  reboot_timeout: 1500ms\n";
	static const char bad[] = "vmm:\n  cpu_shared_set: 0-x\n";
	static const char bad_reboot[] = "vmm:\n  reboot_timeout: 2 minutes\n";
	struct vmm_config c = { 0 };
	const struct cfg_section sec[] = { { .name = "vmm", .fields = vmm_config_fields, .dst = &c },
					   { 0 } };
	char *f;

	(void)state;
	assert_int_equal(cfg_load_string("t.yaml", yaml, sizeof(yaml) - 1, sec), 0);
	assert_string_equal(c.uri, "test:///default");
	assert_int_equal(c.accel, VMM_ACCEL_QEMU);
	assert_true(c.cpu_dedicated_set.set);
	f = vmm_cpuset_format(&c.cpu_dedicated_set.cpus);
	assert_string_equal(f, "2-4,6-7");
	free(f);
	assert_int_equal(c.hugepage_pools, 1u << VMM_PAGE_2M);
	assert_int_equal(c.shutdown_timeout_ms, 5000);
	assert_int_equal(c.reboot_timeout_ms, 1500);
	assert_string_equal(c.bridge, "stratus0");
	vmm_config_free(&c);

	memset(&c, 0, sizeof(c));
	assert_true(cfg_load_string("bad.yaml", bad, sizeof(bad) - 1, sec) < 0);
	assert_string_equal(err_msg(), "bad.yaml:2:19: vmm.cpu_shared_set: expected a CPU list "
				       "like 0-3,8,^2, got '0-x'");
	vmm_config_free(&c);

	memset(&c, 0, sizeof(c));
	assert_true(cfg_load_string("bad.yaml", bad_reboot, sizeof(bad_reboot) - 1, sec) < 0);
	assert_string_equal(err_msg(), "bad.yaml:2:19: vmm.reboot_timeout: expected a duration "
				       "like 500ms, 30s or 5m, got '2 minutes'");
	vmm_config_free(&c);

	assert_int_equal(vmm_config_init(&c), 0);
	assert_string_equal(c.uri, "qemu:///system");
	assert_int_equal(c.accel, VMM_ACCEL_AUTO);
	assert_false(c.cpu_dedicated_set.set);
	assert_int_equal(c.shutdown_timeout_ms, 60000);
	assert_int_equal(c.reboot_timeout_ms, 120000); /* Nova's wait_soft_reboot_seconds */
	assert_int_equal(vmm_config_check(&c), 0);
	vmm_config_free(&c);
}

static void test_accel(void **state)
{
	char dev[] = "/tmp/vmm-kvm-XXXXXX", info[] = "/tmp/vmm-cpuinfo-XXXXXX";
	int fd1 = mkstemp(dev), fd2 = mkstemp(info);
	static const char vmx[] = "processor : 0\nflags\t\t: fpu vme de pse vmx ssse3\n";
	static const char novmx[] = "processor : 0\nflags\t\t: fpu vme de pse vmxfoo ssse3\n";

	(void)state;
	assert_true(fd1 >= 0 && fd2 >= 0);
	close(fd1);
	close(fd2);
	assert_int_equal(write_file_atomic(info, vmx, sizeof(vmx) - 1, 0644), 0);
	assert_int_equal(vmm_accel_resolve_at(VMM_ACCEL_AUTO, dev, info), VMM_VIRT_KVM);
	assert_int_equal(vmm_accel_resolve_at(VMM_ACCEL_AUTO, "/nonexistent/kvm", info), VMM_VIRT_QEMU);
	assert_int_equal(vmm_accel_resolve_at(VMM_ACCEL_QEMU, dev, info), VMM_VIRT_QEMU);
	assert_int_equal(write_file_atomic(info, novmx, sizeof(novmx) - 1, 0644), 0);
	assert_int_equal(vmm_accel_resolve_at(VMM_ACCEL_AUTO, dev, info), VMM_VIRT_QEMU);
	assert_int_equal(vmm_accel_resolve_at(VMM_ACCEL_KVM, "/nonexistent/kvm", info), VMM_VIRT_KVM);
	unlink(dev);
	unlink(info);
}

#define P_UL(n, v) { .field = n, .type = VIR_TYPED_PARAM_ULLONG, .value.ul = (v) }
#define P_I(n, v) { .field = n, .type = VIR_TYPED_PARAM_INT, .value.i = (v) }

static void test_stats_rates(void **state)
{
	/* what virConnectGetAllDomainStats gives for one domain, 2 s apart */
	virTypedParameter p1[] = {
		P_I("state.state", VIR_DOMAIN_RUNNING), P_UL("cpu.time", 1000000000ull),
		P_I("vcpu.current", 2), P_UL("vcpu.0.time", 400000000ull),
		P_UL("vcpu.0.delay", 10000000ull), P_UL("vcpu.1.time", 300000000ull),
		P_UL("vcpu.1.delay", 0), P_UL("balloon.current", 1048576),
		P_UL("balloon.rss", 200000), P_UL("block.0.rd.bytes", 1000),
		P_UL("block.1.rd.bytes", 500), P_UL("net.0.tx.bytes", 4000),
	};
	virTypedParameter p2[] = {
		P_I("state.state", VIR_DOMAIN_RUNNING), P_UL("cpu.time", 2000000000ull),
		P_I("vcpu.current", 2), P_UL("vcpu.0.delay", 210000000ull),
		P_UL("vcpu.1.delay", 100000000ull), P_UL("block.0.rd.bytes", 3000),
		P_UL("block.1.rd.bytes", 500), P_UL("net.0.tx.bytes", 8000),
	};
	static struct vmm_dom_stats a, b;
	static struct vmm_dom_rates r;

	(void)state;
	vmm_stats_from_params(p1, ARRAY_SIZE(p1), &a);
	vmm_stats_from_params(p2, ARRAY_SIZE(p2), &b);
	assert_true(a.running);
	assert_int_equal(a.n_vcpus, 2);
	assert_true(a.have_delay);
	assert_int_equal(a.rd_bytes, 1500);
	assert_int_equal(a.mem_rss_kib, 200000);
	snprintf(a.uuid, sizeof(a.uuid), "x");
	snprintf(b.uuid, sizeof(b.uuid), "x");
	a.ts_ns = 0;
	b.ts_ns = 2000000000ll;
	assert_int_equal(vmm_dom_rates(&a, &b, &r), 0);
	assert_float_equal(r.interval_s, 2.0, 1e-9);
	assert_float_equal(r.cpu_pct, 50.0, 1e-9);
	assert_float_equal(r.vcpu_steal_pct[0], 10.0, 1e-9); /* 200 ms of 2 s */
	assert_float_equal(r.vcpu_steal_pct[1], 5.0, 1e-9);
	assert_float_equal(r.steal_pct, 7.5, 1e-9);
	assert_float_equal(r.rd_bps, 1000.0, 1e-9);
	assert_float_equal(r.tx_bps, 2000.0, 1e-9);
	/* a counter that went backwards (domain restarted) is not negative */
	b.vcpu_delay_ns[0] = 0;
	assert_int_equal(vmm_dom_rates(&a, &b, &r), 0);
	assert_float_equal(r.vcpu_steal_pct[0], 0.0, 1e-9);
	b.ts_ns = a.ts_ns;
	assert_int_equal(vmm_dom_rates(&a, &b, &r), -EINVAL);
}

static void test_host_steal(void **state)
{
	static const char s1[] = "cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 50 0 25 400 5 0 0 20 0 0\n";
	static const char s2[] = "cpu  200 0 100 1500 20 0 0 180 0 0\ncpu0 1 2 3 4\n";
	static const char old[] = "cpu  1 2 3 4\n";
	struct vmm_host_cpu a, b;

	(void)state;
	assert_int_equal(vmm_host_cpu_parse(s1, &a), 0);
	assert_int_equal(vmm_host_cpu_parse(s2, &b), 0);
	assert_int_equal(a.steal, 40);
	assert_int_equal(a.total, 1000);
	/* 140 steal ticks of 1000 */
	assert_float_equal(vmm_host_steal_pct(&a, &b), 14.0, 1e-9);
	assert_int_equal(vmm_host_cpu_parse(old, &a), 0);
	assert_int_equal(a.steal, 0);
	assert_int_equal(vmm_host_cpu_parse("intr 1 2\n", &a), -EINVAL);
	assert_int_equal(vmm_host_cpu_read(NULL, &a), 0);
	assert_true(a.total > 0);
}

static void test_backoff(void **state)
{
	(void)state;
	assert_int_equal(vmm_backoff_ms(0), 100);
	assert_int_equal(vmm_backoff_ms(1), 200);
	assert_int_equal(vmm_backoff_ms(3), 800);
	assert_int_equal(vmm_backoff_ms(10), 5000);
	assert_int_equal(vmm_backoff_ms(1000), 5000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpuset),
		cmocka_unit_test(test_topology),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_fit_claims),
		cmocka_unit_test(test_fit_isolate_siblings),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_accel),
		cmocka_unit_test(test_stats_rates),
		cmocka_unit_test(test_host_steal),
		cmocka_unit_test(test_backoff),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
