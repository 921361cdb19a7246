/*
 * cutproxy: a fault-injecting TCP proxy for the download tests.
 *
 *   cutproxy UPSTREAM_PORT CUT_BYTES CUT_CONNS
 *
 * Listens on a free loopback port (printed on stdout, one line), relays
 * each connection to 127.0.0.1:UPSTREAM_PORT, one connection at a time.
 * For the first CUT_CONNS connections it closes both sides once
 * CUT_BYTES bytes of the answer went to the client: a transfer cut in
 * the middle. Runs until killed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/core.h"

#define BUF (64 * 1024)

static int connect_upstream(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void relay(int cl, int up, long long cut, char *buf)
{
	long long down = 0;
	struct pollfd p[2] = { { .fd = cl, .events = POLLIN }, { .fd = up, .events = POLLIN } };

	for (;;) {
		if (poll(p, 2, 30000) <= 0)
			return;
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(cl, buf, BUF);

			if (n <= 0 || write_all(up, buf, (size_t)n) < 0)
				return;
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			size_t want = BUF;
			ssize_t n;

			if (cut >= 0 && (long long)want > cut - down)
				want = (size_t)(cut - down);
			if (want == 0)
				return;
			n = read(up, buf, want);
			if (n <= 0 || write_all(cl, buf, (size_t)n) < 0)
				return;
			down += n;
			if (cut >= 0 && down >= cut)
				return; /* the cut */
		}
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	long up_port, cut, cut_conns;
	char *buf = malloc(BUF);
	int ls, one = 1;

	if (argc != 4 || parse_long(argv[1], 1, 65535, &up_port) < 0 ||
	    parse_long(argv[2], 0, 1L << 40, &cut) < 0 ||
	    parse_long(argv[3], 0, 1000000, &cut_conns) < 0 || !buf) {
		fprintf(stderr, "usage: cutproxy UPSTREAM_PORT CUT_BYTES CUT_CONNS\n");
		return 2;
	}
	ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 16) < 0 ||
	    getsockname(ls, (struct sockaddr *)&a, &al) < 0) {
		perror("cutproxy: listen");
		return 1;
	}
	printf("%d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (long conn = 0;; conn++) {
		int cl = accept4(ls, NULL, NULL, SOCK_CLOEXEC), up;

		if (cl < 0) {
			if (errno == EINTR)
				continue;
			perror("cutproxy: accept");
			return 1;
		}
		up = connect_upstream((int)up_port);
		if (up >= 0) {
			relay(cl, up, conn < cut_conns ? cut : -1, buf);
			close(up);
		}
		close(cl);
	}
}
