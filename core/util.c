/* Small shared helpers: strict parsing, uuid, time, strbuf, files, base64,
 * sizes for people. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"

void freep(void *p)
{
	free(*(void **)p);
}

void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

void fclosep(void *fp)
{
	FILE *f = *(FILE **)fp;

	if (f)
		fclose(f);
}

/* ---- parsing ------------------------------------------------------------ */

int parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (!s || !*s || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (*end != '\0')
		return -EINVAL;
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int parse_double(const char *s, double *out)
{
	char *end;
	double v;

	if (!s || !*s || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (*end != '\0' || errno == ERANGE || !isfinite(v))
		return -EINVAL;
	*out = v;
	return 0;
}

int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end) {
		switch (toupper((unsigned char)*end)) {
		case 'K': mult = 1ULL << 10; break;
		case 'M': mult = 1ULL << 20; break;
		case 'G': mult = 1ULL << 30; break;
		case 'T': mult = 1ULL << 40; break;
		default: return -EINVAL;
		}
		end++;
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
		if (*end)
			return -EINVAL;
	}
	if (v > UINT64_MAX / mult)
		return -ERANGE;
	*out = (uint64_t)v * mult;
	return 0;
}

int parse_duration_ms(const char *s, int64_t *out)
{
	char *end;
	long long v;
	int64_t mult = 1000;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "s") == 0 || *end == '\0')
		mult = 1000;
	else if (strcmp(end, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mult = 3600 * 1000;
	else
		return -EINVAL;
	if (v > INT64_MAX / mult)
		return -ERANGE;
	*out = (int64_t)v * mult;
	return 0;
}

/* ---- uuid and time ------------------------------------------------------ */

/*
 * The uuids' random bits: getrandom() a pool at a time, not once per uuid
 * (a syscall costs microseconds in a VM, and a boot decision makes five
 * uuids). Per thread; a forked child empties its pool, so it never hands
 * out its parent's bits again. Uuids are names, not secrets: keys and
 * nonces come from crypto_random().
 */
#define UUID_POOL 512

static __thread unsigned char uuid_pool[UUID_POOL];
static __thread size_t uuid_pool_left;
static pthread_once_t uuid_fork_once = PTHREAD_ONCE_INIT;

static void uuid_pool_forget(void)
{
	uuid_pool_left = 0; /* the child's one thread is the one that forked */
}

static void uuid_fork_register(void)
{
	pthread_atfork(NULL, NULL, uuid_pool_forget);
}

static void uuid_random(unsigned char b[16])
{
	pthread_once(&uuid_fork_once, uuid_fork_register);
	while (uuid_pool_left < 16) {
		ssize_t n = getrandom(uuid_pool, sizeof(uuid_pool), 0);

		if (n >= 16)
			uuid_pool_left = (size_t)n;
		else if (n < 0 && errno != EINTR)
			abort(); /* no entropy source: nothing sane to do */
	}
	uuid_pool_left -= 16;
	memcpy(b, uuid_pool + uuid_pool_left, 16);
	explicit_bzero(uuid_pool + uuid_pool_left, 16);
}

/* B with version V and the RFC 9562 variant, as 8-4-4-4-12 lower-case hex
 * written directly: not through snprintf's parsing of sixteen %02x, once
 * per request and per message */
static void uuid_format(unsigned char b[16], unsigned v, char out[UUID_STRLEN])
{
	static const char hex[] = "0123456789abcdef";

	b[6] = (unsigned char)((b[6] & 0x0f) | (v << 4));
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	for (size_t i = 0, o = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 15];
	}
	out[UUID_STRLEN - 1] = '\0';
}

void uuid_generate_str(char out[UUID_STRLEN])
{
	unsigned char b[16];

	uuid_random(b);
	uuid_format(b, 4, out);
}

void uuid_generate_time_str(char out[UUID_STRLEN])
{
	uint64_t ms = (uint64_t)time_wall_ms();
	unsigned char b[16];

	uuid_random(b);
	for (int i = 0; i < 6; i++) /* unix_ts_ms, big-endian: 48 bits */
		b[i] = (unsigned char)(ms >> (40 - 8 * i));
	uuid_format(b, 7, out);
}

bool uuid_valid(const char *s)
{
	if (!s || strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!isxdigit((unsigned char)s[i])) {
			return false;
		}
	}
	return true;
}

void time_rfc3339_now(char out[RFC3339_STRLEN])
{
	/* the date and time to the second, formatted once a second per thread:
	 * gmtime_r and snprintf were a few thousand instructions a call, and a
	 * decision stamps half a dozen envelopes and rows */
	static __thread time_t last_sec = -1;
	static __thread char prefix[RFC3339_STRLEN];
	struct timespec ts;
	int ms;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last_sec) {
		struct tm tm;

		gmtime_r(&ts.tv_sec, &tm);
		snprintf(prefix, sizeof(prefix), "%04d-%02d-%02dT%02d:%02d:%02d.",
			 (tm.tm_year + 1900) % 10000, (tm.tm_mon + 1) % 100, tm.tm_mday % 100,
			 tm.tm_hour % 100, tm.tm_min % 100, tm.tm_sec % 100);
		last_sec = ts.tv_sec;
	}
	ms = (int)(ts.tv_nsec / 1000000) % 1000;
	memcpy(out, prefix, 20); /* "YYYY-MM-DDTHH:MM:SS." */
	out[20] = (char)('0' + ms / 100);
	out[21] = (char)('0' + ms / 10 % 10);
	out[22] = (char)('0' + ms % 10);
	out[23] = 'Z';
	out[24] = '\0';
}

bool time_rfc3339_valid(const char *s)
{
	struct tm tm;
	const char *p;

	if (!s)
		return false;
	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return false;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (*p == 'Z' || *p == 'z')
		return p[1] == '\0';
	if ((*p == '+' || *p == '-') && isdigit((unsigned char)p[1]) &&
	    isdigit((unsigned char)p[2]) && p[3] == ':' && isdigit((unsigned char)p[4]) &&
	    isdigit((unsigned char)p[5]) && p[6] == '\0')
		return true;
	return false;
}

int64_t time_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t time_mono_ms(void)
{
	return time_mono_ns() / 1000000;
}

int64_t time_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- strbuf ------------------------------------------------------------- */

int sb_append(struct strbuf *sb, const char *data, size_t n)
{
	size_t max = sb->max ? sb->max : (1u << 20);

	if (sb->len + n + 1 > max)
		return -E2BIG;
	if (sb->len + n + 1 > sb->cap) {
		size_t cap = sb->cap ? sb->cap : 256;
		char *nb;

		while (cap < sb->len + n + 1)
			cap *= 2;
		if (cap > max)
			cap = max;
		nb = realloc(sb->buf, cap);
		if (!nb)
			return -ENOMEM;
		sb->buf = nb;
		sb->cap = cap;
	}
	memcpy(sb->buf + sb->len, data, n);
	sb->len += n;
	sb->buf[sb->len] = '\0';
	return 0;
}

int sb_printf(struct strbuf *sb, const char *fmt, ...)
{
	char small[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n < sizeof(small))
		return sb_append(sb, small, (size_t)n);

	char *big = malloc((size_t)n + 1);
	int r;

	if (!big)
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	r = sb_append(sb, big, (size_t)n);
	free(big);
	return r;
}

char *sb_steal(struct strbuf *sb)
{
	char *s = sb->buf;

	if (!s)
		s = strdup("");
	sb->buf = NULL;
	sb->len = sb->cap = 0;
	return s;
}

void sb_free(struct strbuf *sb)
{
	if (!sb)
		return;
	free(sb->buf);
	sb->buf = NULL;
	sb->len = sb->cap = 0;
}

/* ---- files -------------------------------------------------------------- */

int read_file(const char *path, size_t max, char **out, size_t *len)
{
	struct strbuf sb = { .max = max + 1 };
	char buf[2048];
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_sys(-errno, "%s", path);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = err_sys(-errno, "%s: read", path);
			goto out;
		}
		if (n == 0)
			break;
		r = sb_append(&sb, buf, (size_t)n);
		if (r == -E2BIG) {
			r = err_set(r, "%s: larger than %zu bytes", path, max);
			goto out;
		} else if (r < 0) {
			r = err_sys(r, "%s", path);
			goto out;
		}
	}
	if (len)
		*len = sb.len;
	*out = sb_steal(&sb);
	if (!*out)
		r = err_sys(-ENOMEM, "%s", path);
out:
	close(fd);
	sb_free(&sb);
	return r;
}

int write_file_atomic(const char *path, const void *data, size_t len, int mode)
{
	_cleanup_free_ char *tmp = NULL;
	const char *p = data, *base = strrchr(path, '/');
	int dlen = base ? (int)(base - path + 1) : 0;
	int fd, r = 0;

	/* a dotfile beside the target: directory watchers that skip dotfiles
	 * (dnsmasq's --dhcp-hostsdir) see only the finished file */
	if (asprintf(&tmp, "%.*s.%s.tmp.%d", dlen, path, base ? base + 1 : path,
		     (int)getpid()) < 0)
		return err_sys(-ENOMEM, "%s", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return err_sys(-errno, "%s", tmp);
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = err_sys(-errno, "%s: write", tmp);
			goto fail;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0) {
		r = err_sys(-errno, "%s: fsync", tmp);
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = err_sys(-errno, "%s: close", tmp);
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = err_sys(-errno, "%s: rename", path);
		goto fail;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return r;
}

int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return err_sys(-errno, "%s: open directory", dir);
	if (fsync(fd) < 0)
		r = err_sys(-errno, "%s: fsync directory", dir);
	close(fd);
	return r;
}

int write_file_durable(const char *path, const void *data, size_t len, int mode)
{
	_cleanup_free_ char *dir = NULL;
	const char *base = strrchr(path, '/');
	int r = write_file_atomic(path, data, len, mode);

	if (r < 0)
		return r;
	if (!base)
		return fsync_dir(".");
	if (base == path)
		return fsync_dir("/");
	dir = strndup(path, (size_t)(base - path));
	if (!dir)
		return err_sys(-ENOMEM, "%s", path);
	return fsync_dir(dir);
}

int mkdir_p(const char *path, int mode)
{
	_cleanup_free_ char *buf = strdup(path);

	if (!buf || !*buf)
		return err_set(-EINVAL, "mkdir '%s': bad path", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST)
			return err_sys(-errno, "mkdir %s", buf);
		*p = '/';
	}
	if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST)
		return err_sys(-errno, "mkdir %s", buf);
	return 0;
}

/* ---- base64 ------------------------------------------------------------- */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(char c)
{
	const char *p = c ? strchr(b64_alphabet, c) : NULL;

	return p ? (int)(p - b64_alphabet) : -1;
}

int base64_decode(const char *in, size_t max_out, unsigned char **out, size_t *out_len)
{
	size_t n = strlen(in), len = 0, pad = 0;
	unsigned char *buf;

	if (n % 4 != 0)
		return -EINVAL;
	if (n >= 1 && in[n - 1] == '=')
		pad++;
	if (n >= 2 && in[n - 2] == '=')
		pad++;
	if (n / 4 * 3 - pad > max_out)
		return -E2BIG;
	buf = malloc(n / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		bool last = i + 4 == n;

		for (int j = 0; j < 4; j++) {
			v[j] = b64_value(in[i + (size_t)j]);
			if (v[j] < 0 && !(last && in[i + (size_t)j] == '=' && j >= 4 - (int)pad)) {
				free(buf);
				return -EINVAL;
			}
		}
		buf[len++] = (unsigned char)((v[0] << 2) | (v[1] >> 4));
		if (v[2] >= 0)
			buf[len++] = (unsigned char)(((v[1] & 0xf) << 4) | (v[2] >> 2));
		if (v[3] >= 0)
			buf[len++] = (unsigned char)(((v[2] & 0x3) << 6) | v[3]);
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
}

char *base64_encode(const unsigned char *in, size_t len)
{
	char *out = malloc((len + 2) / 3 * 4 + 1), *p = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		unsigned v = (unsigned)in[i] << 16;

		if (i + 1 < len)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		*p++ = b64_alphabet[(v >> 18) & 63];
		*p++ = b64_alphabet[(v >> 12) & 63];
		*p++ = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
		*p++ = i + 2 < len ? b64_alphabet[v & 63] : '=';
	}
	*p = '\0';
	return out;
}

void human_size(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double d = (double)v;
	size_t u = 0;

	while (d >= 1024 && u + 1 < ARRAY_SIZE(units)) {
		d /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", d, units[u]);
}
