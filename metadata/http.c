/*
 * The metadata service over HTTP/1.1: libmicrohttpd (started by core's
 * http_server_start) with its own epoll threads (a pool of THREADS),
 * keep-alive by default. Each request is
 * handed to md_service_handle(); this file only translates, and guards
 * the edges a request cannot: connections per source address (MHD's
 * per-IP limit), a deadline for each request head (a slow client is cut
 * off by the reaper thread, however it drips bytes), percent-decoding
 * that cannot hide a NUL, and the connection's mark for the service.
 */
#define LOG_TAG "metadata"
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/http.h"
#include "metadata/metadata_priv.h"

/* MHD reads a request head into this much memory at most: beyond it,
 * MHD itself answers 414 or 431. Our own caps (MD_URL_MAX, MD_HEADERS_MAX)
 * are lower and apply first. */
#define HTTP_CONN_MEMORY (32 * 1024)

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* One open connection: what the reaper and the mark check need. */
struct conn {
	int fd;
	unsigned mark;       /* SO_MARK of the accepted socket (its SYN's) */
	int64_t deadline_ms; /* the head must be in by then; 0: in a request */
	struct conn *prev, *next;
};

struct md_http {
	struct http_server *srv;
	struct md_service *svc;
	int64_t header_timeout_ms;
	pthread_mutex_t lock; /* the connection list */
	struct conn *conns;
	pthread_t reaper;
	bool reaper_running, stopping;
	pthread_cond_t wake;
	unsigned long cut;    /* connections closed for a late head */
};

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct md_http *h = cls;
	struct conn *k = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		socklen_t sl = sizeof(unsigned);

		k = calloc(1, sizeof(*k));
		if (!k)
			return; /* no deadline and mark 0 (refused if marks are on) */
		k->fd = ci ? ci->connect_fd : -1;
		if (k->fd < 0 || getsockopt(k->fd, SOL_SOCKET, SO_MARK, &k->mark, &sl) < 0)
			k->mark = 0;
		pthread_mutex_lock(&h->lock);
		k->deadline_ms = h->header_timeout_ms ? time_mono_ms() + h->header_timeout_ms : 0;
		k->next = h->conns;
		if (h->conns)
			h->conns->prev = k;
		h->conns = k;
		pthread_mutex_unlock(&h->lock);
		*socket_context = k;
	} else if (code == MHD_CONNECTION_NOTIFY_CLOSED && k) {
		pthread_mutex_lock(&h->lock);
		if (k->prev)
			k->prev->next = k->next;
		else
			h->conns = k->next;
		if (k->next)
			k->next->prev = k->prev;
		pthread_mutex_unlock(&h->lock);
		free(k);
		*socket_context = NULL;
	}
}

static struct conn *conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

static void set_deadline(struct md_http *h, struct MHD_Connection *c, bool head_in)
{
	struct conn *k = conn_of(c);

	if (!k || !h->header_timeout_ms)
		return;
	pthread_mutex_lock(&h->lock);
	k->deadline_ms = head_in ? 0 : time_mono_ms() + h->header_timeout_ms;
	pthread_mutex_unlock(&h->lock);
}

/* Cut off connections whose head is late: shutdown() makes MHD see the end
 * of the stream and close the connection in its own thread. */
static void *reaper(void *arg)
{
	struct md_http *h = arg;

	pthread_mutex_lock(&h->lock);
	while (!h->stopping) {
		struct timespec ts;
		int64_t now = time_mono_ms();

		for (struct conn *k = h->conns; k; k = k->next) {
			if (k->deadline_ms && now >= k->deadline_ms && k->fd >= 0) {
				shutdown(k->fd, SHUT_RDWR);
				k->deadline_ms = 0;
				h->cut++;
				log_debug("connection closed: no request head within %lldms",
					  (long long)h->header_timeout_ms);
			}
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&h->wake, &h->lock, &ts);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

/*
 * Percent-decoding in place, as MHD's, except that an encoded NUL becomes
 * DEL: a "%00" must not end the path early ("/latest/meta-data%00.json"
 * read as "/latest/meta-data"); md_service_handle refuses DEL and every
 * other control character with 404.
 */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
	char *w = s;

	(void)cls;
	(void)c;
	for (const char *r = s; *r; r++) {
		int hi, lo;

		if (*r == '%' && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0) {
			*w++ = (char)(hi << 4 | lo) ? (char)(hi << 4 | lo) : 0x7f;
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}

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
	struct conn *k = conn_of(c);
	struct md_request req = {
		.method = method,
		.url = url,
		.headers = hs.h,
		.n_headers = hs.n,
		.source = src[0] ? src : NULL,
		.mark = k ? k->mark : 0,
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
		set_deadline(h, c, true); /* the head is in: no deadline while serving */
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
	(void)toe;
	set_deadline(cls, c, false); /* keep-alive: the next head has the same deadline */
	free(*con_cls);
	*con_cls = NULL;
}

int md_http_start(struct md_service *svc, const char *listen, const struct md_config *cfg,
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
	h->header_timeout_ms = cfg->header_timeout_ms;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->wake, NULL);
	if (h->header_timeout_ms) {
		r = pthread_create(&h->reaper, NULL, reaper, h);
		if (r != 0) {
			md_http_stop(h);
			return err_set(-r, "metadata: reaper thread: %s", strerror(r));
		}
		h->reaper_running = true;
	}
	r = http_server_start(&(struct http_server_conf){
				      .addr = &sa,
				      .handler = on_request,
				      .handler_cls = h,
				      .completed = on_completed,
				      .completed_cls = h,
				      .notify_connection = on_connection,
				      .notify_connection_cls = h,
				      .unescape = unescape,
				      .per_ip_limit = (unsigned)cfg->per_source_limit,
				      .threads = (unsigned)(cfg->threads > 0 ? cfg->threads : 1),
				      .epoll = true,
				      .conn_limit = 4096,
				      .conn_timeout_s = 30,
				      .conn_memory = HTTP_CONN_MEMORY,
			      },
			      &h->srv);
	if (r < 0) {
		md_http_stop(h);
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
	http_server_stop(h->srv); /* closes every connection: the list empties */
	if (h->reaper_running) {
		pthread_mutex_lock(&h->lock);
		h->stopping = true;
		pthread_cond_signal(&h->wake);
		pthread_mutex_unlock(&h->lock);
		pthread_join(h->reaper, NULL);
	}
	pthread_cond_destroy(&h->wake);
	pthread_mutex_destroy(&h->lock);
	free(h);
}
