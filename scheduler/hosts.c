/*
 * Host state from host.report bodies: inventories, steal, liveness.
 *
 * A report (docs/scheduler.md "Host reports"):
 *   {"host": "h1", "availability_zone": "az1",
 *    "inventory": {"VCPU": {"total": 8, "reserved": 0, "allocation_ratio": 4.0},
 *                  "PCPU": {"total": 4},
 *                  "MEMORY_MB": {"total": 16384, "reserved": 512, "allocation_ratio": 1.0},
 *                  "DISK_GB": {"total": 200},
 *                  "numa": [{"node": 0, "pcpus": 2, "memory_mb": 8192,
 *                            "hugepages": {"2048": {"total": 512, "free": 512}}}]},
 *    "usage": {"VCPU": 3, "MEMORY_MB": 2048}, "steal_pct": 1.5}
 * A signed report (every agent's) carries no reals: "K_milli": 1500 stands
 * for "K": 1.5 (agent/report.c reals_to_milli).
 * An inventory class may also be a bare integer (its total). What is
 * claimed on the host is the scheduler's own record (allocations), not
 * the report's usage, which is kept for display.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/crypto.h"
#include "scheduler/sched_priv.h"

long sched_host_vcpu_cap(const struct sched_host *h)
{
	return (long)((double)(h->vcpu_total - h->vcpu_reserved) * h->vcpu_ratio);
}

long sched_host_ram_cap(const struct sched_host *h)
{
	return (long)((double)(h->ram_total - h->ram_reserved) * h->ram_ratio);
}

long sched_host_disk_cap(const struct sched_host *h)
{
	return h->disk_total - h->disk_reserved;
}

bool sched_host_up(const struct sched_host *h, const struct sched_config *cfg, int64_t now_ms)
{
	if (!h->last_report_ms)
		return false;
	return now_ms - h->last_report_ms <= cfg->heartbeat_interval_ms * cfg->missed_heartbeats;
}

static long jlong(const json_t *v, long def)
{
	if (json_is_integer(v))
		return (long)json_integer_value(v);
	if (json_is_real(v))
		return (long)json_real_value(v);
	return def;
}

static double jdouble(const json_t *v, double def)
{
	if (json_is_number(v))
		return json_number_value(v);
	return def;
}

/* The report's box_key (the host's X25519 public key) into KEY. */
static bool report_box_key(const json_t *report, unsigned char key[BUS_KEY_LEN])
{
	const char *text = json_string_value(json_object_get(report, "box_key"));

	return text && crypto_key_from_text(text, key) == 0;
}

/* O's fractional K: K_milli / 1000 as signed reports carry it, else K. */
static double jmilli(const json_t *o, const char *k, double def)
{
	char name[64];
	const json_t *m;

	if (snprintf(name, sizeof(name), "%s_milli", k) < (int)sizeof(name)) {
		m = json_object_get(o, name);
		if (json_is_integer(m))
			return (double)json_integer_value(m) / 1000.0;
	}
	return jdouble(json_object_get(o, k), def);
}

/* One inventory class: a bare total, or {total, reserved, allocation_ratio}. */
static void inv_class(const json_t *inv, const char *cls, long *total, long *reserved,
		      double *ratio)
{
	const json_t *c = json_object_get(inv, cls);

	if (!c)
		return;
	if (json_is_number(c)) {
		*total = jlong(c, *total);
		return;
	}
	*total = jlong(json_object_get(c, "total"), *total);
	if (reserved)
		*reserved = jlong(json_object_get(c, "reserved"), *reserved);
	if (ratio)
		*ratio = jmilli(c, "allocation_ratio", *ratio);
}

/* Claimed pages of SIZE on node N of the old state (kept across reports). */
static long old_pages_used(const struct sched_numa *old, long size_kb)
{
	for (int i = 0; i < old->n_pages; i++)
		if (old->pages[i].size_kb == size_kb)
			return old->pages[i].used;
	return 0;
}

static int apply_numa(struct sched_host *h, const json_t *numa)
{
	struct sched_numa old[SCHED_MAX_NUMA];
	int old_n = h->n_numa;
	size_t i;
	json_t *node;

	memcpy(old, h->numa, sizeof(old));
	memset(h->numa, 0, sizeof(h->numa));
	h->n_numa = 0;
	if (!json_is_array(numa) || json_array_size(numa) == 0) {
		/* no topology reported: one node holding all pCPUs */
		h->n_numa = 1;
		h->numa[0].pcpu_total = h->pcpu_total;
		h->numa[0].memory_mb = h->ram_total;
		h->numa[0].pcpu_used = old_n > 0 ? old[0].pcpu_used : 0;
		return 0;
	}
	json_array_foreach(numa, i, node) {
		struct sched_numa *n;
		json_t *hp = json_object_get(node, "hugepages");
		const char *sz;
		json_t *pv;

		if (i >= SCHED_MAX_NUMA)
			break;
		n = &h->numa[i];
		n->id = (int)jlong(json_object_get(node, "node"), (long)i);
		n->pcpu_total = jlong(json_object_get(node, "pcpus"), 0);
		n->memory_mb = jlong(json_object_get(node, "memory_mb"), 0);
		n->pcpu_used = (int)i < old_n ? old[i].pcpu_used : 0;
		json_object_foreach(hp, sz, pv) {
			long size_kb;
			struct sched_pagepool *p;

			if (n->n_pages >= SCHED_MAX_PAGE_SIZES)
				break;
			if (parse_long(sz, 4, 1L << 30, &size_kb) < 0)
				continue;
			p = &n->pages[n->n_pages++];
			p->size_kb = size_kb;
			p->total = json_is_object(pv) ? jlong(json_object_get(pv, "total"), 0)
						      : jlong(pv, 0);
			p->used = (int)i < old_n ? old_pages_used(&old[i], size_kb) : 0;
		}
		h->n_numa++;
	}
	return 0;
}

int sched_host_apply_report(struct sched_host *h, const json_t *report,
			    const struct sched_config *cfg, int64_t now_ms)
{
	const json_t *inv = json_object_get(report, "inventory");
	const json_t *usage = json_object_get(report, "usage");
	const char *az = json_string_value(json_object_get(report, "availability_zone"));
	double steal = jmilli(report, "steal_pct", -1.0);
	bool has_steal = json_is_number(json_object_get(report, "steal_pct")) ||
			 json_is_integer(json_object_get(report, "steal_pct_milli"));

	if (!json_is_object(report))
		return err_set(-EINVAL, "host report: expected an object");
	if (!h->last_report_ms) {
		h->vcpu_ratio = cfg->cpu_allocation_ratio;
		h->ram_ratio = cfg->ram_allocation_ratio;
		h->ram_reserved = cfg->reserved_host_memory_mb;
	}
	if (az || !h->az) {
		char *s = strdup(az ? az : "nova");

		if (!s)
			return err_set(-ENOMEM, "out of memory");
		free(h->az);
		h->az = s;
	}
	if (json_is_object(inv)) {
		inv_class(inv, "VCPU", &h->vcpu_total, &h->vcpu_reserved, &h->vcpu_ratio);
		inv_class(inv, "PCPU", &h->pcpu_total, NULL, NULL);
		inv_class(inv, "MEMORY_MB", &h->ram_total, &h->ram_reserved, &h->ram_ratio);
		inv_class(inv, "DISK_GB", &h->disk_total, &h->disk_reserved, NULL);
		apply_numa(h, json_object_get(inv, "numa"));
		sched_pci_apply_report(h, json_object_get(inv, "pci_devices"));
	}
	if (json_is_object(usage)) {
		h->reported_vcpu_used = jlong(json_object_get(usage, "VCPU"), h->reported_vcpu_used);
		h->reported_ram_used = jlong(json_object_get(usage, "MEMORY_MB"),
					     h->reported_ram_used);
	}
	h->degraded = json_is_true(json_object_get(report, "degraded"));
	h->has_box_key = report_box_key(report, h->box_key);
	if (has_steal) {
		double v = steal;

		if (v < 0)
			v = 0;
		if (!h->has_steal)
			h->steal_pct = v;
		else
			h->steal_pct = cfg->steal_smoothing * v +
				       (1.0 - cfg->steal_smoothing) * h->steal_pct;
		h->has_steal = true;
	}
	if (now_ms > h->last_report_ms)
		h->last_report_ms = now_ms;
	return 0;
}
