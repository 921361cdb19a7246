/*
 * Shared by the images tests and benchmark: temp dirs, files with known
 * checksums, running programs, a private nginx on a free loopback port.
 * Header-only (static functions) so each test binary stays one file.
 */
#ifndef STRATUS_TESTS_IMAGES_HELPERS_H
#define STRATUS_TESTS_IMAGES_HELPERS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"

static inline void th_die(const char *what)
{
	fprintf(stderr, "test setup failed: %s: %s\n", what, strerror(errno));
	exit(99);
}

static inline char *th_printf(const char *fmt, ...) PRINTF_LIKE(1, 2);
static inline char *th_printf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		th_die("vasprintf");
	va_end(ap);
	return s;
}

/* Run a shell command; returns its exit status. */
static inline int th_sh(const char *cmd)
{
	int st = system(cmd);

	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline char *th_mkdtemp(const char *tag)
{
	char *d = th_printf("/tmp/stratus-%s-XXXXXX", tag);

	if (!mkdtemp(d))
		th_die("mkdtemp");
	chmod(d, 0755);
	return d;
}

static inline void th_rm_rf(const char *dir)
{
	char *cmd = th_printf("rm -rf '%s'", dir);

	th_sh(cmd);
	free(cmd);
}

/* A file of len pseudo-random bytes (seeded: reproducible). */
static inline void th_make_file(const char *path, size_t len, unsigned seed)
{
	FILE *f = fopen(path, "wb");
	unsigned x = seed * 2654435761u + 1;
	char buf[1024];

	if (!f)
		th_die(path);
	for (size_t done = 0; done < len;) {
		size_t n = len - done < sizeof(buf) ? len - done : sizeof(buf);

		for (size_t i = 0; i < n; i++) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			buf[i] = (char)x;
		}
		fwrite(buf, 1, n, f);
		done += n;
	}
	if (fclose(f) != 0)
		th_die(path);
}

/* "sha256:HEX" of a file (malloc'd). */
static inline char *th_sha256(const char *path)
{
	unsigned char d[EVP_MAX_MD_SIZE], *buf = malloc(65536);
	unsigned len = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	FILE *f = fopen(path, "rb");
	char *out = malloc(7 + 2 * 32 + 1);
	size_t n;

	if (!f || !md || !out || !buf)
		th_die(path);
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	while ((n = fread(buf, 1, 65536, f)) > 0)
		EVP_DigestUpdate(md, buf, n);
	free(buf);
	EVP_DigestFinal_ex(md, d, &len);
	EVP_MD_CTX_free(md);
	fclose(f);
	memcpy(out, "sha256:", 7);
	for (unsigned i = 0; i < len; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", d[i]);
	return out;
}

static inline bool th_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/* Count lines of a file that contain needle. */
static inline int th_count_lines(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			n++;
	fclose(f);
	return n;
}

/* Number of files in dir (not . and ..). */
static inline int th_count_files(const char *dir)
{
	char *cmd = th_printf("ls -A '%s' 2>/dev/null | wc -l", dir);
	FILE *p = popen(cmd, "r");
	int n = -1;

	if (p) {
		if (fscanf(p, "%d", &n) != 1)
			n = -1;
		pclose(p);
	}
	free(cmd);
	return n;
}

static inline int th_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		th_die("free port");
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static inline bool th_port_open(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

static inline void th_wait_port(int port, pid_t pid)
{
	for (int i = 0; i < 500; i++) {
		int st;

		if (th_port_open(port))
			return;
		if (pid > 0 && waitpid(pid, &st, WNOHANG) == pid) {
			fprintf(stderr, "server pid %d exited before listening on %d\n", (int)pid,
				port);
			exit(99);
		}
		usleep(10000);
	}
	fprintf(stderr, "nothing listens on port %d after 5 s\n", port);
	exit(99);
}

/*
 * A private nginx: DIR/www is the document root, DIR/access.log gets
 * "URI STATUS RANGE BYTES" per request. Locations:
 *   /            plain files (Range honoured)
 *   /norange/    same files, Range ignored (max_ranges 0: always 200)
 *   /slow/       same files at 8 KiB/s
 *   /medium/     same files at rate bytes/s (rate given)
 *   /error500    always 500
 */
struct th_nginx {
	pid_t pid;
	int port, tls_port; /* tls_port: https with DIR/cert.pem (self-signed) */
	char *dir, *www, *log;
};

static inline void th_nginx_start(struct th_nginx *n, const char *dir, long medium_rate)
{
	char *conf, *text;
	FILE *f;

	n->dir = strdup(dir);
	n->www = th_printf("%s/www", dir);
	n->log = th_printf("%s/access.log", dir);
	n->port = th_free_port();
	n->tls_port = th_free_port();
	mkdir(n->www, 0755);
	text = th_printf("cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
			 "-nodes -keyout key.pem -out cert.pem -days 2 -subj /CN=127.0.0.1 "
			 "-addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1", dir);
	if (th_sh(text) != 0)
		th_die("openssl req");
	free(text);
	text = th_printf("%s/tmp", dir);
	mkdir(text, 0755);
	free(text);
	conf = th_printf("%s/nginx.conf", dir);
	f = fopen(conf, "w");
	if (!f)
		th_die(conf);
	fprintf(f,
		"daemon off; master_process off; worker_processes 1;\n"
		"pid %1$s/nginx.pid; error_log %1$s/error.log;\n"
		"events { worker_connections 128; }\n"
		"http {\n"
		"  log_format t '$uri $status \"$http_range\" $body_bytes_sent';\n"
		"  access_log %1$s/access.log t;\n"
		"  client_body_temp_path %1$s/tmp; proxy_temp_path %1$s/tmp;\n"
		"  fastcgi_temp_path %1$s/tmp; uwsgi_temp_path %1$s/tmp; scgi_temp_path %1$s/tmp;\n"
		"  sendfile on; tcp_nopush on; keepalive_timeout 5;\n"
		"  default_type application/octet-stream;\n"
		"  server {\n"
		"    listen 127.0.0.1:%2$d;\n"
		"    root %1$s/www;\n"
		"    location /norange/ { alias %1$s/www/; max_ranges 0; }\n"
		"    location /slow/ { alias %1$s/www/; limit_rate 8k; }\n"
		"    location /medium/ { alias %1$s/www/; limit_rate %3$ld; }\n"
		"    location = /error500 { return 500; }\n"
		"  }\n"
		"  server {\n"
		"    listen 127.0.0.1:%4$d ssl;\n"
		"    ssl_certificate %1$s/cert.pem; ssl_certificate_key %1$s/key.pem;\n"
		"    root %1$s/www;\n"
		"  }\n"
		"}\n",
		dir, n->port, medium_rate > 0 ? medium_rate : 1048576L, n->tls_port);
	fclose(f);
	n->pid = fork();
	if (n->pid < 0)
		th_die("fork");
	if (n->pid == 0) {
		execlp("nginx", "nginx", "-p", dir, "-e", "stderr", "-c", conf, (char *)NULL);
		_exit(127);
	}
	free(conf);
	th_wait_port(n->port, n->pid);
}

static inline void th_nginx_stop(struct th_nginx *n)
{
	if (n->pid > 0) {
		kill(n->pid, SIGTERM);
		waitpid(n->pid, NULL, 0);
		n->pid = 0;
	}
	free(n->dir);
	free(n->www);
	free(n->log);
}

/* Path of a helper program built beside this test binary. */
static inline char *th_helper(const char *name)
{
	char self[1024];
	ssize_t l = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (l < 0)
		th_die("readlink /proc/self/exe");
	self[l] = '\0';
	slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	return th_printf("%s/%s", self, name);
}

#endif
