/* images: internals shared by the module's files and its tests. */
#ifndef STRATUS_IMAGES_PRIV_H
#define STRATUS_IMAGES_PRIV_H

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

#endif
