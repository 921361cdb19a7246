/*
 * The console proxy's parts without a daemon: RFC 6455 frames (every edge
 * the parser must refuse, oversized frames, fragmentation, the accept key),
 * the first request of a connection (raw, page, WebSocket upgrade and their
 * errors) and the one-time token table (unknown, reused, expired, another
 * instance), with the counters /metrics shows.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "agent/console.h"

#define MAXP 1024
#define TOK "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456"
#define TOK2 "ZZZdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456"
#define U1 "11111111-1111-4111-8111-111111111111"
#define U2 "22222222-2222-4222-8222-222222222222"

/* A client frame: masked with key 1 2 3 4. Returns its length. */
static size_t client_frame(unsigned char *out, int b0, const char *payload, size_t len)
{
	static const unsigned char key[4] = { 1, 2, 3, 4 };
	size_t h = 2;

	out[0] = (unsigned char)b0;
	if (len < 126) {
		out[1] = (unsigned char)(0x80 | len);
	} else {
		out[1] = 0x80 | 126;
		out[2] = (unsigned char)(len >> 8);
		out[3] = (unsigned char)len;
		h = 4;
	}
	memcpy(out + h, key, 4);
	for (size_t i = 0; i < len; i++)
		out[h + 4 + i] = (unsigned char)payload[i] ^ key[i & 3];
	return h + 4 + len;
}

static int parse(struct agent_ws_state *st, unsigned char *b, size_t n, struct agent_ws_frame *f)
{
	return agent_ws_parse(st, b, n, MAXP, true, f);
}

static void test_ws_masked_text(void **state)
{
	unsigned char b[64];
	struct agent_ws_state st = { 0 };
	struct agent_ws_frame f;
	size_t n = client_frame(b, 0x81, "ls -l\r", 6);

	(void)state;
	/* every prefix is "need more", never an error or a frame */
	for (size_t k = 0; k < n; k++)
		assert_int_equal(parse(&st, b, k, &f), 0);
	assert_int_equal(parse(&st, b, n, &f), (int)n);
	assert_true(f.fin);
	assert_int_equal(f.opcode, WS_OP_TEXT);
	assert_int_equal(f.len, 6);
	assert_memory_equal(f.payload, "ls -l\r", 6);
}

static void test_ws_refusals(void **state)
{
	struct {
		const char *what;
		unsigned char b[16];
		size_t n;
		int want;
	} cases[] = {
		{ "unmasked client frame", { 0x81, 0x01, 'x' }, 3, -EPROTO },
		{ "reserved bit 1", { 0xc1, 0x81, 1, 2, 3, 4, 'x' }, 7, -EPROTO },
		{ "reserved bit 3", { 0x91, 0x81, 1, 2, 3, 4, 'x' }, 7, -EPROTO },
		{ "opcode 3", { 0x83, 0x80, 1, 2, 3, 4 }, 6, -EPROTO },
		{ "opcode 0xb", { 0x8b, 0x80, 1, 2, 3, 4 }, 6, -EPROTO },
		{ "fragmented ping", { 0x09, 0x80, 1, 2, 3, 4 }, 6, -EPROTO },
		{ "close over 125", { 0x88, 0x80 | 126, 0, 126 }, 4, -EPROTO },
		{ "16-bit length under 126", { 0x82, 0x80 | 126, 0, 100 }, 4, -EPROTO },
		{ "64-bit length under 65536", { 0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff }, 10,
		  -EPROTO },
		{ "64-bit length top bit", { 0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1 }, 10,
		  -EPROTO },
		/* oversized: refused from the header, before the payload arrives */
		{ "16-bit length over the cap", { 0x82, 0x80 | 126, 0x04, 0x01 }, 4, -EMSGSIZE },
		{ "64-bit length over the cap", { 0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0 }, 10,
		  -EMSGSIZE },
		{ "64-bit length 2^63-1", { 0x82, 0x80 | 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					    0xff }, 10, -EMSGSIZE },
		{ "continuation without a message", { 0x80, 0x80, 1, 2, 3, 4 }, 6, -EPROTO },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct agent_ws_state st = { 0 };
		struct agent_ws_frame f = { 0 };
		int r = parse(&st, cases[i].b, cases[i].n, &f);

		if (r != cases[i].want)
			fail_msg("%s: got %d (%s), want %d", cases[i].what, r, err_msg(), cases[i].want);
		assert_null(f.payload); /* nothing handed out */
	}
}

static void test_ws_fragments(void **state)
{
	unsigned char b[256];
	struct agent_ws_state st = { 0 };
	struct agent_ws_frame f;
	size_t n;

	(void)state;
	n = client_frame(b, 0x01, "ab", 2); /* text, not final */
	assert_int_equal(parse(&st, b, n, &f), (int)n);
	assert_false(f.fin);
	assert_true(st.in_message);
	n = client_frame(b, 0x89, "p", 1); /* a ping between fragments is fine */
	assert_int_equal(parse(&st, b, n, &f), (int)n);
	assert_int_equal(f.opcode, WS_OP_PING);
	n = client_frame(b, 0x81, "x", 1); /* a new message inside one is not */
	assert_int_equal(parse(&st, b, n, &f), -EPROTO);
	n = client_frame(b, 0x80, "cd", 2); /* the final continuation */
	assert_int_equal(parse(&st, b, n, &f), (int)n);
	assert_int_equal(f.opcode, WS_OP_CONT);
	assert_memory_equal(f.payload, "cd", 2);
	assert_false(st.in_message);
	/* a 16-bit length frame at exactly the cap passes, one more byte does not */
	{
		static char big[MAXP + 1];
		static unsigned char fb[MAXP + 16];

		memset(big, 'z', sizeof(big));
		n = client_frame(fb, 0x82, big, MAXP);
		assert_int_equal(parse(&st, fb, n, &f), (int)n);
		assert_int_equal(f.len, MAXP);
		n = client_frame(fb, 0x82, big, MAXP + 1);
		assert_int_equal(parse(&st, fb, n, &f), -EMSGSIZE);
	}
}

static void test_ws_header_roundtrip(void **state)
{
	static const size_t lens[] = { 0, 1, 125, 126, 65535, 65536, 70000 };
	static unsigned char b[70000 + 16];

	(void)state;
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct agent_ws_state st = { 0 };
		struct agent_ws_frame f;
		size_t h = agent_ws_header(b, WS_OP_BINARY, lens[i]);

		memset(b + h, 'q', lens[i]);
		assert_int_equal(agent_ws_parse(&st, b, h + lens[i], 1 << 20, false, &f),
				 (int)(h + lens[i]));
		assert_int_equal(f.len, lens[i]);
		assert_int_equal(h, lens[i] < 126 ? 2 : lens[i] < 65536 ? 4 : 10);
		/* a server frame is refused where a masked one is required */
		assert_int_equal(agent_ws_parse(&st, b, h + lens[i], 1 << 20, true, &f), -EPROTO);
	}
}

static void test_ws_accept(void **state)
{
	char out[32];

	(void)state;
	/* RFC 6455 section 1.3's example */
	assert_int_equal(agent_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", out, sizeof(out)), 0);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	assert_int_equal(agent_ws_accept("not base64!", out, sizeof(out)), -EINVAL);
	assert_int_equal(agent_ws_accept("AAAA", out, sizeof(out)), -EINVAL); /* 3 bytes */
}

static int req(const char *text, struct agent_console_req *rq, int *status)
{
	return agent_console_req_parse(text, strlen(text), rq, status);
}

#define WSREQ(path, extra)                                                                \
	"GET " path " HTTP/1.1\r\nHost: h:1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" \
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" extra "\r\n"

static void test_requests(void **state)
{
	struct agent_console_req rq;
	int st;

	(void)state;
	assert_int_equal(req("CONSOLE " U1 " " TOK "\n", &rq, &st), 8 + 36 + 1 + 43 + 1);
	assert_int_equal(rq.kind, CONSOLE_REQ_RAW);
	assert_string_equal(rq.instance, U1);
	assert_string_equal(rq.token, TOK);
	assert_int_equal(req("CONSOLE " U1 " " TOK, &rq, &st), 0); /* no newline yet */
	assert_int_equal(req("CONSOLE " U1 " short\n", &rq, &st), -EBADMSG);
	assert_int_equal(st, 0);
	assert_int_equal(req("CONSOLE " U1 " " TOK "x\n", &rq, &st), -EBADMSG);
	assert_int_equal(req("CONSOLE " U1 " abcdefghijklmnopqrstuvwxyzABCDEFGHIJ012345/\n", &rq, &st),
			 -EBADMSG);
	assert_int_equal(req("CONSOLE ../etc " TOK "\n", &rq, &st), -EINVAL);
	assert_int_equal(req("CONSOLE " U1 "\n", &rq, &st), -EINVAL);

	assert_true(req(WSREQ("/ws?instance=" U1 "&token=" TOK, "Sec-WebSocket-Version: 13\r\n"), &rq,
			&st) > 0);
	assert_int_equal(rq.kind, CONSOLE_REQ_WEBSOCKET);
	assert_string_equal(rq.token, TOK);
	assert_string_equal(rq.ws_key, "dGhlIHNhbXBsZSBub25jZQ==");
	assert_string_equal(rq.host, "h:1");
	assert_int_equal(req(WSREQ("/ws?instance=" U1 "&token=" TOK, ""), &rq, &st), -EINVAL);
	assert_int_equal(st, 426); /* no version 13 */
	assert_int_equal(req(WSREQ("/ws?instance=" U1, "Sec-WebSocket-Version: 13\r\n"), &rq, &st),
			 -EINVAL);
	assert_int_equal(st, 400);
	assert_int_equal(req(WSREQ("/ws?instance=" U1 "&token=bad", "Sec-WebSocket-Version: 13\r\n"),
			     &rq, &st), -EBADMSG);

	assert_true(req("GET /console?instance=whatever&token=x HTTP/1.1\r\n\r\n", &rq, &st) > 0);
	assert_int_equal(rq.kind, CONSOLE_REQ_PAGE);
	assert_true(req("GET /xterm.css HTTP/1.1\n\n", &rq, &st) > 0);
	assert_int_equal(rq.kind, CONSOLE_REQ_ASSET);
	assert_string_equal(rq.asset, "xterm.css");
	assert_int_equal(req("GET /etc/passwd HTTP/1.1\r\n\r\n", &rq, &st), -ENOENT);
	assert_int_equal(st, 404);
	assert_int_equal(req("POST / HTTP/1.1\r\n\r\n", &rq, &st), -EINVAL);
	assert_int_equal(st, 405);
	assert_int_equal(req("GET / HTTP/1.1\r\nNoColon\r\n\r\n", &rq, &st), -EINVAL);
	assert_int_equal(st, 400);
	assert_int_equal(req("GET / SMTP\r\n\r\n", &rq, &st), -EINVAL);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: a", &rq, &st), 0); /* incomplete */
	{
		static char big[AGENT_CONSOLE_REQ_MAX];

		memset(big, 'a', sizeof(big));
		memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
		assert_int_equal(agent_console_req_parse(big, sizeof(big), &rq, &st), -EMSGSIZE);
		assert_int_equal(st, 431);
	}
}

static void test_tokens(void **state)
{
	struct agent_console *p = agent_console_tokens_new(1000);
	struct agent_console_stats cs;
	enum agent_console_refusal why = CONSOLE_REFUSED_LAST;
	char project[64] = "";
	int64_t now = time_mono_ms();

	(void)state;
	assert_non_null(p);
	assert_int_equal(agent_console_token_add(p, "short", U1, "acme"), -EINVAL);
	assert_int_equal(agent_console_token_add(p, TOK "=", U1, "acme"), -EINVAL);
	assert_int_equal(agent_console_token_add(p, TOK, U1, "acme"), 0);
	assert_int_equal(agent_console_token_add(p, TOK2, U1, "acme"), 0);
	/* forged */
	assert_int_equal(agent_console_token_use(p, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", U1,
						 now, project, sizeof(project), &why), -EACCES);
	assert_int_equal(why, CONSOLE_REFUSED_UNKNOWN);
	assert_non_null(strstr(err_msg(), "instance " U1 ": console token refused: no such token"));
	/* another instance's (CVE-2013-0335): refused and spent */
	assert_int_equal(agent_console_token_use(p, TOK, U2, now, project, sizeof(project), &why),
			 -EACCES);
	assert_int_equal(why, CONSOLE_REFUSED_INSTANCE);
	assert_int_equal(agent_console_token_use(p, TOK, U1, now, project, sizeof(project), &why),
			 -EACCES);
	assert_int_equal(why, CONSOLE_REFUSED_REUSED);
	/* expired: one millisecond past its lifetime */
	assert_int_equal(agent_console_token_use(p, TOK2, U1, now + 1001, project, sizeof(project),
						 &why), -EACCES);
	assert_int_equal(why, CONSOLE_REFUSED_EXPIRED);
	/* good, once */
	{
		const char *t3 = "0123456789abcdefghijklmnopqrstuvwxyz-_ABCDE";

		assert_int_equal(agent_console_token_add(p, t3, U2, "acme"), 0);
		assert_int_equal(agent_console_token_use(p, t3, U2, now, project, sizeof(project), &why), 0);
		assert_string_equal(project, "acme");
		assert_int_equal(agent_console_token_use(p, t3, U2, now, project, sizeof(project), &why),
				 -EACCES);
		assert_int_equal(why, CONSOLE_REFUSED_REUSED);
	}
	agent_console_stats(p, &cs);
	assert_int_equal(cs.tokens_issued, 3);
	assert_int_equal(cs.refused[CONSOLE_REFUSED_UNKNOWN], 1);
	assert_int_equal(cs.refused[CONSOLE_REFUSED_INSTANCE], 1);
	assert_int_equal(cs.refused[CONSOLE_REFUSED_REUSED], 2);
	assert_int_equal(cs.refused[CONSOLE_REFUSED_EXPIRED], 1);
	agent_console_free(p);
	agent_console_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ws_masked_text),  cmocka_unit_test(test_ws_refusals),
		cmocka_unit_test(test_ws_fragments),    cmocka_unit_test(test_ws_header_roundtrip),
		cmocka_unit_test(test_ws_accept),       cmocka_unit_test(test_requests),
		cmocka_unit_test(test_tokens),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
