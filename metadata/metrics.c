/*
 * The metadata service's Prometheus metrics on metadata.metrics_listen
 * (its own address: guests reach metadata.listen, operators reach this).
 * Counted by one-line hooks: every answer in http.c (by API and status:
 * tokens issued and rate-limited requests follow from those), unknown
 * sources in service.c. Counters are atomics: the HTTP pool's threads
 * bump them without a lock.
 */
#define LOG_TAG "metadata"
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "core/prom.h"
#include "metadata/metadata_priv.h"

enum md_api { API_EC2, API_OPENSTACK, API_TOKEN, API_HEALTHZ, API_OTHER, API_LAST };
static const char *const api_names[] = { [API_EC2] = "ec2", [API_OPENSTACK] = "openstack",
					 [API_TOKEN] = "token", [API_HEALTHZ] = "healthz",
					 [API_OTHER] = "other", [API_LAST] = NULL };

/* The statuses md_service_handle answers with; anything else is "other". */
static const int statuses[] = { 200, 400, 401, 403, 404, 405, 413, 414, 429, 431, 500, 503 };
#define N_STATUS (ARRAY_SIZE(statuses) + 1)

static const double duration_bounds[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
					   0.005,  0.01,    0.025,  0.05,  0.1 };

static struct {
	atomic_ullong requests[API_LAST][N_STATUS];
	atomic_ullong rate_limited, tokens_issued, unknown_source;
	pthread_mutex_t hist_lock;
	struct prom_hist duration;
} M = {
	.hist_lock = PTHREAD_MUTEX_INITIALIZER,
	.duration = { .bounds = duration_bounds, .n = ARRAY_SIZE(duration_bounds) },
};

static enum md_api api_of(const char *url)
{
	if (!url)
		return API_OTHER;
	while (url[0] == '/' && url[1] == '/')
		url++;
	if (strncmp(url, "/openstack", 10) == 0 && (url[10] == '/' || url[10] == '\0'))
		return API_OPENSTACK;
	if (strncmp(url, "/latest/api/token", 17) == 0)
		return API_TOKEN;
	if (strcmp(url, "/healthz") == 0)
		return API_HEALTHZ;
	if (strcmp(url, "/") == 0 || strncmp(url, "/latest", 7) == 0 ||
	    (url[1] >= '1' && url[1] <= '2' && strchr(url + 1, '-')))
		return API_EC2;
	return API_OTHER;
}

void md_metrics_request(const char *method, const char *url, int status, double seconds)
{
	enum md_api api = api_of(url);
	size_t s;

	for (s = 0; s < ARRAY_SIZE(statuses) && statuses[s] != status; s++)
		;
	atomic_fetch_add(&M.requests[api][s], 1);
	if (status == 429)
		atomic_fetch_add(&M.rate_limited, 1);
	if (api == API_TOKEN && status == 200 && method && strcmp(method, "PUT") == 0)
		atomic_fetch_add(&M.tokens_issued, 1);
	pthread_mutex_lock(&M.hist_lock);
	prom_hist_observe(&M.duration, seconds);
	pthread_mutex_unlock(&M.hist_lock);
}

void md_metrics_identify_failed(int status)
{
	if (status == 404)
		atomic_fetch_add(&M.unknown_source, 1);
}

char *md_metrics_text(void)
{
	struct strbuf sb = { .max = 1u << 20 };

	prom_head(&sb, "stratus_metadata_requests_total", "counter",
		  "Requests answered, by API (ec2, openstack, token, healthz, other) and status.");
	for (int a = 0; a < API_LAST; a++)
		for (size_t s = 0; s < N_STATUS; s++) {
			unsigned long long v = atomic_load(&M.requests[a][s]);
			char code[16];

			if (s < ARRAY_SIZE(statuses))
				snprintf(code, sizeof(code), "%d", statuses[s]);
			else
				snprintf(code, sizeof(code), "other");
			sb_printf(&sb, "stratus_metadata_requests_total{api=\"%s\",status=\"%s\"} %llu\n",
				  api_names[a], code, v);
		}
	prom_head(&sb, "stratus_metadata_rate_limited_total", "counter",
		  "Requests refused with 429 by an instance's rate limit.");
	sb_printf(&sb, "stratus_metadata_rate_limited_total %llu\n",
		  (unsigned long long)atomic_load(&M.rate_limited));
	prom_head(&sb, "stratus_metadata_tokens_issued_total", "counter",
		  "IMDSv2 session tokens issued (PUT /latest/api/token).");
	sb_printf(&sb, "stratus_metadata_tokens_issued_total %llu\n",
		  (unsigned long long)atomic_load(&M.tokens_issued));
	prom_head(&sb, "stratus_metadata_unknown_source_total", "counter",
		  "Requests from an address (or instance id) that is no instance's: 404.");
	sb_printf(&sb, "stratus_metadata_unknown_source_total %llu\n",
		  (unsigned long long)atomic_load(&M.unknown_source));
	prom_head(&sb, "stratus_metadata_request_duration_seconds", "histogram",
		  "Time to answer one request (lookup, checks, rendering).");
	pthread_mutex_lock(&M.hist_lock);
	prom_hist_write(&sb, "stratus_metadata_request_duration_seconds", "", &M.duration);
	pthread_mutex_unlock(&M.hist_lock);
	return sb_steal(&sb);
}

static char *text_cb(void *ud)
{
	(void)ud;
	return md_metrics_text();
}

int md_metrics_check(const struct md_config *c)
{
	struct sockaddr_in sa;
	int r;

	if (!c->metrics_listen || !*c->metrics_listen)
		return 0;
	r = prom_listen_parse("metadata.metrics_listen", c->metrics_listen, &sa);
	return r < 0 ? err_prefix(r, "%s", cfg_where(&c->metrics_listen)) : 0;
}

int md_metrics_start(const struct md_config *c, struct prom_server **out)
{
	*out = NULL;
	if (!c->metrics_listen || !*c->metrics_listen)
		return 0;
	return prom_serve("metadata.metrics_listen", c->metrics_listen, text_cb, NULL, NULL, out);
}

void md_metrics_stop(struct prom_server *p)
{
	prom_stop(p);
}
