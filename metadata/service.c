/*
 * The metadata API's request handling, without sockets: method, URL,
 * headers and the peer's address in; status, headers and body out
 * (md_service_handle). The HTTP layer (http.c) and the fuzz harness both
 * call it.
 *
 *   1. limits: URL length (414), header bytes and count (431), methods (405);
 *   2. /healthz;
 *   3. who asks: the source address (direct mode) or X-Instance-ID with its
 *      HMAC signature (proxied mode, as Nova); unknown -> 404 that says
 *      nothing more;
 *   4. the instance's rate limit (429 + Retry-After);
 *   5. IMDSv2: PUT /latest/api/token; X-aws-ec2-metadata-token checked
 *      (an invalid token is always 401; `tokens: required` also refuses
 *      requests without one);
 *   6. the path: a document of the rendered tree, or a directory listing.
 */
#define LOG_TAG "metadata"
#include <errno.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "metadata/metadata_priv.h"

struct md_service {
	enum md_tokens tokens;
	bool proxy;
	unsigned port_mark;
	char *secret;
	long rate, burst;
	struct md_source *src;
	unsigned char key[MD_TOKEN_KEY_LEN];
};

/* ---- tokens and signatures --------------------------------------------- */

#define TOKEN_RAW_LEN (8 + 32)

static void token_mac(const unsigned char key[MD_TOKEN_KEY_LEN], const char *uuid,
		      const unsigned char exp[8], unsigned char mac[32])
{
	unsigned char msg[UUID_STRLEN + 8];
	size_t ul = strnlen(uuid, UUID_STRLEN - 1);
	unsigned int maclen = 32;

	memcpy(msg, uuid, ul);
	msg[ul] = '\0';
	memcpy(msg + ul + 1, exp, 8);
	HMAC(EVP_sha256(), key, MD_TOKEN_KEY_LEN, msg, ul + 1 + 8, mac, &maclen);
}

char *md_token_issue(const unsigned char key[MD_TOKEN_KEY_LEN], const char *uuid, long ttl,
		     int64_t now_s)
{
	unsigned char raw[TOKEN_RAW_LEN];
	uint64_t exp = (uint64_t)(now_s + ttl);

	for (int i = 0; i < 8; i++)
		raw[i] = (unsigned char)(exp >> (56 - 8 * i));
	token_mac(key, uuid, raw, raw + 8);
	return base64_encode(raw, sizeof(raw));
}

int md_token_check(const unsigned char key[MD_TOKEN_KEY_LEN], const char *uuid,
		   const char *token, int64_t now_s)
{
	unsigned char *raw = NULL, mac[32];
	size_t len = 0;
	uint64_t exp = 0;
	int r = -EACCES;

	if (strlen(token) > 128 || base64_decode(token, TOKEN_RAW_LEN, &raw, &len) < 0)
		return -EACCES;
	if (len != TOKEN_RAW_LEN)
		goto out;
	for (int i = 0; i < 8; i++)
		exp = exp << 8 | raw[i];
	if (exp < (uint64_t)now_s)
		goto out;
	token_mac(key, uuid, raw, mac);
	if (CRYPTO_memcmp(mac, raw + 8, 32) == 0)
		r = 0;
out:
	free(raw);
	return r;
}

char *md_instance_id_signature(const char *secret, const char *id)
{
	unsigned char mac[32];
	unsigned int maclen = sizeof(mac);
	char *hex = malloc(65);

	if (!hex)
		return NULL;
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)id, strlen(id), mac,
	     &maclen);
	for (int i = 0; i < 32; i++) {
		hex[2 * i] = "0123456789abcdef"[mac[i] >> 4];
		hex[2 * i + 1] = "0123456789abcdef"[mac[i] & 15];
	}
	hex[64] = '\0';
	return hex;
}

/* ---- service ------------------------------------------------------------ */

int md_service_new(const struct md_config *cfg, struct md_source *src, struct md_service **out)
{
	struct md_service *svc;
	int r = md_config_check(cfg);

	if (r < 0)
		return r;
	svc = calloc(1, sizeof(*svc));
	if (!svc)
		return err_set(-ENOMEM, "out of memory");
	svc->tokens = cfg->tokens;
	svc->proxy = cfg->proxy;
	svc->port_mark = (unsigned)cfg->port_mark;
	svc->rate = cfg->rate_limit;
	svc->burst = cfg->rate_burst > 0 ? cfg->rate_burst : 1;
	svc->src = src;
	if (cfg->shared_secret && !(svc->secret = strdup(cfg->shared_secret))) {
		free(svc);
		return err_set(-ENOMEM, "out of memory");
	}
	if (getrandom(svc->key, sizeof(svc->key), 0) != (ssize_t)sizeof(svc->key)) {
		r = err_sys(-errno, "metadata: getrandom");
		free(svc->secret);
		free(svc);
		return r;
	}
	*out = svc;
	return 0;
}

void md_service_free(struct md_service *svc)
{
	if (!svc)
		return;
	if (svc->secret) {
		OPENSSL_cleanse(svc->secret, strlen(svc->secret));
		free(svc->secret);
	}
	OPENSSL_cleanse(svc->key, sizeof(svc->key));
	free(svc);
}

void md_reply_clear(struct md_reply *r)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	default: return "Internal Server Error";
	}
}

/* An error reply: the status and its reason, nothing else. */
static void fail(struct md_reply *rep, int status)
{
	const char *why = reason(status);
	size_t n = strlen(why);

	free(rep->body);
	rep->status = status;
	rep->content_type = "text/plain";
	rep->body = malloc(n + 2);
	if (rep->body) {
		memcpy(rep->body, why, n);
		memcpy(rep->body + n, "\n", 2);
		rep->len = n + 1;
	} else {
		rep->len = 0;
	}
}

static void ok(struct md_reply *rep, char *body, size_t len, const char *type)
{
	rep->status = 200;
	rep->body = body;
	rep->len = len;
	rep->content_type = type;
}

static const char *header(const struct md_request *req, const char *name)
{
	for (size_t i = 0; i < req->n_headers; i++)
		if (req->headers[i].name && strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value ? req->headers[i].value : "";
	return NULL;
}

/*
 * "/latest//meta-data/" -> "latest/meta-data", *dir = true. Components "."
 * and ".." and control characters are refused (-EINVAL).
 */
static int normalize(const char *url, char **out, bool *dir)
{
	size_t n = strlen(url), o = 0;
	char *p = malloc(n + 1);
	const char *c = url;

	if (!p)
		return -ENOMEM;
	if (*c != '/') {
		free(p);
		return -EINVAL;
	}
	*dir = n > 1 && url[n - 1] == '/';
	while (*c) {
		const char *s;
		size_t l;

		while (*c == '/')
			c++;
		s = c;
		while (*c && *c != '/') {
			if ((unsigned char)*c < 0x20 || *c == 0x7f) {
				free(p);
				return -EINVAL;
			}
			c++;
		}
		l = (size_t)(c - s);
		if (!l)
			continue;
		if ((l == 1 && s[0] == '.') || (l == 2 && s[0] == '.' && s[1] == '.')) {
			free(p);
			return -EINVAL;
		}
		if (o)
			p[o++] = '/';
		memcpy(p + o, s, l);
		o += l;
	}
	p[o] = '\0';
	*out = p;
	return 0;
}

/* Take one request from the instance's bucket; 0 or seconds to wait. */
static long rate_take(const struct md_service *svc, struct md_instance *in)
{
	int64_t now = time_mono_ns();
	double t;

	if (svc->rate <= 0)
		return 0;
	if (in->tokens < 0) {
		in->tokens = (double)svc->burst;
		in->refill_ns = now;
	}
	t = in->tokens + (double)(now - in->refill_ns) * 1e-9 * (double)svc->rate;
	if (t > (double)svc->burst)
		t = (double)svc->burst;
	in->refill_ns = now;
	if (t >= 1.0) {
		in->tokens = t - 1.0;
		return 0;
	}
	in->tokens = t;
	long wait = (long)ceil((1.0 - t) / (double)svc->rate);

	return wait < 1 ? 1 : wait;
}

static int identify(struct md_service *svc, const struct md_request *req,
		    struct md_instance **in)
{
	if (svc->proxy) {
		const char *id = header(req, "X-Instance-ID");
		const char *sig = header(req, "X-Instance-ID-Signature");
		char *want;
		int good;

		if (!id || !sig || !*id)
			return 400;
		want = md_instance_id_signature(svc->secret, id);
		if (!want)
			return 500;
		good = strlen(sig) == 64 && CRYPTO_memcmp(want, sig, 64) == 0;
		free(want);
		if (!good)
			return 403;
		if (strlen(id) >= UUID_STRLEN)
			return 404;
		return svc->src->ops->lookup_id(svc->src->impl, id, in) == 0 ? 0 : 404;
	}
	if (!req->source)
		return 404;
	/* the port filters pass a guest's frames only from its own MAC and
	 * address, and mark them: an unmarked connection came from no instance
	 * port (a host on the bridge, another interface), whatever its address */
	if (svc->port_mark && req->mark != svc->port_mark) {
		log_warn("request refused source=%s mark=%#x: not from an instance port (want "
			 "mark %#x)", req->source, req->mark, svc->port_mark);
		return 404;
	}
	if (svc->src->ops->lookup_addr(svc->src->impl, req->source, in) < 0) {
		log_info("request refused source=%s: no instance has this address", req->source);
		return 404;
	}
	return 0;
}

static bool is_ec2_version(const char *v, size_t len)
{
	for (size_t i = 0; md_ec2_versions[i]; i++)
		if (strlen(md_ec2_versions[i]) == len && memcmp(md_ec2_versions[i], v, len) == 0)
			return true;
	return false;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The tree path for an API path ("" = root listing), or NULL: not ours. */
static char *tree_path(const char *path)
{
	const char *slash = strchr(path, '/');
	size_t first = slash ? (size_t)(slash - path) : strlen(path);
	char *t = NULL;

	if (!*path)
		return strdup("ec2");
	if (first == 9 && memcmp(path, "openstack", 9) == 0)
		return strdup(path);
	if (is_ec2_version(path, first) && asprintf(&t, "ec2/%s", path) >= 0)
		return t;
	return NULL;
}

static void serve(const struct md_tree *tree, const char *path, bool dir, struct md_reply *rep)
{
	char *tp = tree_path(path), *body = NULL;
	const struct md_file *f;
	size_t len = 0;

	if (!tp) {
		fail(rep, 404);
		return;
	}
	if (!dir && (f = md_tree_find(tree, tp, MD_VIEW_HTTP)) != NULL) {
		body = malloc(f->len + 1);
		if (!body) {
			free(tp);
			fail(rep, 500);
			return;
		}
		memcpy(body, f->data, f->len + 1);
		ok(rep, body, f->len, ends_with(tp, ".json") ? "application/json" : "text/plain");
	} else if (md_tree_list(tree, tp, MD_VIEW_HTTP, &body, &len) == 0) {
		ok(rep, body, len, "text/plain");
	} else {
		fail(rep, 404);
	}
	free(tp);
}

void md_service_handle(struct md_service *svc, const struct md_request *req,
		       struct md_reply *rep)
{
	struct md_instance *in = NULL;
	const struct md_tree *tree;
	size_t hbytes = 0;
	char *path = NULL;
	bool dir = false, get, put;
	const char *tok;
	long wait;
	int st;

	memset(rep, 0, sizeof(*rep));
	if (!req->url || !req->method) {
		fail(rep, 400);
		return;
	}
	if (strlen(req->url) > MD_URL_MAX) {
		fail(rep, 414);
		return;
	}
	if (req->n_headers > MD_HEADER_COUNT_MAX) {
		fail(rep, 431);
		return;
	}
	for (size_t i = 0; i < req->n_headers; i++)
		hbytes += (req->headers[i].name ? strlen(req->headers[i].name) : 0) +
			  (req->headers[i].value ? strlen(req->headers[i].value) : 0) + 4;
	if (hbytes > MD_HEADERS_MAX) {
		fail(rep, 431);
		return;
	}
	get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
	put = strcmp(req->method, "PUT") == 0;
	if (!get && !put) {
		fail(rep, 405);
		rep->allow = "GET, HEAD, PUT";
		return;
	}
	if (normalize(req->url, &path, &dir) < 0) {
		fail(rep, 404);
		return;
	}
	if (get && strcmp(path, "healthz") == 0) {
		free(path);
		ok(rep, strdup("ok\n"), 3, "text/plain");
		if (!rep->body)
			fail(rep, 500);
		return;
	}
	st = identify(svc, req, &in);
	if (st) {
		md_metrics_identify_failed(st);
		free(path);
		fail(rep, st);
		return;
	}
	bool token_path = strcmp(path, "latest/api/token") == 0;

	if ((put && !token_path) || (get && token_path)) {
		fail(rep, 405);
		rep->allow = put ? "GET, HEAD" : "PUT";
		goto out;
	}
	if (req->body_len > 0) {
		fail(rep, 413);
		goto out;
	}

	pthread_mutex_lock(&in->lock);
	wait = rate_take(svc, in);
	pthread_mutex_unlock(&in->lock);
	if (wait) {
		fail(rep, 429);
		rep->retry_after = wait;
		goto out;
	}

	if (put) {
		const char *ttl_s = header(req, "X-aws-ec2-metadata-token-ttl-seconds");
		long ttl;
		char *token;

		/* a direct request that claims to be forwarded is someone
		 * else's (OSSN-0074): refused, in either spelling (RFC 7239) */
		if (!svc->proxy && (header(req, "X-Forwarded-For") || header(req, "Forwarded"))) {
			fail(rep, 403);
			goto out;
		}
		if (!ttl_s || parse_long(ttl_s, 1, MD_TOKEN_TTL_MAX, &ttl) < 0) {
			fail(rep, 400);
			goto out;
		}
		token = md_token_issue(svc->key, in->spec.uuid, ttl, time_mono_ms() / 1000);
		if (!token) {
			fail(rep, 500);
			goto out;
		}
		ok(rep, token, strlen(token), "text/plain");
		rep->token_ttl = ttl;
		goto out;
	}

	tok = header(req, "X-aws-ec2-metadata-token");
	if (tok ? md_token_check(svc->key, in->spec.uuid, tok, time_mono_ms() / 1000) < 0
		: svc->tokens == MD_TOKENS_REQUIRED) {
		fail(rep, 401);
		goto out;
	}

	/* once rendered, an instance's tree never changes (a changed spec
	 * is a new instance object), so it is read without the lock */
	pthread_mutex_lock(&in->lock);
	tree = md_instance_tree_locked(in);
	pthread_mutex_unlock(&in->lock);
	if (tree) {
		serve(tree, path, dir, rep);
	} else {
		log_error("render failed instance=%s: %s", in->spec.uuid, err_msg());
		fail(rep, 500);
	}
out:
	free(path);
	md_instance_unref(in);
}
