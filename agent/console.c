/*
 * The console proxy: a thread of the agent (it shares the token table the
 * agent's command handler fills, and the agent's libvirt connection).
 *
 * Tokens: the scheduler mints a token for one instance of one project
 * (instance.console with attach, signed, the token sealed to this host);
 * the agent remembers it for console.token_ttl and answers the requester,
 * sealed, with the token and this proxy's address. A token opens one
 * session once: unknown, reused, expired and other-instance tokens are
 * refused, logged and counted (stratus_console_refused_total).
 *
 * Connections: one thread each (at most CONSOLE_MAX_SESSIONS). The first
 * request is stratusctl's "CONSOLE <uuid> <token>" line (then raw bytes both
 * ways) or HTTP: the page, its two xterm.js files, or a WebSocket upgrade
 * on /ws (then frames). The guest side is vmm_console_open's descriptor.
 */
#define LOG_TAG "console"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent_priv.h"
#include "agent/console.h"
#include "core/prom.h"

#define CONSOLE_MAX_TOKENS 1024
#define CONSOLE_MAX_SESSIONS 32
#define CONSOLE_KEEP_MS (10 * 60 * 1000) /* a used or expired token is told apart this long */
#define CONSOLE_REQ_TIMEOUT_S 10
#define CONSOLE_WS_MAX_FRAME 65536
#define CONSOLE_ASSET_MAX (4u << 20)
#define RELAY_OUT (10 + 16384) /* a frame header, then guest output */

const char *const agent_console_refusal_names[] = {
	[CONSOLE_REFUSED_UNKNOWN] = "unknown", [CONSOLE_REFUSED_REUSED] = "reused",
	[CONSOLE_REFUSED_EXPIRED] = "expired", [CONSOLE_REFUSED_INSTANCE] = "instance",
	[CONSOLE_REFUSED_PROJECT] = "project", [CONSOLE_REFUSED_MALFORMED] = "malformed",
	[CONSOLE_REFUSED_LAST] = NULL,
};

struct token {
	char token[AGENT_CONSOLE_TOKEN_LEN + 1];
	char uuid[UUID_STRLEN];
	char project[64];
	int64_t expires_ms;
	bool used;
};

struct agent_console {
	pthread_mutex_t lock;
	struct token tokens[CONSOLE_MAX_TOKENS];
	size_t n;
	int64_t ttl_ms;
	struct agent_console_stats st;
	/* the proxy */
	struct agent *a;
	int listen_fd, wake[2];
	pthread_t thread;
	bool running;
	int session_fds[CONSOLE_MAX_SESSIONS]; /* -1: free slot */
	pthread_cond_t idle;
};

struct agent_console *agent_console_tokens_new(int64_t ttl_ms)
{
	struct agent_console *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->idle, NULL);
	p->ttl_ms = ttl_ms;
	p->listen_fd = p->wake[0] = p->wake[1] = -1;
	for (int i = 0; i < CONSOLE_MAX_SESSIONS; i++)
		p->session_fds[i] = -1;
	return p;
}

/* Forget tokens past their keep time; under p->lock. */
static void prune(struct agent_console *p, int64_t now)
{
	size_t w = 0;

	for (size_t i = 0; i < p->n; i++)
		if (p->tokens[i].expires_ms + CONSOLE_KEEP_MS > now)
			p->tokens[w++] = p->tokens[i];
	p->n = w;
}

int agent_console_token_add(struct agent_console *p, const char *token, const char *uuid,
			    const char *project)
{
	struct token *t;
	size_t len = token ? strlen(token) : 0;

	if (len != AGENT_CONSOLE_TOKEN_LEN || strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij"
							   "klmnopqrstuvwxyz0123456789-_") != len)
		return err_set(-EINVAL, "instance %s: console token: expected %d base64url "
					"characters", uuid, AGENT_CONSOLE_TOKEN_LEN);
	pthread_mutex_lock(&p->lock);
	prune(p, time_mono_ms());
	if (p->n == CONSOLE_MAX_TOKENS) { /* full: the oldest goes */
		memmove(p->tokens, p->tokens + 1, (p->n - 1) * sizeof(*p->tokens));
		p->n--;
	}
	t = &p->tokens[p->n++];
	memset(t, 0, sizeof(*t));
	memcpy(t->token, token, len + 1);
	snprintf(t->uuid, sizeof(t->uuid), "%s", uuid);
	snprintf(t->project, sizeof(t->project), "%s", project ? project : "");
	t->expires_ms = time_mono_ms() + p->ttl_ms;
	p->st.tokens_issued++;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

static int refuse(struct agent_console *p, const char *uuid, enum agent_console_refusal why,
		  enum agent_console_refusal *whyp, const char *text)
{
	p->st.refused[why]++;
	*whyp = why;
	log_warn("console token refused instance=%s reason=%s", uuid,
		 agent_console_refusal_names[why]);
	return err_set(-EACCES, "instance %s: console token refused: %s", uuid, text);
}

int agent_console_token_use(struct agent_console *p, const char *token, const char *uuid,
			    int64_t now_ms, char *project, size_t plen,
			    enum agent_console_refusal *why)
{
	struct token *t = NULL;
	size_t len = strlen(token);
	int r = 0;

	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->n && len == AGENT_CONSOLE_TOKEN_LEN; i++)
		if (CRYPTO_memcmp(p->tokens[i].token, token, len) == 0)
			t = &p->tokens[i];
	if (!t)
		r = refuse(p, uuid, CONSOLE_REFUSED_UNKNOWN, why, "no such token");
	else if (t->used)
		r = refuse(p, uuid, CONSOLE_REFUSED_REUSED, why, "already used (tokens open one "
								 "session)");
	else if ((t->used = true, now_ms >= t->expires_ms))
		r = refuse(p, uuid, CONSOLE_REFUSED_EXPIRED, why, "expired");
	else if (strcmp(t->uuid, uuid) != 0)
		r = refuse(p, uuid, CONSOLE_REFUSED_INSTANCE, why, "issued for another instance");
	else
		snprintf(project, plen, "%s", t->project);
	pthread_mutex_unlock(&p->lock);
	return r;
}

void agent_console_refuse_malformed(struct agent_console *p)
{
	pthread_mutex_lock(&p->lock);
	p->st.refused[CONSOLE_REFUSED_MALFORMED]++;
	pthread_mutex_unlock(&p->lock);
	log_warn("console token refused reason=malformed");
}

void agent_console_stats(struct agent_console *p, struct agent_console_stats *out)
{
	pthread_mutex_lock(&p->lock);
	*out = p->st;
	pthread_mutex_unlock(&p->lock);
}

json_t *agent_console_grant(struct agent *a, const char *uuid, const json_t *body)
{
	const struct agent_console_config *cc = &a->cfg->console;
	const char *token = json_string_value(json_object_get(body, "token"));
	const char *project = json_string_value(json_object_get(body, "project"));
	const char *addr = cc->advertise && *cc->advertise ? cc->advertise : cc->listen;
	struct store_instance row;
	char url[512];
	json_t *o;

	if (!a->console->running) {
		err_set(-ENOTSUP, "instance %s: host %s runs no console proxy (agent.console.listen "
			"is not set)", uuid, a->cfg->host);
		return NULL;
	}
	if (store_instance_get(a->store, uuid, &row) < 0) {
		err_set(-ENOENT, "instance %s: not on host %s", uuid, a->cfg->host);
		return NULL;
	}
	if (!project || strcmp(project, row.project) != 0) {
		err_set(-EACCES, "instance %s: console: the instance is not in project %s", uuid,
			project ? project : "(none)");
		store_instance_free(&row);
		return NULL;
	}
	store_instance_free(&row);
	if (agent_console_token_add(a->console, token, uuid, project) < 0)
		return NULL;
	snprintf(url, sizeof(url), "http://%s/console?instance=%s&token=%s", addr, uuid, token);
	o = json_pack("{s:s, s:s, s:s, s:I, s:s}", "uuid", uuid, "address", addr, "token", token,
		      "expires_in", (json_int_t)(a->console->ttl_ms / 1000), "url", url);
	if (!o)
		err_set(-ENOMEM, "out of memory");
	else
		log_info("console token issued instance=%s project=%s ttl_ms=%lld", uuid, project,
			 (long long)a->console->ttl_ms);
	return o;
}

/* ---- a session ------------------------------------------------------------ */

static int send_all(int fd, const void *buf, size_t n)
{
	const char *b = buf;

	while (n > 0) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static void http_answer(int fd, int status, const char *type, const void *body, size_t len)
{
	static const struct { int code; const char *text; } reasons[] = {
		{ 200, "OK" }, { 400, "Bad Request" }, { 403, "Forbidden" }, { 404, "Not Found" },
		{ 405, "Method Not Allowed" }, { 426, "Upgrade Required" },
		{ 431, "Request Header Fields Too Large" }, { 503, "Service Unavailable" },
	};
	const char *reason = "Error";
	char hdr[512];
	int n;

	for (size_t i = 0; i < ARRAY_SIZE(reasons); i++)
		if (reasons[i].code == status)
			reason = reasons[i].text;
	n = snprintf(hdr, sizeof(hdr),
		     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		     "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
		     "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:\r\n"
		     "Connection: close\r\n\r\n",
		     status, reason, type, len);
	if (n > 0 && (size_t)n < sizeof(hdr) && send_all(fd, hdr, (size_t)n) == 0 && len)
		send_all(fd, body, len);
}

static void http_error(int fd, int status, const char *msg)
{
	char body[600];
	int n = snprintf(body, sizeof(body), "%s\n", msg);

	struct timeval tv = { .tv_sec = 1 };
	char sink[512];

	http_answer(fd, status, "text/plain; charset=utf-8", body,
		    n > 0 && (size_t)n < sizeof(body) ? (size_t)n : 0);
	/* read what the client still sends (a closed socket with unread bytes
	 * resets, and the client may lose the answer), for a bounded time */
	shutdown(fd, SHUT_WR);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (int i = 0; i < 128 && recv(fd, sink, sizeof(sink), 0) > 0; i++)
		;
}

static const char page[] =
	"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Stratus console</title>\n"
	"<link rel=\"stylesheet\" href=\"/xterm.css\">\n"
	"<style>body{margin:0;background:#000}#status{color:#aaa;font:12px monospace}</style>\n"
	"</head><body><div id=\"status\">connecting</div><div id=\"term\"></div>\n"
	"<script src=\"/xterm.js\"></script>\n<script src=\"/console.js\"></script>\n"
	"</body></html>\n";

/* The page's script: a file, so the page's CSP needs no inline script. */
static const char page_js[] =
	"(function(){\n"
	"var q=new URLSearchParams(location.search),st=document.getElementById('status');\n"
	"var term=new Terminal({convertEol:false});term.open(document.getElementById('term'));\n"
	"window.stratusTerm=term;\n"
	"var ws=new WebSocket((location.protocol==='https:'?'wss://':'ws://')+location.host+\n"
	" '/ws?instance='+encodeURIComponent(q.get('instance')||'')+'&token='+\n"
	" encodeURIComponent(q.get('token')||''));\n"
	"ws.binaryType='arraybuffer';\n"
	"ws.onopen=function(){st.textContent='connected';term.focus();};\n"
	"ws.onmessage=function(e){term.write(new Uint8Array(e.data));};\n"
	"ws.onclose=function(e){st.textContent='closed '+e.code+' '+e.reason;};\n"
	"term.onData(function(d){if(ws.readyState===1)ws.send(new TextEncoder().encode(d));});\n"
	"})();\n";

static void serve_asset(struct agent_console *p, int fd, const char *name)
{
	const char *dir = p->a->cfg->console.web_dir;
	_cleanup_free_ char *path = NULL, *body = NULL;
	size_t len = 0;
	char msg[300];

	if (strcmp(name, "console.js") == 0)
		return http_answer(fd, 200, "text/javascript", page_js, strlen(page_js));
	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return http_error(fd, 503, "out of memory");
	if (read_file(path, CONSOLE_ASSET_MAX, &body, &len) < 0) {
		snprintf(msg, sizeof(msg), "%s: not installed (agent.console.web_dir %s; "
			 "tools/vendor-xterm.sh vendors it)", name, dir);
		return http_error(fd, 404, msg);
	}
	http_answer(fd, 200, strcmp(name, "xterm.css") == 0 ? "text/css" : "text/javascript", body,
		    len);
}

/* The token, then the instance's project in this host's store. */
static int check_token(struct agent_console *p, const struct agent_console_req *rq)
{
	struct store_instance row;
	enum agent_console_refusal why;
	char project[64];
	int r = agent_console_token_use(p, rq->token, rq->instance, time_mono_ms(), project,
					sizeof(project), &why);

	if (r < 0)
		return r;
	if (store_instance_get(p->a->store, rq->instance, &row) < 0) {
		pthread_mutex_lock(&p->lock);
		r = refuse(p, rq->instance, CONSOLE_REFUSED_INSTANCE, &why, "not on this host");
		pthread_mutex_unlock(&p->lock);
		return r;
	}
	if (strcmp(row.project, project) != 0) {
		pthread_mutex_lock(&p->lock);
		r = refuse(p, rq->instance, CONSOLE_REFUSED_PROJECT, &why,
			   "issued for another project");
		pthread_mutex_unlock(&p->lock);
	}
	store_instance_free(&row);
	return r;
}

/* Bytes from the client: raw, or frames (ping answered, close ends). */
static int from_client(int cfd, int gfd, bool ws, unsigned char *buf, size_t *have,
		       struct agent_ws_state *wst)
{
	ssize_t n = recv(cfd, buf + *have, CONSOLE_WS_MAX_FRAME + 14 - *have, 0);
	size_t off = 0;

	if (n <= 0)
		return -1;
	if (!ws)
		return send_all(gfd, buf, (size_t)n);
	*have += (size_t)n;
	for (;;) {
		struct agent_ws_frame f;
		unsigned char hdr[10];
		int used = agent_ws_parse(wst, buf + off, *have - off, CONSOLE_WS_MAX_FRAME, true, &f);

		if (used < 0) {
			unsigned char close[4] = { 0x88, 2, 0x03, used == -EMSGSIZE ? 0xf1 : 0xea };

			log_info("console websocket closed: %s", err_msg());
			send_all(cfd, close, sizeof(close)); /* 1009 too big, 1002 protocol */
			return -1;
		}
		if (used == 0)
			break;
		off += (size_t)used;
		if (f.opcode == WS_OP_CLOSE) {
			size_t hl = agent_ws_header(hdr, WS_OP_CLOSE, f.len);

			send_all(cfd, hdr, hl);
			send_all(cfd, f.payload, f.len);
			return -1;
		}
		if (f.opcode == WS_OP_PING) {
			size_t hl = agent_ws_header(hdr, WS_OP_PONG, f.len);

			if (send_all(cfd, hdr, hl) < 0 || send_all(cfd, f.payload, f.len) < 0)
				return -1;
		} else if (f.opcode != WS_OP_PONG && f.len && send_all(gfd, f.payload, f.len) < 0) {
			return -1;
		}
	}
	memmove(buf, buf + off, *have - off);
	*have -= off;
	return 0;
}

static void relay(int cfd, int gfd, bool ws)
{
	_cleanup_free_ unsigned char *in = malloc(CONSOLE_WS_MAX_FRAME + 14);
	_cleanup_free_ unsigned char *out = malloc(RELAY_OUT);
	struct agent_ws_state wst = { 0 };
	size_t have = 0;

	if (!in || !out)
		return;
	for (;;) {
		struct pollfd pf[2] = { { .fd = cfd, .events = POLLIN }, { .fd = gfd, .events = POLLIN } };

		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (pf[1].revents) {
			size_t hl = ws ? 10 : 0;
			ssize_t n = recv(gfd, out + hl, RELAY_OUT - hl, 0);

			if (n <= 0)
				return; /* the console closed */
			if (ws) { /* header right before the payload */
				unsigned char hdr[10];
				size_t h = agent_ws_header(hdr, WS_OP_BINARY, (size_t)n);

				memcpy(out + hl - h, hdr, h);
				if (send_all(cfd, out + hl - h, h + (size_t)n) < 0)
					return;
			} else if (send_all(cfd, out, (size_t)n) < 0) {
				return;
			}
		}
		if (pf[0].revents && from_client(cfd, gfd, ws, in, &have, &wst) < 0)
			return;
	}
}

/* Read the first request: its bytes in buf, *n of them. */
static int read_request(int fd, char *buf, size_t cap, size_t *n, struct agent_console_req *rq,
			int *status)
{
	int64_t until = time_mono_ms() + CONSOLE_REQ_TIMEOUT_S * 1000;
	size_t have = 0;

	for (;;) {
		ssize_t got = recv(fd, buf + have, cap - have, 0);
		int r;

		/* a byte now and then does not keep a slot: the whole request
		 * has CONSOLE_REQ_TIMEOUT_S */
		if (got <= 0 || time_mono_ms() > until)
			return -1;
		have += (size_t)got;
		r = agent_console_req_parse(buf, have, rq, status);
		if (r != 0) {
			*n = have;
			return r;
		}
		if (have == cap)
			return -1;
	}
}

static void session(struct agent_console *p, int fd)
{
	_cleanup_free_ char *buf = malloc(AGENT_CONSOLE_REQ_MAX);
	struct agent_console_req rq;
	struct timeval tv = { .tv_sec = CONSOLE_REQ_TIMEOUT_S };
	int status = 0, gfd = -1, one = 1, r;
	size_t n = 0;
	char msg[600];

	if (!buf)
		return;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	r = read_request(fd, buf, AGENT_CONSOLE_REQ_MAX, &n, &rq, &status);
	if (r < 0 && r != -1) {
		snprintf(msg, sizeof(msg), "%s", err_msg());
		if (r == -EBADMSG)
			agent_console_refuse_malformed(p);
		if (status)
			http_error(fd, status, msg);
		else if (send_all(fd, "ERR ", 4) == 0 && send_all(fd, msg, strlen(msg)) == 0)
			send_all(fd, "\n", 1);
		return;
	}
	if (r <= 0)
		return;
	if (rq.kind == CONSOLE_REQ_PAGE)
		return http_answer(fd, 200, "text/html; charset=utf-8", page, strlen(page));
	if (rq.kind == CONSOLE_REQ_ASSET)
		return serve_asset(p, fd, rq.asset);
	tv.tv_sec = 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	r = check_token(p, &rq);
	if (r == 0 && (r = vmm_console_open(p->a->conn, rq.instance, &gfd)) < 0)
		log_warn("console open failed instance=%s: %s", rq.instance, err_msg());
	if (r < 0) {
		snprintf(msg, sizeof(msg), "%s", err_msg());
		if (rq.kind == CONSOLE_REQ_WEBSOCKET)
			http_error(fd, 403, msg);
		else if (send_all(fd, "ERR ", 4) == 0 && send_all(fd, msg, strlen(msg)) == 0)
			send_all(fd, "\n", 1);
		return;
	}
	if (rq.kind == CONSOLE_REQ_WEBSOCKET) {
		char accept[32], hdr[256];
		int hn;

		if (agent_ws_accept(rq.ws_key, accept, sizeof(accept)) < 0) {
			http_error(fd, 400, err_msg());
			goto out;
		}
		hn = snprintf(hdr, sizeof(hdr),
			      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
		if (hn < 0 || (size_t)hn >= sizeof(hdr) || send_all(fd, hdr, (size_t)hn) < 0)
			goto out;
	} else {
		snprintf(msg, sizeof(msg), "OK %s\n", rq.instance);
		if (send_all(fd, msg, strlen(msg)) < 0)
			goto out;
	}
	log_info("console session opened instance=%s via=%s", rq.instance,
		 rq.kind == CONSOLE_REQ_WEBSOCKET ? "websocket" : "raw");
	pthread_mutex_lock(&p->lock);
	p->st.sessions++;
	pthread_mutex_unlock(&p->lock);
	/* bytes that came with the request line belong to the console */
	if (rq.kind == CONSOLE_REQ_RAW && (size_t)r < n)
		send_all(gfd, buf + r, n - (size_t)r);
	relay(fd, gfd, rq.kind == CONSOLE_REQ_WEBSOCKET);
	log_info("console session closed instance=%s", rq.instance);
out:
	close(gfd);
}

struct session_arg {
	struct agent_console *p;
	int slot;
};

static void *session_main(void *arg)
{
	struct session_arg sa = *(struct session_arg *)arg;
	struct agent_console *p = sa.p;
	int fd;

	free(arg);
	pthread_mutex_lock(&p->lock);
	fd = p->session_fds[sa.slot];
	pthread_mutex_unlock(&p->lock);
	session(p, fd);
	pthread_mutex_lock(&p->lock);
	close(p->session_fds[sa.slot]);
	p->session_fds[sa.slot] = -1;
	p->st.sessions_active--;
	pthread_cond_broadcast(&p->idle);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void accept_one(struct agent_console *p)
{
	int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC), slot = -1;
	struct session_arg *sa;
	pthread_attr_t at;
	pthread_t t;

	if (fd < 0)
		return;
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < CONSOLE_MAX_SESSIONS && slot < 0; i++)
		if (p->session_fds[i] < 0)
			slot = i;
	if (slot >= 0) {
		p->session_fds[slot] = fd;
		p->st.sessions_active++;
	}
	pthread_mutex_unlock(&p->lock);
	if (slot < 0) {
		log_warn("console proxy: %d sessions open, connection refused", CONSOLE_MAX_SESSIONS);
		send_all(fd, "ERR console proxy busy\n", 23);
		close(fd);
		return;
	}
	sa = malloc(sizeof(*sa));
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (!sa || (sa->p = p, sa->slot = slot, pthread_create(&t, &at, session_main, sa)) != 0) {
		free(sa);
		pthread_mutex_lock(&p->lock);
		close(fd);
		p->session_fds[slot] = -1;
		p->st.sessions_active--;
		pthread_mutex_unlock(&p->lock);
	}
	pthread_attr_destroy(&at);
}

static void *accept_main(void *arg)
{
	struct agent_console *p = arg;

	for (;;) {
		struct pollfd pf[2] = { { .fd = p->listen_fd, .events = POLLIN },
					{ .fd = p->wake[0], .events = POLLIN } };

		if (poll(pf, 2, -1) < 0 && errno != EINTR)
			break;
		if (pf[1].revents)
			break;
		if (pf[0].revents)
			accept_one(p);
	}
	return NULL;
}

int agent_console_start(struct agent *a)
{
	struct agent_console *p = a->console;
	const char *l = a->cfg->console.listen;
	struct sockaddr_in sa;
	int one = 1, r;

	if (!l || !*l)
		return 0;
	if ((r = prom_listen_parse("agent.console.listen", l, &sa)) < 0)
		return r;
	p->a = a;
	p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->listen_fd < 0)
		return err_sys(-errno, "agent.console.listen %s: socket", l);
	setsockopt(p->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(p->listen_fd, 64) < 0)
		return err_sys(-errno, "agent.console.listen %s: cannot listen", l);
	if (pipe2(p->wake, O_CLOEXEC) < 0)
		return err_sys(-errno, "console proxy: pipe");
	if (pthread_create(&p->thread, NULL, accept_main, p) != 0)
		return err_set(-EAGAIN, "console proxy: cannot start its thread");
	p->running = true;
	log_info("console proxy listening address=%s token_ttl_ms=%lld", l, (long long)p->ttl_ms);
	return 0;
}

void agent_console_free(struct agent_console *p)
{
	if (!p)
		return;
	if (p->running) {
		if (write(p->wake[1], "x", 1) < 0)
			log_warn("console proxy: cannot wake its thread");
		pthread_join(p->thread, NULL);
	}
	/* end the sessions: their threads see end of file and leave */
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < CONSOLE_MAX_SESSIONS; i++)
		if (p->session_fds[i] >= 0)
			shutdown(p->session_fds[i], SHUT_RDWR);
	while (p->st.sessions_active > 0)
		pthread_cond_wait(&p->idle, &p->lock);
	pthread_mutex_unlock(&p->lock);
	if (p->listen_fd >= 0)
		close(p->listen_fd);
	if (p->wake[0] >= 0)
		close(p->wake[0]);
	if (p->wake[1] >= 0)
		close(p->wake[1]);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->idle);
	free(p);
}
