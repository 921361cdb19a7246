/*
 * Downloads against a real nginx that this test starts on a free loopback
 * port (its own config, pid file and logs), with a fault-injecting proxy
 * (cutproxy) in front of it where a transfer must be cut. Every request is
 * in nginx's access log as "URI STATUS "RANGE" BYTES", which the tests
 * count and read.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mount.h>
#include <cmocka.h>

#include "images/images_priv.h"
#include "tests/images/helpers.h"

#define MIB (1u << 20)

static char *top;
static struct th_nginx ngx;
static pid_t live_proxy; /* killed in teardown when a test failed midway */

static void www_file(const char *name, unsigned mib, unsigned seed)
{
	char *p = th_printf("%s/%s", ngx.www, name);

	th_make_file(p, (size_t)mib * MIB, seed);
	free(p);
}

static char *www_sum(const char *name)
{
	char *p = th_printf("%s/%s", ngx.www, name);
	char *s = th_sha256(p);

	free(p);
	return s;
}

static int setup_all(void **state)
{
	(void)state;
	top = th_mkdtemp("fetch");
	th_nginx_start(&ngx, top, 4L * MIB); /* /medium/ at 4 MiB/s */
	www_file("big.raw", 4, 1);
	www_file("resume.raw", 4, 2);
	www_file("norange.raw", 4, 3);
	www_file("part.raw", 4, 4);
	www_file("mismatch.raw", 1, 5);
	www_file("flight.raw", 2, 6);
	www_file("lim1.raw", 1, 7);
	www_file("lim2.raw", 1, 8);
	www_file("lim3.raw", 1, 9);
	www_file("full.raw", 4, 10);
	www_file("slow.raw", 4, 11);
	return 0;
}

static int teardown_all(void **state)
{
	(void)state;
	if (live_proxy > 0) {
		kill(live_proxy, SIGTERM);
		waitpid(live_proxy, NULL, 0);
	}
	th_nginx_stop(&ngx);
	th_rm_rf(top);
	free(top);
	return 0;
}

/* Lines of the access log with needle, waiting up to 2 s for want. */
static int log_count(const char *needle, int want)
{
	int n = 0;

	for (int i = 0; i < 200; i++) {
		n = th_count_lines(ngx.log, needle);
		if (n >= want)
			break;
		usleep(10000);
	}
	return n;
}

struct fixture {
	struct img_config cfg;
	struct img_cache *c;
	char *partial;
};

static void fx_open(struct fixture *f, const char *tag, void (*tune)(struct img_config *))
{
	memset(f, 0, sizeof(*f));
	assert_int_equal(img_config_defaults(&f->cfg), 0);
	free(f->cfg.cache_dir);
	f->cfg.cache_dir = th_printf("%s/cache-%s", top, tag);
	f->cfg.retries = 3;
	f->cfg.retry_backoff_ms = 50;
	f->cfg.low_speed_time_ms = 5000;
	f->cfg.total_timeout_ms = 60000;
	if (tune)
		tune(&f->cfg);
	f->partial = th_printf("%s/partial", f->cfg.cache_dir);
	if (img_cache_open(&f->cfg, &f->c) < 0)
		fail_msg("open: %s", err_msg());
}

static void fx_close(struct fixture *f)
{
	img_cache_close(f->c);
	img_config_free(&f->cfg);
	free(f->partial);
}

struct prog {
	int calls;
	bool done;
	uint64_t bytes, total;
	unsigned max_attempt;
};

static int on_progress(const struct img_progress *p, void *ud)
{
	struct prog *g = ud;

	g->calls++;
	g->done |= p->done;
	g->bytes = p->bytes;
	g->total = p->total;
	if (p->attempt > g->max_attempt)
		g->max_attempt = p->attempt;
	return 0;
}

static int fetch(struct fixture *f, const char *url, const char *sum, struct prog *g,
		 char **path)
{
	struct img_ref ref = { .url = url, .checksum = sum, .format = IMG_FMT_RAW };
	char *p = NULL;
	int r = img_acquire(f->c, &ref, g ? on_progress : NULL, g, &p);

	if (r == 0)
		img_release(f->c, sum);
	if (path)
		*path = p;
	else
		free(p);
	return r;
}

static bool cached(struct fixture *f, const char *sum)
{
	struct img_entry *v = NULL;
	size_t n = 0;
	bool found = false;

	assert_int_equal(img_list(f->c, &v, &n), 0);
	for (size_t i = 0; i < n; i++)
		found |= strcmp(v[i].checksum, sum) == 0;
	img_entries_free(v, n);
	return found;
}

/* ---- cutproxy ---------------------------------------------------------- */

struct proxy {
	pid_t pid;
	int port;
};

static void proxy_start(struct proxy *px, long cut, int conns)
{
	char *bin = th_helper("cutproxy"), up[16], cs[32], cn[16];
	int p[2];
	FILE *f;

	snprintf(up, sizeof(up), "%d", ngx.port);
	snprintf(cs, sizeof(cs), "%ld", cut);
	snprintf(cn, sizeof(cn), "%d", conns);
	if (pipe(p) < 0)
		th_die("pipe");
	px->pid = fork();
	if (px->pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		execl(bin, "cutproxy", up, cs, cn, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	f = fdopen(p[0], "r");
	if (!f || fscanf(f, "%d", &px->port) != 1)
		th_die("cutproxy did not start");
	fclose(f);
	live_proxy = px->pid;
	free(bin);
}

static void proxy_stop(struct proxy *px)
{
	kill(px->pid, SIGTERM);
	waitpid(px->pid, NULL, 0);
	live_proxy = 0;
}

/* ---- tests -------------------------------------------------------------- */

static void test_normal_fetch(void **state)
{
	struct fixture f;
	struct prog g = { 0 };
	char *url = th_printf("http://127.0.0.1:%d/big.raw", ngx.port);
	char *sum = www_sum("big.raw"), *path = NULL, *got;

	(void)state;
	fx_open(&f, "normal", NULL);
	if (fetch(&f, url, sum, &g, &path) < 0)
		fail_msg("fetch: %s", err_msg());
	got = th_sha256(path);
	assert_string_equal(got, sum);
	assert_true(g.done);
	assert_true(g.bytes == 4 * MIB && g.total == 4 * MIB);
	assert_int_equal(log_count("/big.raw 200", 1), 1);
	assert_int_equal(th_count_files(f.partial), 0);
	/* a second acquire is served from the cache: no new request */
	assert_int_equal(fetch(&f, url, sum, NULL, NULL), 0);
	usleep(50000);
	assert_int_equal(th_count_lines(ngx.log, "/big.raw "), 1);
	free(got);
	free(path);
	free(url);
	free(sum);
	fx_close(&f);
}

/* Cut after 1 MiB; the retry asks for the rest with Range and gets 206. */
static void test_cut_then_resume(void **state)
{
	struct fixture f;
	struct proxy px;
	struct prog g = { 0 };
	char *url, *sum = www_sum("resume.raw");

	(void)state;
	proxy_start(&px, 1 * MIB, 1);
	url = th_printf("http://127.0.0.1:%d/resume.raw", px.port);
	fx_open(&f, "resume", NULL);
	if (fetch(&f, url, sum, &g, NULL) < 0)
		fail_msg("fetch: %s", err_msg());
	assert_true(cached(&f, sum));
	assert_int_equal(log_count("/resume.raw ", 2), 2);
	assert_int_equal(th_count_lines(ngx.log, "/resume.raw 206 \"bytes="), 1);
	/* the resumed range starts where the cut left us, not at 0 */
	assert_int_equal(th_count_lines(ngx.log, "/resume.raw 206 \"bytes=0-"), 0);
	assert_int_equal(g.max_attempt, 2);
	proxy_stop(&px);
	free(url);
	free(sum);
	fx_close(&f);
}

/* A server that ignores Range (200 again after the cut): start over,
 * never append the 200 body to the partial file. */
static void test_server_ignores_range(void **state)
{
	struct fixture f;
	struct proxy px;
	char *url, *sum = www_sum("norange.raw"), *path = NULL, *got;

	(void)state;
	proxy_start(&px, 1 * MIB, 1);
	url = th_printf("http://127.0.0.1:%d/norange/norange.raw", px.port);
	fx_open(&f, "norange", NULL);
	if (fetch(&f, url, sum, NULL, &path) < 0)
		fail_msg("fetch: %s", err_msg());
	assert_int_equal(log_count("/norange/norange.raw ", 2), 2);
	/* the second request asked for a range and got the whole file */
	assert_int_equal(th_count_lines(ngx.log, "/norange/norange.raw 200 \"bytes="), 1);
	got = th_sha256(path);
	assert_string_equal(got, sum);
	{
		struct stat st;

		assert_int_equal(stat(path, &st), 0);
		assert_true(st.st_size == 4 * MIB);
	}
	proxy_stop(&px);
	free(got);
	free(path);
	free(url);
	free(sum);
	fx_close(&f);
}

/* A .part left by an earlier run (agent restart) is resumed, not redone. */
static void test_resume_partial_from_disk(void **state)
{
	struct fixture f;
	char *url = th_printf("http://127.0.0.1:%d/part.raw", ngx.port);
	char *sum = www_sum("part.raw"), *part, *cmd;

	(void)state;
	fx_open(&f, "partial", NULL);
	part = th_printf("%s/sha256-%s.part", f.partial, sum + 7);
	cmd = th_printf("head -c 1048576 '%s/part.raw' > '%s'", ngx.www, part);
	assert_int_equal(th_sh(cmd), 0);
	if (fetch(&f, url, sum, NULL, NULL) < 0)
		fail_msg("fetch: %s", err_msg());
	assert_int_equal(log_count("/part.raw 206 \"bytes=1048576-\" 3145728", 1), 1);
	assert_int_equal(th_count_lines(ngx.log, "/part.raw "), 1);
	assert_false(th_exists(part));
	free(cmd);
	free(part);
	free(url);
	free(sum);
	fx_close(&f);
}

static void test_http_errors(void **state)
{
	struct fixture f;
	char *u404 = th_printf("http://127.0.0.1:%d/nope.raw", ngx.port);
	char *u500 = th_printf("http://127.0.0.1:%d/error500", ngx.port);
	const char *sum = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

	(void)state;
	fx_open(&f, "errors", NULL);
	/* 404: permanent, no retries */
	assert_int_equal(fetch(&f, u404, sum, NULL, NULL), -ENOENT);
	assert_non_null(strstr(err_msg(), "HTTP 404 (1 attempt)"));
	assert_int_equal(log_count("/nope.raw 404", 1), 1);
	/* 500: transient, retried (retries = 3 in this fixture), then reported */
	assert_int_equal(fetch(&f, u500, sum, NULL, NULL), -EIO);
	assert_non_null(strstr(err_msg(), "HTTP 500 (4 attempts)"));
	assert_int_equal(log_count("/error500 500", 4), 4);
	assert_int_equal(th_count_files(f.partial), 0);
	assert_false(cached(&f, sum));
	free(u404);
	free(u500);
	fx_close(&f);
}

static void test_checksum_mismatch(void **state)
{
	struct fixture f;
	char *url = th_printf("http://127.0.0.1:%d/mismatch.raw", ngx.port);
	char *real = www_sum("mismatch.raw");
	const char *want = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
	char *msg;

	(void)state;
	fx_open(&f, "mismatch", NULL);
	assert_int_equal(fetch(&f, url, want, NULL, NULL), -EBADMSG);
	msg = th_printf("checksum mismatch: the fetched file's checksum differs from the "
			"expected %s", want);
	assert_non_null(strstr(err_msg(), msg));
	/* never the hash of what was fetched */
	assert_null(strstr(err_msg(), real + strlen("sha256:")));
	assert_int_equal(th_count_files(f.partial), 0);
	assert_false(cached(&f, want));
	assert_false(cached(&f, real));
	free(msg);
	free(url);
	free(real);
	fx_close(&f);
}

static void tune_slow(struct img_config *c)
{
	c->retries = 0;
	c->low_speed_limit = 64 * 1024;
	c->low_speed_time_ms = 1000;
}

static void tune_total(struct img_config *c)
{
	c->retries = 5;
	c->low_speed_limit = 0;
	c->total_timeout_ms = 1500;
}

static void test_slow_server_timeouts(void **state)
{
	struct fixture f;
	char *url = th_printf("http://127.0.0.1:%d/slow/slow.raw", ngx.port);
	char *sum = www_sum("slow.raw");
	int64_t t0;

	(void)state;
	fx_open(&f, "slow", tune_slow);
	t0 = time_mono_ms();
	assert_int_equal(fetch(&f, url, sum, NULL, NULL), -ETIMEDOUT);
	assert_non_null(strstr(err_msg(), "too slow"));
	assert_true(time_mono_ms() - t0 < 5000);
	assert_false(cached(&f, sum));
	fx_close(&f);

	/* total timeout across retries */
	fx_open(&f, "slow-total", tune_total);
	t0 = time_mono_ms();
	assert_int_equal(fetch(&f, url, sum, NULL, NULL), -ETIMEDOUT);
	assert_non_null(strstr(err_msg(), "timed out"));
	assert_true(time_mono_ms() - t0 < 4000);
	assert_false(cached(&f, sum));
	free(url);
	free(sum);
	fx_close(&f);
}

/* A 2 MiB tmpfs as the cache: a 4 MiB image fills it; nothing remains. */
static void test_disk_full(void **state)
{
	struct fixture f;
	char *mnt = th_printf("%s/cache-full", top);
	char *url = th_printf("http://127.0.0.1:%d/full.raw", ngx.port);
	char *sum = www_sum("full.raw"), *idx;

	(void)state;
	mkdir(mnt, 0755);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=2m") < 0)
		fail_msg("mount tmpfs on %s: %s (the test needs root)", mnt, strerror(errno));
	fx_open(&f, "full", NULL);
	assert_int_equal(fetch(&f, url, sum, NULL, NULL), -ENOSPC);
	assert_non_null(strstr(err_msg(), "filesystem is full"));
	assert_int_equal(th_count_files(f.partial), 0);
	assert_false(cached(&f, sum));
	/* the index is intact and the cache still works for what fits */
	idx = th_printf("%s/index.json", f.cfg.cache_dir);
	{
		struct img_entry *v = NULL;
		size_t n = 0;

		assert_int_equal(img_list(f.c, &v, &n), 0);
		assert_int_equal(n, 0);
		img_entries_free(v, n);
	}
	{
		char *u2 = th_printf("http://127.0.0.1:%d/lim1.raw", ngx.port);
		char *s2 = www_sum("lim1.raw");

		if (fetch(&f, u2, s2, NULL, NULL) < 0)
			fail_msg("fetch after full: %s", err_msg());
		assert_true(cached(&f, s2));
		free(u2);
		free(s2);
	}
	fx_close(&f);
	umount2(mnt, MNT_DETACH);
	free(idx);
	free(mnt);
	free(url);
	free(sum);
}

struct racer {
	struct img_cache *c;
	struct img_ref ref;
	int rc;
	char *path;
	/* for the download limit */
	bool started, finished;
};

static pthread_mutex_t race_mu = PTHREAD_MUTEX_INITIALIZER;
static int active, max_active;

static int race_progress(const struct img_progress *p, void *ud)
{
	struct racer *r = ud;

	pthread_mutex_lock(&race_mu);
	if (!r->started) {
		r->started = true;
		if (++active > max_active)
			max_active = active;
	}
	if (p->done && !r->finished) {
		r->finished = true;
		active--;
	}
	pthread_mutex_unlock(&race_mu);
	return 0;
}

static void *race(void *arg)
{
	struct racer *r = arg;

	r->rc = img_acquire(r->c, &r->ref, race_progress, r, &r->path);
	if (r->rc == 0)
		img_release(r->c, r->ref.checksum);
	return NULL;
}

/* 8 concurrent requests for one image: one request reaches nginx. */
static void test_eight_fetches_one_download(void **state)
{
	struct fixture f;
	char *url = th_printf("http://127.0.0.1:%d/medium/flight.raw", ngx.port);
	char *sum = www_sum("flight.raw");
	struct racer rs[8];
	pthread_t t[8];

	(void)state;
	fx_open(&f, "flight", NULL);
	for (int i = 0; i < 8; i++) {
		rs[i] = (struct racer){ .c = f.c,
					.ref = { .url = url, .checksum = sum, .format = IMG_FMT_RAW } };
		pthread_create(&t[i], NULL, race, &rs[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		if (rs[i].rc < 0)
			fail_msg("racer %d: %d", i, rs[i].rc);
		assert_string_equal(rs[i].path, rs[0].path);
	}
	usleep(100000);
	assert_int_equal(th_count_lines(ngx.log, "/medium/flight.raw "), 1);
	for (int i = 0; i < 8; i++)
		free(rs[i].path);
	free(url);
	free(sum);
	fx_close(&f);
}

static char *tls_ca;

static void tune_tls_ca(struct img_config *c)
{
	free(c->ca_file);
	c->ca_file = strdup(tls_ca);
}

/* https: verified against the system CAs by default (our self-signed
 * server is refused), against ca_file when configured. */
static void test_https(void **state)
{
	struct fixture f;
	char *url = th_printf("https://127.0.0.1:%d/lim2.raw", ngx.tls_port);
	char *sum = www_sum("lim2.raw");

	(void)state;
	tls_ca = th_printf("%s/cert.pem", top);
	fx_open(&f, "tls-untrusted", NULL);
	assert_int_equal(fetch(&f, url, sum, NULL, NULL), -EIO);
	assert_non_null(strstr(err_msg(), "certificate"));
	assert_false(cached(&f, sum));
	fx_close(&f);
	fx_open(&f, "tls-trusted", tune_tls_ca);
	if (fetch(&f, url, sum, NULL, NULL) < 0)
		fail_msg("https fetch: %s", err_msg());
	assert_true(cached(&f, sum));
	fx_close(&f);
	free(tls_ca);
	free(url);
	free(sum);
}

static void tune_one_download(struct img_config *c)
{
	c->max_downloads = 1;
}

/* max_downloads = 1: three images download one after the other. */
static void test_download_limit(void **state)
{
	struct fixture f;
	const char *names[3] = { "lim1.raw", "lim2.raw", "lim3.raw" };
	char *urls[3], *sums[3];
	struct racer rs[3];
	pthread_t t[3];

	(void)state;
	fx_open(&f, "limit", tune_one_download);
	active = max_active = 0;
	for (int i = 0; i < 3; i++) {
		urls[i] = th_printf("http://127.0.0.1:%d/medium/%s", ngx.port, names[i]);
		sums[i] = www_sum(names[i]);
		rs[i] = (struct racer){
			.c = f.c, .ref = { .url = urls[i], .checksum = sums[i], .format = IMG_FMT_RAW }
		};
		pthread_create(&t[i], NULL, race, &rs[i]);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(rs[i].rc, 0);
		assert_true(rs[i].started && rs[i].finished);
		free(rs[i].path);
		free(urls[i]);
		free(sums[i]);
	}
	assert_int_equal(max_active, 1);
	fx_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_normal_fetch),
		cmocka_unit_test(test_cut_then_resume),
		cmocka_unit_test(test_server_ignores_range),
		cmocka_unit_test(test_resume_partial_from_disk),
		cmocka_unit_test(test_http_errors),
		cmocka_unit_test(test_checksum_mismatch),
		cmocka_unit_test(test_slow_server_timeouts),
		cmocka_unit_test(test_disk_full),
		cmocka_unit_test(test_eight_fetches_one_download),
		cmocka_unit_test(test_download_limit),
		cmocka_unit_test(test_https),
	};

	log_init("test_fetch", false, LOG_LVL_WARN);
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
