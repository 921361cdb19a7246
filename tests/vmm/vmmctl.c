/*
 * vmmctl: the vmm lifecycle and stats calls from a shell, for the real
 * guest test (tests/vmm/test_real_guest.sh).
 *
 *   vmmctl URI define XMLFILE
 *   vmmctl URI start|destroy|undefine|state UUID
 *   vmmctl URI stop UUID TIMEOUT_MS      prints "forced=0|1"
 *   vmmctl URI stats UUID                key=value lines of one sample
 *   vmmctl URI steal UUID SECONDS        steal % over an interval:
 *                                        "steal_pct=X vcpu0=X ... host_steal_pct=X"
 *   vmmctl URI ours                      UUID NAME PROJECT POWER per line
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vmm/vmm_priv.h"

static int sample(struct vmm_conn *c, const char *uuid, struct vmm_dom_stats *out)
{
	struct vmm_dom_stats *st = NULL;
	size_t n = 0;
	int r = vmm_stats_collect(c, &st, &n);

	if (r < 0)
		return r;
	r = err_set(-ENOENT, "instance %s: no stats (not running, or not ours)", uuid);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(st[i].uuid, uuid) == 0) {
			*out = st[i];
			r = 0;
		}
	}
	free(st);
	return r;
}

int main(int argc, char **argv)
{
	struct vmm_conn *c = NULL;
	static struct vmm_dom_stats a, b;
	static struct vmm_dom_rates rt;
	const char *cmd;
	int r = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: vmmctl URI COMMAND ARGS (see the source)\n");
		return 2;
	}
	cmd = argv[2];
	if (vmm_open(argv[1], NULL, NULL, &c) < 0)
		goto fail;
	if (strcmp(cmd, "define") == 0 && argc == 4) {
		char *xml = NULL;

		r = read_file(argv[3], 1 << 20, &xml, NULL);
		if (r == 0)
			r = vmm_define(c, xml);
		free(xml);
	} else if (strcmp(cmd, "start") == 0 && argc == 4) {
		r = vmm_start(c, argv[3]);
	} else if (strcmp(cmd, "destroy") == 0 && argc == 4) {
		r = vmm_destroy(c, argv[3]);
	} else if (strcmp(cmd, "undefine") == 0 && argc == 4) {
		r = vmm_undefine(c, argv[3]);
	} else if (strcmp(cmd, "state") == 0 && argc == 4) {
		enum vmm_power pw;

		r = vmm_power_state(c, argv[3], &pw);
		if (r == 0)
			printf("%s\n", vmm_power_names[pw]);
	} else if (strcmp(cmd, "stop") == 0 && argc == 5) {
		bool forced = false;
		long ms;

		r = parse_long(argv[4], 0, 3600000, &ms);
		if (r == 0)
			r = vmm_stop(c, argv[3], ms, &forced);
		if (r == 0)
			printf("forced=%d\n", forced);
	} else if (strcmp(cmd, "stats") == 0 && argc == 4) {
		r = sample(c, argv[3], &a);
		if (r == 0) {
			printf("running=%d\ncpu_time_ns=%llu\nvcpus=%d\nhave_delay=%d\n", a.running,
			       (unsigned long long)a.cpu_time_ns, a.n_vcpus, a.have_delay);
			for (int i = 0; i < a.n_vcpus; i++)
				printf("vcpu%d_time_ns=%llu\nvcpu%d_delay_ns=%llu\n", i,
				       (unsigned long long)a.vcpu_time_ns[i], i,
				       (unsigned long long)a.vcpu_delay_ns[i]);
			printf("mem_actual_kib=%llu\nmem_rss_kib=%llu\nrd_bytes=%llu\nrd_reqs=%llu\n"
			       "rx_bytes=%llu\ntx_bytes=%llu\n",
			       (unsigned long long)a.mem_actual_kib, (unsigned long long)a.mem_rss_kib,
			       (unsigned long long)a.rd_bytes, (unsigned long long)a.rd_reqs,
			       (unsigned long long)a.rx_bytes, (unsigned long long)a.tx_bytes);
		}
	} else if (strcmp(cmd, "steal") == 0 && argc == 5) {
		struct vmm_host_cpu ha, hb;
		long secs;

		r = parse_long(argv[4], 1, 600, &secs);
		if (r == 0)
			r = vmm_host_cpu_read(NULL, &ha);
		if (r == 0)
			r = sample(c, argv[3], &a);
		if (r == 0) {
			sleep((unsigned)secs);
			r = sample(c, argv[3], &b);
		}
		if (r == 0)
			r = vmm_host_cpu_read(NULL, &hb);
		if (r == 0)
			r = vmm_dom_rates(&a, &b, &rt);
		if (r == 0) {
			printf("steal_pct=%.2f cpu_pct=%.2f", rt.steal_pct, rt.cpu_pct);
			for (int i = 0; i < b.n_vcpus && i < VMM_MAX_VCPU_STATS; i++)
				printf(" vcpu%d=%.2f", i, rt.vcpu_steal_pct[i]);
			printf(" host_steal_pct=%.2f\n", vmm_host_steal_pct(&ha, &hb));
		}
	} else if (strcmp(cmd, "ours") == 0 && argc == 3) {
		struct vmm_domain_info *l = NULL;
		size_t n = 0;

		r = vmm_list_ours(c, &l, &n);
		for (size_t i = 0; r == 0 && i < n; i++)
			printf("%s %s %s %s\n", l[i].uuid, l[i].name, l[i].project ? l[i].project : "-",
			       vmm_power_names[l[i].power]);
		vmm_domain_list_free(l, n);
	} else {
		fprintf(stderr, "vmmctl: unknown command or wrong arguments: %s\n", cmd);
		vmm_close(c);
		return 2;
	}
	if (r < 0)
		goto fail;
	vmm_close(c);
	return 0;
fail:
	fprintf(stderr, "vmmctl %s: %s\n", cmd, err_msg());
	vmm_close(c);
	return 1;
}
