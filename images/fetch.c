/*
 * One download with libcurl into a .part file, hashed while it streams.
 *
 * Resume: a present .part of N bytes is hashed first, then asked for with
 * "Range: bytes=N-". A 206 whose Content-Range starts at N is appended; a
 * 200 means the server ignored the range: the file is truncated and the
 * hash restarted before the first byte of that body is written (a 200
 * body is never appended to a partial file). CURLOPT_RANGE is used rather
 * than CURLOPT_RESUME_FROM because the latter turns a 200 into an error.
 */
#define LOG_TAG "images"
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "images/images_priv.h"

#define FETCH_BUFFER (512L * 1024)
#define PROGRESS_EVERY_NS (200LL * 1000 * 1000)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct xfer {
	const struct img_fetch_opts *o;
	CURL *curl;
	int fd;
	EVP_MD_CTX *md;
	const EVP_MD *type;
	uint64_t offset;         /* bytes written and hashed */
	uint64_t attempt_start;  /* offset when this attempt began */
	uint64_t range_from;     /* Range asked for in this attempt (0: none) */
	int64_t cr_start;        /* Content-Range start of a 206, -1 if none */
	bool checked;            /* response looked at (first body byte) */
	bool restarted;          /* a 200 answered our Range in this attempt */
	int err;                 /* our reason for aborting (negative errno) */
	unsigned attempt;
	int64_t t_start_ns, t_last_cb_ns;
	char errbuf[CURL_ERROR_SIZE];
};

static int md_reset(struct xfer *x)
{
	if (EVP_DigestInit_ex(x->md, x->type, NULL) != 1)
		return err_set(-EIO, "openssl: cannot initialise %s", EVP_MD_get0_name(x->type));
	return 0;
}

/* Hash what the partial file already holds (resume after a restart). */
static int hash_existing(struct xfer *x, uint64_t len)
{
	const size_t bufsz = 1 << 20;
	char *buf = malloc(bufsz);
	uint64_t done = 0;
	int r = 0;

	if (!buf)
		return err_set(-ENOMEM, "out of memory");
	while (done < len) {
		size_t want = len - done < bufsz ? (size_t)(len - done) : bufsz;
		ssize_t n = pread(x->fd, buf, want, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = err_sys(n < 0 ? -errno : -EIO, "%s: read", x->o->part_path);
			break;
		}
		EVP_DigestUpdate(x->md, buf, (size_t)n);
		done += (size_t)n;
	}
	free(buf);
	return r;
}

static int truncate_to(struct xfer *x, uint64_t len)
{
	if (ftruncate(x->fd, (off_t)len) < 0)
		return -errno;
	x->offset = len;
	return 0;
}

/* First body bytes of an attempt: decide append or start over. */
static int check_response(struct xfer *x)
{
	long code = 0;

	curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
	x->checked = true;
	if (x->range_from == 0)
		return 0;
	if (code == 206) {
		if (x->cr_start != (int64_t)x->range_from) {
			/* A range we did not ask for: start over in the next attempt. */
			truncate_to(x, 0);
			md_reset(x);
			return -EPROTO;
		}
		return 0;
	}
	if (code == 0) /* file:// honours ranges */
		return 0;
	/* 200: the server ignored Range; the body starts at byte 0. */
	if (code == 200 || code == 203) {
		int r = truncate_to(x, 0);

		if (r < 0)
			return r;
		if (md_reset(x) < 0)
			return -EIO;
		x->attempt_start = 0;
		x->restarted = true;
		return 0;
	}
	return -EPROTO;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
	struct xfer *x = ud;
	size_t len = sz * n;
	static const char key[] = "content-range:";

	if (len > sizeof(key) && strncasecmp(p, key, sizeof(key) - 1) == 0) {
		char tmp[128];
		size_t l = len - (sizeof(key) - 1);
		unsigned long long a;

		if (l >= sizeof(tmp))
			l = sizeof(tmp) - 1;
		memcpy(tmp, p + sizeof(key) - 1, l);
		tmp[l] = '\0';
		if (sscanf(tmp, " bytes %llu-", &a) == 1)
			x->cr_start = (int64_t)a;
	}
	/* A new response (redirect, 100-continue): look at it afresh. */
	if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
		x->cr_start = -1;
		x->checked = false;
	}
	return len;
}

static size_t on_write(char *p, size_t sz, size_t n, void *ud)
{
	struct xfer *x = ud;
	size_t len = sz * n, done = 0;

	if (!x->checked) {
		int r = check_response(x);

		if (r < 0) {
			x->err = r;
			return 0;
		}
	}
	if (x->o->max_size && x->offset + len > x->o->max_size) {
		x->err = -EFBIG;
		return 0;
	}
	while (done < len) {
		ssize_t w = pwrite(x->fd, p + done, len - done, (off_t)(x->offset + done));

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			x->err = w < 0 ? -errno : -EIO;
			/* Keep the file equal to what was hashed. */
			if (ftruncate(x->fd, (off_t)x->offset) < 0)
				x->err = x->err ? x->err : -errno;
			return 0;
		}
		done += (size_t)w;
	}
	EVP_DigestUpdate(x->md, p, len);
	x->offset += len;
	return len;
}

static int report(struct xfer *x, uint64_t total, bool done)
{
	int64_t now = time_mono_ns();
	double secs = (double)(now - x->t_start_ns) / 1e9;
	struct img_progress pr = {
		.name = x->o->name,
		.bytes = x->offset,
		.total = total,
		.attempt = x->attempt,
		.done = done,
		.eta_s = -1,
	};

	if (!x->o->progress)
		return 0;
	if (!done && now - x->t_last_cb_ns < PROGRESS_EVERY_NS)
		return 0;
	x->t_last_cb_ns = now;
	if (secs > 0)
		pr.rate = (double)(x->offset - x->attempt_start) / secs;
	if (total && pr.rate > 0)
		pr.eta_s = total > x->offset ? (double)(total - x->offset) / pr.rate : 0;
	return x->o->progress(&pr, x->o->ud);
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct xfer *x = ud;
	uint64_t total = dltotal > 0 && x->checked ? x->attempt_start + (uint64_t)dltotal : 0;

	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	if (x->o->max_size && total > x->o->max_size) {
		x->err = -EFBIG;
		return 1;
	}
	if (report(x, total, false) != 0) {
		x->err = -ECANCELED;
		return 1;
	}
	return 0;
}

/* Transient failures are retried; the rest end the fetch. (A table, not a
 * switch: curl's enum is not ours to enumerate under -Wswitch-enum.) */
static const CURLcode transient_codes[] = {
	CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT, CURLE_PARTIAL_FILE,
	CURLE_RECV_ERROR,      CURLE_SEND_ERROR,         CURLE_GOT_NOTHING,
	CURLE_HTTP2,           CURLE_HTTP2_STREAM,       CURLE_SSL_CONNECT_ERROR,
	CURLE_WEIRD_SERVER_REPLY, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY,
};

static bool retryable(CURLcode rc, long http)
{
	if (rc == CURLE_HTTP_RETURNED_ERROR)
		return http == 408 || http == 416 || http == 425 || http == 429 || http >= 500;
	for (size_t i = 0; i < ARRAY_SIZE(transient_codes); i++)
		if (rc == transient_codes[i])
			return true;
	return false;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void hex_of(const unsigned char *d, unsigned len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (unsigned i = 0; i < len; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[2 * len] = '\0';
}

/* Does what was hashed so far already match the expected checksum? */
static bool digest_matches(struct xfer *x)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	char hex[IMG_HEX_MAX];
	unsigned len = 0;
	EVP_MD_CTX *copy = EVP_MD_CTX_new();
	bool ok = false;

	if (copy && EVP_MD_CTX_copy_ex(copy, x->md) == 1 &&
	    EVP_DigestFinal_ex(copy, d, &len) == 1) {
		hex_of(d, len, hex);
		ok = strcmp(hex, x->o->want->hex) == 0;
	}
	EVP_MD_CTX_free(copy);
	return ok;
}

static CURL *make_handle(struct xfer *x)
{
	const struct img_fetch_opts *o = x->o;
	CURL *h = curl_easy_init();

	if (!h)
		return NULL;
	curl_easy_setopt(h, CURLOPT_URL, o->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, o->allow_file ? "http,https,file" : "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, FETCH_BUFFER);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "stratus-agent/" STRATUS_VERSION);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (o->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, o->ca_file);
	if (o->connect_timeout_ms > 0)
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)o->connect_timeout_ms);
	if (o->low_speed_limit > 0 && o->low_speed_time_ms > 0) {
		long secs = (long)((o->low_speed_time_ms + 999) / 1000);

		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, o->low_speed_limit);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, secs);
	}
	if (o->max_size)
		curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_size);
	return h;
}

static void unlink_part(const struct img_fetch_opts *o)
{
	if (unlink(o->part_path) < 0 && errno != ENOENT)
		log_warn("cannot remove partial download path=%s error=%s", o->part_path,
			 strerror(errno));
}

int img_fetch(const struct img_fetch_opts *o, struct img_fetch_result *res)
{
	struct img_fetch_result rs = { 0 };
	struct xfer x = { .o = o, .fd = -1, .cr_start = -1 };
	const char *name = o->name ? o->name : o->url;
	int64_t deadline = o->total_timeout_ms > 0 ? time_mono_ms() + o->total_timeout_ms : 0;
	int64_t backoff = o->backoff_ms > 0 ? o->backoff_ms : 1000;
	unsigned char digest[EVP_MAX_MD_SIZE];
	char got[IMG_HEX_MAX];
	unsigned dlen = 0;
	bool drop = false; /* delete the .part on failure */
	struct stat st;
	int r = 0;

	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK)
		return err_set(-EIO, "libcurl: %s", curl_easy_strerror(curl_init_rc));
	x.type = o->want->algo == IMG_ALGO_SHA512 ? EVP_sha512() : EVP_sha256();
	x.md = EVP_MD_CTX_new();
	if (!x.md)
		return err_set(-ENOMEM, "out of memory");
	x.fd = open(o->part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (x.fd < 0) {
		r = err_sys(-errno, "image %s: %s", name, o->part_path);
		goto out;
	}
	/* Another process may be downloading the same image: wait for it. */
	while (flock(x.fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			r = err_sys(-errno, "image %s: lock %s", name, o->part_path);
			goto out;
		}
	}
	if (fstat(x.fd, &st) < 0) {
		r = err_sys(-errno, "image %s: %s", name, o->part_path);
		goto out;
	}
	if (st.st_nlink == 0) {
		/* The holder finished (renamed or deleted it): nothing to resume. */
		r = err_set(-EAGAIN, "image %s: partial file went away", name);
		goto out;
	}
	if (o->present && o->present(o->commit_ud)) {
		/* Landed while we waited for the lock; our open may have made
		 * an empty .part: no one else can hold it, remove it. */
		if (st.st_size == 0)
			unlink_part(o);
		r = err_set(-EAGAIN, "image %s: already in the cache", name);
		goto out;
	}
	r = md_reset(&x);
	if (r < 0)
		goto out;
	if (st.st_size > 0) {
		r = hash_existing(&x, (uint64_t)st.st_size);
		if (r < 0) {
			drop = true;
			goto out;
		}
		x.offset = (uint64_t)st.st_size;
		if (digest_matches(&x)) /* complete already: a crash before the rename */
			goto verify;
	}

	for (x.attempt = 1;; x.attempt++) {
		char range[48];
		CURLcode rc;
		long http = 0;
		bool transient;

		x.curl = make_handle(&x);
		if (!x.curl) {
			r = err_set(-ENOMEM, "libcurl: cannot create a handle");
			goto out;
		}
		x.errbuf[0] = '\0';
		x.err = 0;
		x.checked = false;
		x.restarted = false;
		x.cr_start = -1;
		x.attempt_start = x.offset;
		x.range_from = x.offset;
		x.t_start_ns = time_mono_ns();
		x.t_last_cb_ns = 0;
		if (x.offset > 0) {
			snprintf(range, sizeof(range), "%" PRIu64 "-", x.offset);
			curl_easy_setopt(x.curl, CURLOPT_RANGE, range);
			rs.resumed_from = x.offset;
		}
		if (deadline) {
			int64_t left = deadline - time_mono_ms();

			if (left <= 0) {
				curl_easy_cleanup(x.curl);
				x.curl = NULL;
				r = err_set(-ETIMEDOUT, "image %s: download from %s timed out (total "
							"timeout %" PRId64 " ms, %u attempts)",
					    name, o->url, o->total_timeout_ms, x.attempt - 1);
				goto out;
			}
			curl_easy_setopt(x.curl, CURLOPT_TIMEOUT_MS, (long)left);
		}
		rc = curl_easy_perform(x.curl);
		curl_easy_getinfo(x.curl, CURLINFO_RESPONSE_CODE, &http);
		if (x.restarted)
			rs.restarts++;
		if (rc == CURLE_OK && !x.checked && x.range_from > 0 && x.offset > 0) {
			/* Empty body: nothing was written, decide now. */
			if (http == 200) {
				truncate_to(&x, 0);
				md_reset(&x);
			}
		}
		curl_easy_cleanup(x.curl);
		x.curl = NULL;
		rs.attempts = x.attempt;
		if (rc == CURLE_OK) {
			report(&x, x.offset, true);
			break;
		}
		/* Our own reasons first. */
		if (x.err == -ENOSPC || x.err == -EDQUOT) {
			drop = true;
			r = err_set(x.err, "image %s: the cache filesystem is full after %" PRIu64
					   " bytes: download abandoned",
				    name, x.offset);
			goto out;
		}
		if (x.err == -EFBIG || rc == CURLE_FILESIZE_EXCEEDED) {
			drop = true;
			r = err_set(-EFBIG, "image %s: larger than max_image_size (%" PRIu64
					    " bytes): download abandoned",
				    name, o->max_size);
			goto out;
		}
		if (x.err == -ECANCELED) {
			r = err_set(-ECANCELED, "image %s: download cancelled", name);
			goto out;
		}
		if (x.err < 0 && x.err != -EPROTO) {
			drop = true;
			r = err_sys(x.err, "image %s: writing %s", name, o->part_path);
			goto out;
		}
		if (rc == CURLE_HTTP_RETURNED_ERROR && http == 416) {
			/* Our partial is not a prefix the server can continue: restart. */
			truncate_to(&x, 0);
			md_reset(&x);
		}
		transient = x.err == -EPROTO || retryable(rc, http);
		if (!transient || x.attempt > o->retries) {
			const char *why = x.errbuf[0] ? x.errbuf : curl_easy_strerror(rc);

			/* Keep a partial that a later fetch can resume; drop the rest. */
			drop = !transient || x.offset == 0;
			if (rc == CURLE_OPERATION_TIMEDOUT)
				r = -ETIMEDOUT;
			else if (rc == CURLE_HTTP_RETURNED_ERROR && http == 404)
				r = -ENOENT;
			else
				r = -EIO;
			if (rc == CURLE_HTTP_RETURNED_ERROR)
				err_set(r, "image %s: download from %s failed: HTTP %ld (%u attempt%s)",
					name, o->url, http, x.attempt, x.attempt > 1 ? "s" : "");
			else if (x.err == -EPROTO)
				err_set(r, "image %s: download from %s failed: the server sent a range "
					   "we did not ask for (%u attempt%s)",
					name, o->url, x.attempt, x.attempt > 1 ? "s" : "");
			else
				err_set(r, "image %s: download from %s failed: %s (%u attempt%s)", name,
					o->url, why, x.attempt, x.attempt > 1 ? "s" : "");
			goto out;
		}
		log_info("image download failed, retrying image=%s attempt=%u error=\"%s\" "
			 "bytes=%" PRIu64 " wait_ms=%" PRId64,
			 name, x.attempt, x.errbuf[0] ? x.errbuf : curl_easy_strerror(rc), x.offset,
			 backoff);
		if (deadline && time_mono_ms() + backoff >= deadline)
			backoff = deadline - time_mono_ms() > 0 ? deadline - time_mono_ms() : 0;
		sleep_ms(backoff);
		backoff *= 2;
		if (o->backoff_max_ms > 0 && backoff > o->backoff_max_ms)
			backoff = o->backoff_max_ms;
	}

verify:
	if (EVP_DigestFinal_ex(x.md, digest, &dlen) != 1) {
		r = err_set(-EIO, "image %s: openssl: digest failed", name);
		goto out;
	}
	hex_of(digest, dlen, got);
	if (strcmp(got, o->want->hex) != 0) {
		drop = true;
		r = err_set(-EBADMSG, "image %s: checksum mismatch (expected %s:%s, got %s:%s)",
			    name, img_algo_name(o->want->algo), o->want->hex,
			    img_algo_name(o->want->algo), got);
		goto out;
	}
	if (fsync(x.fd) < 0) {
		drop = true;
		r = err_sys(-errno, "image %s: fsync %s", name, o->part_path);
		goto out;
	}
	rs.size = x.offset;
	if (o->commit) {
		/* Still holding the lock: a waiting process sees the result. */
		r = o->commit(o->part_path, rs.size, o->commit_ud);
		if (r < 0) {
			drop = true;
			goto out;
		}
	}
	if (res)
		*res = rs;
	r = 0;
out:
	if (r < 0 && drop)
		unlink_part(o);
	if (x.fd >= 0)
		close(x.fd); /* drops the flock */
	EVP_MD_CTX_free(x.md);
	return r;
}
