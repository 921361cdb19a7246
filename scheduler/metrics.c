/*
 * The scheduler's Prometheus metrics (scheduler.metrics_listen, /metrics).
 *
 * Counters are bumped by one-line hooks at the decision points (boot.c,
 * reply.c, main.c); gauges (hosts by state, claims, consumer lag) are
 * sampled by the main loop once a tick (sched_metrics_sample), since the
 * state they read is the main thread's. The HTTP thread reads a copy under
 * the lock. One scheduler per process: the registry is process-wide.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "core/prom.h"
#include "scheduler/sched_priv.h"

#define MAX_TYPES 32           /* request types counted (the handler table has ~20) */
#define MAX_HOSTS_SHOWN 1024   /* per-host series at most */
#define SCHED_MAX_FILTERS 16   /* sched_filters[] has 10 */

static const double decision_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
					  0.05,   0.1,   0.25,   0.5,   1,    2.5 };

enum host_state { HS_UP, HS_DEGRADED, HS_DOWN, HS_LAST };
static const char *const host_state_names[] = { [HS_UP] = "up", [HS_DEGRADED] = "degraded",
						[HS_DOWN] = "down", [HS_LAST] = NULL };

struct type_count {
	char type[48];
	uint64_t ok, rejected;
};

struct host_gauge {
	char name[128];
	long vcpu_used, ram_used, instances;
};

static struct {
	pthread_mutex_t lock;
	struct type_count types[MAX_TYPES];
	size_t n_types;
	struct prom_hist decision;
	uint64_t no_host[SCHED_MAX_FILTERS + 1]; /* by the filter that turned most hosts away */
	uint64_t host_rejections[SCHED_MAX_FILTERS];
	uint64_t quota_refused[QUOTA_RESOURCE_LAST + 1];
	uint64_t auth_refused[2]; /* [0] verify, [1] authorize */
	uint64_t refused[SCHED_REFUSED_LAST]; /* hosts' reports and events, by reason */
	/* sampled */
	struct sched_stats stats;
	long hosts_by_state[HS_LAST];
	struct host_gauge *hosts;
	size_t n_hosts;
	long claims_pending;
	double claims_oldest_s;
	int64_t lag;               /* -1: unknown */
	bool sampled;
} M = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.decision = { .bounds = decision_bounds, .n = ARRAY_SIZE(decision_bounds) },
	.lag = -1,
};

static struct type_count *type_slot(const char *type)
{
	for (size_t i = 0; i < M.n_types; i++)
		if (strcmp(M.types[i].type, type) == 0)
			return &M.types[i];
	if (M.n_types == MAX_TYPES)
		return NULL;
	snprintf(M.types[M.n_types].type, sizeof(M.types[0].type), "%s", type);
	return &M.types[M.n_types++];
}

void sched_metrics_result(const char *type, const json_t *res)
{
	struct type_count *t;

	if (!type)
		return;
	pthread_mutex_lock(&M.lock);
	t = type_slot(type);
	if (t && json_is_true(json_object_get(res, "ok")))
		t->ok++;
	else if (t)
		t->rejected++;
	pthread_mutex_unlock(&M.lock);
}

void sched_metrics_handled(const char *type, double seconds)
{
	if (!type || strcmp(type, "instance.boot") != 0)
		return;
	pthread_mutex_lock(&M.lock);
	prom_hist_observe(&M.decision, seconds);
	pthread_mutex_unlock(&M.lock);
}

void sched_metrics_no_valid_host(const struct sched_ctx *c, struct sched_host *const *hosts,
				 size_t n, const struct sched_req *r)
{
	uint64_t per[SCHED_MAX_FILTERS] = { 0 };
	size_t worst = SCHED_MAX_FILTERS; /* "no_hosts" */
	char why[256];

	for (size_t i = 0; i < n; i++)
		for (size_t f = 0; f < sched_n_filters && f < SCHED_MAX_FILTERS; f++)
			if (!sched_filters[f].pass(c, hosts[i], r, why, sizeof(why))) {
				per[f]++;
				break;
			}
	for (size_t f = 0; f < sched_n_filters && f < SCHED_MAX_FILTERS; f++)
		if (per[f] && (worst == SCHED_MAX_FILTERS || per[f] > per[worst]))
			worst = f;
	pthread_mutex_lock(&M.lock);
	M.no_host[worst]++;
	for (size_t f = 0; f < SCHED_MAX_FILTERS; f++)
		M.host_rejections[f] += per[f];
	pthread_mutex_unlock(&M.lock);
}

void sched_metrics_quota_refused(enum quota_resource over)
{
	if ((int)over < 0 || over > QUOTA_RESOURCE_LAST)
		over = QUOTA_RESOURCE_LAST;
	pthread_mutex_lock(&M.lock);
	M.quota_refused[over]++;
	pthread_mutex_unlock(&M.lock);
}

void sched_metrics_auth_refused(bool authorize)
{
	pthread_mutex_lock(&M.lock);
	M.auth_refused[authorize]++;
	pthread_mutex_unlock(&M.lock);
}

void sched_metrics_refused(enum sched_refusal why)
{
	if ((int)why <= 0 || why >= SCHED_REFUSED_LAST)
		return;
	pthread_mutex_lock(&M.lock);
	M.refused[why]++;
	pthread_mutex_unlock(&M.lock);
}

/* Instances claimed but not yet confirmed by their agent, and the oldest's age. */
static void sample_claims(struct sched *s, long *n, double *oldest)
{
	sqlite3_stmt *q = NULL;

	*n = 0;
	*oldest = 0;
	if (sqlite3_prepare_v2(s->db,
			       "SELECT count(*), coalesce((julianday('now') - "
			       "julianday(min(created))) * 86400.0, 0) FROM instances "
			       "WHERE state = 'scheduling'",
			       -1, &q, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_step(q) == SQLITE_ROW) {
		*n = (long)sqlite3_column_int64(q, 0);
		*oldest = sqlite3_column_double(q, 1);
	}
out:
	sqlite3_finalize(q);
}

void sched_metrics_sample(struct sched *s, int64_t now_ms, int64_t consumer_lag)
{
	struct sched_ctx ctx = { .cfg = s->cfg, .now_ms = now_ms };
	long by_state[HS_LAST] = { 0 };
	size_t nh = s->n_hosts < MAX_HOSTS_SHOWN ? s->n_hosts : MAX_HOSTS_SHOWN;
	struct host_gauge *hg = calloc(nh ? nh : 1, sizeof(*hg));
	struct sched_stats st;
	long claims;
	double oldest;

	(void)ctx;
	sched_get_stats(s, now_ms, &st);
	sample_claims(s, &claims, &oldest);
	for (size_t i = 0; i < s->n_hosts; i++) {
		const struct sched_host *h = s->hosts[i];
		bool up = sched_host_up(h, s->cfg, now_ms);

		by_state[!up ? HS_DOWN : h->degraded ? HS_DEGRADED : HS_UP]++;
		if (hg && i < nh) {
			snprintf(hg[i].name, sizeof(hg[i].name), "%s", h->name);
			hg[i].vcpu_used = h->vcpu_used + h->pcpu_used;
			hg[i].ram_used = h->ram_used;
			hg[i].instances = h->instances;
		}
	}
	pthread_mutex_lock(&M.lock);
	M.stats = st;
	memcpy(M.hosts_by_state, by_state, sizeof(by_state));
	free(M.hosts);
	M.hosts = hg;
	M.n_hosts = hg ? nh : 0;
	M.claims_pending = claims;
	M.claims_oldest_s = oldest;
	M.lag = consumer_lag;
	M.sampled = true;
	pthread_mutex_unlock(&M.lock);
}

static void write_counters(struct strbuf *sb)
{
	prom_head(sb, "stratus_scheduler_requests_total", "counter",
		  "Requests answered, by message type and outcome (ok, rejected).");
	for (size_t i = 0; i < M.n_types; i++) {
		sb_printf(sb, "stratus_scheduler_requests_total{type=\"%s\",outcome=\"ok\"} %llu\n",
			  M.types[i].type, (unsigned long long)M.types[i].ok);
		sb_printf(sb,
			  "stratus_scheduler_requests_total{type=\"%s\",outcome=\"rejected\"} %llu\n",
			  M.types[i].type, (unsigned long long)M.types[i].rejected);
	}
	prom_head(sb, "stratus_scheduler_decision_duration_seconds", "histogram",
		  "Time to handle one instance.boot request (quota, placement, claims).");
	prom_hist_write(sb, "stratus_scheduler_decision_duration_seconds", "", &M.decision);
	prom_head(sb, "stratus_scheduler_decisions_total", "counter",
		  "Instances placed on a host (first attempts).");
	sb_printf(sb, "stratus_scheduler_decisions_total %llu\n",
		  (unsigned long long)M.stats.decisions);
	prom_head(sb, "stratus_scheduler_reschedules_total", "counter",
		  "Instances placed again after a build failed on their host.");
	sb_printf(sb, "stratus_scheduler_reschedules_total %llu\n",
		  (unsigned long long)M.stats.reschedules);
	prom_head(sb, "stratus_scheduler_no_valid_host_total", "counter",
		  "Boots refused for lack of a host, by the filter that turned most hosts away.");
	for (size_t f = 0; f < sched_n_filters && f < SCHED_MAX_FILTERS; f++)
		sb_printf(sb, "stratus_scheduler_no_valid_host_total{reason=\"%s\"} %llu\n",
			  sched_filters[f].name, (unsigned long long)M.no_host[f]);
	sb_printf(sb, "stratus_scheduler_no_valid_host_total{reason=\"no_hosts\"} %llu\n",
		  (unsigned long long)M.no_host[SCHED_MAX_FILTERS]);
	prom_head(sb, "stratus_scheduler_host_rejections_total", "counter",
		  "Hosts turned away in failed placements, by filter.");
	for (size_t f = 0; f < sched_n_filters && f < SCHED_MAX_FILTERS; f++)
		sb_printf(sb, "stratus_scheduler_host_rejections_total{filter=\"%s\"} %llu\n",
			  sched_filters[f].name, (unsigned long long)M.host_rejections[f]);
	prom_head(sb, "stratus_scheduler_quota_refusals_total", "counter",
		  "Boots refused by the project's quota, by the resource over its limit.");
	for (int q = 0; q <= QUOTA_RESOURCE_LAST; q++)
		sb_printf(sb, "stratus_scheduler_quota_refusals_total{resource=\"%s\"} %llu\n",
			  q < QUOTA_RESOURCE_LAST ? quota_resource_names[q] : "unknown",
			  (unsigned long long)M.quota_refused[q]);
	prom_head(sb, "stratus_scheduler_auth_refusals_total", "counter",
		  "Signed requests refused: stage verify (unsigned, unknown or revoked credential, "
		  "bad signature, outside the window, replayed), authorize (another project, admin "
		  "only).");
	sb_printf(sb, "stratus_scheduler_auth_refusals_total{stage=\"verify\"} %llu\n",
		  (unsigned long long)M.auth_refused[0]);
	sb_printf(sb, "stratus_scheduler_auth_refusals_total{stage=\"authorize\"} %llu\n",
		  (unsigned long long)M.auth_refused[1]);
	prom_head(sb, "stratus_scheduler_refused_total", "counter",
		  "Host reports and events refused: unsigned, signed by a key not pinned for the "
		  "host, tampered, from a host not the instance's, or from a host with no pin.");
	for (int w = SCHED_REFUSED_NONE + 1; w < SCHED_REFUSED_LAST; w++)
		sb_printf(sb, "stratus_scheduler_refused_total{reason=\"%s\"} %llu\n",
			  sched_refusal_names[w], (unsigned long long)M.refused[w]);
}

static void write_gauges(struct strbuf *sb)
{
	prom_head(sb, "stratus_scheduler_hosts", "gauge", "Known hosts by state.");
	for (int h = 0; h < HS_LAST; h++)
		sb_printf(sb, "stratus_scheduler_hosts{state=\"%s\"} %ld\n", host_state_names[h],
			  M.hosts_by_state[h]);
	prom_head(sb, "stratus_scheduler_host_claimed_vcpus", "gauge",
		  "vCPUs (shared and dedicated) claimed on the host by placed instances.");
	for (size_t i = 0; i < M.n_hosts; i++)
		sb_printf(sb, "stratus_scheduler_host_claimed_vcpus{host=\"%s\"} %ld\n",
			  M.hosts[i].name, M.hosts[i].vcpu_used);
	prom_head(sb, "stratus_scheduler_host_claimed_memory_bytes", "gauge",
		  "Memory claimed on the host by placed instances.");
	for (size_t i = 0; i < M.n_hosts; i++)
		sb_printf(sb, "stratus_scheduler_host_claimed_memory_bytes{host=\"%s\"} %.0f\n",
			  M.hosts[i].name, (double)M.hosts[i].ram_used * 1048576.0);
	prom_head(sb, "stratus_scheduler_host_instances", "gauge",
		  "Instances the scheduler has placed on the host.");
	for (size_t i = 0; i < M.n_hosts; i++)
		sb_printf(sb, "stratus_scheduler_host_instances{host=\"%s\"} %ld\n",
			  M.hosts[i].name, M.hosts[i].instances);
	prom_head(sb, "stratus_scheduler_claims_pending", "gauge",
		  "Instances claimed on a host whose agent has not yet answered (scheduling).");
	sb_printf(sb, "stratus_scheduler_claims_pending %ld\n", M.claims_pending);
	prom_head(sb, "stratus_scheduler_claims_oldest_age_seconds", "gauge",
		  "Age of the oldest pending claim (0 when none).");
	sb_printf(sb, "stratus_scheduler_claims_oldest_age_seconds %.3f\n", M.claims_oldest_s);
	if (M.lag >= 0) {
		prom_head(sb, "stratus_scheduler_consumer_lag_messages", "gauge",
			  "Messages on the scheduler's topics not yet consumed.");
		sb_printf(sb, "stratus_scheduler_consumer_lag_messages %lld\n", (long long)M.lag);
	}
}

char *sched_metrics_text(void)
{
	struct strbuf sb = { .max = 8u << 20 };

	pthread_mutex_lock(&M.lock);
	prom_head(&sb, "stratus_scheduler_up", "gauge",
		  "1 once the scheduler runs its loop (state open, bus connected).");
	sb_printf(&sb, "stratus_scheduler_up %d\n", M.sampled ? 1 : 0);
	write_counters(&sb);
	write_gauges(&sb);
	pthread_mutex_unlock(&M.lock);
	return sb_steal(&sb);
}

static char *text_cb(void *ud)
{
	(void)ud;
	return sched_metrics_text();
}

int sched_metrics_check(const struct sched_config *c)
{
	struct sockaddr_in sa;
	int r;

	if (!c->metrics_listen || !*c->metrics_listen)
		return 0;
	r = prom_listen_parse("scheduler.metrics_listen", c->metrics_listen, &sa);
	return r < 0 ? err_prefix(r, "%s", cfg_where(&c->metrics_listen)) : 0;
}

int sched_metrics_start(const struct sched_config *c, struct prom_server **out)
{
	*out = NULL;
	if (!c->metrics_listen || !*c->metrics_listen)
		return 0;
	return prom_serve("scheduler.metrics_listen", c->metrics_listen, text_cb, NULL, NULL, out);
}

void sched_metrics_stop(struct prom_server *p)
{
	prom_stop(p);
	pthread_mutex_lock(&M.lock);
	free(M.hosts);
	M.hosts = NULL;
	M.n_hosts = 0;
	pthread_mutex_unlock(&M.lock);
}
