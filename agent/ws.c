/*
 * The console proxy's wire formats, all untrusted input: the first request
 * of a connection (stratusctl's raw "CONSOLE" line, or HTTP for the page
 * and the WebSocket upgrade) and RFC 6455 frames. No allocation; every
 * length is checked against the bytes at hand and a cap. Fuzzed by
 * tests/agent/test_console_fuzz.sh.
 */
#include <errno.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

#include "agent/console.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

int agent_ws_parse(struct agent_ws_state *st, unsigned char *buf, size_t n, size_t max_payload,
		   bool need_mask, struct agent_ws_frame *f)
{
	size_t hl = 2, len;
	bool masked, fin;
	int op;

	if (n < 2)
		return 0;
	fin = buf[0] & 0x80;
	op = buf[0] & 0x0f;
	masked = buf[1] & 0x80;
	len = buf[1] & 0x7f;
	if (buf[0] & 0x70)
		return err_set(-EPROTO, "websocket: reserved bits set (no extension was agreed)");
	if (op != WS_OP_CONT && op != WS_OP_TEXT && op != WS_OP_BINARY && op != WS_OP_CLOSE &&
	    op != WS_OP_PING && op != WS_OP_PONG)
		return err_set(-EPROTO, "websocket: unknown opcode 0x%x", (unsigned)op);
	if (need_mask && !masked)
		return err_set(-EPROTO, "websocket: client frame not masked");
	if (op >= WS_OP_CLOSE && (!fin || len > 125))
		return err_set(-EPROTO, "websocket: control frame fragmented or over 125 bytes");
	if (len == 126) {
		if (n < 4)
			return 0;
		len = (size_t)buf[2] << 8 | buf[3];
		hl = 4;
		if (len < 126)
			return err_set(-EPROTO, "websocket: length %zu not in its shortest form", len);
	} else if (len == 127) {
		uint64_t l = 0;

		if (n < 10)
			return 0;
		for (int i = 0; i < 8; i++)
			l = l << 8 | buf[2 + i];
		if (l >> 63)
			return err_set(-EPROTO, "websocket: 64-bit length with the top bit set");
		if (l < 65536)
			return err_set(-EPROTO, "websocket: length %llu not in its shortest form",
				       (unsigned long long)l);
		if (l > max_payload)
			return err_set(-EMSGSIZE, "websocket: frame of %llu bytes over the %zu limit",
				       (unsigned long long)l, max_payload);
		len = (size_t)l;
		hl = 10;
	}
	if (len > max_payload)
		return err_set(-EMSGSIZE, "websocket: frame of %zu bytes over the %zu limit", len,
			       max_payload);
	if (op == WS_OP_CONT && !st->in_message)
		return err_set(-EPROTO, "websocket: continuation frame without a message");
	if ((op == WS_OP_TEXT || op == WS_OP_BINARY) && st->in_message)
		return err_set(-EPROTO, "websocket: new message inside a fragmented one");
	if (masked)
		hl += 4;
	if (n < hl || n - hl < len)
		return 0;
	if (masked) {
		const unsigned char *k = buf + hl - 4;

		for (size_t i = 0; i < len; i++)
			buf[hl + i] ^= k[i & 3];
	}
	if (op <= WS_OP_BINARY)
		st->in_message = !fin;
	f->fin = fin;
	f->opcode = op;
	f->payload = buf + hl;
	f->len = len;
	return (int)(hl + len);
}

size_t agent_ws_header(unsigned char *hdr, int opcode, size_t len)
{
	hdr[0] = (unsigned char)(0x80 | (opcode & 0x0f));
	if (len < 126) {
		hdr[1] = (unsigned char)len;
		return 2;
	}
	if (len < 65536) {
		hdr[1] = 126;
		hdr[2] = (unsigned char)(len >> 8);
		hdr[3] = (unsigned char)len;
		return 4;
	}
	hdr[1] = 127;
	for (int i = 0; i < 8; i++)
		hdr[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

int agent_ws_accept(const char *key, char *out, size_t outlen)
{
	unsigned char *raw = NULL, md[SHA_DIGEST_LENGTH];
	char cat[64];
	size_t rlen = 0;
	char *b64;
	int n;

	if (base64_decode(key, 16, &raw, &rlen) < 0 || rlen != 16) {
		free(raw);
		return err_set(-EINVAL, "websocket: Sec-WebSocket-Key: expected 16 bytes in base64");
	}
	free(raw);
	n = snprintf(cat, sizeof(cat), "%s%s", key, WS_GUID);
	if (n < 0 || (size_t)n >= sizeof(cat))
		return err_set(-EINVAL, "websocket: Sec-WebSocket-Key too long");
	SHA1((const unsigned char *)cat, (size_t)n, md);
	b64 = base64_encode(md, sizeof(md));
	if (!b64)
		return err_set(-ENOMEM, "out of memory");
	n = snprintf(out, outlen, "%s", b64);
	free(b64);
	return n < 0 || (size_t)n >= outlen ? err_set(-ENOSPC, "websocket: accept buffer") : 0;
}

/* ---- the first request --------------------------------------------------- */

static bool token_chars(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
			return false;
	return true;
}

static bool uuid_chars(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || s[i] == '-'))
			return false;
	return true;
}

/* Copy s[0..n) into dst (size cap) when it fits and passes ok(). */
static int put(char *dst, size_t cap, const char *s, size_t n, bool (*ok)(const char *, size_t),
	       const char *what)
{
	if (n == 0 || n >= cap || (ok && !ok(s, n)))
		return err_set(-EINVAL, "console request: %s: malformed or too long", what);
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/* A token: exactly AGENT_CONSOLE_TOKEN_LEN base64url characters, else
 * -EBADMSG (the proxy counts those as malformed tokens). */
static int put_token(char *dst, const char *s, size_t n)
{
	if (n != AGENT_CONSOLE_TOKEN_LEN || !token_chars(s, n))
		return err_set(-EBADMSG, "console request: token: malformed (expected %d base64url "
				"characters)", AGENT_CONSOLE_TOKEN_LEN);
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/* "CONSOLE <uuid> <token>" */
static int parse_raw(const char *line, size_t n, struct agent_console_req *out)
{
	const char *p = line + strlen("CONSOLE "), *end = line + n, *sp;
	int r;

	sp = memchr(p, ' ', (size_t)(end - p));
	if (!sp)
		return err_set(-EINVAL, "console request: expected CONSOLE <instance> <token>");
	if ((r = put(out->instance, 37, p, (size_t)(sp - p), uuid_chars, "instance")) < 0 ||
	    (r = put_token(out->token, sp + 1, (size_t)(end - sp - 1))) < 0)
		return r;
	out->kind = CONSOLE_REQ_RAW;
	return 0;
}

/* instance= and token= out of a query string. */
static int parse_query(const char *q, size_t n, struct agent_console_req *out)
{
	const char *end = q + n;
	int r;

	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *stop = amp ? amp : end, *eq = memchr(q, '=', (size_t)(stop - q));

		if (eq) {
			size_t kl = (size_t)(eq - q), vl = (size_t)(stop - eq - 1);

			if (kl == 8 && memcmp(q, "instance", 8) == 0 &&
			    (r = put(out->instance, 37, eq + 1, vl, uuid_chars, "instance")) < 0)
				return r;
			if (kl == 5 && memcmp(q, "token", 5) == 0 &&
			    (r = put_token(out->token, eq + 1, vl)) < 0)
				return r;
		}
		q = stop + 1;
	}
	return 0;
}

/* One header line: the few the proxy reads. */
static int parse_header(const char *l, size_t n, struct agent_console_req *out, bool *upgrade,
			bool *version_ok)
{
	const char *colon = memchr(l, ':', n), *v;
	size_t kl, vl;

	if (!colon)
		return err_set(-EINVAL, "console request: header without a colon");
	kl = (size_t)(colon - l);
	v = colon + 1;
	while (v < l + n && (*v == ' ' || *v == '\t'))
		v++;
	vl = (size_t)(l + n - v);
	while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
		vl--;
#define IS(name) (kl == strlen(name) && strncasecmp(l, name, kl) == 0)
	if (IS("Upgrade"))
		*upgrade = vl == 9 && strncasecmp(v, "websocket", 9) == 0;
	else if (IS("Sec-WebSocket-Version"))
		*version_ok = vl == 2 && memcmp(v, "13", 2) == 0;
	else if (IS("Sec-WebSocket-Key"))
		return put(out->ws_key, sizeof(out->ws_key), v, vl, NULL, "Sec-WebSocket-Key");
	else if (IS("Host"))
		return put(out->host, sizeof(out->host), v, vl, NULL, "Host");
#undef IS
	return 0;
}

static int parse_http(const char *buf, size_t n, struct agent_console_req *out, int *status)
{
	const char *eol = memchr(buf, '\n', n), *end = buf + n, *path, *sp, *q;
	bool upgrade = false, version_ok = false;
	size_t plen;
	int r;

	*status = 400;
	if (strncmp(buf, "GET ", 4) != 0) {
		*status = 405;
		return err_set(-EINVAL, "console request: only GET is served");
	}
	path = buf + 4;
	sp = memchr(path, ' ', (size_t)(eol - path));
	if (!sp || (size_t)(eol - sp) < 9 || strncmp(sp + 1, "HTTP/1.", 7) != 0)
		return err_set(-EINVAL, "console request: malformed request line");
	q = memchr(path, '?', (size_t)(sp - path));
	plen = (size_t)((q ? q : sp) - path);
	for (const char *l = eol + 1; l < end;) {
		const char *e = memchr(l, '\n', (size_t)(end - l));
		size_t ln;

		if (!e)
			break;
		ln = (size_t)(e - l);

		if (ln > 0 && l[ln - 1] == '\r')
			ln--;
		if (ln == 0)
			break;
		if ((r = parse_header(l, ln, out, &upgrade, &version_ok)) < 0)
			return r;
		l = e + 1;
	}
#define PATH(s) (plen == strlen(s) && memcmp(path, s, plen) == 0)
	if (PATH("/") || PATH("/console")) {
		out->kind = CONSOLE_REQ_PAGE;
	} else if (PATH("/xterm.js") || PATH("/xterm.css") || PATH("/console.js")) {
		out->kind = CONSOLE_REQ_ASSET;
		memcpy(out->asset, path + 1, plen - 1);
		out->asset[plen - 1] = '\0';
	} else if (PATH("/ws")) {
		if (!upgrade || !version_ok || !out->ws_key[0]) {
			*status = 426;
			return err_set(-EINVAL, "console request: /ws needs a WebSocket upgrade "
						"(Upgrade: websocket, Sec-WebSocket-Version: 13, a key)");
		}
		/* the page's query is the page script's; only /ws's is read here */
		if (q && (r = parse_query(q + 1, (size_t)(sp - q - 1), out)) < 0)
			return r;
		if (!out->instance[0] || !out->token[0])
			return err_set(-EINVAL, "console request: /ws needs instance= and token=");
		out->kind = CONSOLE_REQ_WEBSOCKET;
	} else {
		*status = 404;
		return err_set(-ENOENT, "console request: no such page");
	}
#undef PATH
	return 0;
}

int agent_console_req_parse(const char *buf, size_t n, struct agent_console_req *out,
			    int *status)
{
	struct agent_console_req r = { .kind = CONSOLE_REQ_LAST };
	const char *eol = memchr(buf, '\n', n);
	int rc;

	*status = 0;
	if (n >= 8 && memcmp(buf, "CONSOLE ", 8) == 0) {
		size_t ln;

		if (!eol)
			return n >= 128 ? err_set(-EINVAL, "console request: line too long") : 0;
		ln = (size_t)(eol - buf);
		if (ln > 0 && buf[ln - 1] == '\r')
			ln--;
		rc = parse_raw(buf, ln, &r);
		if (rc < 0)
			return rc;
		*out = r;
		return (int)(eol - buf + 1);
	}
	/* HTTP: complete at the blank line */
	for (size_t i = 0; i + 1 < n; i++) {
		size_t taken = 0;

		if (buf[i] == '\n' && buf[i + 1] == '\n')
			taken = i + 2;
		else if (i + 3 < n && memcmp(buf + i, "\r\n\r\n", 4) == 0)
			taken = i + 4;
		if (taken) {
			rc = parse_http(buf, taken, &r, status);
			if (rc < 0)
				return rc;
			*out = r;
			*status = 0;
			return (int)taken;
		}
	}
	if (n >= AGENT_CONSOLE_REQ_MAX) {
		*status = 431;
		return err_set(-EMSGSIZE, "console request: headers over %d bytes",
			       AGENT_CONSOLE_REQ_MAX);
	}
	if (n >= 8 && memcmp(buf, "GET ", 4) != 0 && memcmp(buf, "CONSOLE ", 8) != 0) {
		*status = 400;
		return err_set(-EINVAL, "console request: expected CONSOLE or an HTTP GET");
	}
	return 0;
}
