/*
 * images: turn an image reference (URL, checksum, declared format) into a
 * per-instance disk.
 *
 *   fetch    libcurl into <cache>/partial/<algo>-<hex>.part, resumed with
 *            Range after a cut, restarted when the server answers 200;
 *            low-speed and total timeouts, retries with backoff, size cap,
 *            progress callback; http, https (system CAs) and file URLs.
 *   verify   sha256/sha512 (OpenSSL EVP) while streaming; only a verified
 *            and inspected image is fsynced and renamed into the cache.
 *   inspect  raw/qcow2 detection from the header; refuses format mismatch,
 *            qcow2 backing or data files, unknown incompatible features,
 *            encryption, oversize virtual disks and other formats.
 *   cache    content-addressed (<cache>/<algo>/<hex>), index.json that
 *            survives restarts, instance references, LRU eviction above a
 *            budget that never touches an image in use, sweep of stale
 *            .part files. Single flight: concurrent requests for one image
 *            share one download; at most max_downloads run at once.
 *   overlay  a qcow2 per instance on the cached base (qemu-img, explicit
 *            backing format), sized to the flavor's disk.
 *
 * All functions return 0 or a negative errno-style code with err_msg()
 * saying what failed (see core.h). See docs/images.md.
 */
#ifndef STRATUS_IMAGES_H
#define STRATUS_IMAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* ---- formats ------------------------------------------------------------ */

/* What an image may be declared as (disk_format). */
enum img_format { IMG_FMT_RAW, IMG_FMT_QCOW2, IMG_FMT_LAST };
/* "raw", "qcow2"; NULL for out-of-range values. */
const char *img_format_name(enum img_format f);
/* 0 or -EINVAL with a message. */
int img_format_parse(const char *s, enum img_format *out);

/* What the header says a file is (more kinds than we accept). */
enum img_kind {
	IMG_KIND_RAW,
	IMG_KIND_QCOW2,
	IMG_KIND_VMDK,
	IMG_KIND_VHD,
	IMG_KIND_VHDX,
	IMG_KIND_QED,
	IMG_KIND_VDI,
	IMG_KIND_LUKS,
	IMG_KIND_DMG,
	IMG_KIND_PARALLELS,
	IMG_KIND_BOCHS,
	IMG_KIND_CLOOP,
	IMG_KIND_LAST
};
const char *img_kind_name(enum img_kind k);

/* ---- the URL filter (images/urlfilter.c) -------------------------------- */

/* Which image URLs the cloud may fetch (docs/images.md "URL filter"). */
struct img_url_filter {
	bool enforce;                /* images.url_filter.enforce (the scheduler: always) */
	struct cfg_strlist schemes;  /* allowed schemes; empty: http, https */
	struct cfg_strlist allow_hosts; /* names or addresses exempt from the address rules */
	struct cfg_strlist deny_hosts;  /* names, addresses or CIDRs denied besides the defaults */
	struct cfg_strlist deny_ports;  /* ports denied besides 9092 (Kafka) and 9180 (metrics) */
};
extern const struct cfg_field img_url_filter_fields[];
/* Before any byte: scheme, host name, port, and every address the host
 * resolves to. 0, or -EACCES (-EINVAL, -EHOSTUNREACH) with err_msg() naming
 * the URL and the rule. */
int img_url_check(const struct img_url_filter *f, const char *url);
/* One address a connection goes to (after redirects too): port and
 * address rules; HOST (may be NULL) for allow_hosts and the message. */
struct sockaddr;
int img_url_check_addr(const struct img_url_filter *f, const char *url, const char *host,
		       const struct sockaddr *sa);
void img_url_filter_free(struct img_url_filter *f);
/* A deep copy of SRC into DST (whose lists are overwritten, not freed);
 * -ENOMEM leaves DST's lists empty. */
int img_url_filter_copy(struct img_url_filter *dst, const struct img_url_filter *src);

/* ---- config ------------------------------------------------------------- */

/* The images: part of the agent's config (embed img_config_fields). */
struct img_config {
	char *cache_dir;             /* cache_dir: /var/lib/stratus/images */
	uint64_t budget;             /* cache_budget: LRU eviction above this */
	uint64_t max_image_size;     /* max_image_size: download cap (bytes) */
	uint64_t max_virtual_size;   /* max_virtual_size: inspection cap */
	int64_t connect_timeout_ms;  /* connect_timeout */
	long low_speed_limit;        /* low_speed_limit: bytes/s ... */
	int64_t low_speed_time_ms;   /* low_speed_time: ... for this long */
	int64_t total_timeout_ms;    /* total_timeout: whole fetch, all attempts */
	long retries;                /* retries after the first attempt */
	int64_t retry_backoff_ms;    /* retry_backoff: first wait, doubles */
	int64_t retry_backoff_max_ms; /* retry_backoff_max */
	long max_downloads;          /* max_downloads: concurrent downloads */
	int64_t partial_max_age_ms;  /* partial_max_age: sweep older .part */
	char *ca_file;               /* ca_file: CA bundle, default system CAs */
	bool allow_file_urls;        /* allow_file_urls: accept file:// URLs */
	char *qemu_img;              /* qemu_img: path of qemu-img */
	struct img_url_filter url_filter; /* url_filter: checked before and during fetches */
	char *store_url;             /* store_url: snapshots are PUT under it (issue 18) */
};
extern const struct cfg_field img_config_fields[];
/* Fill cfg with the defaults of img_config_fields (no file). */
int img_config_defaults(struct img_config *cfg);
void img_config_free(struct img_config *cfg);

/* ---- inspection --------------------------------------------------------- */

struct img_info {
	enum img_kind kind;          /* what the header says */
	uint64_t virtual_size;       /* bytes the guest sees */
	uint64_t file_size;          /* bytes on disk (apparent) */
	uint32_t qcow2_version;      /* 2 or 3 for qcow2, else 0 */
	uint32_t cluster_bits;       /* qcow2 only */
};

/*
 * Inspect PATH before it is used. declared = IMG_FMT_LAST only detects.
 * Refuses (-EINVAL, err_msg() gives the reason; *out still filled with
 * what was detected when out is given):
 *   - other formats (vmdk, vhd, vhdx, qed, vdi, luks, dmg, ...),
 *   - a detected format other than the declared one,
 *   - qcow2: bad header, backing file, external data file, encryption,
 *     corrupt bit, unknown incompatible features or header extensions that
 *     point outside the image,
 *   - a virtual size above max_virtual_size (0 = no cap), an empty file.
 * Other errors (-ENOENT, -EIO) for files that cannot be read.
 */
int img_inspect(const char *path, enum img_format declared, uint64_t max_virtual_size,
		struct img_info *out);

/* ---- progress ----------------------------------------------------------- */

struct img_progress {
	const char *name;    /* image name (or URL) */
	uint64_t bytes;      /* bytes in the partial file, resumed bytes included */
	uint64_t total;      /* expected size, 0 when unknown */
	double rate;         /* bytes/s over the current attempt */
	double eta_s;        /* seconds left, < 0 when unknown */
	unsigned attempt;    /* 1 for the first try */
	bool done;           /* last call of a successful transfer */
};
/* Called at most about 5 times a second, from the downloading thread.
 * Return non-zero to cancel the download (-ECANCELED). */
typedef int (*img_progress_fn)(const struct img_progress *p, void *ud);

/* ---- cache -------------------------------------------------------------- */

struct img_ref {
	const char *name;        /* for messages; NULL: the URL */
	const char *url;         /* http://, https://, file:// */
	const char *checksum;    /* "sha256:HEX" or "sha512:HEX" */
	enum img_format format;  /* declared disk_format */
};

struct img_cache;

/*
 * Open (create) the cache in cfg->cache_dir: loads index.json, adopts
 * verified files that a crash left out of the index, drops entries whose
 * file is gone, sweeps .part files older than partial_max_age. cfg is
 * copied. *out is freed with img_cache_close().
 */
int img_cache_open(const struct img_config *cfg, struct img_cache **out);
void img_cache_close(struct img_cache *c);

/*
 * Make sure the image is in the cache: fetch, verify and inspect it if it
 * is not (sharing the download with concurrent callers for the same
 * checksum), mark it used, and pin it against eviction until
 * img_release(). *path_out is the cached file (malloc'd; caller frees).
 * progress may be NULL.
 */
int img_acquire(struct img_cache *c, const struct img_ref *ref, img_progress_fn progress,
		void *ud, char **path_out);
/* Drop the pin img_acquire() took. */
void img_release(struct img_cache *c, const char *checksum);

/*
 * The instance's disk: acquires the image (fetching it when needed),
 * records instance_uuid as a user of it in the index (so it is never
 * evicted while the instance exists), and creates DIR/<uuid>.qcow2, a
 * qcow2 overlay backed by the cached file with an explicit backing format,
 * of disk_gb GiB (0: the image's virtual size; smaller than the virtual
 * size is an error). Idempotent: an existing overlay for the instance is
 * returned as it is. *overlay_path is malloc'd; caller frees.
 */
int img_overlay_create(struct img_cache *c, const struct img_ref *ref,
		       const char *instance_uuid, uint64_t disk_gb, const char *dir,
		       char **overlay_path);
/* Delete the instance's overlay and drop its reference. 0 when the
 * instance has none (idempotent). */
int img_overlay_delete(struct img_cache *c, const char *instance_uuid);
/* Grow the qcow2 disk at PATH to DISK_GB GiB with qemu-img resize (a
 * resize, issue 18). A disk that is that large or larger already is left
 * alone (never shrunk; *grown false). size: its virtual size in bytes. */
int img_overlay_grow(struct img_cache *c, const char *path, uint64_t disk_gb, bool *grown);
int img_overlay_size(const char *path, uint64_t *bytes);

/*
 * The flavor's local disks (images/local.c): a blank qcow2 of BYTES at
 * PATH, formatted on the host as Nova does: EPHEMERAL an ext4 labelled
 * ephemeral0, SWAP a swap area labelled swap (mkfs.ext4, mkswap, then
 * images.qemu_img convert; no loop device, no mount). Idempotent: an
 * existing PATH is kept as it is (the guest's data). The caller removes
 * the file with the instance.
 */
enum img_local_kind { IMG_LOCAL_EPHEMERAL, IMG_LOCAL_SWAP, IMG_LOCAL_LAST };
extern const char *const img_local_kind_names[];
int img_local_disk_create(struct img_cache *c, const char *instance_uuid, const char *path,
			  uint64_t bytes, enum img_local_kind kind);

struct img_entry {
	char *checksum;          /* "sha256:HEX" */
	char *name, *url;        /* as first fetched (may be NULL) */
	char *path;              /* the cached file */
	enum img_format format;
	uint64_t size, virtual_size;
	int64_t added_ms, last_used_ms; /* wall clock, ms since the epoch */
	uint64_t use_seq;        /* LRU order: larger = used more recently */
	size_t n_users;
	char **users;            /* instance uuids */
	unsigned pins;           /* in-process img_acquire() pins */
};
/* All entries, least recently used first. Free with img_entries_free(). */
int img_list(struct img_cache *c, struct img_entry **out, size_t *n);
void img_entries_free(struct img_entry *e, size_t n);

struct img_evict_stats {
	unsigned evicted;        /* images removed */
	uint64_t freed;          /* bytes removed */
	uint64_t total;          /* bytes in the cache afterwards */
	unsigned in_use;         /* images kept because instances use them */
};
/* Remove least recently used images without users or pins until the cache
 * holds at most budget bytes. Still above budget is not an error (st says
 * how much is in use). st may be NULL. */
int img_evict(struct img_cache *c, uint64_t budget, struct img_evict_stats *st);
/* Remove .part files older than max_age_ms that no download holds. */
int img_sweep_partials(struct img_cache *c, int64_t max_age_ms, unsigned *removed);

/* ---- snapshots into the image store (images/snapshot.c) ------------------- */

/* Copy SRC to DST (created 0600, must not exist): the instance's overlay
 * while its guest is quiesced. DST removed on failure. */
int img_snapshot_copy(const char *src, const char *dst);
/* `qemu-img convert -O qcow2 SRC DST`: SRC and its backing chain into one
 * standalone qcow2. DST removed on failure. */
int img_flatten(const struct img_config *cfg, const char *src, const char *dst);

struct img_upload {
	const char *name;        /* for progress and messages */
	const char *path;        /* the local file */
	const char *url;         /* where it goes: http(s), PUT */
	img_progress_fn progress; /* may be NULL; non-zero cancels */
	void *ud;
};
struct img_uploaded {
	uint64_t size;
	char checksum[144];      /* "sha256:HEX" of what was sent and is served */
	unsigned attempts;
};
/*
 * PUT u->path to u->url (hashed while it streams), then verify what the
 * store serves: HEAD size and GET sha256 equal to what was sent. A failed
 * attempt starts again from the first byte, at most cfg->retries more
 * times (retry_backoff doubling up to retry_backoff_max). err_msg() names
 * the URL and the step (PUT, HEAD, GET, checksum). *out only on success.
 */
int img_upload(const struct img_config *cfg, const struct img_upload *u,
	       struct img_uploaded *out);
/* DELETE URL from the store (gone already: 0). */
int img_store_delete(const struct img_config *cfg, const char *url);

#endif
