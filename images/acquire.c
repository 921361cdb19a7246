/*
 * Into the cache: look an image up (and pin it), or fetch it once per
 * checksum however many threads ask (single flight), at most max_downloads
 * at a time; a verified download is inspected, renamed into the cache and
 * recorded while its .part is still locked (commit_image).
 */
#define LOG_TAG "images"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/images_priv.h"

/*
 * In the index? Then mark it used, pin it, and return its path: 0.
 * Not there (or its file gone): -ENOENT. A declared format that differs from the cached one: error.
 */
static int lookup(struct img_cache *c, const struct img_ref *ref, const char *key,
		  const struct img_checksum *ck, char **path_out)
{
	const char *name = ref->name ? ref->name : ref->url;
	char *path = NULL;
	json_t *e;
	int r = img_index_begin(c);

	if (r < 0)
		return r;
	e = json_object_get(img_index_images(c), key);
	if (!e) {
		r = img_index_end(c, false, 0);
		return r < 0 ? r : -ENOENT;
	}
	if (strcmp(img_jstr(e, "format"), img_format_name(ref->format)) != 0) {
		r = err_set(-EINVAL, "image %s: declared %s but the cached image %s is %s: refused",
			    name, img_format_name(ref->format), key, img_jstr(e, "format"));
		return img_index_end(c, false, r);
	}
	path = img_cache_file(c, ck);
	if (!path)
		return img_index_end(c, false, err_set(-ENOMEM, "out of memory"));
	if (access(path, R_OK) < 0) {
		/* Gone behind our back: fetch it again (same content, same path,
		 * so the overlays of its users work again). */
		bool users = json_object_size(json_object_get(e, "users")) > 0;

		log_warn("cached image file missing, fetching again checksum=%s", key);
		free(path);
		if (!users)
			json_object_del(img_index_images(c), key);
		r = img_index_end(c, !users, 0);
		return r < 0 ? r : -ENOENT;
	}
	json_object_set_new(e, "last_used_ms", json_integer(time_wall_ms()));
	json_object_set_new(e, "use_seq", json_integer((json_int_t)img_index_next_seq(c)));
	r = img_pin_add(c, key);
	r = img_index_end(c, true, r);
	if (r < 0) {
		if (r != -ENOMEM)
			img_release(c, key);
		free(path);
		return r;
	}
	*path_out = path;
	return 0;
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
	final = img_cache_file(c, cc->ck);
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
	r = img_index_begin(c);
	if (r < 0)
		goto out;
	r = img_index_add(c, cc->key, cc->ref->name, cc->ref->url, cc->ref->format, &info);
	r = img_index_end(c, r == 0, r);
out:
	free(final);
	free(dir);
	return r;
}

static bool image_present(void *ud)
{
	struct commit_ctx *cc = ud;
	bool found = false;

	if (img_index_begin(cc->c) < 0)
		return false;
	if (json_object_get(img_index_images(cc->c), cc->key)) {
		char *path = img_cache_file(cc->c, cc->ck);

		found = path && access(path, F_OK) == 0;
		free(path);
	}
	img_index_end(cc->c, false, 0);
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
		.filter = c->cfg.url_filter.enforce ? &c->cfg.url_filter : NULL,
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

static struct img_flight *flight_find(struct img_cache *c, const char *key)
{
	for (struct img_flight *f = c->flights; f; f = f->next)
		if (strcmp(f->checksum, key) == 0)
			return f;
	return NULL;
}

static void flight_free(struct img_flight *f)
{
	if (!f)
		return;
	free(f->checksum);
	free(f->msg);
	free(f);
}

/* Lead a download: take a slot, fetch, land the flight. */
static int lead(struct img_cache *c, struct img_flight *f, const struct img_ref *ref,
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
	for (struct img_flight **pp = &c->flights; *pp; pp = &(*pp)->next) {
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
static int follow(struct img_cache *c, struct img_flight *f)
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
		struct img_flight *f;
		char *path = NULL;

		r = lookup(c, ref, key, &ck, &path);
		if (r < 0 && r != -ENOENT)
			goto out;
		if (r == 0) {
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
