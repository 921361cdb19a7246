/*
 * bench_vmm: spec -> started domain, and bulk stats.
 *
 *   bench_vmm test [N]            test:///default: fit + render + define + start,
 *                                 N times; reference: raw virDomainDefineXML +
 *                                 virDomainCreate of pre-rendered XML. Then stats
 *                                 for 100 domains (ours vs raw
 *                                 virConnectGetAllDomainStats).
 *   bench_vmm qemu KERNEL INITRD  qemu:///system: one tiny guest, spec to
 *                                 started domain (QEMU launched), then removed.
 * Prints "name value unit" lines for run.sh.
 */
#include <stdio.h>
#include <string.h>

#include "vmm/vmm_priv.h"

static const char *spec_path = "tests/data/spec-basic.json";

static int make_xml(struct instance_spec *s, const struct vmm_topology *t, int i,
		    const struct vmm_domain_params *pp, char **xml)
{
	struct vmm_placement p = { 0 };
	int r;

	snprintf(s->uuid, sizeof(s->uuid), "00000000-0000-4000-8000-%012d", i);
	r = vmm_fit(t, NULL, NULL, s, &p);
	if (r == 0)
		r = vmm_domain_xml(s, &p, pp, xml);
	vmm_placement_free(&p);
	return r;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static double median_us(int64_t *ns, int n)
{
	qsort(ns, (size_t)n, sizeof(*ns), cmp_i64);
	return (double)ns[n / 2] / 1000.0;
}

static int bench_test(int n)
{
	struct vmm_topology *t = NULL;
	struct instance_spec s;
	struct vmm_conn *c = NULL;
	struct vmm_domain_params pp = { .virt = VMM_VIRT_QEMU, .disk_path = "/nonexistent/disk.qcow2",
					.bridge = "stratus0", .console_log = "/tmp/console.log" };
	virConnectPtr raw;
	int64_t *ours = calloc((size_t)n, sizeof(int64_t)), *ref = calloc((size_t)n, sizeof(int64_t));
	char **xmls = calloc((size_t)n, sizeof(char *));
	struct vmm_dom_stats *st = NULL;
	size_t ns = 0;
	int64_t t0, best_ours = INT64_MAX, best_ref = INT64_MAX;

	if (!ours || !ref || !xmls || model_spec_parse_file(spec_path, &s) < 0 ||
	    vmm_topology_load("tests/vmm/sysfs/2node-ht", &t) < 0 ||
	    vmm_open("test:///default", NULL, NULL, &c) < 0) {
		fprintf(stderr, "bench_vmm: %s\n", err_msg());
		return 1;
	}
	raw = virConnectOpen("test:///default");
	/* ours: fit + render + define + start */
	for (int i = 0; i < n; i++) {
		char *xml = NULL;

		t0 = time_mono_ns();
		if (make_xml(&s, t, i, &pp, &xml) < 0 || vmm_define(c, xml) < 0 ||
		    vmm_start(c, s.uuid) < 0) {
			fprintf(stderr, "bench_vmm: %s\n", err_msg());
			return 1;
		}
		ours[i] = time_mono_ns() - t0;
		free(xml);
	}
	/* reference: the raw libvirt calls on XML rendered beforehand */
	for (int i = 0; i < n; i++)
		if (make_xml(&s, t, n + i, &pp, &xmls[i]) < 0)
			return 1;
	for (int i = 0; i < n; i++) {
		virDomainPtr d;

		t0 = time_mono_ns();
		d = virDomainDefineXML(raw, xmls[i]);
		if (!d || virDomainCreate(d) < 0) {
			fprintf(stderr, "bench_vmm: raw define/start failed\n");
			return 1;
		}
		virDomainFree(d);
		ref[i] = time_mono_ns() - t0;
	}
	printf("spawn_test_ours_us %.1f\n", median_us(ours, n));
	printf("spawn_test_raw_us %.1f\n", median_us(ref, n));

	/* stats: exactly 100 of ours running (undefine the rest) */
	for (int i = 100; i < 2 * n; i++) {
		char uuid[UUID_STRLEN];

		snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-%012d", i);
		vmm_undefine(c, uuid);
	}
	for (int rep = 0; rep < 50; rep++) {
		virDomainStatsRecordPtr *recs = NULL;
		int nr;

		t0 = time_mono_ns();
		if (vmm_stats_collect(c, &st, &ns) < 0) {
			fprintf(stderr, "bench_vmm: %s\n", err_msg());
			return 1;
		}
		if (time_mono_ns() - t0 < best_ours)
			best_ours = time_mono_ns() - t0;
		free(st);
		t0 = time_mono_ns();
		nr = virConnectGetAllDomainStats(raw, VMM_STATS_TYPES, &recs, 0);
		if (time_mono_ns() - t0 < best_ref)
			best_ref = time_mono_ns() - t0;
		if (nr > 0)
			virDomainStatsRecordListFree(recs);
	}
	printf("stats_domains %zu\n", ns);
	printf("stats100_ours_us %.1f\n", (double)best_ours / 1000.0);
	printf("stats100_raw_us %.1f\n", (double)best_ref / 1000.0);

	for (int i = 0; i < 100; i++) {
		char uuid[UUID_STRLEN];

		snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-%012d", i);
		vmm_undefine(c, uuid);
	}
	for (int i = 0; i < n; i++)
		free(xmls[i]);
	free(xmls);
	free(ours);
	free(ref);
	virConnectClose(raw);
	vmm_close(c);
	vmm_topology_free(t);
	model_spec_free(&s);
	return 0;
}

static int bench_qemu(const char *kernel, const char *initrd, const char *disk)
{
	struct vmm_topology *t = NULL;
	struct instance_spec s;
	struct vmm_conn *c = NULL;
	struct vmm_placement p = { 0 };
	struct vmm_domain_params pp = { .virt = VMM_VIRT_QEMU, .disk_path = disk,
					.kernel = kernel, .initrd = initrd,
					.cmdline = "console=ttyS0 quiet" };
	char *xml = NULL;
	int64_t t0, took;
	int r;

	if (model_spec_parse_file(spec_path, &s) < 0 || vmm_topology_load(NULL, &t) < 0 ||
	    vmm_open("qemu:///system", NULL, NULL, &c) < 0)
		goto fail;
	/* the bench flavor: shared vCPUs, small pages (hugepages are the test's) */
	for (size_t i = 0; i < s.flavor.n_extra_specs; i++)
		s.flavor.extra_specs[i].key[0] = 'x'; /* "xw:...": not an hw: key any more */
	s.flavor.vcpus = 1;
	s.flavor.ram_mb = 256;
	snprintf(s.uuid, sizeof(s.uuid), "%s", "00000000-0000-4000-8000-0000be0c0001");
	vmm_undefine(c, s.uuid);
	t0 = time_mono_ns();
	if (vmm_fit(t, NULL, NULL, &s, &p) < 0 || vmm_domain_xml(&s, &p, &pp, &xml) < 0 ||
	    vmm_define(c, xml) < 0 || vmm_start(c, s.uuid) < 0)
		goto fail;
	took = time_mono_ns() - t0;
	printf("spawn_qemu_ours_ms %.1f\n", (double)took / 1e6);
	r = vmm_undefine(c, s.uuid);
	/* the XML for the reference run (virsh define + start) */
	if (r == 0 && write_file_atomic("/tmp/stratus-bench-vmm.xml", xml, strlen(xml), 0644) < 0)
		goto fail;
	free(xml);
	vmm_placement_free(&p);
	vmm_close(c);
	vmm_topology_free(t);
	model_spec_free(&s);
	return r < 0;
fail:
	fprintf(stderr, "bench_vmm: %s\n", err_msg());
	return 1;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "test") == 0)
		return bench_test(argc > 2 ? (int)strtol(argv[2], NULL, 10) : 200);
	if (argc == 5 && strcmp(argv[1], "qemu") == 0)
		return bench_qemu(argv[2], argv[3], argv[4]);
	fprintf(stderr, "usage: bench_vmm test [N] | qemu KERNEL INITRD DISK\n");
	return 2;
}
