/* PCI passthrough on the sysfs fixture tests/vmm/sysfs/pci-2node: which
 * declared devices are usable (whole IOMMU group) and why not, their NUMA
 * nodes, the fit's choice under each affinity policy, claims that a second
 * instance and a re-read placement respect, and the nested-virt check. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "vmm/vmm_priv.h"

#define FIXTURE "tests/vmm/sysfs/pci-2node"
#define ALIASES                                    \
	"vmm:\n"                                   \
	"  cpu_dedicated_set: 2-7,10-15\n"         \
	"  cpu_shared_set: 0-1,8-9\n"              \
	"  pci_alias:\n"                           \
	"    gpu: vendor_id=10de product_id=1eb8\n" \
	"    nic: vendor_id=8086 product_id=1572\n" \
	"    usb: address=0000:00:14.0\n"          \
	"    vf: vendor_id=15b3\n"

static void load_cfg(struct vmm_config *c, const char *yaml)
{
	const struct cfg_section sec[] = {
		{ .name = "vmm", .fields = vmm_config_fields, .dst = c },
		{ 0 },
	};

	memset(c, 0, sizeof(*c));
	assert_int_equal(cfg_load_string("t.yaml", yaml, strlen(yaml), sec), 0);
	assert_int_equal(vmm_config_check(c), 0);
}

static const struct vmm_pci_dev *dev(const struct vmm_topology *t, const char *addr)
{
	for (int i = 0; i < t->n_pci; i++)
		if (strcmp(t->pci[i].address, addr) == 0)
			return &t->pci[i];
	fail_msg("no device %s in the scan", addr);
	return NULL;
}

static struct instance_spec spec_with(const char *uuid, const char *const *kv, long vcpus)
{
	json_t *j = json_load_file("tests/data/spec-basic.json", 0, NULL);
	json_t *es = json_object();
	struct instance_spec s;

	assert_non_null(j);
	for (; kv && kv[0]; kv += 2)
		json_object_set_new(es, kv[0], json_string(kv[1]));
	json_object_set_new(j, "uuid", json_string(uuid));
	json_object_set_new(json_object_get(j, "flavor"), "extra_specs", es);
	json_object_set_new(json_object_get(j, "flavor"), "vcpus", json_integer(vcpus));
	json_object_set_new(json_object_get(j, "flavor"), "ram_mb", json_integer(1024));
	assert_int_equal(model_spec_parse(j, &s), 0);
	json_decref(j);
	return s;
}

static void test_scan(void **state)
{
	struct vmm_config c;
	struct vmm_topology *t = NULL;
	const struct vmm_pci_dev *d;

	(void)state;
	load_cfg(&c, ALIASES);
	assert_int_equal(vmm_topology_load(FIXTURE, &t), 0);
	assert_int_equal(vmm_pci_scan(FIXTURE, &c, t), 0);
	/* declared only: 0000:00:1f.0 (no alias) and the audio functions are not listed */
	assert_int_equal(t->n_pci, 7);
	/* a group of its own: usable, on node 0 */
	d = dev(t, "0000:3b:00.0");
	assert_true(d->usable);
	assert_string_equal(d->alias, "gpu");
	assert_int_equal(d->iommu_group, 30);
	assert_int_equal(d->node_id, 0);
	assert_int_equal(d->node, 0);
	/* split group: its audio function has a host driver */
	d = dev(t, "0000:af:00.0");
	assert_false(d->usable);
	assert_string_equal(d->reason, "IOMMU group 40 is not whole: it also holds 0000:af:00.1 "
				       "(driver snd_hda_intel), which is neither in vmm.pci_alias "
				       "nor bound to vfio-pci");
	/* the other member bound to vfio-pci: whole */
	d = dev(t, "0000:d8:00.0");
	assert_true(d->usable);
	assert_int_equal(d->node_id, 1);
	/* both functions declared: whole */
	assert_true(dev(t, "0000:5e:00.0")->usable);
	assert_true(dev(t, "0000:5e:00.1")->usable);
	/* no IOMMU group at all (no IOMMU), no NUMA information */
	d = dev(t, "0000:00:14.0");
	assert_false(d->usable);
	assert_int_equal(d->node_id, -1);
	assert_non_null(strstr(d->reason, "no IOMMU group"));
	/* nested virtualization from the module parameters */
	assert_true(t->nested_vmx);
	assert_false(t->nested_svm);
	vmm_config_free(&c);

	/* declaring the audio function too makes the group whole */
	load_cfg(&c, ALIASES "    audio: vendor_id=10de product_id=10f8\n");
	assert_int_equal(vmm_pci_scan(FIXTURE, &c, t), 0);
	assert_true(dev(t, "0000:af:00.0")->usable);
	assert_true(dev(t, "0000:af:00.1")->usable);
	vmm_config_free(&c);
	vmm_topology_free(t);
}

static void test_fit_claims(void **state)
{
	static const char *const req[] = { "hw:cpu_policy", "dedicated", "pci_passthrough:alias",
					   "gpu:1", "hw:pci_numa_affinity_policy", "required", NULL };
	static const char *const vf[] = { "hw:cpu_policy", "dedicated", "pci_passthrough:alias",
					  "vf:1", "hw:pci_numa_affinity_policy", "required", NULL };
	static const char *const pref[] = { "hw:cpu_policy", "dedicated", "pci_passthrough:alias",
					    "gpu:1", "hw:pci_numa_affinity_policy", "preferred", NULL };
	struct instance_spec a = spec_with("11111111-0000-4000-8000-000000000001", req, 2);
	struct instance_spec b = spec_with("11111111-0000-4000-8000-000000000002", req, 2);
	struct instance_spec v = spec_with("11111111-0000-4000-8000-000000000003", vf, 2);
	struct instance_spec p = spec_with("11111111-0000-4000-8000-000000000004", pref, 2);
	static struct vmm_placement pa, pb, pv, pp, back; /* big: off the stack */
	struct vmm_config c;
	struct vmm_topology *t = NULL;
	struct vmm_host_usage u;
	json_t *j;

	(void)state;
	load_cfg(&c, ALIASES);
	assert_int_equal(vmm_topology_load(FIXTURE, &t), 0);
	assert_int_equal(vmm_pci_scan(FIXTURE, &c, t), 0);
	assert_int_equal(vmm_usage_init(&u, t), 0);
	/* the first gpu: node 0's, with the cell on node 0 */
	assert_int_equal(vmm_fit(t, &c, &u, &a, &pa), 0);
	assert_int_equal(pa.n_pci, 1);
	assert_string_equal(pa.pci[0].address, "0000:3b:00.0");
	assert_int_equal(pa.cells[0].node_id, 0);
	assert_int_equal(vmm_usage_claim(&u, t, &pa), 0);
	/* the second: node 1's usable one, and the cell follows it to node 1 */
	assert_int_equal(vmm_fit(t, &c, &u, &b, &pb), 0);
	assert_string_equal(pb.pci[0].address, "0000:d8:00.0");
	assert_int_equal(pb.cells[0].node_id, 1);
	assert_int_equal(vmm_usage_claim(&u, t, &pb), 0);
	/* a third: none left (af:00.0's group is split) */
	assert_int_equal(vmm_fit(t, &c, &u, &a, &pv), -ENOSPC);
	assert_non_null(strstr(err_msg(), "0000:3b:00.0 node0 in use by instance 11111111-0000-4000-8000-000000000001"));
	assert_non_null(strstr(err_msg(), "0000:af:00.0 node1 unusable: IOMMU group 40 is not whole"));
	/* a vf on node 1 under required puts the cell on node 1 */
	assert_int_equal(vmm_fit(t, &c, &u, &v, &pv), 0);
	assert_string_equal(pv.pci[0].address, "0000:d9:00.0");
	assert_int_equal(pv.cells[0].node_id, 1);
	vmm_placement_free(&pv);
	/* the placement as the store keeps it: devices come back and are claimed again */
	j = vmm_placement_to_json(&pb, t);
	vmm_usage_release(&u, &pb);
	assert_int_equal(vmm_placement_from_json(j, t, &back), 0);
	json_decref(j);
	assert_int_equal(back.n_pci, 1);
	assert_string_equal(back.pci[0].address, "0000:d8:00.0");
	assert_string_equal(back.pci[0].alias, "gpu");
	assert_int_equal(vmm_usage_claim(&u, t, &back), 0);
	assert_int_equal(vmm_usage_claim(&u, t, &pb), -EBUSY); /* claimed twice: refused */
	assert_non_null(strstr(err_msg(), "is taken by instance"));
	/* released: free again; preferred then takes node 0's cell and node 1's gpu */
	vmm_usage_release(&u, &pa);
	vmm_usage_release(&u, &back);
	assert_int_equal(vmm_fit(t, &c, &u, &p, &pp), 0);
	assert_string_equal(pp.pci[0].address, "0000:3b:00.0");
	vmm_placement_free(&pa);
	vmm_placement_free(&pb);
	vmm_placement_free(&pp);
	vmm_placement_free(&back);
	vmm_usage_free(&u);
	vmm_topology_free(t);
	vmm_config_free(&c);
	model_spec_free(&a);
	model_spec_free(&b);
	model_spec_free(&v);
	model_spec_free(&p);
}

static void test_cpu(void **state)
{
	static const char *const nested[] = { "hw:cpu_model_extra_flags", "vmx", NULL };
	static const char *const svm[] = { "hw:cpu_model_extra_flags", "+svm", NULL };
	static const char *const pt[] = { "hw:cpu_mode", "host-passthrough", NULL };
	struct instance_spec n = spec_with("11111111-0000-4000-8000-000000000005", nested, 1);
	struct instance_spec s = spec_with("11111111-0000-4000-8000-000000000006", svm, 1);
	struct instance_spec h = spec_with("11111111-0000-4000-8000-000000000007", pt, 1);
	static struct vmm_placement p;
	struct vmm_config c;
	struct vmm_topology *t = NULL;

	(void)state;
	load_cfg(&c, "vmm:\n  cpu_mode: custom\n  cpu_model: Skylake-Server\n");
	assert_int_equal(vmm_topology_load(FIXTURE, &t), 0);
	/* kvm with nested vmx: the config's model plus the flavor's flag */
	assert_int_equal(vmm_cpu_fit(t, &c, VMM_VIRT_KVM, &n, &p), 0);
	assert_int_equal(p.cpu.mode, MODEL_CPU_MODE_CUSTOM);
	assert_string_equal(p.cpu.model, "Skylake-Server");
	assert_int_equal(p.cpu.n_flags, 1);
	assert_string_equal(p.cpu.flags[0].name, "vmx");
	/* no nested svm on this host, and no nesting under TCG */
	assert_int_equal(vmm_cpu_fit(t, &c, VMM_VIRT_KVM, &s, &p), -ENOSPC);
	assert_non_null(strstr(err_msg(), "kvm_amd"));
	assert_int_equal(vmm_cpu_fit(t, &c, VMM_VIRT_QEMU, &n, &p), -ENOSPC);
	assert_non_null(strstr(err_msg(), "needs KVM"));
	/* the flavor's mode wins over the config's */
	assert_int_equal(vmm_cpu_fit(t, &c, VMM_VIRT_KVM, &h, &p), 0);
	assert_int_equal(p.cpu.mode, MODEL_CPU_MODE_HOST_PASSTHROUGH);
	vmm_config_free(&c);
	/* defaults: host-model on kvm, QEMU's own under TCG */
	assert_int_equal(vmm_config_init(&c), 0);
	assert_int_equal(vmm_cpu_fit(t, &c, VMM_VIRT_KVM, &s, &p), -ENOSPC);
	model_spec_free(&s);
	s = spec_with("11111111-0000-4000-8000-000000000006", NULL, 1);
	assert_int_equal(vmm_cpu_fit(t, &c, VMM_VIRT_KVM, &s, &p), 0);
	assert_int_equal(p.cpu.mode, MODEL_CPU_MODE_HOST_MODEL);
	assert_int_equal(vmm_cpu_fit(t, &c, VMM_VIRT_QEMU, &s, &p), 0);
	assert_int_equal(p.cpu.mode, MODEL_CPU_MODE_DEFAULT);
	vmm_config_free(&c);
	vmm_topology_free(t);
	model_spec_free(&n);
	model_spec_free(&s);
	model_spec_free(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scan),
		cmocka_unit_test(test_fit_claims),
		cmocka_unit_test(test_cpu),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
