/*
 * The image cache: content-addressed files, a JSON index, pins, single
 * flight, eviction, overlays.
 *
 *   <cache_dir>/index.json            the index (write_file_atomic)
 *   <cache_dir>/index.lock            flock: one index writer at a time,
 *                                     across processes (agent + CLI)
 *   <cache_dir>/<algo>/<hex>          verified images, mode 0444
 *   <cache_dir>/partial/<algo>-<hex>.part  downloads in progress (flocked)
 *
 * index.json:
 *   {"version": 1, "seq": N,
 *    "images": {"sha256:HEX": {"name", "url", "format", "size",
 *               "virtual_size", "added_ms", "last_used_ms", "use_seq",
 *               "users": {"<instance uuid>": "<overlay path>"}}}}
 *
 * Every index operation takes index_mu then the flock, re-reads the file,
 * changes it and writes it back before letting go, so the agent and an
 * operator's `stratus-agent image ...` can share one cache. Pins, flights
 * and download slots are per process, under mu (lock order: index_mu,
 * then mu; a .part flock may be held when the index is taken, never the
 * other way round).
 */
#define LOG_TAG "images"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/images_priv.h"

#define INDEX_MAX (16u << 20)
#define GIB (1ULL << 30)

struct pin {
	char *checksum;
	unsigned n;
	struct pin *next;
};

struct flight {
	char *checksum;
	bool done;
	int result;
	char *msg;
	unsigned waiters;
	struct flight *next;
};

struct img_cache {
	struct img_config cfg; /* our own copy */
	char *index_path, *lock_path, *partial_dir;
	int lock_fd;
	pthread_mutex_t index_mu;
	json_t *index;         /* valid between index_begin and index_end */

	pthread_mutex_t mu;
	pthread_cond_t cv;     /* a flight landed, a download slot freed */
	struct pin *pins;
	struct flight *flights;
	long active;           /* downloads running */
};

/* ---- small helpers ------------------------------------------------------ */

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

static int64_t jint(const json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* <cache>/<algo>/<hex> (malloc'd) */
static char *image_path(const struct img_cache *c, const struct img_checksum *ck)
{
	char *p = NULL;

	if (asprintf(&p, "%s/%s/%s", c->cfg.cache_dir, img_algo_name(ck->algo), ck->hex) < 0)
		return NULL;
	return p;
}

static char *image_path_str(const struct img_cache *c, const char *checksum)
{
	struct img_checksum ck;

	if (img_checksum_parse(checksum, &ck) < 0)
		return NULL;
	return image_path(c, &ck);
}

/* ---- the index ---------------------------------------------------------- */

static json_t *index_new(void)
{
	return json_pack("{s:i, s:i, s:{}}", "version", 1, "seq", 0, "images");
}

/* Parse and check the shape; NULL with a message when it is not an index. */
static json_t *index_parse(const char *path, const char *text, size_t len)
{
	json_error_t je;
	json_t *root = json_loadb(text, len, 0, &je), *imgs;

	if (!root) {
		err_set(-EINVAL, "%s:%d: %s", path, je.line, je.text);
		return NULL;
	}
	imgs = json_object_get(root, "images");
	if (!json_is_object(root) || jint(root, "version") != 1 || !json_is_object(imgs) ||
	    !json_is_integer(json_object_get(root, "seq"))) {
		json_decref(root);
		err_set(-EINVAL, "%s: not a version 1 image index", path);
		return NULL;
	}
	const char *k;
	json_t *e;

	json_object_foreach(imgs, k, e) {
		struct img_checksum ck;

		if (!json_is_object(e) || img_checksum_parse(k, &ck) < 0 || !jstr(e, "format") ||
		    !json_is_integer(json_object_get(e, "size")) ||
		    !json_is_object(json_object_get(e, "users"))) {
			json_decref(root);
			err_set(-EINVAL, "%s: entry '%.80s' is malformed", path, k);
			return NULL;
		}
	}
	return root;
}

static int index_read(struct img_cache *c, json_t **out)
{
	char *text = NULL;
	size_t len = 0;
	int r = read_file(c->index_path, INDEX_MAX, &text, &len);

	if (r == -ENOENT) {
		err_clear();
		*out = index_new();
		return *out ? 0 : err_set(-ENOMEM, "out of memory");
	}
	if (r < 0)
		return err_prefix(r, "image index");
	*out = index_parse(c->index_path, text, len);
	free(text);
	return *out ? 0 : -EINVAL;
}

static int index_begin(struct img_cache *c)
{
	int r;

	pthread_mutex_lock(&c->index_mu);
	while (flock(c->lock_fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			r = err_sys(-errno, "%s: lock", c->lock_path);
			pthread_mutex_unlock(&c->index_mu);
			return r;
		}
	}
	r = index_read(c, &c->index);
	if (r < 0) {
		flock(c->lock_fd, LOCK_UN);
		pthread_mutex_unlock(&c->index_mu);
	}
	return r;
}

/* Write the index back when save, and let go. Returns r or the write error. */
static int index_end(struct img_cache *c, bool save, int r)
{
	if (save && c->index) {
		char *text = json_dumps(c->index, JSON_INDENT(1) | JSON_SORT_KEYS);
		int w;

		if (!text) {
			w = err_set(-ENOMEM, "image index: cannot serialise");
		} else {
			w = write_file_atomic(c->index_path, text, strlen(text), 0644);
			if (w < 0)
				err_prefix(w, "image index");
		}
		free(text);
		if (w < 0 && r >= 0)
			r = w;
	}
	json_decref(c->index);
	c->index = NULL;
	flock(c->lock_fd, LOCK_UN);
	pthread_mutex_unlock(&c->index_mu);
	return r;
}

static json_t *images_of(struct img_cache *c)
{
	return json_object_get(c->index, "images");
}

static uint64_t next_seq(struct img_cache *c)
{
	uint64_t s = (uint64_t)jint(c->index, "seq") + 1;

	json_object_set_new(c->index, "seq", json_integer((json_int_t)s));
	return s;
}

/* ---- pins (mu held) ----------------------------------------------------- */

static struct pin *pin_find(struct img_cache *c, const char *checksum)
{
	for (struct pin *p = c->pins; p; p = p->next)
		if (strcmp(p->checksum, checksum) == 0)
			return p;
	return NULL;
}

static unsigned pins_of(struct img_cache *c, const char *checksum)
{
	struct pin *p;
	unsigned n;

	pthread_mutex_lock(&c->mu);
	p = pin_find(c, checksum);
	n = p ? p->n : 0;
	pthread_mutex_unlock(&c->mu);
	return n;
}

static int pin_add(struct img_cache *c, const char *checksum)
{
	struct pin *p;
	int r = 0;

	pthread_mutex_lock(&c->mu);
	p = pin_find(c, checksum);
	if (p) {
		p->n++;
	} else {
		p = calloc(1, sizeof(*p));
		if (p)
			p->checksum = strdup(checksum);
		if (!p || !p->checksum) {
			free(p);
			r = err_set(-ENOMEM, "out of memory");
		} else {
			p->n = 1;
			p->next = c->pins;
			c->pins = p;
		}
	}
	pthread_mutex_unlock(&c->mu);
	return r;
}

void img_release(struct img_cache *c, const char *checksum)
{
	struct img_checksum ck;
	char *key = NULL;

	if (!c || !checksum || img_checksum_parse(checksum, &ck) < 0)
		return;
	if (asprintf(&key, "%s:%s", img_algo_name(ck.algo), ck.hex) < 0)
		return;
	pthread_mutex_lock(&c->mu);
	for (struct pin **pp = &c->pins; *pp; pp = &(*pp)->next) {
		struct pin *p = *pp;

		if (strcmp(p->checksum, key) != 0)
			continue;
		if (--p->n == 0) {
			*pp = p->next;
			free(p->checksum);
			free(p);
		}
		break;
	}
	pthread_mutex_unlock(&c->mu);
	free(key);
}

/* ---- open, adopt, sweep -------------------------------------------------- */

static int copy_config(struct img_config *dst, const struct img_config *src)
{
	*dst = *src;
	dst->cache_dir = xstrdup(src->cache_dir);
	dst->ca_file = xstrdup(src->ca_file);
	dst->qemu_img = xstrdup(src->qemu_img ? src->qemu_img : "qemu-img");
	if (!dst->cache_dir || !dst->qemu_img || (src->ca_file && !dst->ca_file))
		return err_set(-ENOMEM, "out of memory");
	return 0;
}

static int add_entry(struct img_cache *c, const char *checksum, const char *name,
		     const char *url, enum img_format fmt, const struct img_info *info)
{
	int64_t now = time_wall_ms();
	json_t *e = json_pack("{s:s?, s:s?, s:s, s:I, s:I, s:I, s:I, s:I, s:{}}", "name", name,
			      "url", url, "format", img_format_name(fmt), "size",
			      (json_int_t)info->file_size, "virtual_size",
			      (json_int_t)info->virtual_size, "added_ms", (json_int_t)now,
			      "last_used_ms", (json_int_t)now, "use_seq",
			      (json_int_t)next_seq(c), "users");

	json_t *old = json_object_get(images_of(c), checksum);

	if (e && old && json_object_size(json_object_get(old, "users")))
		json_object_set(e, "users", json_object_get(old, "users"));
	if (!e || json_object_set_new(images_of(c), checksum, e) < 0)
		return err_set(-ENOMEM, "out of memory");
	return 0;
}

/* Files that a crash left out of the index are verified (only verified
 * files are renamed in): adopt them. Entries whose file is gone go. */
static int reconcile(struct img_cache *c)
{
	bool dirty = false;
	int r = index_begin(c);

	if (r < 0)
		return r;
	for (int a = 0; a < IMG_ALGO_LAST; a++) {
		char *dir = NULL;
		DIR *d;
		struct dirent *de;

		if (asprintf(&dir, "%s/%s", c->cfg.cache_dir, img_algo_name((enum img_algo)a)) < 0)
			continue;
		d = opendir(dir);
		while (d && (de = readdir(d))) {
			char *key = NULL, *path = NULL;
			struct img_checksum ck;
			struct img_info info;

			if (de->d_name[0] == '.')
				continue;
			if (asprintf(&key, "%s:%s", img_algo_name((enum img_algo)a), de->d_name) < 0)
				continue;
			if (img_checksum_parse(key, &ck) < 0 || strcmp(ck.hex, de->d_name) != 0 ||
			    json_object_get(images_of(c), key)) {
				free(key);
				continue;
			}
			if (asprintf(&path, "%s/%s", dir, de->d_name) >= 0) {
				if (img_inspect(path, IMG_FMT_LAST, c->cfg.max_virtual_size, &info) == 0) {
					add_entry(c, key, NULL, NULL,
						  info.kind == IMG_KIND_QCOW2 ? IMG_FMT_QCOW2
									      : IMG_FMT_RAW,
						  &info);
					log_info("adopted cached image missing from the index "
						 "checksum=%s", key);
				} else {
					log_warn("removing unusable cached file path=%s reason=\"%s\"",
						 path, err_msg());
					unlink(path);
				}
				dirty = true;
			}
			free(path);
			free(key);
		}
		if (d)
			closedir(d);
		free(dir);
	}
	const char *k;
	json_t *e;
	void *tmp;

	json_object_foreach_safe(images_of(c), tmp, k, e) {
		char *path = image_path_str(c, k);

		if (path && access(path, F_OK) < 0 && errno == ENOENT) {
			if (json_object_size(json_object_get(e, "users")) == 0) {
				log_warn("dropping index entry whose file is gone checksum=%s", k);
				json_object_del(images_of(c), k);
				dirty = true;
			} else {
				log_error("cached image in use by instances is missing checksum=%s "
					  "path=%s",
					  k, path);
			}
		}
		free(path);
	}
	return index_end(c, dirty, 0);
}

int img_sweep_partials(struct img_cache *c, int64_t max_age_ms, unsigned *removed)
{
	DIR *d = opendir(c->partial_dir);
	struct dirent *de;
	unsigned n = 0;
	int64_t now = time_wall_ms();

	if (!d)
		return err_sys(-errno, "%s", c->partial_dir);
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		struct stat st;
		int fd;

		if (l < 6 || strcmp(de->d_name + l - 5, ".part") != 0)
			continue;
		fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		/* A download in progress holds the lock: leave it alone. */
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &st) == 0 && st.st_nlink > 0 &&
		    now - ((int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000) >=
			    max_age_ms) {
			if (unlinkat(dirfd(d), de->d_name, 0) == 0) {
				log_info("removed stale partial download file=%s bytes=%lld",
					 de->d_name, (long long)st.st_size);
				n++;
			}
		}
		close(fd);
	}
	closedir(d);
	if (removed)
		*removed = n;
	return 0;
}

int img_cache_open(const struct img_config *cfg, struct img_cache **out)
{
	struct img_cache *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return err_set(-ENOMEM, "out of memory");
	c->lock_fd = -1;
	pthread_mutex_init(&c->index_mu, NULL);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	r = copy_config(&c->cfg, cfg);
	if (r < 0)
		goto fail;
	if (!c->cfg.cache_dir || !*c->cfg.cache_dir) {
		r = err_set(-EINVAL, "images: cache_dir is empty");
		goto fail;
	}
	if (asprintf(&c->index_path, "%s/index.json", c->cfg.cache_dir) < 0 ||
	    asprintf(&c->lock_path, "%s/index.lock", c->cfg.cache_dir) < 0 ||
	    asprintf(&c->partial_dir, "%s/partial", c->cfg.cache_dir) < 0) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	r = mkdir_p(c->partial_dir, 0755);
	if (r < 0)
		goto fail;
	for (int a = 0; a < IMG_ALGO_LAST; a++) {
		char *dir = NULL;

		if (asprintf(&dir, "%s/%s", c->cfg.cache_dir, img_algo_name((enum img_algo)a)) < 0) {
			r = err_set(-ENOMEM, "out of memory");
			goto fail;
		}
		r = mkdir_p(dir, 0755);
		free(dir);
		if (r < 0)
			goto fail;
	}
	c->lock_fd = open(c->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (c->lock_fd < 0) {
		r = err_sys(-errno, "%s", c->lock_path);
		goto fail;
	}
	/* A corrupt index is set aside; the files rebuild it. */
	r = index_begin(c);
	if (r == -EINVAL) {
		char *aside = NULL;

		log_error("image index unreadable, rebuilding from the cached files error=\"%s\"",
			  err_msg());
		if (asprintf(&aside, "%s.corrupt", c->index_path) >= 0)
			rename(c->index_path, aside);
		free(aside);
	} else if (r < 0) {
		goto fail;
	} else {
		index_end(c, false, 0);
	}
	r = reconcile(c);
	if (r < 0)
		goto fail;
	img_sweep_partials(c, c->cfg.partial_max_age_ms, NULL);
	*out = c;
	return 0;
fail:
	err_prefix(r, "image cache %s", cfg->cache_dir ? cfg->cache_dir : "");
	img_cache_close(c);
	return r;
}

void img_cache_close(struct img_cache *c)
{
	if (!c)
		return;
	while (c->pins) {
		struct pin *p = c->pins;

		c->pins = p->next;
		free(p->checksum);
		free(p);
	}
	if (c->lock_fd >= 0)
		close(c->lock_fd);
	free(c->index_path);
	free(c->lock_path);
	free(c->partial_dir);
	img_config_free(&c->cfg);
	pthread_mutex_destroy(&c->index_mu);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
}

/* ---- acquire ------------------------------------------------------------ */

/*
 * In the index? Then mark it used, pin it, and return its path: 1.
 * Not there: 0. A declared format that differs from the cached one: error.
 */
static int lookup(struct img_cache *c, const struct img_ref *ref, const char *key,
		  const struct img_checksum *ck, char **path_out)
{
	const char *name = ref->name ? ref->name : ref->url;
	char *path = NULL;
	json_t *e;
	int r = index_begin(c);

	if (r < 0)
		return r;
	e = json_object_get(images_of(c), key);
	if (!e) {
		r = 0;
		return index_end(c, false, 0);
	}
	if (strcmp(jstr(e, "format"), img_format_name(ref->format)) != 0) {
		r = err_set(-EINVAL, "image %s: declared %s but the cached image %s is %s: refused",
			    name, img_format_name(ref->format), key, jstr(e, "format"));
		return index_end(c, false, r);
	}
	path = image_path(c, ck);
	if (!path)
		return index_end(c, false, err_set(-ENOMEM, "out of memory"));
	if (access(path, R_OK) < 0) {
		/* Gone behind our back: fetch it again (same content, same path,
		 * so the overlays of its users work again). */
		bool users = json_object_size(json_object_get(e, "users")) > 0;

		log_warn("cached image file missing, fetching again checksum=%s", key);
		free(path);
		if (!users)
			json_object_del(images_of(c), key);
		return index_end(c, !users, 0);
	}
	json_object_set_new(e, "last_used_ms", json_integer(time_wall_ms()));
	json_object_set_new(e, "use_seq", json_integer((json_int_t)next_seq(c)));
	r = pin_add(c, key);
	r = index_end(c, true, r);
	if (r < 0) {
		if (r != -ENOMEM)
			img_release(c, key);
		free(path);
		return r;
	}
	*path_out = path;
	return 1;
}

struct commit_ctx {
	struct img_cache *c;
	const struct img_ref *ref;
	const struct img_checksum *ck;
	const char *key;
};

/* With the verified .part still locked: inspect, rename in, record. */
static int commit_image(const char *part, uint64_t size, void *ud)
{
	struct commit_ctx *cc = ud;
	struct img_cache *c = cc->c;
	const char *name = cc->ref->name ? cc->ref->name : cc->ref->url;
	struct img_info info;
	char *final = NULL, *dir = NULL;
	int r;

	(void)size;
	r = img_inspect(part, cc->ref->format, c->cfg.max_virtual_size, &info);
	if (r < 0)
		return err_prefix(r, "image %s", name);
	final = image_path(c, cc->ck);
	if (!final || asprintf(&dir, "%s/%s", c->cfg.cache_dir, img_algo_name(cc->ck->algo)) < 0) {
		free(final);
		return err_set(-ENOMEM, "out of memory");
	}
	if (chmod(part, 0444) < 0 || rename(part, final) < 0) {
		r = err_sys(-errno, "image %s: cannot move %s into the cache", name, part);
		goto out;
	}
	r = fsync_dir(dir);
	if (r == 0)
		r = fsync_dir(c->partial_dir);
	if (r < 0) {
		r = err_sys(r, "image %s: fsync %s", name, dir);
		unlink(final);
		goto out;
	}
	r = index_begin(c);
	if (r < 0)
		goto out;
	r = add_entry(c, cc->key, cc->ref->name, cc->ref->url, cc->ref->format, &info);
	r = index_end(c, r == 0, r);
out:
	free(final);
	free(dir);
	return r;
}

static bool image_present(void *ud)
{
	struct commit_ctx *cc = ud;
	bool found = false;

	if (index_begin(cc->c) < 0)
		return false;
	if (json_object_get(images_of(cc->c), cc->key)) {
		char *path = image_path(cc->c, cc->ck);

		found = path && access(path, F_OK) == 0;
		free(path);
	}
	index_end(cc->c, false, 0);
	return found;
}

static int download(struct img_cache *c, const struct img_ref *ref, const char *key,
		    const struct img_checksum *ck, img_progress_fn progress, void *ud)
{
	struct commit_ctx cc = { .c = c, .ref = ref, .ck = ck, .key = key };
	struct img_fetch_opts o = {
		.name = ref->name ? ref->name : ref->url,
		.url = ref->url,
		.want = ck,
		.max_size = c->cfg.max_image_size,
		.connect_timeout_ms = c->cfg.connect_timeout_ms,
		.low_speed_limit = c->cfg.low_speed_limit,
		.low_speed_time_ms = c->cfg.low_speed_time_ms,
		.total_timeout_ms = c->cfg.total_timeout_ms,
		.retries = (unsigned)c->cfg.retries,
		.backoff_ms = c->cfg.retry_backoff_ms,
		.backoff_max_ms = c->cfg.retry_backoff_max_ms,
		.ca_file = c->cfg.ca_file,
		.allow_file = c->cfg.allow_file_urls,
		.progress = progress,
		.ud = ud,
		.commit = commit_image,
		.present = image_present,
		.commit_ud = &cc,
	};
	char *part = NULL;
	int r;

	if (asprintf(&part, "%s/%s-%s.part", c->partial_dir, img_algo_name(ck->algo), ck->hex) < 0)
		return err_set(-ENOMEM, "out of memory");
	o.part_path = part;
	log_info("fetching image image=%s url=%s checksum=%s", o.name, ref->url, key);
	r = img_fetch(&o, NULL);
	free(part);
	return r;
}

static struct flight *flight_find(struct img_cache *c, const char *key)
{
	for (struct flight *f = c->flights; f; f = f->next)
		if (strcmp(f->checksum, key) == 0)
			return f;
	return NULL;
}

static void flight_free(struct flight *f)
{
	if (!f)
		return;
	free(f->checksum);
	free(f->msg);
	free(f);
}

/* Lead a download: take a slot, fetch, land the flight. */
static int lead(struct img_cache *c, struct flight *f, const struct img_ref *ref,
		const char *key, const struct img_checksum *ck, img_progress_fn progress,
		void *ud)
{
	int r;

	pthread_mutex_lock(&c->mu);
	while (c->active >= c->cfg.max_downloads)
		pthread_cond_wait(&c->cv, &c->mu);
	c->active++;
	pthread_mutex_unlock(&c->mu);

	r = download(c, ref, key, ck, progress, ud);
	if (r == -EAGAIN) /* another process finished it: look again */
		r = 0;

	pthread_mutex_lock(&c->mu);
	c->active--;
	for (struct flight **pp = &c->flights; *pp; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	}
	f->done = true;
	f->result = r;
	if (r < 0)
		f->msg = strdup(err_msg());
	if (f->waiters == 0)
		flight_free(f);
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	return r;
}

/* Wait for another thread's download of the same image. */
static int follow(struct img_cache *c, struct flight *f)
{
	int r;

	/* mu held, f->waiters counted */
	while (!f->done)
		pthread_cond_wait(&c->cv, &c->mu);
	r = f->result;
	if (r < 0)
		err_set(r, "%s", f->msg ? f->msg : "download failed");
	if (--f->waiters == 0)
		flight_free(f);
	pthread_mutex_unlock(&c->mu);
	return r;
}

int img_acquire(struct img_cache *c, const struct img_ref *ref, img_progress_fn progress,
		void *ud, char **path_out)
{
	struct img_checksum ck;
	char *key = NULL;
	bool fetched = false;
	int r;

	if (!ref || !ref->checksum)
		return err_set(-EINVAL, "image: no checksum given");
	if ((unsigned)ref->format >= IMG_FMT_LAST)
		return err_set(-EINVAL, "image %s: no disk format given",
			       ref->name ? ref->name : ref->url);
	r = img_checksum_parse(ref->checksum, &ck);
	if (r < 0)
		return err_prefix(r, "image %s", ref->name ? ref->name : ref->url);
	if (asprintf(&key, "%s:%s", img_algo_name(ck.algo), ck.hex) < 0)
		return err_set(-ENOMEM, "out of memory");

	for (unsigned round = 0;; round++) {
		struct flight *f;
		char *path = NULL;

		r = lookup(c, ref, key, &ck, &path);
		if (r < 0)
			goto out;
		if (r == 1) {
			if (fetched && c->cfg.budget)
				img_evict(c, c->cfg.budget, NULL); /* ours is pinned */
			*path_out = path;
			r = 0;
			goto out;
		}
		if (round >= 3) {
			r = err_set(-EIO, "image %s: downloaded but not found in the cache",
				    ref->name ? ref->name : ref->url);
			goto out;
		}
		if (!ref->url) {
			r = err_set(-ENOENT, "image %s: not cached and no URL given", key);
			goto out;
		}
		if (strncasecmp(ref->url, "file:", 5) == 0 && !c->cfg.allow_file_urls) {
			r = err_set(-EPERM, "image %s: file:// URLs are not allowed "
					    "(images.allow_file_urls)",
				    ref->name ? ref->name : ref->url);
			goto out;
		}
		pthread_mutex_lock(&c->mu);
		f = flight_find(c, key);
		if (f) {
			f->waiters++;
			r = follow(c, f); /* unlocks mu */
			if (r < 0)
				goto out;
			continue;
		}
		f = calloc(1, sizeof(*f));
		if (f)
			f->checksum = strdup(key);
		if (!f || !f->checksum) {
			pthread_mutex_unlock(&c->mu);
			flight_free(f);
			r = err_set(-ENOMEM, "out of memory");
			goto out;
		}
		f->next = c->flights;
		c->flights = f;
		pthread_mutex_unlock(&c->mu);
		r = lead(c, f, ref, key, &ck, progress, ud);
		if (r < 0)
			goto out;
		fetched = true;
	}
out:
	free(key);
	return r;
}

/* ---- list and evict ------------------------------------------------------ */

static int by_seq(const void *a, const void *b)
{
	const struct img_entry *x = a, *y = b;

	return x->use_seq < y->use_seq ? -1 : x->use_seq > y->use_seq;
}

int img_list(struct img_cache *c, struct img_entry **out, size_t *n)
{
	struct img_entry *v = NULL;
	size_t i = 0, cnt;
	const char *k;
	json_t *e;
	int r = index_begin(c);

	if (r < 0)
		return r;
	cnt = json_object_size(images_of(c));
	v = calloc(cnt ? cnt : 1, sizeof(*v));
	if (!v)
		return index_end(c, false, err_set(-ENOMEM, "out of memory"));
	json_object_foreach(images_of(c), k, e) {
		struct img_entry *x = &v[i++];
		json_t *users = json_object_get(e, "users");
		const char *u;
		json_t *ov;
		size_t j = 0;

		x->checksum = strdup(k);
		x->name = xstrdup(jstr(e, "name"));
		x->url = xstrdup(jstr(e, "url"));
		x->path = image_path_str(c, k);
		img_format_parse(jstr(e, "format"), &x->format);
		x->size = (uint64_t)jint(e, "size");
		x->virtual_size = (uint64_t)jint(e, "virtual_size");
		x->added_ms = jint(e, "added_ms");
		x->last_used_ms = jint(e, "last_used_ms");
		x->use_seq = (uint64_t)jint(e, "use_seq");
		x->pins = pins_of(c, k);
		x->users = calloc(json_object_size(users) + 1, sizeof(char *));
		if (!x->checksum || !x->path || !x->users) {
			img_entries_free(v, i);
			return index_end(c, false, err_set(-ENOMEM, "out of memory"));
		}
		json_object_foreach(users, u, ov) {
			x->users[j] = strdup(u);
			if (x->users[j])
				j++;
		}
		x->n_users = j;
	}
	index_end(c, false, 0);
	qsort(v, i, sizeof(*v), by_seq);
	*out = v;
	*n = i;
	return 0;
}

void img_entries_free(struct img_entry *e, size_t n)
{
	if (!e)
		return;
	for (size_t i = 0; i < n; i++) {
		free(e[i].checksum);
		free(e[i].name);
		free(e[i].url);
		free(e[i].path);
		for (size_t j = 0; e[i].users && j < e[i].n_users; j++)
			free(e[i].users[j]);
		free(e[i].users);
	}
	free(e);
}

struct cand {
	const char *key; /* borrowed from the index */
	uint64_t size, seq;
	size_t users;
	unsigned pins;
};

static int cand_by_seq(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int img_evict(struct img_cache *c, uint64_t budget, struct img_evict_stats *st)
{
	struct img_evict_stats s = { 0 };
	struct cand *v = NULL;
	char **gone = NULL;
	size_t n = 0, i = 0, g = 0;
	const char *k;
	json_t *e;
	int r = index_begin(c);

	if (r < 0)
		return r;
	n = json_object_size(images_of(c));
	v = calloc(n ? n : 1, sizeof(*v));
	gone = calloc(n ? n : 1, sizeof(*gone));
	if (!v || !gone) {
		free(v);
		free(gone);
		return index_end(c, false, err_set(-ENOMEM, "out of memory"));
	}
	json_object_foreach(images_of(c), k, e) {
		v[i].key = k;
		v[i].size = (uint64_t)jint(e, "size");
		v[i].seq = (uint64_t)jint(e, "use_seq");
		v[i].users = json_object_size(json_object_get(e, "users"));
		v[i].pins = pins_of(c, k);
		s.total += v[i].size;
		if (v[i].users)
			s.in_use++;
		i++;
	}
	qsort(v, n, sizeof(*v), cand_by_seq);
	for (i = 0; i < n && s.total > budget; i++) {
		char *path;

		if (v[i].users || v[i].pins)
			continue;
		path = image_path_str(c, v[i].key);
		if (!path || (unlink(path) < 0 && errno != ENOENT)) {
			log_warn("cannot evict image checksum=%s error=%s", v[i].key, strerror(errno));
			free(path);
			continue;
		}
		free(path);
		gone[g] = strdup(v[i].key);
		if (!gone[g])
			continue;
		log_info("evicted image checksum=%s bytes=%" PRIu64, v[i].key, v[i].size);
		g++;
		s.total -= v[i].size;
		s.freed += v[i].size;
		s.evicted++;
	}
	for (i = 0; i < g; i++) {
		json_object_del(images_of(c), gone[i]);
		free(gone[i]);
	}
	free(gone);
	free(v);
	r = index_end(c, g > 0, 0);
	if (st)
		*st = s;
	return r;
}

/* ---- overlays ------------------------------------------------------------ */

/* Find the entry that lists instance_uuid as a user (index held). */
static json_t *entry_of_user(struct img_cache *c, const char *uuid, const char **key)
{
	const char *k;
	json_t *e;

	json_object_foreach(images_of(c), k, e) {
		if (json_object_get(json_object_get(e, "users"), uuid)) {
			*key = k;
			return e;
		}
	}
	return NULL;
}

static int set_user(struct img_cache *c, const char *key, const char *uuid,
		    const char *overlay)
{
	json_t *e;
	int r = index_begin(c);

	if (r < 0)
		return r;
	e = json_object_get(images_of(c), key);
	if (!e)
		return index_end(c, false, err_set(-ENOENT, "image %s: not in the cache", key));
	if (overlay)
		json_object_set_new(json_object_get(e, "users"), uuid, json_string(overlay));
	else
		json_object_del(json_object_get(e, "users"), uuid);
	return index_end(c, true, 0);
}

int img_overlay_create(struct img_cache *c, const struct img_ref *ref,
		       const char *instance_uuid, uint64_t disk_gb, const char *dir,
		       char **overlay_path)
{
	const char *name = ref && ref->name ? ref->name : ref ? ref->url : NULL;
	char *base = NULL, *path = NULL, *tmp = NULL, *out = NULL, *key = NULL;
	char size_arg[32], fmt[16];
	const char *have = NULL;
	struct img_checksum ck;
	uint64_t vsize = 0, size;
	bool pinned = false, user = false;
	json_t *e;
	int r, fd;

	if (!uuid_valid(instance_uuid))
		return err_set(-EINVAL, "overlay: '%s' is not an instance uuid",
			       instance_uuid ? instance_uuid : "");
	if (!ref || !ref->checksum)
		return err_set(-EINVAL, "instance %s: no image checksum", instance_uuid);
	r = img_checksum_parse(ref->checksum, &ck);
	if (r < 0)
		return err_prefix(r, "instance %s", instance_uuid);
	if (asprintf(&key, "%s:%s", img_algo_name(ck.algo), ck.hex) < 0 ||
	    asprintf(&path, "%s/%s.qcow2", dir, instance_uuid) < 0 ||
	    asprintf(&tmp, "%s/.%s.qcow2.tmp", dir, instance_uuid) < 0) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}

	/* Idempotent: the instance already has its disk. */
	r = index_begin(c);
	if (r < 0)
		goto out;
	e = entry_of_user(c, instance_uuid, &have);
	if (e && strcmp(have, key) != 0) {
		r = err_set(-EEXIST, "instance %s: already has a disk on image %s", instance_uuid,
			    have);
		index_end(c, false, r);
		goto out;
	}
	if (e && access(path, F_OK) == 0) {
		index_end(c, false, 0);
		*overlay_path = path;
		path = NULL;
		r = 0;
		goto out;
	}
	index_end(c, false, 0);

	r = img_acquire(c, ref, NULL, NULL, &base);
	if (r < 0)
		goto out;
	pinned = true;
	r = index_begin(c);
	if (r < 0)
		goto out;
	e = json_object_get(images_of(c), key);
	vsize = e ? (uint64_t)jint(e, "virtual_size") : 0;
	index_end(c, false, 0);
	size = disk_gb ? disk_gb * GIB : vsize;
	if (disk_gb > UINT64_MAX / GIB || size < vsize) {
		r = err_set(-EINVAL, "instance %s: flavor disk of %" PRIu64 " GiB is smaller than "
				     "image %s (virtual size %" PRIu64 " bytes)",
			    instance_uuid, disk_gb, name, vsize);
		goto out;
	}
	r = mkdir_p(dir, 0755);
	if (r < 0)
		goto out;
	/* The reference first: from now on the base cannot be evicted. */
	r = set_user(c, key, instance_uuid, path);
	if (r < 0)
		goto out;
	user = true;
	snprintf(size_arg, sizeof(size_arg), "%" PRIu64, size);
	snprintf(fmt, sizeof(fmt), "%s", img_format_name(ref->format));
	{
		char *argv[] = { c->cfg.qemu_img, "create", "-q", "-f", "qcow2", "-F",
				 fmt, "-b", base, tmp, size_arg,
				 NULL };

		unlink(tmp);
		r = img_run(argv, &out);
		if (r != 0) {
			r = err_set(r < 0 ? r : -EIO, "instance %s: qemu-img create failed: %s",
				    instance_uuid, out && *out ? out : "(no output)");
			goto out;
		}
	}
	fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		r = err_sys(-errno, "instance %s: %s", instance_uuid, tmp);
		if (fd >= 0)
			close(fd);
		goto out;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		r = err_sys(-errno, "instance %s: rename %s", instance_uuid, path);
		goto out;
	}
	fsync_dir(dir);
	log_info("created instance disk instance=%s image=%s path=%s size=%" PRIu64,
		 instance_uuid, key, path, size);
	*overlay_path = path;
	path = NULL;
	r = 0;
out:
	if (r < 0 && tmp)
		unlink(tmp);
	if (r < 0 && user)
		set_user(c, key, instance_uuid, NULL);
	if (pinned)
		img_release(c, key);
	free(base);
	free(path);
	free(tmp);
	free(out);
	free(key);
	return r;
}

int img_overlay_delete(struct img_cache *c, const char *instance_uuid)
{
	const char *key = NULL, *overlay;
	json_t *e;
	int r;

	if (!uuid_valid(instance_uuid))
		return err_set(-EINVAL, "overlay: '%s' is not an instance uuid",
			       instance_uuid ? instance_uuid : "");
	r = index_begin(c);
	if (r < 0)
		return r;
	e = entry_of_user(c, instance_uuid, &key);
	if (!e)
		return index_end(c, false, 0);
	overlay = json_string_value(json_object_get(json_object_get(e, "users"), instance_uuid));
	if (overlay && unlink(overlay) < 0 && errno != ENOENT) {
		r = err_sys(-errno, "instance %s: remove %s", instance_uuid, overlay);
		return index_end(c, false, r);
	}
	log_info("deleted instance disk instance=%s image=%s", instance_uuid, key);
	json_object_del(json_object_get(e, "users"), instance_uuid);
	return index_end(c, true, 0);
}
