/*
 * libFuzzer harness over the console proxy's parsers of untrusted input
 * (agent/ws.c): the first request of a connection, a stream of WebSocket
 * frames (client side: masked required; any cap), and the accept key.
 * Built and run by tests/agent/test_console_fuzz.sh with
 * clang -fsanitize=fuzzer,address,undefined.
 *
 * Input: byte 0 picks the parser (bit 0-1) and the frame cap (bits 2-7,
 * 0..63 -> 0..4032 bytes); the rest is the bytes a client sent.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/console.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *buf;
	size_t n, off = 0, cap;

	if (size < 1)
		return 0;
	cap = (size_t)(data[0] >> 2) * 64;
	n = size - 1;
	buf = malloc(n + 1); /* exact size: ASan sees any read past the input */
	if (!buf)
		return 0;
	memcpy(buf, data + 1, n);
	switch (data[0] & 3) {
	case 0: {
		struct agent_console_req rq;
		int status, r = agent_console_req_parse((const char *)buf, n, &rq, &status);

		if (r > 0 && ((size_t)r > n || strlen(rq.instance) >= sizeof(rq.instance) ||
			      strlen(rq.token) > AGENT_CONSOLE_TOKEN_LEN))
			abort();
		if (r > 0 && rq.kind == CONSOLE_REQ_WEBSOCKET) {
			char acc[32];

			agent_ws_accept(rq.ws_key, acc, sizeof(acc));
		}
		break;
	}
	case 1:
	case 2: {
		struct agent_ws_state st = { 0 };

		for (;;) {
			struct agent_ws_frame f;
			int r = agent_ws_parse(&st, buf + off, n - off, cap, (data[0] & 3) == 1, &f);

			if (r <= 0)
				break;
			if ((size_t)r > n - off || f.len > cap || f.payload < buf + off ||
			    f.payload + f.len > buf + off + (size_t)r)
				abort();
			off += (size_t)r;
		}
		break;
	}
	default: {
		char acc[32], *key = malloc(n + 1);

		if (key) {
			memcpy(key, buf, n);
			key[n] = '\0';
			agent_ws_accept(key, acc, sizeof(acc));
			free(key);
		}
		break;
	}
	}
	free(buf);
	return 0;
}
