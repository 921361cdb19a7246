/*
 * Reporting: host.report on stratus.metrics every report_interval
 * (heartbeat, inventory, usage, free pCPUs and hugepages per NUMA node,
 * host and per-instance steal), and the Prometheus /metrics endpoint.
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/statvfs.h>

#include "agent/agent_priv.h"
#include "core/prom.h"
#include "core/http.h"

const double agent_hist_bounds[AGENT_HIST_BUCKETS] = { 0.01, 0.025, 0.05, 0.1, 0.25,
						       0.5,  1,     2.5,  5,   10 };

#define STEAL_SMOOTHING 0.3 /* weight of the newest interval in the moving average */

void agent_observe_build(struct agent *a, double seconds, bool ok)
{
	int b;

	pthread_mutex_lock(&a->m_lock);
	if (ok)
		a->m.builds_ok++;
	else
		a->m.builds_failed++;
	for (b = 0; b < AGENT_HIST_BUCKETS && seconds > agent_hist_bounds[b]; b++)
		;
	a->m.hist[b]++;
	a->m.hist_sum += seconds;
	a->m.hist_count++;
	pthread_mutex_unlock(&a->m_lock);
}

static struct agent_sample *sample_for(struct agent *a, const char *uuid)
{
	struct agent_sample *s;

	for (size_t i = 0; i < a->n_samples; i++)
		if (strcmp(a->samples[i].uuid, uuid) == 0)
			return &a->samples[i];
	s = realloc(a->samples, (a->n_samples + 1) * sizeof(*s));
	if (!s)
		return NULL;
	a->samples = s;
	s = &a->samples[a->n_samples++];
	memset(s, 0, sizeof(*s));
	snprintf(s->uuid, sizeof(s->uuid), "%s", uuid);
	return s;
}

/* Take new stats samples: rates since the last one. Called under m_lock. */
static void sample_stats(struct agent *a)
{
	struct vmm_dom_stats *st = NULL;
	struct vmm_host_cpu hc;
	size_t n = 0;

	if (vmm_host_cpu_read(NULL, &hc) == 0) {
		if (a->have_host_cpu) {
			a->host_steal_pct = vmm_host_steal_pct(&a->host_cpu_last, &hc);
			a->host_steal_avg = STEAL_SMOOTHING * a->host_steal_pct +
					    (1 - STEAL_SMOOTHING) * a->host_steal_avg;
		}
		a->host_cpu_last = hc;
		a->have_host_cpu = true;
	}
	if (!vmm_connected(a->conn) || vmm_stats_collect(a->conn, &st, &n) < 0)
		return;
	/* drop samples of instances that are gone */
	for (size_t i = 0; i < a->n_samples;) {
		bool found = false;

		for (size_t k = 0; k < n; k++)
			if (strcmp(st[k].uuid, a->samples[i].uuid) == 0)
				found = true;
		if (!found)
			a->samples[i] = a->samples[--a->n_samples];
		else
			i++;
	}
	for (size_t k = 0; k < n; k++) {
		struct agent_sample *s = sample_for(a, st[k].uuid);
		struct vmm_dom_rates rt;

		if (!s)
			break;
		if (s->have_last && vmm_dom_rates(&s->last, &st[k], &rt) == 0) {
			s->steal_pct = rt.steal_pct;
			s->steal_avg = STEAL_SMOOTHING * rt.steal_pct + (1 - STEAL_SMOOTHING) * s->steal_avg;
		}
		s->steal_ns_total = 0;
		for (int v = 0; v < st[k].n_vcpus && v < VMM_MAX_VCPU_STATS; v++)
			s->steal_ns_total += st[k].vcpu_delay_ns[v];
		s->last = st[k];
		s->have_last = true;
	}
	free(st);
}

static int count_states(const struct store_instance *row, void *ud)
{
	long *by_state = ud;

	by_state[row->state]++;
	return 0;
}

struct usage_sum {
	long vcpus, ram_mb, disk_gb, n;
};

static int sum_usage(const struct store_instance *row, void *ud)
{
	struct usage_sum *u = ud;
	json_t *spec = json_loads(row->spec_json, 0, NULL);
	json_t *f = json_object_get(spec, "flavor");

	u->vcpus += (long)json_integer_value(json_object_get(f, "vcpus"));
	u->ram_mb += (long)json_integer_value(json_object_get(f, "ram_mb"));
	u->disk_gb += (long)json_integer_value(json_object_get(f, "disk_gb"));
	/* the local disks too, as the scheduler claims them (swap in whole GB) */
	u->disk_gb += (long)json_integer_value(json_object_get(f, "ephemeral_gb"));
	u->disk_gb += ((long)json_integer_value(json_object_get(f, "swap_mb")) + 1023) / 1024;
	u->n++;
	json_decref(spec);
	return 0;
}

/* The declared PCI devices with their NUMA node, IOMMU group, whether
 * usable (and why not) and the instance holding each (docs/agent.md). */
static json_t *pci_inventory(struct agent *a)
{
	json_t *j;

	pthread_mutex_lock(&a->usage_lock);
	j = vmm_pci_to_json(a->topo, &a->usage);
	pthread_mutex_unlock(&a->usage_lock);
	return j;
}

static json_t *inventory(struct agent *a)
{
	const struct vmm_topology *t = a->topo;
	struct vmm_cpuset shared = t->online, dedicated = t->online;
	uint64_t mem_kib = 0;
	struct statvfs vfs;
	long disk_gb = 0;
	json_t *numa = json_array();

	if (a->vmm_cfg->cpu_shared_set.set)
		shared = a->vmm_cfg->cpu_shared_set.cpus;
	if (a->vmm_cfg->cpu_dedicated_set.set)
		dedicated = a->vmm_cfg->cpu_dedicated_set.cpus;
	vmm_cpuset_and(&shared, &t->online);
	vmm_cpuset_and(&dedicated, &t->online);
	if (statvfs(a->vmm_cfg->instances_dir, &vfs) == 0)
		disk_gb = (long)((uint64_t)vfs.f_blocks * vfs.f_frsize >> 30);
	pthread_mutex_lock(&a->usage_lock);
	for (int i = 0; i < t->n_nodes; i++) {
		const struct vmm_node *nd = &t->nodes[i];
		struct vmm_cpuset dn = dedicated;
		int free_pcpus = 0;
		json_t *hp = json_object();

		vmm_cpuset_and(&dn, &nd->cpus);
		for (int c = 0; c < a->usage.n_cpus; c++)
			if (vmm_cpuset_has(&dn, c) && a->usage.cpu_owner[c][0] == '\0')
				free_pcpus++;
		mem_kib += nd->mem_total_kib;
		for (int p = VMM_PAGE_2M; p < VMM_PAGE_LAST; p++) {
			char key[24];
			uint64_t used = a->usage.pages[i][p];

			if (!nd->pool[p].total)
				continue;
			snprintf(key, sizeof(key), "%llu", (unsigned long long)vmm_page_kib[p]);
			json_object_set_new(hp, key,
					    json_pack("{s:I, s:I, s:I}", "total",
						      (json_int_t)nd->pool[p].total, "free",
						      (json_int_t)(nd->pool[p].total > used
								   ? nd->pool[p].total - used
								   : 0),
						      "used", (json_int_t)used));
		}
		json_array_append_new(numa, json_pack("{s:i, s:i, s:i, s:I, s:o}", "node", nd->id,
						      "pcpus", vmm_cpuset_count(&dn), "pcpus_free",
						      free_pcpus, "memory_mb",
						      (json_int_t)(nd->mem_total_kib / 1024), "hugepages",
						      hp));
	}
	pthread_mutex_unlock(&a->usage_lock);
	return json_pack("{s:{s:i, s:i, s:f}, s:{s:i}, s:{s:I, s:i, s:f}, s:{s:i}, s:o, s:o}", "VCPU",
			 "total", vmm_cpuset_count(&shared), "reserved",
			 (int)a->cfg->reserved_host_cpus, "allocation_ratio",
			 a->cfg->cpu_allocation_ratio, "PCPU", "total", vmm_cpuset_count(&dedicated),
			 "MEMORY_MB", "total", (json_int_t)(mem_kib / 1024), "reserved",
			 (int)a->cfg->reserved_host_memory_mb, "allocation_ratio",
			 a->cfg->ram_allocation_ratio, "DISK_GB", "total", (int)disk_gb, "numa",
			 numa, "pci_devices", pci_inventory(a));
}

/*
 * A signed envelope carries no real numbers (docs/bus.md "canonical
 * form"): every real member "K": X of V (objects, also inside arrays)
 * becomes "K_milli": round(X * 1000), which the scheduler reads back.
 */
static int reals_to_milli(json_t *v)
{
	const char *k;
	json_t *x, *reals = NULL;
	void *tmp;
	size_t i;
	int r = 0;

	if (json_is_array(v)) {
		json_array_foreach(v, i, x)
			if ((r = reals_to_milli(x)) < 0)
				return r;
		return 0;
	}
	if (!json_is_object(v))
		return 0;
	reals = json_object();
	if (!reals)
		return -ENOMEM;
	json_object_foreach_safe(v, tmp, k, x) {
		if (json_is_real(x)) {
			char name[128];
			int n = snprintf(name, sizeof(name), "%s_milli", k);

			if (n < 0 || (size_t)n >= sizeof(name)) {
				r = -EINVAL;
				break;
			}
			json_object_set_new(reals, name,
					    json_integer((json_int_t)llround(json_real_value(x) * 1000.0)));
			json_object_del(v, k);
		} else if ((r = reals_to_milli(x)) < 0) {
			break;
		}
	}
	if (r == 0 && json_object_update(v, reals) < 0)
		r = -ENOMEM;
	json_decref(reals);
	return r;
}

/* The report, with EXTRA's members added (taken; may be NULL). */
static int report_send(struct agent *a, json_t *extra)
{
	struct usage_sum u = { 0 };
	struct bus_envelope *e = NULL;
	json_t *inst = json_array(), *body;
	int r;

	store_instance_foreach(a->store, sum_usage, &u);
	pthread_mutex_lock(&a->m_lock);
	sample_stats(a);
	for (size_t i = 0; i < a->n_samples; i++)
		json_array_append_new(inst, json_pack("{s:s, s:f, s:f}", "uuid", a->samples[i].uuid,
						      "steal_pct", a->samples[i].steal_pct,
						      "steal_pct_avg", a->samples[i].steal_avg));
	body = json_pack("{s:s, s:s, s:b, s:o, s:{s:i, s:i, s:i, s:i}, s:f, s:f, s:o}", "host",
			 a->cfg->host, "availability_zone", a->cfg->availability_zone, "degraded",
			 (int)a->degraded, "inventory", inventory(a), "usage", "VCPU", (int)u.vcpus,
			 "MEMORY_MB", (int)u.ram_mb, "DISK_GB", (int)u.disk_gb, "instances",
			 (int)u.n, "steal_pct", a->host_steal_pct, "steal_pct_avg",
			 a->host_steal_avg, "instance_steal", inst);
	pthread_mutex_unlock(&a->m_lock);
	if (body && extra)
		json_object_update(body, extra);
	json_decref(extra);
	if (!body)
		return err_set(-ENOMEM, "host report: out of memory");
	/* the key the scheduler seals this host's builds' secrets to */
	json_object_set_new(body, "box_key", json_string(a->box_pub_text));
	/* the key the envelope is signed with, that the scheduler pins */
	json_object_set_new(body, "sign_key", json_string(a->sign_pub_text));
	r = reals_to_milli(body);
	if (r < 0) {
		json_decref(body);
		return err_set(r, "host report: fractional values: %s", strerror(-r));
	}
	r = bus_envelope_new("host.report", BUS_TC_METRICS, a->source, NULL, body, &e);
	if (r < 0)
		return r;
	r = agent_trust_sign(a, e);
	if (r < 0) {
		bus_envelope_free(e);
		return err_prefix(r, "host report: signing");
	}
	r = bus_produce(a->prod, BUS_TOPIC_METRICS, a->cfg->host, e);
	bus_envelope_free(e);
	return r;
}

int agent_report(struct agent *a)
{
	return report_send(a, NULL);
}

static int list_instance(const struct store_instance *row, void *ud)
{
	json_array_append_new(ud, json_pack("{s:s, s:s, s:s}", "uuid", row->uuid, "project",
					    row->project ? row->project : "unknown", "state",
					    instance_state_names[row->state]));
	return 0;
}

int agent_reannounce(struct agent *a)
{
	json_t *list = json_array(), *it;
	size_t i;
	int r;

	if (!list)
		return err_set(-ENOMEM, "re-announce: out of memory");
	r = store_instance_foreach(a->store, list_instance, list);
	if (r < 0) {
		json_decref(list);
		return r;
	}
	log_info("broker changed: re-announcing host=%s instances=%zu", a->cfg->host,
		 json_array_size(list));
	/* the report first: the scheduler compares its instances with it */
	r = report_send(a, json_pack("{s:{s:s, s:O}}", "reannounce", "reason", "broker moved",
				     "instances", list));
	json_array_foreach(list, i, it) {
		enum instance_state st;

		if (instance_state_parse(json_string_value(json_object_get(it, "state")), &st) < 0)
			continue;
		agent_emit_state(a, json_string_value(json_object_get(it, "uuid")),
				 json_string_value(json_object_get(it, "project")), st,
				 "re-announced after a broker change", NULL, NULL);
	}
	json_decref(list);
	pthread_mutex_lock(&a->m_lock);
	a->m.reannounces++;
	pthread_mutex_unlock(&a->m_lock);
	return r;
}

/* ---- Prometheus ------------------------------------------------------------ */

static void sb_metric_head(struct strbuf *sb, const char *name, const char *type,
			   const char *help)
{
	sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The console proxy's counters (agent/console.c). */
static void agent_console_metrics(struct agent *a, struct strbuf *sb)
{
	struct agent_console_stats cs;
	const char *h = a->cfg->host;

	agent_console_stats(a->console, &cs);
	sb_metric_head(sb, "stratus_console_refused_total", "counter",
		       "Console connections refused, by reason: unknown, reused, expired token, "
		       "token for another instance or project.");
	for (int r = 0; r < CONSOLE_REFUSED_LAST; r++)
		sb_printf(sb, "stratus_console_refused_total{host=\"%s\",reason=\"%s\"} %llu\n", h,
			  agent_console_refusal_names[r], (unsigned long long)cs.refused[r]);
	sb_metric_head(sb, "stratus_console_tokens_issued_total", "counter",
		       "Console tokens this host accepted from the scheduler.");
	sb_printf(sb, "stratus_console_tokens_issued_total{host=\"%s\"} %llu\n", h,
		  (unsigned long long)cs.tokens_issued);
	sb_metric_head(sb, "stratus_console_sessions_total", "counter",
		       "Console sessions opened through the proxy.");
	sb_printf(sb, "stratus_console_sessions_total{host=\"%s\"} %llu\n", h,
		  (unsigned long long)cs.sessions);
	sb_metric_head(sb, "stratus_console_connections", "gauge",
		       "Connections to the console proxy open now.");
	sb_printf(sb, "stratus_console_connections{host=\"%s\"} %llu\n", h,
		  (unsigned long long)cs.sessions_active);
}

/* The host's one-number metrics: a row per series; a row without a type
 * is one more series of the metric above it (another label). */
struct host_counter {
	const char *name, *type, *help, *label;
	size_t off; /* its uint64_t in struct agent_metrics */
};
#define HC(name, type, help, label, field) \
	{ name, type, help, label, offsetof(struct agent_metrics, field) }
static const struct host_counter host_counters[] = {
	HC("stratus_builds_total", "counter", "Builds finished, by result.", ",result=\"ok\"",
	   builds_ok),
	HC("stratus_builds_total", NULL, NULL, ",result=\"failed\"", builds_failed),
	HC("stratus_commands_total", "counter", "Commands received on this host's topic.", "",
	   commands),
	HC("stratus_agent_reannounces_total", "counter",
	   "Times the agent re-announced its host and instances after a broker change.", "",
	   reannounces),
	HC("stratus_commands_refused_total", "counter",
	   "Commands refused at the edge: unsigned, untrusted key, bad signature, stale, or a "
	   "seal that does not open.", "", refused),
	HC("stratus_agent_port_filters_applied_total", "counter", "Port filters applied by builds.",
	   "", filters_applied),
	HC("stratus_agent_port_filters_restored_total", "counter",
	   "Port filters reconcile found missing or changed and restored.", "", filters_restored),
	HC("stratus_agent_port_filters", "gauge", "Instance ports with a filter at the last reconcile.",
	   "", filter_ports),
	HC("stratus_agent_secgroup_applies_total", "counter",
	   "Security group transactions applied (secgroup.c).", "", sg_applies),
	HC("stratus_agent_secgroup_restored_total", "counter",
	   "Security group chains reconcile found missing or changed and restored.", "", sg_restored),
	HC("stratus_agent_secgroup_ports", "gauge", "Instance ports with security group chains.", "",
	   sg_ports),
};
#undef HC

char *agent_metrics_text(struct agent *a)
{
	struct strbuf sb = { .max = 16u << 20 };
	long by_state[INST_STATE_LAST] = { 0 };
	const char *h = a->cfg->host;

	store_instance_foreach(a->store, count_states, by_state);
	pthread_mutex_lock(&a->m_lock);
	sample_stats(a);

	sb_metric_head(&sb, "stratus_agent_up", "gauge",
		       "1 when the agent is connected to libvirtd, 0 when degraded.");
	sb_printf(&sb, "stratus_agent_up{host=\"%s\"} %d\n", h, a->degraded ? 0 : 1);
	sb_metric_head(&sb, "stratus_instances", "gauge", "Instances on this host by state.");
	for (int s = 0; s < INST_STATE_LAST; s++)
		sb_printf(&sb, "stratus_instances{host=\"%s\",state=\"%s\"} %ld\n", h,
			  instance_state_names[s], by_state[s]);
	sb_metric_head(&sb, "stratus_host_steal_ratio", "gauge",
		       "Share of host CPU time stolen by the hypervisor below (last interval).");
	sb_printf(&sb, "stratus_host_steal_ratio{host=\"%s\"} %.6f\n", h, a->host_steal_pct / 100);
	sb_metric_head(&sb, "stratus_build_duration_seconds", "histogram",
		       "Time from a build starting in a worker to the instance running.");
	uint64_t cum = 0;

	for (int b = 0; b <= AGENT_HIST_BUCKETS; b++) {
		cum += a->m.hist[b];
		if (b < AGENT_HIST_BUCKETS)
			sb_printf(&sb, "stratus_build_duration_seconds_bucket{host=\"%s\",le=\"%g\"} %llu\n",
				  h, agent_hist_bounds[b], (unsigned long long)cum);
		else
			sb_printf(&sb, "stratus_build_duration_seconds_bucket{host=\"%s\",le=\"+Inf\"} %llu\n",
				  h, (unsigned long long)cum);
	}
	sb_printf(&sb, "stratus_build_duration_seconds_sum{host=\"%s\"} %.6f\n", h, a->m.hist_sum);
	sb_printf(&sb, "stratus_build_duration_seconds_count{host=\"%s\"} %llu\n", h,
		  (unsigned long long)a->m.hist_count);
	agent_migration_metrics(a, &sb);
	for (size_t i = 0; i < ARRAY_SIZE(host_counters); i++) {
		const struct host_counter *c = &host_counters[i];
		uint64_t v;

		memcpy(&v, (const char *)&a->m + c->off, sizeof(v));
		if (c->type)
			sb_metric_head(&sb, c->name, c->type, c->help);
		sb_printf(&sb, "%s{host=\"%s\"%s} %llu\n", c->name, h, c->label,
			  (unsigned long long)v);
	}
	agent_console_metrics(a, &sb);
	sb_metric_head(&sb, "stratus_bus_rejected_messages_total", "counter",
		       "Messages on this host's topic that did not validate.");
	sb_printf(&sb, "stratus_bus_rejected_messages_total{host=\"%s\"} %llu\n", h,
		  (unsigned long long)bus_consumer_rejected(a->cons));

	static const struct {
		const char *name, *type, *help;
	} inst_metrics[] = {
		{ "stratus_instance_cpu_seconds_total", "counter", "CPU time used by the instance." },
		{ "stratus_instance_steal_seconds_total", "counter",
		  "Time the instance's vCPUs waited for a host CPU (the guest's steal)." },
		{ "stratus_instance_memory_bytes", "gauge", "Memory given to the instance." },
		{ "stratus_instance_disk_read_bytes_total", "counter", "Bytes read from disks." },
		{ "stratus_instance_disk_written_bytes_total", "counter", "Bytes written to disks." },
		{ "stratus_instance_network_receive_bytes_total", "counter", "Bytes received." },
		{ "stratus_instance_network_transmit_bytes_total", "counter", "Bytes sent." },
		{ "stratus_instance_vcpus", "gauge", "vCPUs the instance's domain has." },
	};
	for (size_t m = 0; m < ARRAY_SIZE(inst_metrics); m++) {
		sb_metric_head(&sb, inst_metrics[m].name, inst_metrics[m].type, inst_metrics[m].help);
		for (size_t i = 0; i < a->n_samples; i++) {
			const struct vmm_dom_stats *s = &a->samples[i].last;
			double v = 0;

			switch (m) {
			case 0: v = (double)s->cpu_time_ns / 1e9; break;
			case 1: v = (double)a->samples[i].steal_ns_total / 1e9; break;
			case 2: v = (double)s->mem_actual_kib * 1024; break;
			case 3: v = (double)s->rd_bytes; break;
			case 4: v = (double)s->wr_bytes; break;
			case 5: v = (double)s->rx_bytes; break;
			case 6: v = (double)s->tx_bytes; break;
			default: v = (double)s->n_vcpus; break;
			}
			sb_printf(&sb, "%s{host=\"%s\",instance=\"%s\"} %.9g\n", inst_metrics[m].name, h,
				  s->uuid, v);
		}
	}
	pthread_mutex_unlock(&a->m_lock);
	return sb_steal(&sb);
}

static char *metrics_text(void *ud)
{
	return agent_metrics_text(ud);
}

static const char *health(void *ud)
{
	const struct agent *a = ud;

	return a->degraded ? "degraded" : NULL;
}

int agent_http_start(struct agent *a)
{
	const char *l = a->cfg->metrics_listen;

	if (!l || !*l)
		return 0;
	return prom_serve("agent.metrics_listen", l, metrics_text, health, a, &a->http);
}

void agent_http_stop(struct agent *a)
{
	prom_stop(a->http);
	a->http = NULL;
}
