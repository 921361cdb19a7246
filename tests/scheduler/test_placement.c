/* Filter and weigher tables: one line per case. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "scheduler/sched_priv.h"

#define NOW 1000000000LL

static struct sched_config cfg;

static void cfg_defaults(void)
{
	const struct cfg_section sec[] = {
		{ .name = "scheduler", .fields = sched_config_fields, .dst = &cfg },
		{ 0 },
	};

	sched_config_free(&cfg);
	memset(&cfg, 0, sizeof(cfg));
	assert_int_equal(cfg_load_string("t", "", 0, sec), 0);
}

/* A host with 8 shared CPUs x4, 4 pCPUs on 2 nodes, 16 GB, 100 GB disk,
 * 2MB pages on node 1 only. */
static void host_init(struct sched_host *h, char *name)
{
	memset(h, 0, sizeof(*h));
	h->name = (char *)name;
	h->az = (char *)"az1";
	h->last_report_ms = NOW;
	h->has_box_key = true; /* builds' secrets can be sealed to it */
	h->vcpu_total = 8;
	h->vcpu_ratio = 4.0;
	h->pcpu_total = 4;
	h->ram_total = 16384;
	h->ram_reserved = 512;
	h->ram_ratio = 1.0;
	h->disk_total = 100;
	h->n_numa = 2;
	h->numa[0].pcpu_total = 2;
	h->numa[1].pcpu_total = 2;
	h->numa[1].n_pages = 1;
	h->numa[1].pages[0] = (struct sched_pagepool){ .size_kb = 2048, .total = 1024 };
}

enum mod {
	M_NONE,
	M_DOWN,
	M_NEVER,
	M_DEGRADED,
	M_AZ2,
	M_RAM_FULL,
	M_VCPU_FULL,
	M_PCPU_SPLIT,   /* 1 free pCPU on each node: 2 free, no node has 2 */
	M_NO_PAGES,
	M_DISK_SMALL,
	M_STEAL_HIGH,
	M_IN_GROUP,
	M_TRIED,
	M_LAST
};

static void apply(struct sched_host *h, enum mod m)
{
	switch (m) {
	case M_NONE: break;
	case M_DOWN: h->last_report_ms = NOW - 31000; break;
	case M_NEVER: h->last_report_ms = 0; break;
	case M_DEGRADED: h->degraded = true; break;
	case M_AZ2: h->az = (char *)"az2"; break;
	case M_RAM_FULL: h->ram_used = 15000; break;
	case M_VCPU_FULL: h->vcpu_used = 31; break;
	case M_PCPU_SPLIT:
		h->pcpu_used = 2;
		h->numa[0].pcpu_used = 1;
		h->numa[1].pcpu_used = 1;
		break;
	case M_NO_PAGES: h->numa[1].pages[0].used = 1000; break;
	case M_DISK_SMALL: h->disk_used = 95; break;
	case M_STEAL_HIGH: h->has_steal = true; h->steal_pct = 12.0; break;
	case M_IN_GROUP: break;
	case M_TRIED: break;
	case M_LAST: break;
	}
}

static const struct filter_case {
	const char *name;
	enum mod mod;
	const char *specs;         /* flavor: vcpus=2 ram_mb=2048 disk_gb=10 + these */
	const char *az;            /* requested zone */
	enum sched_group_policy group;
	double steal_threshold;
	const char *fails;         /* NULL = passes; else the reason starts with this */
} filter_cases[] = {
	{ "fits", M_NONE, "", NULL, SCHED_GROUP_NONE, 0, NULL },
	{ "down", M_DOWN, "", NULL, SCHED_GROUP_NONE, 0, "down (last report 31 s ago" },
	{ "never reported", M_NEVER, "", NULL, SCHED_GROUP_NONE, 0, "down (never reported)" },
	{ "degraded", M_DEGRADED, "", NULL, SCHED_GROUP_NONE, 0, "degraded (the agent reports" },
	{ "zone asked, matches", M_NONE, "", "az1", SCHED_GROUP_NONE, 0, NULL },
	{ "zone asked, other", M_AZ2, "", "az1", SCHED_GROUP_NONE, 0, "availability zone az2, not az1" },
	{ "RAM full", M_RAM_FULL, "", NULL, SCHED_GROUP_NONE, 0, "RAM: needs 2048 MB, 872 MB free" },
	{ "VCPU full", M_VCPU_FULL, "", NULL, SCHED_GROUP_NONE, 0, "VCPU: needs 2, 1 free" },
	{ "VCPU full, dedicated ok", M_VCPU_FULL, "hw:cpu_policy=dedicated", NULL, SCHED_GROUP_NONE, 0, NULL },
	{ "PCPU none for shared", M_PCPU_SPLIT, "", NULL, SCHED_GROUP_NONE, 0, NULL },
	{ "PCPU split over nodes", M_PCPU_SPLIT, "hw:cpu_policy=dedicated", NULL, SCHED_GROUP_NONE, 0, "NUMA: no node has 2 dedicated pCPUs free" },
	{ "2MB pages on node 1", M_NONE, "hw:mem_page_size=2MB", NULL, SCHED_GROUP_NONE, 0, NULL },
	{ "1GB pages: none", M_NONE, "hw:mem_page_size=1GB", NULL, SCHED_GROUP_NONE, 0, "NUMA: no node has 2048 MB of 1GB pages free" },
	{ "2MB pages used up", M_NO_PAGES, "hw:mem_page_size=large", NULL, SCHED_GROUP_NONE, 0, "NUMA: no node has 2048 MB of huge pages free" },
	{ "any: small pages will do", M_NO_PAGES, "hw:mem_page_size=any", NULL, SCHED_GROUP_NONE, 0, NULL },
	{ "disk", M_DISK_SMALL, "", NULL, SCHED_GROUP_NONE, 0, "disk: needs 10 GB" },
	{ "steal under threshold", M_STEAL_HIGH, "", NULL, SCHED_GROUP_NONE, 20, NULL },
	{ "steal over threshold", M_STEAL_HIGH, "", NULL, SCHED_GROUP_NONE, 5, "steal 12.0% above the threshold of 5.0%" },
	{ "steal filter off", M_STEAL_HIGH, "", NULL, SCHED_GROUP_NONE, 0, NULL },
	{ "anti-affinity, member here", M_IN_GROUP, "", NULL, SCHED_GROUP_ANTI_AFFINITY, 0, "server group anti-affinity" },
	{ "anti-affinity, not here", M_NONE, "", NULL, SCHED_GROUP_ANTI_AFFINITY, 0, NULL },
	{ "affinity, group here", M_IN_GROUP, "", NULL, SCHED_GROUP_AFFINITY, 0, NULL },
	{ "affinity, group elsewhere", M_NONE, "", NULL, SCHED_GROUP_AFFINITY, 0, "server group affinity: the group is on other" },
	{ "already tried", M_TRIED, "", NULL, SCHED_GROUP_NONE, 0, "already tried" },
};

static void test_filters(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(filter_cases); i++) {
		const struct filter_case *fc = &filter_cases[i];
		struct sched_host h;
		struct sched_flavor f;
		struct sched_image im = { .name = (char *)"img", .min_disk_gb = 1 };
		char text[256], why[256];
		const char *group_here[] = { "h1" }, *group_other[] = { "other" };
		const char *tried[] = { "h1" };
		struct sched_req r = { 0 };
		struct sched_ctx ctx = { .cfg = &cfg, .now_ms = NOW };
		const char *reason;

		cfg_defaults();
		cfg.steal_threshold_pct = fc->steal_threshold;
		host_init(&h, (char *)"h1");
		apply(&h, fc->mod);
		snprintf(text, sizeof(text), "vcpus=2 ram_mb=2048 disk_gb=10 %s", fc->specs);
		assert_int_equal(sched_flavor_parse("f", text, &f), 0);
		r.flavor = &f;
		r.image = &im;
		r.az = fc->az;
		r.disk_gb = 10;
		r.group_policy = fc->group;
		if (fc->group != SCHED_GROUP_NONE) {
			r.group_hosts = fc->mod == M_IN_GROUP ? group_here : group_other;
			r.n_group_hosts = 1;
		}
		if (fc->mod == M_TRIED) {
			r.tried_hosts = tried;
			r.n_tried_hosts = 1;
		}
		reason = sched_host_reject_reason(&ctx, &h, &r, why, sizeof(why));
		print_message("case '%s': %s\n", fc->name, reason ? reason : "passes");
		if (!fc->fails) {
			assert_null(reason);
			assert_true(sched_host_passes(&ctx, &h, &r));
		} else {
			assert_non_null(reason);
			assert_true(strncmp(reason, fc->fails, strlen(fc->fails)) == 0);
			assert_false(sched_host_passes(&ctx, &h, &r));
		}
		sched_flavor_free(&f);
	}
}

/* Weighers: two hosts, a and b; which one wins under each setting. */
enum wmod { W_B_MORE_FREE_RAM, W_B_MORE_STEAL, W_B_FAILED, W_B_MORE_INSTANCES, W_B_MORE_PCPUS, W_LAST };

static const struct weigher_case {
	const char *name;
	enum wmod mod;
	int placement;         /* enum sched_policy */
	const char *specs;
	double ram, cpu, steal, failures, count;
	const char *winner;
} weigher_cases[] = {
	{ "spread: more free RAM wins", W_B_MORE_FREE_RAM, SCHED_SPREAD, "", 1, 0, 0, 0, 0, "b" },
	{ "pack: less free RAM wins", W_B_MORE_FREE_RAM, SCHED_PACK, "", 1, 0, 0, 0, 0, "a" },
	{ "RAM multiplier 0: tie, name order", W_B_MORE_FREE_RAM, SCHED_SPREAD, "", 0, 0, 0, 0, 0, "a" },
	{ "less steal wins", W_B_MORE_STEAL, SCHED_SPREAD, "", 1, 1, 1, 0, 0, "a" },
	{ "recent build failure loses", W_B_FAILED, SCHED_SPREAD, "", 1, 1, 1, 100, 0, "a" },
	{ "failures ignored at 0: more free RAM wins", W_B_FAILED, SCHED_SPREAD, "", 1, 1, 1, 0, 0, "b" },
	{ "fewer instances win", W_B_MORE_INSTANCES, SCHED_SPREAD, "", 0, 0, 0, 0, 1, "a" },
	{ "spread: more free pCPUs (dedicated)", W_B_MORE_PCPUS, SCHED_SPREAD, "hw:cpu_policy=dedicated", 0, 1, 0, 0, 0, "b" },
	{ "pack: fewer free pCPUs (dedicated)", W_B_MORE_PCPUS, SCHED_PACK, "hw:cpu_policy=dedicated", 0, 1, 0, 0, 0, "a" },
};

static void test_weighers(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(weigher_cases); i++) {
		const struct weigher_case *wc = &weigher_cases[i];
		static struct sched_host a, b; /* static: two hosts exceed ASan's 4 KiB frame */
		struct sched_host *hosts[2] = { &a, &b };
		struct sched_flavor f;
		struct sched_image im = { .name = (char *)"img" };
		struct sched_req r = { 0 };
		struct sched_ctx ctx = { .cfg = &cfg, .now_ms = NOW };
		char text[128];
		size_t out[2], cursor = 0, scanned;

		cfg_defaults();
		cfg.placement = wc->placement;
		cfg.ram_weight_multiplier = wc->ram;
		cfg.cpu_weight_multiplier = wc->cpu;
		cfg.steal_weight_multiplier = wc->steal;
		cfg.build_failure_weight_multiplier = wc->failures;
		cfg.instance_count_weight_multiplier = wc->count;
		host_init(&a, (char *)"a");
		host_init(&b, (char *)"b");
		a.ram_used = b.ram_used = 4096;
		switch (wc->mod) {
		case W_B_MORE_FREE_RAM: b.ram_used = 1024; break;
		case W_B_MORE_STEAL: b.has_steal = a.has_steal = true; b.steal_pct = 8; a.steal_pct = 1; break;
		case W_B_FAILED: b.recent_failures = 1; b.ram_used = 1024; break;
		case W_B_MORE_INSTANCES: b.instances = 5; a.instances = 1; break;
		case W_B_MORE_PCPUS: a.pcpu_used = 2; a.numa[0].pcpu_used = 2; break;
		case W_LAST: break;
		}
		snprintf(text, sizeof(text), "vcpus=1 ram_mb=512 disk_gb=1 %s", wc->specs);
		assert_int_equal(sched_flavor_parse("f", text, &f), 0);
		r.flavor = &f;
		r.image = &im;
		r.disk_gb = 1;
		assert_int_equal(sched_select(&ctx, hosts, 2, &r, &cursor, out, 2, &scanned), 2);
		print_message("case '%s': %s first\n", wc->name, hosts[out[0]]->name);
		assert_string_equal(hosts[out[0]]->name, wc->winner);
		assert_int_equal(scanned, 2);
		sched_flavor_free(&f);
	}
}

/* candidates bounds the hosts weighed; round-robin cursor moves on. */
static void test_candidates(void **state)
{
	static struct sched_host h[10];
	struct sched_host *hp[10];
	char names[10][8];
	struct sched_flavor f;
	struct sched_image im = { .name = (char *)"img" };
	struct sched_req r = { 0 };
	struct sched_ctx ctx = { .cfg = &cfg, .now_ms = NOW };
	size_t out[3], cursor = 0, scanned;

	(void)state;
	cfg_defaults();
	cfg.candidates = 3;
	for (int i = 0; i < 10; i++) {
		snprintf(names[i], sizeof(names[i]), "h%d", i);
		host_init(&h[i], names[i]);
		hp[i] = &h[i];
	}
	h[1].last_report_ms = 0; /* down: skipped, still scanned */
	assert_int_equal(sched_flavor_parse("f", "vcpus=1 ram_mb=512", &f), 0);
	r.flavor = &f;
	r.image = &im;
	assert_int_equal(sched_select(&ctx, hp, 10, &r, &cursor, out, 3, &scanned), 3);
	assert_int_equal(scanned, 4);
	assert_int_equal(cursor, 4);
	assert_int_equal(sched_select(&ctx, hp, 10, &r, &cursor, out, 3, &scanned), 3);
	assert_int_equal(cursor, 7);
	sched_flavor_free(&f);
}

static void test_catalog_parse(void **state)
{
	struct sched_flavor f;
	struct sched_image im;

	(void)state;
	assert_int_equal(sched_flavor_parse("m1.p", "vcpus=2 ram_mb=1024 disk_gb=4 "
					    "hw:cpu_policy=dedicated hw:mem_page_size=2MB", &f), 0);
	assert_true(f.dedicated);
	assert_int_equal(f.page_kb, 2048);
	sched_flavor_free(&f);
	assert_int_equal(sched_flavor_parse("bad", "vcpus=two ram_mb=1", &f), -EINVAL);
	assert_string_equal(err_msg(), "flavor bad: vcpus: expected an integer of at least 1, got 'two'");
	assert_int_equal(sched_flavor_parse("bad", "vcpus=1 ram_mb=1 hw:cpu_policy=mine", &f), -EINVAL);
	assert_string_equal(err_msg(), "flavor bad: hw:cpu_policy: expected shared or dedicated, got 'mine'");
	assert_int_equal(sched_flavor_parse("bad", "vcpus=1", &f), -EINVAL);
	assert_int_equal(sched_image_parse("d", "url=http://x/d.qcow2 checksum=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef disk_format=qcow2 min_disk_gb=2", &im), 0);
	assert_int_equal(im.min_disk_gb, 2);
	sched_image_free(&im);
	assert_int_equal(sched_image_parse("d", "url=http://x/d checksum=md5:ab disk_format=qcow2", &im), -EINVAL);
	assert_string_equal(err_msg(), "image d: checksum: expected sha256:<64 hex digits> or sha512:<128 hex digits>, got 'md5:ab'");
}

static int teardown(void **state)
{
	(void)state;
	sched_config_free(&cfg);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_filters),
		cmocka_unit_test(test_weighers),
		cmocka_unit_test(test_candidates),
		cmocka_unit_test(test_catalog_parse),
	};

	return cmocka_run_group_tests(tests, NULL, teardown);
}
