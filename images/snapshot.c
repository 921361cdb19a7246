/*
 * Snapshots into the image store (issue 18): the copy of an instance's
 * overlay taken while the guest is quiesced, its flattening into one
 * standalone qcow2 (qemu-img convert), and the upload to the store by HTTP
 * PUT with libcurl, hashed (sha256) while it streams and verified after:
 * HEAD gives the size, a GET the sha256 of what the store serves.
 *
 * An upload that fails (connection, HTTP error, size or checksum of what
 * the store serves) starts again from the first byte, at most
 * images.retries more times with images.retry_backoff doubling; resuming
 * a PUT is not something plain WebDAV servers (nginx) can do, and the
 * store's copy is checked in full anyway.
 */
#define LOG_TAG "images"
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "images/images_priv.h"

#define UP_BUFFER (256 * 1024)
#define PROGRESS_EVERY_MS 500

/* ---- the copy of the overlay (under quiesce) ------------------------------ */

int img_snapshot_copy(const char *src, const char *dst)
{
	int in = -1, out = -1, r = 0;
	struct stat st;
	off_t left;

	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return err_sys(-errno, "snapshot: open %s", src);
	if (fstat(in, &st) < 0) {
		r = err_sys(-errno, "snapshot: stat %s", src);
		goto out;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		r = err_sys(-errno, "snapshot: create %s", dst);
		goto out;
	}
	/* in the kernel: a reflink where the filesystem can, else a copy */
	for (left = st.st_size; left > 0;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = err_sys(n < 0 ? -errno : -EIO, "snapshot: copy %s to %s", src, dst);
			break;
		}
		left -= n;
	}
out:
	if (in >= 0)
		close(in);
	if (out >= 0 && close(out) < 0 && r == 0)
		r = err_sys(-errno, "snapshot: close %s", dst);
	if (r < 0 && out >= 0)
		unlink(dst);
	return r;
}

/* ---- flatten --------------------------------------------------------------- */

/* -W: out-of-order writes; -t unsafe: no flush of DST, a temporary file
 * that is uploaded next and removed after (a crash removes it too), so
 * waiting for the disk to have it gains nothing. */
int img_flatten(const struct img_config *cfg, const char *src, const char *dst)
{
	char *const argv[] = { cfg->qemu_img, "convert", "-q", "-W", "-t", "unsafe", "-O", "qcow2",
			       (char *)(uintptr_t)src, (char *)(uintptr_t)dst, NULL };
	_cleanup_free_ char *out = NULL;
	int r = img_run(argv, &out);

	if (r < 0)
		return r;
	if (r != 0) {
		unlink(dst);
		return err_set(-EIO, "qemu-img convert %s: exit %d: %s", src, r, out ? out : "");
	}
	return 0;
}

/* ---- upload and verification ----------------------------------------------- */

struct up {
	const struct img_upload *u;
	int fd;
	EVP_MD_CTX *md;
	uint64_t sent, total;
	unsigned attempt;
	int64_t started_ms, last_ms;
	bool cancelled;
	char errbuf[CURL_ERROR_SIZE];
};

static void hex_digest(EVP_MD_CTX *md, char *hex, size_t len)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned n = 0;

	hex[0] = '\0';
	if (EVP_DigestFinal_ex(md, d, &n) != 1)
		return;
	for (unsigned i = 0; i < n && 2 * i + 2 < len; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static void report(struct up *x, bool done)
{
	int64_t now = time_mono_ms();
	struct img_progress p;
	double secs;

	if (!x->u->progress || (!done && now - x->last_ms < PROGRESS_EVERY_MS))
		return;
	x->last_ms = now;
	secs = (double)(now - x->started_ms) / 1e3;
	p = (struct img_progress){ .name = x->u->name, .bytes = x->sent, .total = x->total,
				   .rate = secs > 0 ? (double)x->sent / secs : 0,
				   .eta_s = -1, .attempt = x->attempt, .done = done };
	if (p.rate > 0)
		p.eta_s = (double)(x->total - x->sent) / p.rate;
	if (x->u->progress(&p, x->u->ud) != 0)
		x->cancelled = true;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud)
{
	struct up *x = ud;
	ssize_t n;

	do
		n = read(x->fd, buf, size * nmemb);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return CURL_READFUNC_ABORT;
	EVP_DigestUpdate(x->md, buf, (size_t)n);
	x->sent += (uint64_t)n;
	report(x, false);
	return x->cancelled ? CURL_READFUNC_ABORT : (size_t)n;
}

static size_t on_hash(char *buf, size_t size, size_t nmemb, void *ud)
{
	EVP_DigestUpdate(ud, buf, size * nmemb);
	return size * nmemb;
}

static size_t on_discard(char *buf, size_t size, size_t nmemb, void *ud)
{
	(void)buf;
	(void)ud;
	return size * nmemb;
}

static CURL *handle(const struct img_config *cfg, const char *url, char *errbuf)
{
	CURL *h = curl_easy_init();

	if (!h)
		return NULL;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "stratus-agent/" STRATUS_VERSION);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)UP_BUFFER);
	curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, (long)UP_BUFFER);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (cfg->ca_file && *cfg->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, cfg->ca_file);
	if (cfg->connect_timeout_ms > 0)
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout_ms);
	if (cfg->low_speed_limit > 0 && cfg->low_speed_time_ms > 0) {
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, cfg->low_speed_limit);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)(cfg->low_speed_time_ms / 1000 + 1));
	}
	errbuf[0] = '\0';
	return h;
}

static int curl_fail(CURL *h, CURLcode rc, const char *errbuf, const char *what, const char *url)
{
	long code = 0;

	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	if (code >= 400)
		return err_set(-EIO, "%s %s: HTTP %ld", what, url, code);
	return err_set(-EIO, "%s %s: %s", what, url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

/* One PUT of the whole file from its first byte. */
static int put_once(const struct img_config *cfg, struct up *x)
{
	CURL *h = handle(cfg, x->u->url, x->errbuf);
	CURLcode rc;
	int r = 0;

	if (!h)
		return err_set(-ENOMEM, "upload %s: out of memory", x->u->url);
	if (lseek(x->fd, 0, SEEK_SET) < 0 || EVP_DigestInit_ex(x->md, EVP_sha256(), NULL) != 1) {
		curl_easy_cleanup(h);
		return err_sys(-EIO, "upload %s: rewind %s", x->u->url, x->u->path);
	}
	x->sent = 0;
	x->started_ms = time_mono_ms();
	x->last_ms = 0;
	curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(h, CURLOPT_READDATA, x);
	curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->total);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_discard);
	rc = curl_easy_perform(h);
	if (x->cancelled)
		r = err_set(-ECANCELED, "upload %s: cancelled", x->u->url);
	else if (rc != CURLE_OK)
		r = curl_fail(h, rc, x->errbuf, "upload: PUT", x->u->url);
	else if (x->sent != x->total)
		r = err_set(-EIO, "upload %s: %llu of %llu bytes read from %s", x->u->url,
			    (unsigned long long)x->sent, (unsigned long long)x->total, x->u->path);
	curl_easy_cleanup(h);
	return r;
}

/* What the store serves at URL: its size (HEAD) and its sha256 (GET). */
static int verify(const struct img_config *cfg, const char *url, uint64_t size, const char *hex)
{
	char errbuf[CURL_ERROR_SIZE], got[IMG_HEX_MAX];
	curl_off_t len = -1;
	EVP_MD_CTX *md = NULL;
	CURL *h = handle(cfg, url, errbuf);
	CURLcode rc;
	int r = 0;

	if (!h)
		return err_set(-ENOMEM, "verify %s: out of memory", url);
	curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		r = curl_fail(h, rc, errbuf, "verify: HEAD", url);
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
	if (len < 0 || (uint64_t)len != size) {
		r = err_set(-EIO, "verify %s: the store holds %lld bytes, %llu were sent", url,
			    (long long)len, (unsigned long long)size);
		goto out;
	}
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		r = err_set(-ENOMEM, "verify %s: out of memory", url);
		goto out;
	}
	curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
	curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_hash);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, md);
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		r = curl_fail(h, rc, errbuf, "verify: GET", url);
		goto out;
	}
	hex_digest(md, got, sizeof(got));
	if (strcmp(got, hex) != 0)
		r = err_set(-EIO, "verify %s: checksum mismatch (sent sha256:%.12s…, the store "
			    "serves sha256:%.12s…)", url, hex, got);
out:
	EVP_MD_CTX_free(md);
	curl_easy_cleanup(h);
	return r;
}

int img_store_delete(const struct img_config *cfg, const char *url)
{
	char errbuf[CURL_ERROR_SIZE];
	CURL *h = handle(cfg, url, errbuf);
	CURLcode rc;
	long code = 0;
	int r = 0;

	if (!h)
		return err_set(-ENOMEM, "delete %s: out of memory", url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
	curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(h, CURLOPT_FAILONERROR, 0L);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	if (rc != CURLE_OK)
		r = curl_fail(h, rc, errbuf, "delete", url);
	else if (code >= 400 && code != 404)
		r = err_set(-EIO, "delete %s: HTTP %ld", url, code);
	curl_easy_cleanup(h);
	return r;
}

int img_upload(const struct img_config *cfg, const struct img_upload *u,
	       struct img_uploaded *out)
{
	struct up x = { .u = u, .fd = -1 };
	int64_t backoff = cfg->retry_backoff_ms > 0 ? cfg->retry_backoff_ms : 1000;
	char hex[IMG_HEX_MAX];
	struct stat st;
	int r = 0;

	x.fd = open(u->path, O_RDONLY | O_CLOEXEC);
	if (x.fd < 0)
		return err_sys(-errno, "upload: open %s", u->path);
	if (fstat(x.fd, &st) < 0) {
		r = err_sys(-errno, "upload: stat %s", u->path);
		goto out;
	}
	x.total = (uint64_t)st.st_size;
	x.md = EVP_MD_CTX_new();
	if (!x.md) {
		r = err_set(-ENOMEM, "upload %s: out of memory", u->url);
		goto out;
	}
	posix_fadvise(x.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	for (x.attempt = 1;; x.attempt++) {
		r = put_once(cfg, &x);
		if (r == 0) {
			hex_digest(x.md, hex, sizeof(hex));
			report(&x, true);
			r = verify(cfg, u->url, x.total, hex);
		}
		if (r == 0 || r == -ECANCELED || x.attempt > (unsigned)cfg->retries)
			break;
		log_warn("snapshot upload failed, again from the first byte attempt=%u url=%s: %s",
			 x.attempt, u->url, err_msg());
		struct timespec ts = { .tv_sec = backoff / 1000, .tv_nsec = (backoff % 1000) * 1000000 };

		nanosleep(&ts, NULL);
		backoff *= 2;
		if (cfg->retry_backoff_max_ms > 0 && backoff > cfg->retry_backoff_max_ms)
			backoff = cfg->retry_backoff_max_ms;
	}
	if (r == 0) {
		out->size = x.total;
		out->attempts = x.attempt;
		snprintf(out->checksum, sizeof(out->checksum), "sha256:%s", hex);
	}
out:
	EVP_MD_CTX_free(x.md);
	close(x.fd);
	return r;
}
