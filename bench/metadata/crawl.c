/*
 * N simulated guests crawling stratus-metadata at once, each from its own
 * loopback source address (127.0.0.2 ...), the way cloud-init does: one
 * new connection per request, the EC2 tree (listings recursively,
 * user-data) then the OpenStack documents.
 *
 *   crawl PORT N [FIRST_HOST]   (FIRST_HOST: last octet of the first guest, default 2)
 *
 * Prints: guests, requests, failures, slowest request, p99 request,
 * slowest crawl (ms). Exit 1 when any request failed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/core.h"

#define MAX_REQ 256
#define RESP_MAX 65536

struct guest {
	pthread_t th;
	int host;
	int port;
	int n_req, n_fail;
	int64_t lat_ns[MAX_REQ];
	int64_t crawl_ns;
};

/* GET PATH from SRC; returns the status (or -1) and the body in BUF. */
static int get(struct guest *g, const char *path, char *buf, size_t cap, size_t *blen)
{
	struct sockaddr_in me = { .sin_family = AF_INET }, to = { .sin_family = AF_INET };
	char req[512], src[32];
	int64_t t0 = time_mono_ns();
	size_t n = 0;
	int fd, st = -1;

	snprintf(src, sizeof(src), "127.0.0.%d", g->host);
	inet_pton(AF_INET, src, &me.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
	to.sin_port = htons((uint16_t)g->port);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		goto out;
	struct timeval tv = { .tv_sec = 10 }; /* cloud-init's OpenStack timeout */

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0 ||
	    connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0)
		goto out;
	int len = snprintf(req, sizeof(req),
			   "GET %s HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: crawl\r\n"
			   "Connection: close\r\n\r\n", path);

	if (write(fd, req, (size_t)len) != len)
		goto out;
	for (;;) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);

		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap - 1)
			break;
	}
	buf[n] = '\0';
	if (n < 12 || strncmp(buf, "HTTP/1.1 ", 9) != 0)
		goto out;
	st = (int)strtol(buf + 9, NULL, 10);
	char *body = strstr(buf, "\r\n\r\n");

	body = body ? body + 4 : buf + n;
	*blen = n - (size_t)(body - buf);
	memmove(buf, body, *blen + 1);
out:
	if (fd >= 0)
		close(fd);
	if (g->n_req < MAX_REQ)
		g->lat_ns[g->n_req] = time_mono_ns() - t0;
	g->n_req++;
	if (st != 200)
		g->n_fail++;
	return st;
}

/* Walk an EC2 listing like cloud-init's MetadataMaterializer. */
static void walk(struct guest *g, const char *base, int depth)
{
	char *buf = malloc(RESP_MAX), *line, *save, *p;
	size_t len = 0;

	if (!buf || get(g, base, buf, RESP_MAX, &len) != 200 || depth > 4) {
		free(buf);
		return;
	}
	for (line = buf; line && *line; line = p) {
		p = strchr(line, '\n');
		if (p)
			*p++ = '\0';
		char path[512], *eq = strchr(line, '=');

		save = line;
		if (eq) { /* public-keys: "0=name" -> 0/openssh-key */
			*eq = '\0';
			snprintf(path, sizeof(path), "%s%s/openssh-key", base, save);
		} else {
			snprintf(path, sizeof(path), "%s%s", base, save);
		}
		if (path[strlen(path) - 1] == '/') {
			walk(g, path, depth + 1);
		} else {
			char *leaf = malloc(RESP_MAX);

			if (leaf)
				get(g, path, leaf, RESP_MAX, &len);
			free(leaf);
		}
	}
	free(buf);
}

static void *crawl(void *arg)
{
	static const char *const os[] = {
		"/openstack", "/openstack/latest/meta_data.json", "/openstack/latest/user_data",
		"/openstack/latest/network_data.json", "/openstack/latest/vendor_data.json",
		"/openstack/latest/vendor_data2.json", "/latest/user-data",
	};
	struct guest *g = arg;
	char *buf = malloc(RESP_MAX);
	size_t len;
	int64_t t0 = time_mono_ns();

	walk(g, "/latest/meta-data/", 0);
	for (size_t i = 0; buf && i < ARRAY_SIZE(os); i++)
		get(g, os[i], buf, RESP_MAX, &len);
	g->crawl_ns = time_mono_ns() - t0;
	free(buf);
	return NULL;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	long port, n, first = 2;

	if (argc < 3 || parse_long(argv[1], 1, 65535, &port) < 0 ||
	    parse_long(argv[2], 1, 250, &n) < 0 || (argc > 3 && parse_long(argv[3], 2, 254, &first) < 0) ||
	    first + n > 255) {
		fprintf(stderr, "usage: crawl PORT N [FIRST_HOST]\n");
		return 2;
	}
	struct guest *g = calloc((size_t)n, sizeof(*g));
	int64_t *all = NULL, slow_crawl = 0;
	size_t total = 0, k = 0, fails = 0;

	for (long i = 0; i < n; i++) {
		g[i].host = (int)(first + i);
		g[i].port = (int)port;
		pthread_attr_t at;

		pthread_attr_init(&at);
		pthread_attr_setstacksize(&at, 256 * 1024);
		if (pthread_create(&g[i].th, &at, crawl, &g[i]) != 0) {
			fprintf(stderr, "crawl: pthread_create failed\n");
			return 1;
		}
		pthread_attr_destroy(&at);
	}
	for (long i = 0; i < n; i++) {
		pthread_join(g[i].th, NULL);
		total += (size_t)g[i].n_req;
		fails += (size_t)g[i].n_fail;
		if (g[i].crawl_ns > slow_crawl)
			slow_crawl = g[i].crawl_ns;
	}
	all = calloc(total ? total : 1, sizeof(*all));
	for (long i = 0; i < n; i++)
		for (int j = 0; j < g[i].n_req && j < MAX_REQ; j++)
			all[k++] = g[i].lat_ns[j];
	qsort(all, k, sizeof(*all), cmp64);
	printf("guests=%ld requests=%zu failed=%zu slowest_request_ms=%.1f p99_request_ms=%.1f "
	       "slowest_crawl_ms=%.1f\n",
	       n, total, fails, k ? (double)all[k - 1] / 1e6 : 0.0,
	       k ? (double)all[(k * 99) / 100] / 1e6 : 0.0, (double)slow_crawl / 1e6);
	free(all);
	free(g);
	return fails ? 1 : 0;
}
