/*
 * core's Prometheus helpers for the daemons' /metrics: the text format's
 * HELP/TYPE heads, a fixed-bucket histogram, and a small HTTP endpoint
 * (GET /metrics, GET /healthz) on core's http_server_start, which every
 * daemon's /metrics uses (agent, scheduler, metadata service, stratus-bus).
 */
#ifndef STRATUS_CORE_PROM_H
#define STRATUS_CORE_PROM_H

#include <netinet/in.h>
#include <stdint.h>

#include "core/core.h"

#define PROM_HIST_MAX 16 /* finite buckets at most */

struct prom_hist {
	const double *bounds;        /* ascending upper bounds (le) */
	size_t n;                    /* how many, <= PROM_HIST_MAX */
	uint64_t counts[PROM_HIST_MAX + 1]; /* per bucket, not cumulative; [n]: +Inf */
	double sum;
	uint64_t count;
};

/* "# HELP NAME HELP\n# TYPE NAME TYPE\n". */
void prom_head(struct strbuf *sb, const char *name, const char *type, const char *help);
void prom_hist_observe(struct prom_hist *h, double v);
/* NAME_bucket{LABELS,le=...}, NAME_sum, NAME_count; LABELS may be "" or
 * 'a="b"' (already escaped). */
void prom_hist_write(struct strbuf *sb, const char *name, const char *labels,
		     const struct prom_hist *h);

/*
 * Parse the listen address of config key KEY ("scheduler.metrics_listen"):
 * ADDR:PORT, IPv4. Returns 0, or -EINVAL with err_msg() naming KEY, the
 * value and what is wrong.
 */
int prom_listen_parse(const char *key, const char *listen, struct sockaddr_in *out);

struct prom_server;
/* Produce the exposition text: a malloc'd string, NULL on ENOMEM. Called
 * from the HTTP thread: it must lock what it reads. */
typedef char *(*prom_text_fn)(void *ud);
/* /healthz: NULL when healthy ("ok", 200), else the state to answer with
 * 503 ("degraded"). Called from the HTTP thread. */
typedef const char *(*prom_health_fn)(void *ud);

/*
 * Serve TEXT on http://LISTEN/metrics and HEALTH (NULL: always ok) on
 * /healthz (KEY names the config key in errors). Returns 0 and *out,
 * -EINVAL (bad address), -EADDRINUSE (cannot listen) or -ENOMEM, err_msg()
 * set.
 */
int prom_serve(const char *key, const char *listen, prom_text_fn text, prom_health_fn health,
	       void *ud, struct prom_server **out);
int prom_port(const struct prom_server *s);
/* Stop and free; accepts NULL. */
void prom_stop(struct prom_server *s);

#endif
