/*
 * The image cache: content-addressed files, a JSON index, pins, open
 * (adopt, sweep), list and eviction. Fetching into the cache is
 * images/acquire.c, per-instance disks images/overlay.c; what they share
 * is in images/images_priv.h (with the lock order).
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
 */
#define LOG_TAG "images"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/images_priv.h"

#define INDEX_MAX (16u << 20)

/* ---- small helpers ------------------------------------------------------ */

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

char *img_cache_file(const struct img_cache *c, const struct img_checksum *ck)
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
	return img_cache_file(c, &ck);
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
	if (!json_is_object(root) || img_jint(root, "version") != 1 || !json_is_object(imgs) ||
	    !json_is_integer(json_object_get(root, "seq"))) {
		json_decref(root);
		err_set(-EINVAL, "%s: not a version 1 image index", path);
		return NULL;
	}
	const char *k;
	json_t *e;

	json_object_foreach(imgs, k, e) {
		struct img_checksum ck;

		if (!json_is_object(e) || img_checksum_parse(k, &ck) < 0 || !img_jstr(e, "format") ||
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

int img_index_begin(struct img_cache *c)
{
	int r;

	pthread_mutex_lock(&c->index_mu);
	if (c->pending) {
		/* committed, its write in flight: the flock is ours already */
		c->index = json_deep_copy(c->pending);
		if (c->index)
			return 0;
		pthread_mutex_unlock(&c->index_mu);
		return err_set(-ENOMEM, "image index: out of memory");
	}
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

/* A commit waiting for the write that carries it (on its thread's stack). */
struct img_index_waiter {
	uint64_t gen;
	bool done;
	int r;
	char msg[256];
	struct img_index_waiter *next;
};

/* The write of generation gen ended with w (index_mu held): tell the
 * waiters it carried; a failed write fails every commit not yet written,
 * since each was made on top of the ones before. */
static void index_written(struct img_cache *c, uint64_t gen, int w)
{
	struct img_index_waiter **pp = &c->index_waiters;

	while (*pp) {
		struct img_index_waiter *x = *pp;

		if (x->gen <= gen || w < 0) {
			x->done = true;
			x->r = w;
			if (w < 0)
				snprintf(x->msg, sizeof(x->msg), "%s", err_msg());
			*pp = x->next;
		} else {
			pp = &x->next;
		}
	}
	if (w < 0 || c->index_gen == gen) {
		/* the file is the truth again (a failed write: the old one) */
		json_decref(c->pending);
		c->pending = NULL;
		flock(c->lock_fd, LOCK_UN);
	}
	pthread_cond_broadcast(&c->index_cv);
}

/* Until the waiter's commit is in the file: write pending ourselves, or
 * wait for the write in flight (index_mu held, released while writing). */
static int index_wait_written(struct img_cache *c, struct img_index_waiter *me)
{
	while (!me->done) {
		uint64_t gen = c->index_gen;
		char *text;
		int w;

		if (c->index_writing) {
			pthread_cond_wait(&c->index_cv, &c->index_mu);
			continue;
		}
		c->index_writing = true;
		text = json_dumps(c->pending, JSON_INDENT(1) | JSON_SORT_KEYS);
		pthread_mutex_unlock(&c->index_mu);
		if (!text) {
			w = err_set(-ENOMEM, "image index: cannot serialise");
		} else {
			w = write_file_atomic(c->index_path, text, strlen(text), 0644);
			if (w < 0)
				err_prefix(w, "image index");
		}
		free(text);
		pthread_mutex_lock(&c->index_mu);
		c->index_writing = false;
		index_written(c, gen, w);
	}
	if (me->r < 0)
		err_set(me->r, "%s", me->msg);
	return me->r;
}

/* Write the index back when save, and let go. Returns r or the write error. */
int img_index_end(struct img_cache *c, bool save, int r)
{
	struct img_index_waiter me = { 0 };

	if (!save || !c->index) {
		json_decref(c->index);
		c->index = NULL;
		if (!c->pending)
			flock(c->lock_fd, LOCK_UN);
		pthread_mutex_unlock(&c->index_mu);
		return r;
	}
	json_decref(c->pending);
	c->pending = c->index;
	c->index = NULL;
	me.gen = ++c->index_gen;
	me.next = c->index_waiters;
	c->index_waiters = &me;
	int w = index_wait_written(c, &me);

	pthread_mutex_unlock(&c->index_mu);
	return w < 0 && r >= 0 ? w : r;
}

json_t *img_index_images(struct img_cache *c)
{
	return json_object_get(c->index, "images");
}

uint64_t img_index_next_seq(struct img_cache *c)
{
	uint64_t s = (uint64_t)img_jint(c->index, "seq") + 1;

	json_object_set_new(c->index, "seq", json_integer((json_int_t)s));
	return s;
}

/* ---- pins (each call takes mu) ------------------------------------------ */

static struct img_pin *pin_find(struct img_cache *c, const char *checksum)
{
	for (struct img_pin *p = c->pins; p; p = p->next)
		if (strcmp(p->checksum, checksum) == 0)
			return p;
	return NULL;
}

static unsigned pins_of(struct img_cache *c, const char *checksum)
{
	struct img_pin *p;
	unsigned n;

	pthread_mutex_lock(&c->mu);
	p = pin_find(c, checksum);
	n = p ? p->n : 0;
	pthread_mutex_unlock(&c->mu);
	return n;
}

int img_pin_add(struct img_cache *c, const char *checksum)
{
	struct img_pin *p;
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
	for (struct img_pin **pp = &c->pins; *pp; pp = &(*pp)->next) {
		struct img_pin *p = *pp;

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
	dst->store_url = xstrdup(src->store_url);
	if (img_url_filter_copy(&dst->url_filter, &src->url_filter) < 0 || !dst->cache_dir ||
	    !dst->qemu_img || (src->ca_file && !dst->ca_file) || (src->store_url && !dst->store_url))
		return err_set(-ENOMEM, "out of memory");
	return 0;
}

int img_index_add(struct img_cache *c, const char *checksum, const char *name,
		  const char *url, enum img_format fmt, const struct img_info *info)
{
	int64_t now = time_wall_ms();
	json_t *e = json_pack("{s:s?, s:s?, s:s, s:I, s:I, s:I, s:I, s:I, s:{}}", "name", name,
			      "url", url, "format", img_format_name(fmt), "size",
			      (json_int_t)info->file_size, "virtual_size",
			      (json_int_t)info->virtual_size, "added_ms", (json_int_t)now,
			      "last_used_ms", (json_int_t)now, "use_seq",
			      (json_int_t)img_index_next_seq(c), "users");

	json_t *old = json_object_get(img_index_images(c), checksum);

	if (e && old && json_object_size(json_object_get(old, "users")))
		json_object_set(e, "users", json_object_get(old, "users"));
	if (!e || json_object_set_new(img_index_images(c), checksum, e) < 0)
		return err_set(-ENOMEM, "out of memory");
	return 0;
}

/* Files that a crash left out of the index are verified (only verified
 * files are renamed in): adopt them. Entries whose file is gone go. */
static int reconcile(struct img_cache *c)
{
	bool dirty = false;
	int r = img_index_begin(c);

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
			    json_object_get(img_index_images(c), key)) {
				free(key);
				continue;
			}
			if (asprintf(&path, "%s/%s", dir, de->d_name) >= 0) {
				if (img_inspect(path, IMG_FMT_LAST, c->cfg.max_virtual_size, &info) == 0) {
					img_index_add(c, key, NULL, NULL,
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

	json_object_foreach_safe(img_index_images(c), tmp, k, e) {
		char *path = image_path_str(c, k);

		if (path && access(path, F_OK) < 0 && errno == ENOENT) {
			if (json_object_size(json_object_get(e, "users")) == 0) {
				log_warn("dropping index entry whose file is gone checksum=%s", k);
				json_object_del(img_index_images(c), k);
				dirty = true;
			} else {
				log_error("cached image in use by instances is missing checksum=%s "
					  "path=%s",
					  k, path);
			}
		}
		free(path);
	}
	return img_index_end(c, dirty, 0);
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
	pthread_cond_init(&c->index_cv, NULL);
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
	r = img_index_begin(c);
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
		img_index_end(c, false, 0);
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
		struct img_pin *p = c->pins;

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
	pthread_cond_destroy(&c->index_cv);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
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
	int r = img_index_begin(c);

	if (r < 0)
		return r;
	cnt = json_object_size(img_index_images(c));
	v = calloc(cnt ? cnt : 1, sizeof(*v));
	if (!v)
		return img_index_end(c, false, err_set(-ENOMEM, "out of memory"));
	json_object_foreach(img_index_images(c), k, e) {
		struct img_entry *x = &v[i++];
		json_t *users = json_object_get(e, "users");
		const char *u;
		json_t *ov;
		size_t j = 0;

		x->checksum = strdup(k);
		x->name = xstrdup(img_jstr(e, "name"));
		x->url = xstrdup(img_jstr(e, "url"));
		x->path = image_path_str(c, k);
		img_format_parse(img_jstr(e, "format"), &x->format);
		x->size = (uint64_t)img_jint(e, "size");
		x->virtual_size = (uint64_t)img_jint(e, "virtual_size");
		x->added_ms = img_jint(e, "added_ms");
		x->last_used_ms = img_jint(e, "last_used_ms");
		x->use_seq = (uint64_t)img_jint(e, "use_seq");
		x->pins = pins_of(c, k);
		x->users = calloc(json_object_size(users) + 1, sizeof(char *));
		if (!x->checksum || !x->path || !x->users) {
			img_entries_free(v, i);
			return img_index_end(c, false, err_set(-ENOMEM, "out of memory"));
		}
		json_object_foreach(users, u, ov) {
			x->users[j] = strdup(u);
			if (x->users[j])
				j++;
		}
		x->n_users = j;
	}
	img_index_end(c, false, 0);
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
	int r = img_index_begin(c);

	if (r < 0)
		return r;
	n = json_object_size(img_index_images(c));
	v = calloc(n ? n : 1, sizeof(*v));
	gone = calloc(n ? n : 1, sizeof(*gone));
	if (!v || !gone) {
		free(v);
		free(gone);
		return img_index_end(c, false, err_set(-ENOMEM, "out of memory"));
	}
	json_object_foreach(img_index_images(c), k, e) {
		v[i].key = k;
		v[i].size = (uint64_t)img_jint(e, "size");
		v[i].seq = (uint64_t)img_jint(e, "use_seq");
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
		json_object_del(img_index_images(c), gone[i]);
		free(gone[i]);
	}
	free(gone);
	free(v);
	r = img_index_end(c, g > 0, 0);
	if (st)
		*st = s;
	return r;
}
