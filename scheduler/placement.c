/*
 * Placement: the filter table, the weigher table, the NUMA fit and the
 * selection of a host and its alternates.
 *
 * A decision runs the filters over hosts from a round-robin cursor until
 * `candidates` hosts pass (or every host was seen), weighs those, and
 * returns the best first. Looking at a bounded number of fitting hosts
 * keeps a decision's cost flat in the fleet size (kube-scheduler's
 * percentageOfNodesToScore does the same); candidates = 0 weighs all.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

const char *const sched_group_policy_names[] = { "none", "affinity", "anti-affinity", NULL };

static bool in_list(const char *name, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], name) == 0)
			return true;
	return false;
}

#define WHY(...)                                          \
	do {                                              \
		if (why)                                  \
			snprintf(why, whylen, __VA_ARGS__); \
	} while (0)

/* ---- NUMA fit ---------------------------------------------------------- */

static long pages_for(long ram_mb, long size_kb)
{
	return (ram_mb * 1024 + size_kb - 1) / size_kb;
}

static long pool_free(const struct sched_pagepool *p)
{
	return p->total - p->used;
}

/* Try one node: the pCPUs and, when asked, pages of one size. */
static bool node_fit(const struct sched_numa *n, long need_pcpus, long page_kb, long ram_mb,
		     struct sched_fit *out)
{
	if (n->pcpu_total - n->pcpu_used < need_pcpus)
		return false;
	if (page_kb == SCHED_PAGE_SMALL) {
		out->page_kb = 0;
		out->pages = 0;
		return true;
	}
	for (int i = 0; i < n->n_pages; i++) {
		const struct sched_pagepool *p = &n->pages[i];

		if (page_kb > 0 && p->size_kb != page_kb)
			continue;
		if (pool_free(p) >= pages_for(ram_mb, p->size_kb)) {
			out->page_kb = p->size_kb;
			out->pages = pages_for(ram_mb, p->size_kb);
			return true;
		}
	}
	return false;
}

/* Node index N may hold the request's PCI devices (when its policy binds them to the node). */
static bool pci_ok(const struct sched_host *h, const struct sched_req *r, int n)
{
	const struct model_flavor_hw *hw = &r->flavor->hw;

	return !hw->n_pci || hw->pci_numa == MODEL_PCI_NUMA_PREFERRED || sched_pci_node_ok(h, r, n);
}

static bool numa_place(const struct sched_host *h, const struct sched_req *r, struct sched_fit *out)
{
	const struct sched_flavor *f = r->flavor;
	long need_pcpus = f->dedicated ? f->vcpus : 0;
	struct sched_fit fit = { .node = -1 };

	if (!need_pcpus && f->page_kb == SCHED_PAGE_SMALL) {
		*out = fit;
		return true;
	}
	for (int n = 0; n < h->n_numa; n++) {
		long page = f->page_kb == SCHED_PAGE_ANY ? SCHED_PAGE_LARGE : f->page_kb;

		if (node_fit(&h->numa[n], need_pcpus, page, f->ram_mb, &fit) && pci_ok(h, r, n)) {
			fit.node = n;
			*out = fit;
			return true;
		}
	}
	if (f->page_kb == SCHED_PAGE_ANY) {
		/* no huge pages anywhere: small pages are fine */
		if (!need_pcpus) {
			*out = (struct sched_fit){ .node = -1 };
			return true;
		}
		for (int n = 0; n < h->n_numa; n++) {
			if (node_fit(&h->numa[n], need_pcpus, SCHED_PAGE_SMALL, f->ram_mb, &fit) &&
			    pci_ok(h, r, n)) {
				fit.node = n;
				*out = fit;
				return true;
			}
		}
	}
	return false;
}

/* The NUMA part and the PCI devices (scheduler/pci.c) that go with it. */
bool sched_numa_fit(const struct sched_host *h, const struct sched_req *r, struct sched_fit *out)
{
	struct sched_fit fit;

	if (!numa_place(h, r, &fit))
		return false;
	if (r->flavor->hw.n_pci && !sched_pci_plan(h, r, &fit, NULL, 0))
		return false;
	*out = fit;
	return true;
}

/* ---- filters ----------------------------------------------------------- */

static bool f_host_up(const struct sched_ctx *c, const struct sched_host *h,
		      const struct sched_req *r, char *why, size_t whylen)
{
	(void)r;
	if (sched_host_up(h, c->cfg, c->now_ms) && !h->degraded)
		return true;
	if (h->degraded && h->last_report_ms)
		WHY("degraded (the agent reports it cannot run instances)");
	else if (!h->last_report_ms)
		WHY("down (never reported)");
	else
		WHY("down (last report %lld s ago, %ld heartbeats of %lld ms missed)",
		    (long long)((c->now_ms - h->last_report_ms) / 1000), c->cfg->missed_heartbeats,
		    (long long)c->cfg->heartbeat_interval_ms);
	return false;
}

static bool f_enabled(const struct sched_ctx *c, const struct sched_host *h,
		      const struct sched_req *r, char *why, size_t whylen)
{
	(void)c;
	(void)r;
	if (!h->disabled)
		return true;
	WHY("%s by an operator (stratusctl host enable %s)", h->draining ? "draining" : "disabled",
	    h->name);
	return false;
}

static bool f_retry(const struct sched_ctx *c, const struct sched_host *h,
		    const struct sched_req *r, char *why, size_t whylen)
{
	(void)c;
	if (!in_list(h->name, r->tried_hosts, r->n_tried_hosts))
		return true;
	WHY("already tried for this instance");
	return false;
}

static bool f_az(const struct sched_ctx *c, const struct sched_host *h,
		 const struct sched_req *r, char *why, size_t whylen)
{
	(void)c;
	if (!r->az || (h->az && strcmp(h->az, r->az) == 0))
		return true;
	WHY("availability zone %s, not %s", h->az ? h->az : "(none)", r->az);
	return false;
}

/* boot --volume: the volume's host, no other (a volume is local to it). */
static bool f_volume_host(const struct sched_ctx *c, const struct sched_host *h,
			  const struct sched_req *r, char *why, size_t whylen)
{
	(void)c;
	if (!r->volume_host || strcmp(h->name, r->volume_host) == 0)
		return true;
	WHY("the volume is on host %s", r->volume_host);
	return false;
}

static bool f_ram(const struct sched_ctx *c, const struct sched_host *h,
		  const struct sched_req *r, char *why, size_t whylen)
{
	long free_mb = sched_host_ram_cap(h) - h->ram_used;

	(void)c;
	if (free_mb >= r->flavor->ram_mb)
		return true;
	WHY("RAM: needs %ld MB, %ld MB free ((%ld MB - %ld reserved) x %.2f - %ld claimed)",
	    r->flavor->ram_mb, free_mb, h->ram_total, h->ram_reserved, h->ram_ratio, h->ram_used);
	return false;
}

static bool f_vcpu(const struct sched_ctx *c, const struct sched_host *h,
		   const struct sched_req *r, char *why, size_t whylen)
{
	long free_v = sched_host_vcpu_cap(h) - h->vcpu_used;

	(void)c;
	if (r->flavor->dedicated || free_v >= r->flavor->vcpus)
		return true;
	WHY("VCPU: needs %ld, %ld free (%ld shared x %.2f - %ld claimed)", r->flavor->vcpus,
	    free_v, h->vcpu_total - h->vcpu_reserved, h->vcpu_ratio, h->vcpu_used);
	return false;
}

static bool f_pcpu(const struct sched_ctx *c, const struct sched_host *h,
		   const struct sched_req *r, char *why, size_t whylen)
{
	long free_p = h->pcpu_total - h->pcpu_used;

	(void)c;
	if (!r->flavor->dedicated || free_p >= r->flavor->vcpus)
		return true;
	WHY("PCPU: needs %ld dedicated, %ld free of %ld", r->flavor->vcpus, free_p, h->pcpu_total);
	return false;
}

static bool f_numa(const struct sched_ctx *c, const struct sched_host *h,
		   const struct sched_req *r, char *why, size_t whylen)
{
	struct sched_fit fit;

	(void)c;
	if (sched_numa_fit(h, r, &fit))
		return true;
	if (r->flavor->page_kb != SCHED_PAGE_SMALL)
		WHY("NUMA: no node has %s%ld MB of %s pages free", r->flavor->dedicated ? "the pCPUs and " : "",
		    r->flavor->ram_mb,
		    r->flavor->page_kb == 2048 ? "2MB" : r->flavor->page_kb == 1048576 ? "1GB" : "huge");
	else if (r->flavor->hw.n_pci && r->flavor->hw.pci_numa != MODEL_PCI_NUMA_PREFERRED)
		WHY("NUMA: no node has %ld dedicated pCPUs free together with the PCI devices "
		    "(hw:pci_numa_affinity_policy=%s)", r->flavor->vcpus,
		    model_pci_numa_names[r->flavor->hw.pci_numa]);
	else
		WHY("NUMA: no node has %ld dedicated pCPUs free", r->flavor->vcpus);
	return false;
}

/* The devices of pci_passthrough:alias, anywhere on the host (numa_fit
 * then places them with the NUMA part). */
static bool f_pci(const struct sched_ctx *c, const struct sched_host *h,
		  const struct sched_req *r, char *why, size_t whylen)
{
	struct sched_fit any = { .node = -1 };
	struct sched_req loose = *r;
	struct sched_flavor fl;

	(void)c;
	if (!r->flavor->hw.n_pci)
		return true;
	/* counted without the NUMA binding: numa_fit says when the node lacks them */
	fl = *r->flavor;
	fl.dedicated = false;
	fl.page_kb = SCHED_PAGE_SMALL;
	loose.flavor = &fl;
	return sched_pci_plan(h, &loose, &any, why, whylen);
}

static bool f_disk(const struct sched_ctx *c, const struct sched_host *h,
		   const struct sched_req *r, char *why, size_t whylen)
{
	/* the host's volumes are files on its disk too (volumes.c) */
	long free_gb = sched_host_disk_cap(h) - h->disk_used - h->vol_gb;

	(void)c;
	if (free_gb >= r->disk_gb)
		return true;
	if (r->flavor->ephemeral_gb || r->flavor->swap_mb) {
		WHY("disk: needs %ld GB (flavor %ld + ephemeral %ld + swap %ld MB, image min_disk "
		    "%ld), %ld GB free (%ld GB of volumes)", r->disk_gb, r->flavor->disk_gb,
		    r->flavor->ephemeral_gb, r->flavor->swap_mb,
		    r->image ? r->image->min_disk_gb : 0, free_gb, h->vol_gb);
		return false;
	}
	WHY("disk: needs %ld GB (flavor %ld, image min_disk %ld), %ld GB free (%ld GB of volumes)",
	    r->disk_gb, r->flavor->disk_gb, r->image ? r->image->min_disk_gb : 0, free_gb, h->vol_gb);
	return false;
}

static bool f_server_group(const struct sched_ctx *c, const struct sched_host *h,
			   const struct sched_req *r, char *why, size_t whylen)
{
	bool member = in_list(h->name, r->group_hosts, r->n_group_hosts);

	(void)c;
	switch (r->group_policy) {
	case SCHED_GROUP_NONE:
	case SCHED_GROUP_POLICY_LAST:
		return true;
	case SCHED_GROUP_AFFINITY:
		if (r->n_group_hosts == 0 || member)
			return true;
		WHY("server group affinity: the group is on %s", r->group_hosts[0]);
		return false;
	case SCHED_GROUP_ANTI_AFFINITY:
		if (!member)
			return true;
		WHY("server group anti-affinity: holds a member of the group");
		return false;
	}
	return true;
}

static bool f_steal(const struct sched_ctx *c, const struct sched_host *h,
		    const struct sched_req *r, char *why, size_t whylen)
{
	(void)r;
	if (c->cfg->steal_threshold_pct <= 0 || !h->has_steal ||
	    h->steal_pct <= c->cfg->steal_threshold_pct)
		return true;
	WHY("steal %.1f%% above the threshold of %.1f%%", h->steal_pct,
	    c->cfg->steal_threshold_pct);
	return false;
}

/* The build's secrets are sealed to the host's key: no key, no build. */
static bool f_box_key(const struct sched_ctx *c, const struct sched_host *h,
		      const struct sched_req *r, char *why, size_t whylen)
{
	(void)c;
	(void)r;
	if (h->has_box_key)
		return true;
	WHY("no box_key in its report: a build's secrets cannot be sealed to it");
	return false;
}

/* Cheapest and most selective first. Config keys: docs/scheduler.md. */
const struct sched_filter sched_filters[] = {
	{ "host_up", f_host_up },
	{ "enabled", f_enabled },
	{ "box_key", f_box_key },
	{ "retry", f_retry },
	{ "availability_zone", f_az },
	{ "volume_host", f_volume_host },
	{ "ram", f_ram },
	{ "vcpu", f_vcpu },
	{ "pcpu", f_pcpu },
	{ "disk", f_disk },
	{ "pci_devices", f_pci },
	{ "numa_fit", f_numa },
	{ "server_group", f_server_group },
	{ "steal", f_steal },
};
const size_t sched_n_filters = ARRAY_SIZE(sched_filters);

bool sched_host_passes(const struct sched_ctx *c, const struct sched_host *h,
		       const struct sched_req *r)
{
	for (size_t i = 0; i < sched_n_filters; i++)
		if (!sched_filters[i].pass(c, h, r, NULL, 0))
			return false;
	return true;
}

const char *sched_host_reject_reason(const struct sched_ctx *c, const struct sched_host *h,
				     const struct sched_req *r, char *why, size_t whylen)
{
	for (size_t i = 0; i < sched_n_filters; i++) {
		if (!sched_filters[i].pass(c, h, r, why, whylen))
			return why;
	}
	return NULL;
}

/* ---- weighers ---------------------------------------------------------- */

static double sign(const struct sched_config *cfg)
{
	return cfg->placement == SCHED_PACK ? -1.0 : 1.0;
}

static double w_ram(const struct sched_host *h, const struct sched_req *r)
{
	(void)r;
	return (double)(sched_host_ram_cap(h) - h->ram_used);
}

static double m_ram(const struct sched_config *cfg)
{
	return cfg->ram_weight_multiplier * sign(cfg);
}

static double w_cpu(const struct sched_host *h, const struct sched_req *r)
{
	if (r->flavor->dedicated)
		return (double)(h->pcpu_total - h->pcpu_used);
	return (double)(sched_host_vcpu_cap(h) - h->vcpu_used);
}

static double m_cpu(const struct sched_config *cfg)
{
	return cfg->cpu_weight_multiplier * sign(cfg);
}

static double w_steal(const struct sched_host *h, const struct sched_req *r)
{
	(void)r;
	return h->has_steal ? -h->steal_pct : 0.0;
}

static double m_steal(const struct sched_config *cfg)
{
	return cfg->steal_weight_multiplier;
}

static double w_failures(const struct sched_host *h, const struct sched_req *r)
{
	(void)r;
	return -(double)h->recent_failures;
}

static double m_failures(const struct sched_config *cfg)
{
	return cfg->build_failure_weight_multiplier;
}

static double w_instances(const struct sched_host *h, const struct sched_req *r)
{
	(void)r;
	return -(double)h->instances;
}

static double m_instances(const struct sched_config *cfg)
{
	return cfg->instance_count_weight_multiplier;
}

const struct sched_weigher sched_weighers[] = {
	{ "ram", w_ram, m_ram },
	{ "cpu", w_cpu, m_cpu },
	{ "steal", w_steal, m_steal },
	{ "build_failures", w_failures, m_failures },
	{ "instance_count", w_instances, m_instances },
};
const size_t sched_n_weighers = ARRAY_SIZE(sched_weighers);

void sched_weigh(const struct sched_ctx *c, struct sched_host *const *cand, size_t n,
		 const struct sched_req *r, double *score)
{
	for (size_t i = 0; i < n; i++)
		score[i] = 0.0;
	for (size_t w = 0; w < sched_n_weighers; w++) {
		double mult = sched_weighers[w].multiplier(c->cfg);
		double lo = INFINITY, hi = -INFINITY;

		if (mult == 0.0)
			continue;
		for (size_t i = 0; i < n; i++) {
			double v = sched_weighers[w].raw(cand[i], r);

			lo = v < lo ? v : lo;
			hi = v > hi ? v : hi;
		}
		if (hi <= lo)
			continue; /* all equal: this weigher does not tell them apart */
		for (size_t i = 0; i < n; i++)
			score[i] += mult * (sched_weighers[w].raw(cand[i], r) - lo) / (hi - lo);
	}
}

/* ---- selection --------------------------------------------------------- */

size_t sched_select(const struct sched_ctx *c, struct sched_host *const *hosts, size_t n,
		    const struct sched_req *r, size_t *cursor, size_t *out, size_t max_out,
		    size_t *scanned)
{
	size_t want = c->cfg->candidates > 0 ? (size_t)c->cfg->candidates : n;
	size_t *idx = NULL;
	struct sched_host **cand = NULL;
	double *score = NULL;
	size_t nc = 0, seen = 0, pos = n ? *cursor % n : 0, written = 0;

	if (scanned)
		*scanned = 0;
	if (!n || !max_out)
		return 0;
	if (want > n)
		want = n;
	idx = malloc(want * sizeof(*idx));
	cand = calloc(want, sizeof(*cand));
	score = malloc(want * sizeof(*score));
	if (!idx || !cand || !score)
		goto out;
	for (; seen < n && nc < want; seen++) {
		if (sched_host_passes(c, hosts[pos], r)) {
			idx[nc] = pos;
			cand[nc] = hosts[pos];
			nc++;
		}
		pos = pos + 1 == n ? 0 : pos + 1;
	}
	*cursor = pos;
	if (scanned)
		*scanned = seen;
	sched_weigh(c, cand, nc, r, score);
	/* best first: partial selection sort; ties go to the smaller name */
	for (; written < max_out && written < nc; written++) {
		size_t best = written;

		for (size_t i = written + 1; i < nc; i++) {
			if (score[i] > score[best] ||
			    (score[i] == score[best] && strcmp(cand[i]->name, cand[best]->name) < 0))
				best = i;
		}
		if (best != written) {
			double ts = score[best];
			struct sched_host *th = cand[best];
			size_t ti = idx[best];

			score[best] = score[written];
			cand[best] = cand[written];
			idx[best] = idx[written];
			score[written] = ts;
			cand[written] = th;
			idx[written] = ti;
		}
		out[written] = idx[written];
	}
out:
	free(idx);
	free(cand);
	free(score);
	return written;
}

/* ---- claims ------------------------------------------------------------ */

void sched_host_adjust(struct sched_host *h, long sign, long vcpus, long pcpus, long ram_mb,
		       long disk_gb, const struct sched_fit *f)
{
	h->vcpu_used += sign * vcpus;
	h->pcpu_used += sign * pcpus;
	h->ram_used += sign * ram_mb;
	h->disk_used += sign * disk_gb;
	h->instances += sign;
	if (f)
		sched_pci_adjust(h, sign, f);
	if (f && f->node >= 0 && f->node < h->n_numa) {
		struct sched_numa *n = &h->numa[f->node];

		n->pcpu_used += sign * pcpus;
		for (int i = 0; i < n->n_pages; i++)
			if (f->pages && n->pages[i].size_kb == f->page_kb)
				n->pages[i].used += sign * f->pages;
	}
}

void sched_host_claim(struct sched_host *h, const struct sched_req *r, const struct sched_fit *f)
{
	const struct sched_flavor *fl = r->flavor;

	sched_host_adjust(h, 1, fl->dedicated ? 0 : fl->vcpus, fl->dedicated ? fl->vcpus : 0,
			  fl->ram_mb, r->disk_gb, f);
}

char *sched_no_host_reason(const struct sched_ctx *c, struct sched_host *const *hosts, size_t n,
			   const struct sched_req *r, const char *instance)
{
	struct strbuf sb = { .max = 64 * 1024 };
	char why[256];
	size_t named = 0;

	sb_printf(&sb, "no valid host for %s (%zu host%s)", instance, n, n == 1 ? "" : "s");
	for (size_t i = 0; i < n; i++) {
		const char *reason = sched_host_reject_reason(c, hosts[i], r, why, sizeof(why));

		if (!reason)
			continue;
		if (named == SCHED_MAX_REASONS) {
			sb_printf(&sb, "; ...");
			break;
		}
		sb_printf(&sb, "%s %s: %s", named ? ";" : ":", hosts[i]->name, reason);
		named++;
	}
	return sb_steal(&sb);
}
