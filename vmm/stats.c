/*
 * Stats and steal. Per instance from libvirt's bulk stats; per vCPU the
 * "delay" counter is the time the vCPU thread waited on a host run queue
 * (schedstat field 2): to the guest that is steal. Per host from
 * /proc/stat's steal column, non-zero where the host is itself a guest.
 *
 *   instance steal % = sum over vCPUs of d(delay) / (vCPUs x interval)
 *   vCPU steal %     = d(delay_i) / interval
 *   host steal %     = d(steal) / d(all columns)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmm/vmm_priv.h"

static uint64_t param_u64(const virTypedParameter *p)
{
	switch ((virTypedParameterType)p->type) {
	case VIR_TYPED_PARAM_INT:
		return p->value.i > 0 ? (uint64_t)p->value.i : 0;
	case VIR_TYPED_PARAM_UINT:
		return p->value.ui;
	case VIR_TYPED_PARAM_LLONG:
		return p->value.l > 0 ? (uint64_t)p->value.l : 0;
	case VIR_TYPED_PARAM_ULLONG:
		return p->value.ul;
	case VIR_TYPED_PARAM_DOUBLE:
		return p->value.d > 0 ? (uint64_t)p->value.d : 0;
	case VIR_TYPED_PARAM_BOOLEAN:
		return p->value.b ? 1 : 0;
	case VIR_TYPED_PARAM_STRING:
	case VIR_TYPED_PARAM_LAST:
	default:
		break;
	}
	return 0;
}

/* "vcpu.3.delay" -> 3 and "delay"; -1 when not "PREFIX.N.rest". */
static int indexed(const char *field, const char *prefix, const char **rest)
{
	size_t pl = strlen(prefix);
	char *end;
	long i;

	if (strncmp(field, prefix, pl) != 0 || field[pl] < '0' || field[pl] > '9')
		return -1;
	i = strtol(field + pl, &end, 10);
	if (*end != '.' || i < 0 || i > 1 << 20)
		return -1;
	*rest = end + 1;
	return (int)i;
}

void vmm_stats_from_params(const virTypedParameter *params, int n, struct vmm_dom_stats *out)
{
	for (int i = 0; i < n; i++) {
		const char *f = params[i].field, *rest;
		uint64_t v = param_u64(&params[i]);
		int idx;

		if (strcmp(f, "state.state") == 0)
			out->running = v == VIR_DOMAIN_RUNNING || v == VIR_DOMAIN_BLOCKED;
		else if (strcmp(f, "cpu.time") == 0)
			out->cpu_time_ns = v;
		else if (strcmp(f, "cpu.user") == 0)
			out->cpu_user_ns = v;
		else if (strcmp(f, "cpu.system") == 0)
			out->cpu_system_ns = v;
		else if (strcmp(f, "vcpu.current") == 0)
			out->n_vcpus = v < VMM_MAX_VCPU_STATS ? (int)v : VMM_MAX_VCPU_STATS;
		else if (strcmp(f, "balloon.current") == 0)
			out->mem_actual_kib = v;
		else if (strcmp(f, "balloon.rss") == 0)
			out->mem_rss_kib = v;
		else if (strcmp(f, "balloon.available") == 0)
			out->mem_available_kib = v;
		else if (strcmp(f, "balloon.unused") == 0)
			out->mem_unused_kib = v;
		else if ((idx = indexed(f, "vcpu.", &rest)) >= 0) {
			if (idx >= VMM_MAX_VCPU_STATS)
				continue;
			if (strcmp(rest, "time") == 0)
				out->vcpu_time_ns[idx] = v;
			else if (strcmp(rest, "delay") == 0) {
				out->vcpu_delay_ns[idx] = v;
				out->have_delay = true;
			}
		} else if ((idx = indexed(f, "block.", &rest)) >= 0) {
			if (strcmp(rest, "rd.bytes") == 0)
				out->rd_bytes += v;
			else if (strcmp(rest, "wr.bytes") == 0)
				out->wr_bytes += v;
			else if (strcmp(rest, "rd.reqs") == 0)
				out->rd_reqs += v;
			else if (strcmp(rest, "wr.reqs") == 0)
				out->wr_reqs += v;
		} else if ((idx = indexed(f, "net.", &rest)) >= 0) {
			if (strcmp(rest, "rx.bytes") == 0)
				out->rx_bytes += v;
			else if (strcmp(rest, "tx.bytes") == 0)
				out->tx_bytes += v;
			else if (strcmp(rest, "rx.pkts") == 0)
				out->rx_pkts += v;
			else if (strcmp(rest, "tx.pkts") == 0)
				out->tx_pkts += v;
		}
	}
}

/* b - a for a counter, 0 when it went backwards (a restart). */
static double delta(uint64_t a, uint64_t b)
{
	return b >= a ? (double)(b - a) : 0.0;
}

int vmm_dom_rates(const struct vmm_dom_stats *a, const struct vmm_dom_stats *b,
		  struct vmm_dom_rates *out)
{
	struct vmm_dom_rates r = { 0 };
	double ns = (double)(b->ts_ns - a->ts_ns);
	double delay = 0;
	int nv = b->n_vcpus < a->n_vcpus ? b->n_vcpus : a->n_vcpus;

	if (strcmp(a->uuid, b->uuid) != 0)
		return err_set(-EINVAL, "stats of %s and %s: not the same instance", a->uuid, b->uuid);
	if (ns <= 0)
		return err_set(-EINVAL, "instance %s: stats interval is not positive", a->uuid);
	r.interval_s = ns / 1e9;
	r.cpu_pct = 100.0 * delta(a->cpu_time_ns, b->cpu_time_ns) / ns;
	for (int i = 0; i < nv; i++) {
		double d = delta(a->vcpu_delay_ns[i], b->vcpu_delay_ns[i]);

		r.vcpu_steal_pct[i] = 100.0 * d / ns;
		delay += d;
	}
	r.steal_pct = nv > 0 ? 100.0 * delay / (ns * nv) : 0.0;
	r.rd_bps = delta(a->rd_bytes, b->rd_bytes) / r.interval_s;
	r.wr_bps = delta(a->wr_bytes, b->wr_bytes) / r.interval_s;
	r.rx_bps = delta(a->rx_bytes, b->rx_bytes) / r.interval_s;
	r.tx_bps = delta(a->tx_bytes, b->tx_bytes) / r.interval_s;
	*out = r;
	return 0;
}

int vmm_host_cpu_parse(const char *text, struct vmm_host_cpu *out)
{
	unsigned long long v[8] = { 0 };
	struct vmm_host_cpu h;
	int n;

	/* the aggregate line is first: "cpu  user nice system idle iowait irq softirq steal ..." */
	if (strncmp(text, "cpu ", 4) != 0)
		return err_set(-EINVAL, "/proc/stat: no aggregate cpu line");
	n = sscanf(text + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]);
	if (n < 4)
		return err_set(-EINVAL, "/proc/stat: cpu line has %d fields", n);
	h.user = v[0];
	h.nice = v[1];
	h.system = v[2];
	h.idle = v[3];
	h.iowait = v[4];
	h.irq = v[5];
	h.softirq = v[6];
	h.steal = v[7];
	h.total = h.user + h.nice + h.system + h.idle + h.iowait + h.irq + h.softirq + h.steal;
	*out = h;
	return 0;
}

int vmm_host_cpu_read(const char *proc_root, struct vmm_host_cpu *out)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	int r;

	if (asprintf(&path, "%s/stat", proc_root ? proc_root : "/proc") < 0) {
		path = NULL;
		return err_set(-ENOMEM, "out of memory");
	}
	r = read_file(path, 1024 * 1024, &text, NULL);
	if (r < 0)
		return err_sys(r, "%s", path);
	r = vmm_host_cpu_parse(text, out);
	return r < 0 ? err_prefix(r, "%s", path) : 0;
}

double vmm_host_steal_pct(const struct vmm_host_cpu *a, const struct vmm_host_cpu *b)
{
	double total = delta(a->total, b->total);

	return total > 0 ? 100.0 * delta(a->steal, b->steal) / total : 0.0;
}
