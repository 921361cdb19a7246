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
#include <sys/socket.h>
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

/*
 * curl hands the body over in pieces of at most 16 KiB
 * (CURL_MAX_WRITE_SIZE, whatever CURLOPT_BUFFERSIZE says): the receiving
 * thread copies them into 256 KiB slots and writes each full slot with one
 * pwrite (the page cache's copy, as curl -o makes it). A second thread
 * (the hasher) takes the written slots in order, hashes each from the
 * same memory (the file is never read back) and every WRITEBACK_EVERY
 * bytes starts the writeback of what it hashed (sync_file_range, which
 * blocks while the disk's queue is full): the thread that receives never
 * waits for the hash or the disk, only for a free slot when all
 * SINK_SLOTS (8 MiB) wait to be hashed. 256 KiB, not 1 MiB: a slot stays
 * in the L2 cache between the copy into it, the write and the hash (per
 * GiB here: 0.7-0.8 s of system time with 256 KiB slots, 2.5-3.0 s with
 * 1 MiB ones, 1.2-2.3 s for the 16 KiB pwrites of curl's pieces).
 *
 * Invariant: once the hasher has drained the queue (sink_flush), the file
 * holds exactly the bytes [0, done) and the digest covers exactly those.
 * A failed write truncates the file back to where that slot began (all
 * before it is written and queued) and nothing more is accepted.
 */
#define SINK_CHUNK (256u << 10)
#define SINK_SLOTS 32
#define WRITEBACK_EVERY (64ULL << 20)

struct slot {
	char *buf;
	uint64_t off; /* where buf goes in the file */
	size_t len;
};

struct sink {
	pthread_t thread;
	bool running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;
	EVP_MD_CTX *md;
	struct slot slot[SINK_SLOTS];
	unsigned head;    /* next slot the hasher takes (the hasher's) */
	unsigned queued;  /* written slots from head on, for the hasher (or being hashed) */
	unsigned tail;    /* the slot being filled, (head + queued) % SLOTS: the receiving
			   * thread's own copy, never computed from head and queued, which
			   * the hasher moves (read unlocked, a torn pair named a queued slot
			   * and the next piece overwrote it before it was hashed) */
	size_t fill;      /* bytes in the slot being filled */
	uint64_t done;    /* bytes hashed (all of them written) */
	uint64_t flushed; /* writeback started up to here (the hasher's) */
	bool stop;
	int err;
};

static void *sink_main(void *arg)
{
	struct sink *k = arg;

	pthread_mutex_lock(&k->mu);
	for (;;) {
		struct slot *s;

		while (!k->queued && !k->stop)
			pthread_cond_wait(&k->cv, &k->mu);
		if (!k->queued)
			break;
		s = &k->slot[k->head];
		pthread_mutex_unlock(&k->mu);
		EVP_DigestUpdate(k->md, s->buf, s->len);
		if (s->off + s->len - k->flushed >= WRITEBACK_EVERY) {
			uint64_t from = k->flushed, to = s->off + s->len;

			k->flushed = to;
			sync_file_range(k->fd, (off_t)from, (off_t)(to - from), SYNC_FILE_RANGE_WRITE);
		}
		pthread_mutex_lock(&k->mu);
		k->done = s->off + s->len;
		k->head = (k->head + 1) % SINK_SLOTS;
		k->queued--;
		pthread_cond_broadcast(&k->cv);
	}
	pthread_mutex_unlock(&k->mu);
	return NULL;
}

/* The slot being filled (the receiving thread's). */
static struct slot *sink_cur(struct sink *k)
{
	return &k->slot[k->tail];
}

/*
 * Write the slot being filled, hand it to the hasher and wait for a free
 * one; returns the write error (then nothing more is accepted).
 */
static int sink_push(struct sink *k)
{
	struct slot *s = sink_cur(k);
	size_t at = 0;
	int r;

	pthread_mutex_lock(&k->mu);
	r = k->err;
	pthread_mutex_unlock(&k->mu);
	while (r == 0 && at < k->fill) {
		ssize_t w = pwrite(k->fd, s->buf + at, k->fill - at, (off_t)(s->off + at));

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			r = w < 0 ? -errno : -EIO;
			/* keep the file equal to what is hashed: what was queued before */
			if (ftruncate(k->fd, (off_t)s->off) < 0)
				log_warn("cannot truncate a partial download error=%s", strerror(errno));
		}
		at += w > 0 ? (size_t)w : 0;
	}
	pthread_mutex_lock(&k->mu);
	if (r < 0 && !k->err)
		k->err = r;
	if (k->fill > 0 && !k->err) {
		s->len = k->fill;
		k->queued++;
		k->tail = (k->tail + 1) % SINK_SLOTS;
		pthread_cond_broadcast(&k->cv);
	}
	k->fill = 0;
	while (!k->err && k->queued == SINK_SLOTS)
		pthread_cond_wait(&k->cv, &k->mu);
	r = k->err;
	pthread_mutex_unlock(&k->mu);
	return r;
}

/*
 * Everything received is written and hashed (or a write failed): returns
 * the write error; *done: the bytes the file and the digest hold.
 */
static int sink_flush(struct sink *k, uint64_t *done)
{
	int r = sink_push(k);

	pthread_mutex_lock(&k->mu);
	while (k->queued)
		pthread_cond_wait(&k->cv, &k->mu);
	r = k->err ? k->err : r;
	*done = k->done;
	pthread_mutex_unlock(&k->mu);
	return r;
}

/* Append received bytes at file offset `off` (the bytes accepted so far). */
static int sink_add(struct sink *k, uint64_t off, const char *p, size_t len)
{
	while (len > 0) {
		struct slot *s = sink_cur(k);
		size_t n = SINK_CHUNK - k->fill < len ? SINK_CHUNK - k->fill : len;
		int r;

		if (k->fill == 0)
			s->off = off;
		memcpy(s->buf + k->fill, p, n);
		k->fill += n;
		off += n;
		p += n;
		len -= n;
		if (k->fill == SINK_CHUNK) {
			r = sink_push(k);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* The file and the digest now hold `at` bytes (a resume, a restart), the
 * queue empty (sink_flush). */
static void sink_reset(struct sink *k, uint64_t at)
{
	pthread_mutex_lock(&k->mu);
	k->tail = k->head;
	k->done = k->flushed = at;
	k->fill = 0;
	k->err = 0;
	pthread_mutex_unlock(&k->mu);
}

static int sink_start(struct sink *k, int fd, EVP_MD_CTX *md)
{
	int r;

	k->fd = fd;
	k->md = md;
	for (unsigned i = 0; i < SINK_SLOTS; i++) {
		k->slot[i].buf = malloc(SINK_CHUNK);
		if (!k->slot[i].buf)
			return err_set(-ENOMEM, "out of memory");
	}
	pthread_mutex_init(&k->mu, NULL);
	pthread_cond_init(&k->cv, NULL);
	r = pthread_create(&k->thread, NULL, sink_main, k);
	if (r != 0) {
		pthread_mutex_destroy(&k->mu);
		pthread_cond_destroy(&k->cv);
		return err_sys(-r, "cannot start the hashing thread");
	}
	k->running = true;
	return 0;
}

/* Stops the hasher (after what was queued) and frees the slots. */
static void sink_stop(struct sink *k)
{
	if (k->running) {
		pthread_mutex_lock(&k->mu);
		k->stop = true;
		pthread_cond_broadcast(&k->cv);
		pthread_mutex_unlock(&k->mu);
		pthread_join(k->thread, NULL);
		pthread_mutex_destroy(&k->mu);
		pthread_cond_destroy(&k->cv);
		k->running = false;
	}
	for (unsigned i = 0; i < SINK_SLOTS; i++) {
		free(k->slot[i].buf);
		k->slot[i].buf = NULL;
	}
}

struct xfer {
	const struct img_fetch_opts *o;
	CURL *curl;
	int fd;
	EVP_MD_CTX *md;
	const EVP_MD *type;
	struct sink k;
	uint64_t offset;         /* bytes accepted (written, or in the slot being filled) */
	uint64_t attempt_start;  /* offset when this attempt began */
	uint64_t range_from;     /* Range asked for in this attempt (0: none) */
	int64_t cr_start;        /* Content-Range start of a 206, -1 if none */
	bool checked;            /* response looked at (first body byte) */
	bool restarted;          /* a 200 answered our Range in this attempt */
	int err;                 /* our reason for aborting (negative errno) */
	unsigned attempt;
	int64_t t_start_ns, t_last_cb_ns;
	char errbuf[CURL_ERROR_SIZE];
	char *denied;            /* the URL filter refused a connection: why */
};

static int md_init(struct xfer *x)
{
	if (EVP_DigestInit_ex(x->md, x->type, NULL) != 1)
		return err_set(-EIO, "openssl: cannot initialise %s", EVP_MD_get0_name(x->type));
	return 0;
}

/* Empty the file and the digest: the next byte written is byte 0. */
static int restart(struct xfer *x)
{
	uint64_t done;

	sink_flush(&x->k, &done);
	if (ftruncate(x->fd, 0) < 0)
		return -errno;
	sink_reset(&x->k, 0);
	x->offset = 0;
	return md_init(x) < 0 ? -EIO : 0;
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
			restart(x);
			return -EPROTO;
		}
		return 0;
	}
	if (code == 0) /* file:// honours ranges */
		return 0;
	/* 200: the server ignored Range; the body starts at byte 0. */
	if (code == 200 || code == 203) {
		int r = restart(x);

		if (r < 0)
			return r;
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
	size_t len = sz * n;
	int r;

	if (!x->checked) {
		r = check_response(x);
		if (r < 0) {
			x->err = r;
			return 0;
		}
	}
	if (x->o->max_size && x->offset + len > x->o->max_size) {
		x->err = -EFBIG;
		return 0;
	}
	r = sink_add(&x->k, x->offset, p, len);
	if (r < 0) {
		x->err = r;
		return 0;
	}
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

/*
 * Every connection curl opens, the first and those after a redirect, goes
 * through the URL filter with the address it resolved: a redirect to a
 * denied address is refused before a byte is sent to it.
 */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct xfer *x = ud;
	char *url = NULL;

	(void)purpose;
	curl_easy_getinfo(x->curl, CURLINFO_EFFECTIVE_URL, &url);
	if (img_url_check_addr(x->o->filter, url ? url : x->o->url, NULL, &a->addr) < 0) {
		free(x->denied);
		x->denied = strdup(err_msg());
		x->err = -EACCES;
		return CURL_SOCKET_BAD;
	}
	return socket(a->family, a->socktype, a->protocol);
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
	if (o->filter) {
		curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
		curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, x);
	}
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

/* Hash the first `size` bytes of the .part (the hasher is idle). */
static int hash_prefix(struct xfer *x, uint64_t size, const char *name)
{
	char *buf = x->k.slot[0].buf;
	uint64_t at = 0;

	while (at < size) {
		size_t want = size - at < SINK_CHUNK ? (size_t)(size - at) : SINK_CHUNK;
		ssize_t n = pread(x->fd, buf, want, (off_t)at);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return err_sys(n < 0 ? -errno : -EIO, "image %s: reading %s", name,
				       x->o->part_path);
		EVP_DigestUpdate(x->md, buf, (size_t)n);
		at += (uint64_t)n;
	}
	return 0;
}

/*
 * Open and lock the .part (waiting for another downloader), start the
 * hash and hash what a partial file already holds. 1 when that is the
 * whole image (a crash before the rename), 0 to download, -EAGAIN when
 * the image landed meanwhile.
 */
static int part_open(struct xfer *x, const char *name)
{
	const struct img_fetch_opts *o = x->o;
	struct stat st;
	int r;

	x->fd = open(o->part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (x->fd < 0)
		return err_sys(-errno, "image %s: %s", name, o->part_path);
	/* Another process may be downloading the same image: wait for it. */
	while (flock(x->fd, LOCK_EX) < 0) {
		if (errno != EINTR)
			return err_sys(-errno, "image %s: lock %s", name, o->part_path);
	}
	if (fstat(x->fd, &st) < 0)
		return err_sys(-errno, "image %s: %s", name, o->part_path);
	if (st.st_nlink == 0) {
		/* The holder finished (renamed or deleted it): nothing to resume. */
		return err_set(-EAGAIN, "image %s: partial file went away", name);
	}
	if (o->present && o->present(o->commit_ud)) {
		/* Landed while we waited for the lock; our open may have made
		 * an empty .part: no one else can hold it, remove it. */
		if (st.st_size == 0)
			unlink_part(o);
		return err_set(-EAGAIN, "image %s: already in the cache", name);
	}
	r = md_init(x);
	if (r < 0)
		return r;
	r = sink_start(&x->k, x->fd, x->md);
	if (r < 0)
		return r;
	if (st.st_size > 0) {
		/* Resume: hash what the partial file already holds (its
		 * writeback is not ours to start). */
		r = hash_prefix(x, (uint64_t)st.st_size, name);
		if (r < 0)
			return r;
		x->offset = (uint64_t)st.st_size;
		sink_reset(&x->k, x->offset);
		if (digest_matches(x)) /* complete already: a crash before the rename */
			return 1;
	}
	return 0;
}

/*
 * One attempt on a fresh handle, from x->offset on (with Range when
 * resuming) and within the total deadline (0: none). 0 with *rc and *http
 * once curl ran; <0 when it could not start.
 */
static int attempt(struct xfer *x, struct img_fetch_result *rs, int64_t deadline,
		   const char *name, CURLcode *rc, long *http)
{
	char range[48];
	int r;

	x->curl = make_handle(x);
	if (!x->curl)
		return err_set(-ENOMEM, "libcurl: cannot create a handle");
	x->errbuf[0] = '\0';
	x->err = 0;
	x->checked = false;
	x->restarted = false;
	x->cr_start = -1;
	x->attempt_start = x->offset;
	x->range_from = x->offset;
	x->t_start_ns = time_mono_ns();
	x->t_last_cb_ns = 0;
	if (x->offset > 0) {
		snprintf(range, sizeof(range), "%" PRIu64 "-", x->offset);
		curl_easy_setopt(x->curl, CURLOPT_RANGE, range);
		rs->resumed_from = x->offset;
	}
	if (deadline) {
		int64_t left = deadline - time_mono_ms();

		if (left <= 0) {
			curl_easy_cleanup(x->curl);
			x->curl = NULL;
			return err_set(-ETIMEDOUT, "image %s: download from %s timed out (total "
						   "timeout %" PRId64 " ms, %u attempts)",
				       name, x->o->url, x->o->total_timeout_ms, x->attempt - 1);
		}
		curl_easy_setopt(x->curl, CURLOPT_TIMEOUT_MS, (long)left);
	}
	*rc = curl_easy_perform(x->curl);
	curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, http);
	/* What was received is written (or the write failed): the next
	 * attempt, the checks and the digest start from the file. */
	r = sink_flush(&x->k, &x->offset);
	if (r < 0) {
		if (!x->err)
			x->err = r;
		if (*rc == CURLE_OK)
			*rc = CURLE_WRITE_ERROR;
	}
	if (x->restarted)
		rs->restarts++;
	if (*rc == CURLE_OK && !x->checked && x->range_from > 0 && x->offset > 0) {
		/* Empty body: nothing was written, decide now. */
		if (*http == 200)
			restart(x);
	}
	curl_easy_cleanup(x->curl);
	x->curl = NULL;
	rs->attempts = x->attempt;
	return 0;
}

/*
 * A failed attempt: 0 when it may be retried, else the error that ends
 * the fetch (message set; *drop says whether the .part goes).
 */
static int attempt_failed(struct xfer *x, CURLcode rc, long http, const char *name,
			  bool *drop)
{
	const struct img_fetch_opts *o = x->o;
	bool transient;
	int r;

	/* Our own reasons first. */
	if (x->err == -ENOSPC || x->err == -EDQUOT) {
		*drop = true;
		return err_set(x->err, "image %s: the cache filesystem is full after %" PRIu64
				       " bytes: download abandoned",
			       name, x->offset);
	}
	if (x->err == -EFBIG || rc == CURLE_FILESIZE_EXCEEDED) {
		*drop = true;
		return err_set(-EFBIG, "image %s: larger than max_image_size (%" PRIu64
				       " bytes): download abandoned",
			       name, o->max_size);
	}
	if (x->err == -ECANCELED)
		return err_set(-ECANCELED, "image %s: download cancelled", name);
	if (x->err == -EACCES) {
		*drop = true;
		return err_set(-EACCES, "image %s: %s", name, x->denied ? x->denied : "denied");
	}
	if (x->err < 0 && x->err != -EPROTO) {
		*drop = true;
		return err_sys(x->err, "image %s: writing %s", name, o->part_path);
	}
	if (rc == CURLE_HTTP_RETURNED_ERROR && http == 416) {
		/* Our partial is not a prefix the server can continue: restart. */
		restart(x);
	}
	transient = x->err == -EPROTO || retryable(rc, http);
	if (transient && x->attempt <= o->retries)
		return 0;
	/* Keep a partial that a later fetch can resume; drop the rest. */
	*drop = !transient || x->offset == 0;
	if (rc == CURLE_OPERATION_TIMEDOUT)
		r = -ETIMEDOUT;
	else if (rc == CURLE_HTTP_RETURNED_ERROR && http == 404)
		r = -ENOENT;
	else
		r = -EIO;
	if (rc == CURLE_HTTP_RETURNED_ERROR)
		err_set(r, "image %s: download from %s failed: HTTP %ld (%u attempt%s)", name,
			o->url, http, x->attempt, x->attempt > 1 ? "s" : "");
	else if (x->err == -EPROTO)
		err_set(r, "image %s: download from %s failed: the server sent a range "
			   "we did not ask for (%u attempt%s)",
			name, o->url, x->attempt, x->attempt > 1 ? "s" : "");
	else
		err_set(r, "image %s: download from %s failed: %s (%u attempt%s)", name, o->url,
			x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc), x->attempt,
			x->attempt > 1 ? "s" : "");
	return r;
}

/* Attempts with backoff until one completes, or the fetch fails. */
static int transfer(struct xfer *x, struct img_fetch_result *rs, int64_t deadline,
		    const char *name, bool *drop)
{
	const struct img_fetch_opts *o = x->o;
	int64_t backoff = o->backoff_ms > 0 ? o->backoff_ms : 1000;

	for (x->attempt = 1;; x->attempt++) {
		CURLcode rc = CURLE_OK;
		long http = 0;
		int r = attempt(x, rs, deadline, name, &rc, &http);

		if (r < 0)
			return r;
		if (rc == CURLE_OK) {
			report(x, x->offset, true);
			return 0;
		}
		r = attempt_failed(x, rc, http, name, drop);
		if (r < 0)
			return r;
		log_info("image download failed, retrying image=%s attempt=%u error=\"%s\" "
			 "bytes=%" PRIu64 " wait_ms=%" PRId64,
			 name, x->attempt, x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc),
			 x->offset, backoff);
		if (deadline && time_mono_ms() + backoff >= deadline)
			backoff = deadline - time_mono_ms() > 0 ? deadline - time_mono_ms() : 0;
		sleep_ms(backoff);
		backoff *= 2;
		if (o->backoff_max_ms > 0 && backoff > o->backoff_max_ms)
			backoff = o->backoff_max_ms;
	}
}

/* The whole file is there: check the digest, fsync, commit (the .part
 * still locked, so a waiting process sees the result). */
static int verify_commit(struct xfer *x, struct img_fetch_result *rs, const char *name,
			 bool *drop)
{
	const struct img_fetch_opts *o = x->o;
	unsigned char digest[EVP_MAX_MD_SIZE];
	char got[IMG_HEX_MAX];
	unsigned dlen = 0;
	uint64_t done;
	int r = sink_flush(&x->k, &done);

	if (r < 0) {
		*drop = true;
		return err_sys(r, "image %s: writing %s", name, o->part_path);
	}
	if (EVP_DigestFinal_ex(x->md, digest, &dlen) != 1)
		return err_set(-EIO, "image %s: openssl: digest failed", name);
	hex_of(digest, dlen, got);
	if (strcmp(got, o->want->hex) != 0) {
		*drop = true;
		/* the requester learns that it differs, never the hash of
		 * what was fetched (an oracle for files the URL reaches);
		 * the host's log keeps it for the operator */
		log_warn("image checksum mismatch image=%s expected=%s:%s got=%s:%s", name,
			 img_algo_name(o->want->algo), o->want->hex, img_algo_name(o->want->algo),
			 got);
		return err_set(-EBADMSG, "image %s: checksum mismatch: the fetched file's checksum "
			       "differs from the expected %s:%s", name,
			       img_algo_name(o->want->algo), o->want->hex);
	}
	if (fsync(x->fd) < 0) {
		*drop = true;
		return err_sys(-errno, "image %s: fsync %s", name, o->part_path);
	}
	rs->size = x->offset;
	if (o->commit) {
		r = o->commit(o->part_path, rs->size, o->commit_ud);
		if (r < 0) {
			*drop = true;
			return r;
		}
	}
	return 0;
}

int img_fetch(const struct img_fetch_opts *o, struct img_fetch_result *res)
{
	struct img_fetch_result rs = { 0 };
	struct xfer x = { .o = o, .fd = -1, .cr_start = -1 };
	const char *name = o->name ? o->name : o->url;
	int64_t deadline = o->total_timeout_ms > 0 ? time_mono_ms() + o->total_timeout_ms : 0;
	bool drop = false; /* delete the .part on failure */
	int r;

	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK)
		return err_set(-EIO, "libcurl: %s", curl_easy_strerror(curl_init_rc));
	/* the URL filter before any byte (then on each connection, open_socket) */
	if (o->filter && img_url_check(o->filter, o->url) < 0)
		return err_prefix(-EACCES, "image %s", name);
	x.type = o->want->algo == IMG_ALGO_SHA512 ? EVP_sha512() : EVP_sha256();
	x.md = EVP_MD_CTX_new();
	if (!x.md)
		return err_set(-ENOMEM, "out of memory");
	r = part_open(&x, name);
	if (r == 0)
		r = transfer(&x, &rs, deadline, name, &drop);
	if (r >= 0)
		r = verify_commit(&x, &rs, name, &drop);
	if (r == 0 && res)
		*res = rs;
	if (r < 0 && drop)
		unlink_part(o);
	sink_stop(&x.k);
	if (x.fd >= 0)
		close(x.fd); /* drops the flock */
	EVP_MD_CTX_free(x.md);
	free(x.denied);
	return r;
}
