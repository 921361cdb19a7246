/*
 * stratusctl console NAME --attach: the interactive serial console through
 * the instance's host's console proxy (docs/agent.md "Console proxy").
 * The scheduler's answer (sealed to this credential) names the proxy and a
 * one-time token; this file connects, sends "CONSOLE <uuid> <token>", and
 * relays the terminal raw until Ctrl-] (as virsh console), restoring the
 * terminal on every way out.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "cli/cli_priv.h"

#define ESCAPE_KEY 0x1d /* Ctrl-] */

static volatile sig_atomic_t quit_signal;

static void on_signal(int sig)
{
	quit_signal = sig;
}

/* Connect to "HOST:PORT" (split at the last ':'). */
/* noinline (and handshake, relay): their buffers apart from the caller's frame */
static __attribute__((noinline)) int dial(const char *address)
{
	const char *colon = strrchr(address, ':');
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	char host[256];
	int fd = -1, one = 1, rc;

	if (!colon || colon == address || (size_t)(colon - address) >= sizeof(host))
		return err_set(-EINVAL, "console proxy address '%s': expected HOST:PORT", address);
	memcpy(host, address, (size_t)(colon - address));
	host[colon - address] = '\0';
	rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc != 0)
		return err_set(-EHOSTUNREACH, "console proxy %s: %s", address, gai_strerror(rc));
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			rc = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0)
		return err_set(-ECONNREFUSED, "console proxy %s: cannot connect: %s", address,
			       strerror(rc ? rc : ECONNREFUSED));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int write_all(int fd, const void *buf, size_t n)
{
	const char *b = buf;

	while (n > 0) {
		ssize_t w = write(fd, b, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The proxy's answer line: "OK <uuid>" or "ERR <reason>". Bytes after it
 * (console output already) are written to stdout. */
static __attribute__((noinline)) int handshake(int fd, const char *uuid, const char *token)
{
	char line[1024];
	size_t have = 0;
	int n = snprintf(line, sizeof(line), "CONSOLE %s %s\n", uuid, token);

	if (n < 0 || (size_t)n >= sizeof(line) || write_all(fd, line, (size_t)n) < 0)
		return err_set(-EIO, "console proxy: cannot send the request");
	for (;;) {
		ssize_t got = read(fd, line + have, sizeof(line) - 1 - have);
		char *eol;

		if (got <= 0)
			return err_set(-ECONNRESET, "console proxy closed the connection before "
						    "answering");
		have += (size_t)got;
		line[have] = '\0';
		eol = memchr(line, '\n', have);
		if (!eol) {
			if (have == sizeof(line) - 1)
				return err_set(-EPROTO, "console proxy: answer line too long");
			continue;
		}
		*eol = '\0';
		if (strncmp(line, "OK ", 3) != 0)
			return err_set(-EACCES, "%s", strncmp(line, "ERR ", 4) == 0 ? line + 4 : line);
		if ((size_t)(eol + 1 - line) < have)
			write_all(STDOUT_FILENO, eol + 1, have - (size_t)(eol + 1 - line));
		return 0;
	}
}

/* Relay until Ctrl-] on stdin, the console closing, or a signal. */
static __attribute__((noinline)) int relay(int fd)
{
	char buf[2048];

	for (;;) {
		struct pollfd pf[2] = { { .fd = STDIN_FILENO, .events = POLLIN },
					{ .fd = fd, .events = POLLIN } };
		ssize_t n;

		if (quit_signal)
			return 0;
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return err_set(-errno, "poll: %s", strerror(errno));
		}
		if (pf[1].revents) {
			n = read(fd, buf, sizeof(buf));
			if (n <= 0)
				return 1; /* the console closed */
			if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
				return 0;
		}
		if (pf[0].revents) {
			char *esc;

			n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n <= 0)
				return 0;
			esc = memchr(buf, ESCAPE_KEY, (size_t)n);
			if (write_all(fd, buf, esc ? (size_t)(esc - buf) : (size_t)n) < 0)
				return 1;
			if (esc)
				return 0;
		}
	}
}

int cli_console_attach(struct cli_ctx *ctx, const char *name, const json_t *data)
{
	const char *uuid = json_string_value(json_object_get(data, "uuid"));
	const char *address = json_string_value(json_object_get(data, "address"));
	const char *token = json_string_value(json_object_get(data, "token"));
	struct termios saved, raw;
	struct sigaction sa = { .sa_handler = on_signal };
	bool tty = isatty(STDIN_FILENO);
	int fd, r;

	if (!uuid || !address || !token) {
		cli_error(ctx, "instance %s: console: the host's answer has no proxy address or "
			       "token", name);
		return CLI_ERROR;
	}
	fd = dial(address);
	if (fd < 0 || (r = handshake(fd, uuid, token)) < 0) {
		cli_error(ctx, "instance %s: console: %s", name, err_msg());
		if (fd >= 0)
			close(fd);
		return CLI_ERROR;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
		raw = saved;
		cfmakeraw(&raw);
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw);
	} else {
		tty = false;
	}
	fprintf(stderr, "Connected to %s (%s)\r\nEscape character is ^] (Ctrl + ])\r\n", name,
		uuid);
	r = relay(fd);
	if (tty)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
	close(fd);
	fprintf(stderr, "\n%s\n", r == 1 ? "console closed" : "disconnected");
	return r < 0 ? CLI_ERROR : CLI_OK;
}
