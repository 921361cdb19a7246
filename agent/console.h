/*
 * The agent's console proxy (agent/console.c) and its wire formats
 * (agent/ws.c): one-time console tokens, the raw TCP protocol stratusctl
 * speaks, HTTP for the console page, WebSocket (RFC 6455) for browsers.
 * Internal to the agent and its tests. See docs/agent.md "Console proxy".
 */
#ifndef STRATUS_AGENT_CONSOLE_H
#define STRATUS_AGENT_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/core.h"

/* ---- WebSocket framing (agent/ws.c), untrusted input ------------------- */
enum agent_ws_opcode {
	WS_OP_CONT = 0x0, WS_OP_TEXT = 0x1, WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8, WS_OP_PING = 0x9, WS_OP_PONG = 0xa,
};

/* A data message may span frames (RFC 6455 5.4): the parser keeps whether
 * one is open. Start zeroed. */
struct agent_ws_state {
	bool in_message;
};

struct agent_ws_frame {
	bool fin;
	int opcode;
	unsigned char *payload; /* inside the caller's buffer, unmasked in place */
	size_t len;
};

/*
 * One frame from buf[0..n): >0 bytes the frame took (payload unmasked in
 * buf), 0 when more bytes are needed, <0 on a protocol error with
 * err_msg() (-EPROTO: reserved bits, unknown opcode, unmasked client frame,
 * control frame fragmented or over 125 bytes, non-minimal or 64-bit length
 * with the top bit set, continuation without a message, a new message
 * inside one; -EMSGSIZE: payload over max_payload). need_mask: frames from
 * a client must be masked (RFC 6455 5.1).
 */
int agent_ws_parse(struct agent_ws_state *st, unsigned char *buf, size_t n, size_t max_payload,
		   bool need_mask, struct agent_ws_frame *f);
/* A server frame's header (never masked) for a payload of len into hdr
 * (at least 10 bytes); returns the header's length. */
size_t agent_ws_header(unsigned char *hdr, int opcode, size_t len);
/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (base64 of 16
 * bytes, else -EINVAL) into out (at least 29 bytes). */
int agent_ws_accept(const char *key, char *out, size_t outlen);

/* ---- the first request on a proxy connection (agent/ws.c) -------------- */
#define AGENT_CONSOLE_REQ_MAX 4096 /* the request line and headers together */
#define AGENT_CONSOLE_TOKEN_LEN 43 /* 32 random bytes, base64url without padding */

enum agent_console_req_kind {
	CONSOLE_REQ_RAW,       /* "CONSOLE <uuid> <token>\n" (stratusctl) */
	CONSOLE_REQ_PAGE,      /* GET / or /console: the page */
	CONSOLE_REQ_ASSET,     /* GET /xterm.js, /xterm.css, /console.js */
	CONSOLE_REQ_WEBSOCKET, /* GET /ws?instance=&token= with Upgrade: websocket */
	CONSOLE_REQ_LAST
};

struct agent_console_req {
	enum agent_console_req_kind kind;
	char instance[40];
	char token[AGENT_CONSOLE_TOKEN_LEN + 1];
	char asset[16];   /* CONSOLE_REQ_ASSET: "xterm.js", "xterm.css", "console.js" */
	char ws_key[32];  /* Sec-WebSocket-Key */
	char host[256];   /* Host: */
};

/*
 * Parse the first request of a connection, buf[0..n) (n <= REQ_MAX).
 * Returns >0 the bytes it took, 0 when the request is not complete yet, <0
 * with err_msg() and the HTTP status to answer in *status (400, 404, 405,
 * 426, 431) - a raw request with an error gets status 0. A token not of a
 * token's shape is -EBADMSG.
 */
int agent_console_req_parse(const char *buf, size_t n, struct agent_console_req *out,
			    int *status);

/* ---- tokens (agent/console.c) ------------------------------------------ */
enum agent_console_refusal {
	CONSOLE_REFUSED_UNKNOWN,  /* no such token (bad, forged, or long gone) */
	CONSOLE_REFUSED_REUSED,   /* already used once */
	CONSOLE_REFUSED_EXPIRED,  /* its lifetime is over */
	CONSOLE_REFUSED_INSTANCE, /* issued for another instance */
	CONSOLE_REFUSED_PROJECT,  /* the instance no longer belongs to its project */
	CONSOLE_REFUSED_MALFORMED, /* not a token's shape (the request parser's -EBADMSG) */
	CONSOLE_REFUSED_LAST
};
extern const char *const agent_console_refusal_names[];

struct agent_console;

/* The token table alone (tests); the agent makes it with the proxy. */
struct agent_console *agent_console_tokens_new(int64_t ttl_ms);
void agent_console_free(struct agent_console *p);
/* Remember token (exactly AGENT_CONSOLE_TOKEN_LEN base64url characters,
 * else -EINVAL) for uuid of project, valid ttl_ms from now. */
int agent_console_token_add(struct agent_console *p, const char *token, const char *uuid,
			    const char *project);
/* Use token for uuid once: 0, with its project in project (>= 64 bytes),
 * or -EACCES with *why and a message naming the instance and the reason.
 * A refusal is logged and counted. now_ms: time_mono_ms() (tests pass
 * their own). */
int agent_console_token_use(struct agent_console *p, const char *token, const char *uuid,
			    int64_t now_ms, char *project, size_t plen,
			    enum agent_console_refusal *why);
/* Count and log a malformed token (the parser's -EBADMSG). */
void agent_console_refuse_malformed(struct agent_console *p);
/* Counters for /metrics. */
struct agent_console_stats {
	uint64_t refused[CONSOLE_REFUSED_LAST];
	uint64_t tokens_issued, sessions, sessions_active;
};
void agent_console_stats(struct agent_console *p, struct agent_console_stats *out);

/* ---- the proxy (agent/console.c) ---------------------------------------- */
struct agent;
/* Listen on agent.console.listen ("" = no proxy) and serve in a thread;
 * a->console (the token table) must exist. agent_console_free stops it,
 * ending open sessions. */
int agent_console_start(struct agent *a);
/* instance.console with attach (body opened, from the scheduler): remember
 * body's token for uuid and body's project, which must be the instance's
 * in this host's store. Returns what the requester receives (new reference:
 * uuid, address, token, expires_in, url) or NULL with err_msg(). */
json_t *agent_console_grant(struct agent *a, const char *uuid, const json_t *body);

#endif
