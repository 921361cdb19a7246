/*
 * The metadata service over HTTP/1.1: libmicrohttpd (started by core's
 * http_server_start) with its own epoll threads (a pool of THREADS),
 * keep-alive by default. Each request is
 * handed to md_service_handle(); this file only translates.
 */
#define LOG_TAG "metadata"
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

#include "core/http.h"
#include "metadata/metadata_priv.h"

/* MHD reads a request head into this much memory at most: beyond it,
 * MHD itself answers 414 or 431. Our own caps (MD_URL_MAX, MD_HEADERS_MAX)
 * are lower and apply first. */
#define HTTP_CONN_MEMORY (32 * 1024)

struct md_http {
	struct http_server *srv;
	struct md_service *svc;
};

struct headers {
	struct md_header h[MD_HEADER_COUNT_MAX + 1];
	size_t n;
};

static enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key,
			       const char *value)
{
	struct headers *hs = cls;

	(void)kind;
	if (hs->n < ARRAY_SIZE(hs->h))
		hs->h[hs->n] = (struct md_header){ key, value };
	hs->n++; /* counts beyond the array too: the service refuses > max */
	return MHD_YES;
}

/* Per-request state for requests that may carry a body (PUT ...). */
struct req_state {
	size_t body;
};

static enum MHD_Result answer(struct md_http *h, struct MHD_Connection *c, const char *url,
			      const char *method, size_t body_len)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	char src[INET6_ADDRSTRLEN] = "";
	struct headers hs = { .n = 0 };
	struct MHD_Response *resp;
	struct md_reply rep;
	enum MHD_Result ret;
	char num[24];

	if (ci && ci->client_addr) {
		const struct sockaddr *sa = ci->client_addr;

		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
				  src, sizeof(src));
	}
	MHD_get_connection_values(c, MHD_HEADER_KIND, collect, &hs);
	struct md_request req = {
		.method = method,
		.url = url,
		.headers = hs.h,
		.n_headers = hs.n,
		.source = src[0] ? src : NULL,
		.body_len = body_len,
	};

	int64_t t0 = time_mono_ns();

	md_service_handle(h->svc, &req, &rep);
	md_metrics_request(method, url, rep.status, (double)(time_mono_ns() - t0) / 1e9);
	log_debug("request method=%s path=\"%.200s\" source=%s status=%d bytes=%zu", method, url,
		  src, rep.status, rep.len);
	resp = MHD_create_response_from_buffer(rep.len, rep.body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		md_reply_clear(&rep);
		return MHD_NO;
	}
	rep.body = NULL; /* MHD frees it */
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rep.content_type);
	if (rep.retry_after > 0) {
		snprintf(num, sizeof(num), "%ld", rep.retry_after);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, num);
	}
	if (rep.token_ttl > 0) {
		snprintf(num, sizeof(num), "%ld", rep.token_ttl);
		MHD_add_response_header(resp, "X-aws-ec2-metadata-token-ttl-seconds", num);
	}
	if (rep.allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rep.allow);
	ret = MHD_queue_response(c, (unsigned)rep.status, resp);
	MHD_destroy_response(resp);
	md_reply_clear(&rep);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	struct md_http *h = cls;
	struct req_state *st = *con_cls;

	(void)version;
	(void)upload_data;
	if (!st) {
		/* first call: the head is here; answering now would make MHD
		 * close the connection (the request is not complete yet), so
		 * wait for the final call, which keeps it alive */
		st = calloc(1, sizeof(*st));
		if (!st)
			return MHD_NO;
		*con_cls = st;
		return MHD_YES;
	}
	if (*upload_data_size) {
		st->body += *upload_data_size; /* bodies are refused: count only */
		*upload_data_size = 0;
		return MHD_YES;
	}
	return answer(h, c, url, method, st->body);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)c;
	(void)toe;
	free(*con_cls);
	*con_cls = NULL;
}

int md_http_start(struct md_service *svc, const char *listen, long threads,
		  struct md_http **out)
{
	struct sockaddr_in sa;
	struct md_http *h;
	int r = md_listen_parse(listen, &sa);

	if (r < 0)
		return r;
	h = calloc(1, sizeof(*h));
	if (!h)
		return err_set(-ENOMEM, "out of memory");
	h->svc = svc;
	r = http_server_start(&(struct http_server_conf){
				      .addr = &sa,
				      .handler = on_request,
				      .handler_cls = h,
				      .completed = on_completed,
				      .threads = (unsigned)threads,
				      .epoll = true,
				      .conn_limit = 4096,
				      .conn_timeout_s = 30,
				      .conn_memory = HTTP_CONN_MEMORY,
			      },
			      &h->srv);
	if (r < 0) {
		free(h);
		if (r == -ENOMEM)
			return r;
		return err_set(-EADDRNOTAVAIL, "metadata: cannot listen on %s (address in use or "
					       "not available?)", listen);
	}
	*out = h;
	return 0;
}

int md_http_port(const struct md_http *h)
{
	return http_server_port(h->srv);
}

void md_http_stop(struct md_http *h)
{
	if (!h)
		return;
	http_server_stop(h->srv);
	free(h);
}
