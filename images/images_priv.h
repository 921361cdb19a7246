/* images: internals shared by the module's files and its tests. */
#ifndef STRATUS_IMAGES_PRIV_H
#define STRATUS_IMAGES_PRIV_H

#include <jansson.h>
#include <pthread.h>

#include "images/images.h"

enum img_algo { IMG_ALGO_SHA256, IMG_ALGO_SHA512, IMG_ALGO_LAST };

#define IMG_HEX_MAX 129 /* sha512: 128 hex digits + NUL */

struct img_checksum {
	enum img_algo algo;
	char hex[IMG_HEX_MAX]; /* lower case */
};

const char *img_algo_name(enum img_algo a);
/* "sha256:HEX" / "sha512:HEX" (hex of the right length, any case). */
int img_checksum_parse(const char *s, struct img_checksum *out);

/* One download into a .part file, verified against want. */
struct img_fetch_opts {
	const char *name;            /* for messages */
	const char *url;
	const struct img_checksum *want;
	const char *part_path;       /* created if missing; resumed if present */
	uint64_t max_size;           /* 0 = no cap */
	int64_t connect_timeout_ms;
	long low_speed_limit;        /* bytes/s; 0 = off */
	int64_t low_speed_time_ms;
	int64_t total_timeout_ms;    /* 0 = none */
	unsigned retries;
	int64_t backoff_ms, backoff_max_ms;
	const char *ca_file;         /* NULL: system CAs */
	bool allow_file;             /* accept file:// URLs */
	const struct img_url_filter *filter; /* NULL: none; else before any byte and on
					      * every connection (redirects too) */
	img_progress_fn progress;
	void *ud;
	/* Called after verification and fsync, with the .part still locked:
	 * inspect, rename into the cache, record. Failure deletes the .part. */
	int (*commit)(const char *part_path, uint64_t size, void *ud);
	/* Called once the .part lock is held: true when the image landed in
	 * the meantime (another process finished it): img_fetch returns
	 * -EAGAIN without downloading. */
	bool (*present)(void *ud);
	void *commit_ud;
};

struct img_fetch_result {
	uint64_t size;               /* bytes of the verified file */
	unsigned attempts;
	unsigned restarts;           /* times a 200 answered a Range request */
	uint64_t resumed_from;       /* last Range offset used (0 if none) */
};

/*
 * Download o->url into o->part_path, hashing as it goes, resuming a
 * present partial file with Range. On success the file is complete,
 * verified and fsynced. On a checksum mismatch, a size cap, a full disk,
 * a cancel or a permanent HTTP error the .part file is deleted; after
 * transient failures (cut, timeout, 5xx) that outlast the retries it is
 * kept for a later resume (img_sweep_partials removes it in the end).
 * Another process downloading the same file holds an flock on it: this
 * call waits for it.
 */
int img_fetch(const struct img_fetch_opts *o, struct img_fetch_result *res);

/* Run argv (argv[0] looked up in PATH) and wait; output (stdout+stderr,
 * at most 4 KiB) into *out (malloc'd; caller frees; may be NULL). Returns
 * the exit status (>= 0) or <0 when it could not run. */
int img_run(char *const argv[], char **out);

/* Write into fd (an empty file open for writing) the qcow2 overlay of
 * SIZE bytes (rounded up to 512) on BASE of format BASE_FMT that
 * `qemu-img create -f qcow2 -F FMT -b BASE` writes (qcow2.c). Does not
 * fsync. -EINVAL/-EFBIG for a name or size qcow2 cannot hold. */
int img_qcow2_overlay_write(int fd, const char *base, enum img_format base_fmt, uint64_t size);

/* ---- the cache's internals (cache.c, acquire.c, overlay.c) -------------- */

/*
 * Every index operation takes index_mu then the index.lock flock, re-reads
 * index.json, changes it and writes it back before letting go
 * (img_index_begin .. img_index_end), so the agent and an operator's
 * `stratus-agent image ...` can share one cache. Writes are group
 * committed: img_index_end(save) returns once the index file holds the
 * change (written and fsynced), but the threads that commit while one
 * write is in flight share the next write; meanwhile the process keeps
 * the flock and the next transaction starts from the committed copy in
 * memory (pending) instead of the file. Pins, flights and download
 * slots are per process, under mu (lock order: index_mu, then mu; a .part
 * flock may be held when the index is taken, never the other way round).
 */

struct img_pin {
	char *checksum;
	unsigned n;
	struct img_pin *next;
};

/* One download in progress in this process (single flight). */
struct img_flight {
	char *checksum;
	bool done;
	int result;
	char *msg;
	unsigned waiters;
	struct img_flight *next;
};

struct img_cache {
	struct img_config cfg; /* our own copy */
	char *index_path, *lock_path, *partial_dir;
	int lock_fd;
	pthread_mutex_t index_mu;
	json_t *index;         /* valid between img_index_begin and img_index_end */
	json_t *pending;       /* committed, not yet in the file (flock held) */
	uint64_t index_gen;    /* commits counted */
	bool index_writing;    /* a thread writes pending (index_mu released) */
	pthread_cond_t index_cv; /* an index write finished */
	struct img_index_waiter *index_waiters; /* commits waiting for a write */

	pthread_mutex_t mu;
	pthread_cond_t cv;     /* a flight landed, a download slot freed */
	struct img_pin *pins;
	struct img_flight *flights;
	long active;           /* downloads running */
};

static inline int64_t img_jint(const json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static inline const char *img_jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* Take the index (index_mu, flock) and read it into c->index. */
int img_index_begin(struct img_cache *c);
/* Write the index back when save, and let go. Returns r or the write error. */
int img_index_end(struct img_cache *c, bool save, int r);
/* The "images" object of the index (index held; borrowed). */
json_t *img_index_images(struct img_cache *c);
/* The next LRU sequence number, counted in the index (index held). */
uint64_t img_index_next_seq(struct img_cache *c);
/* Add (replace) the entry of checksum, keeping the users of an old one
 * (index held). */
int img_index_add(struct img_cache *c, const char *checksum, const char *name,
		  const char *url, enum img_format fmt, const struct img_info *info);

/* Pin checksum against eviction in this process (takes mu). */
int img_pin_add(struct img_cache *c, const char *checksum);

/* <cache>/<algo>/<hex>: malloc'd (caller frees), NULL on ENOMEM. */
char *img_cache_file(const struct img_cache *c, const struct img_checksum *ck);

#endif
