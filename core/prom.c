/* Prometheus text helpers and the /metrics endpoint (core/prom.h). */
#define LOG_TAG "metrics"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/http.h"
#include "core/prom.h"

void prom_head(struct strbuf *sb, const char *name, const char *type, const char *help)
{
	sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void prom_hist_observe(struct prom_hist *h, double v)
{
	size_t b;

	for (b = 0; b < h->n && v > h->bounds[b]; b++)
		;
	h->counts[b]++;
	h->sum += v;
	h->count++;
}

void prom_hist_write(struct strbuf *sb, const char *name, const char *labels,
		     const struct prom_hist *h)
{
	const char *sep = labels && *labels ? "," : "";
	uint64_t cum = 0;

	if (!labels)
		labels = "";
	for (size_t b = 0; b <= h->n; b++) {
		cum += h->counts[b];
		if (b < h->n)
			sb_printf(sb, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
				  h->bounds[b], (unsigned long long)cum);
		else
			sb_printf(sb, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
				  (unsigned long long)cum);
	}
	if (*labels) {
		sb_printf(sb, "%s_sum{%s} %.9g\n", name, labels, h->sum);
		sb_printf(sb, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
	} else {
		sb_printf(sb, "%s_sum %.9g\n", name, h->sum);
		sb_printf(sb, "%s_count %llu\n", name, (unsigned long long)h->count);
	}
}

int prom_listen_parse(const char *key, const char *listen, struct sockaddr_in *out)
{
	const char *colon;
	int r;

	if (!listen || !*listen)
		return err_set(-EINVAL, "%s: empty address (expected ADDR:PORT)", key);
	r = net_addr_port_parse(listen, 0, 65535, 0, out);
	if (r == 0)
		return 0;
	colon = strrchr(listen, ':');
	if (r == -EADDRNOTAVAIL && colon)
		return err_set(-EINVAL, "%s: '%.*s' is not an IPv4 address", key,
			       (int)(colon - listen), listen);
	if (r == -ERANGE)
		return err_set(-EINVAL, "%s: '%s': port must be a number in 0..65535 (0: the kernel picks)", key, listen);
	return err_set(-EINVAL, "%s: expected ADDR:PORT, got '%s'", key, listen);
}

struct prom_server {
	struct http_server *srv;
	prom_text_fn text;
	prom_health_fn health;
	void *ud;
};

static enum MHD_Result serve(void *cls, struct MHD_Connection *conn, const char *url,
			     const char *method, const char *version, const char *upload_data,
			     size_t *upload_data_size, void **con_cls)
{
	struct prom_server *p = cls;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	unsigned status = MHD_HTTP_OK;
	char *body;

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)con_cls;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		body = strdup("method not allowed\n");
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
	} else if (strcmp(url, "/metrics") == 0) {
		body = p->text(p->ud);
	} else if (strcmp(url, "/healthz") == 0) {
		const char *bad = p->health ? p->health(p->ud) : NULL;

		if (bad && asprintf(&body, "%s\n", bad) < 0)
			body = NULL;
		else if (!bad)
			body = strdup("ok\n");
		if (bad)
			status = MHD_HTTP_SERVICE_UNAVAILABLE;
	} else {
		body = strdup("not found\n");
		status = MHD_HTTP_NOT_FOUND;
	}
	if (!body)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

int prom_serve(const char *key, const char *listen, prom_text_fn text, prom_health_fn health,
	       void *ud, struct prom_server **out)
{
	struct sockaddr_in sa;
	struct prom_server *p;
	int r = prom_listen_parse(key, listen, &sa);

	if (r < 0)
		return r;
	p = calloc(1, sizeof(*p));
	if (!p)
		return err_set(-ENOMEM, "out of memory");
	p->text = text;
	p->health = health;
	p->ud = ud;
	r = http_server_start(&(struct http_server_conf){
				      .addr = &sa,
				      .handler = serve,
				      .handler_cls = p,
				      .error_log = true,
				      .conn_limit = 64,
				      .conn_timeout_s = 10,
			      },
			      &p->srv);
	if (r < 0) {
		free(p);
		if (r == -ENOMEM)
			return r;
		return err_set(-EADDRINUSE, "%s: cannot listen on %s (address in use or not "
					    "this machine's?)", key, listen);
	}
	log_info("metrics listening addr=%s port=%d", listen, http_server_port(p->srv));
	*out = p;
	return 0;
}

int prom_port(const struct prom_server *s)
{
	return http_server_port(s->srv);
}

void prom_stop(struct prom_server *s)
{
	if (!s)
		return;
	http_server_stop(s->srv);
	free(s);
}
