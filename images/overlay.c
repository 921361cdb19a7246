/*
 * Per-instance disks: a qcow2 overlay on the cached base, the instance
 * recorded as a user of the image in the index (so the base is never
 * evicted while the instance exists).
 */
#define LOG_TAG "images"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "images/images_priv.h"

#define GIB (1ULL << 30)


/* Find the entry that lists instance_uuid as a user (index held). */
static json_t *entry_of_user(struct img_cache *c, const char *uuid, const char **key)
{
	const char *k;
	json_t *e;

	json_object_foreach(img_index_images(c), k, e) {
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
	int r = img_index_begin(c);

	if (r < 0)
		return r;
	e = json_object_get(img_index_images(c), key);
	if (!e)
		return img_index_end(c, false, err_set(-ENOENT, "image %s: not in the cache", key));
	if (overlay)
		json_object_set_new(json_object_get(e, "users"), uuid, json_string(overlay));
	else
		json_object_del(json_object_get(e, "users"), uuid);
	return img_index_end(c, true, 0);
}

/* The disk's size in bytes: disk_gb GiB, or the image's virtual size for
 * 0; never smaller than the virtual size. */
static int disk_size(struct img_cache *c, const char *key, uint64_t disk_gb,
		     const char *uuid, const char *name, uint64_t *out)
{
	uint64_t vsize, size;
	json_t *e;
	int r = img_index_begin(c);

	if (r < 0)
		return r;
	e = json_object_get(img_index_images(c), key);
	vsize = e ? (uint64_t)img_jint(e, "virtual_size") : 0;
	img_index_end(c, false, 0);
	size = disk_gb ? disk_gb * GIB : vsize;
	if (disk_gb > UINT64_MAX / GIB || size < vsize)
		return err_set(-EINVAL, "instance %s: flavor disk of %" PRIu64 " GiB is smaller than "
				     "image %s (virtual size %" PRIu64 " bytes)",
			       uuid, disk_gb, name, vsize);
	*out = size;
	return 0;
}

/*
 * The instance's disk in one index transaction (one write of the index,
 * one fsync) when its image is cached: 2 when the instance already has
 * its disk at path (idempotent; nothing changed); -EEXIST when it has one
 * on another image; 1 when the image is in the index with its file
 * present and the declared format: pinned, marked used, the disk size
 * checked (*size_out) and the instance recorded as its user (*base set);
 * 0 when the image is not cached (nothing changed: the caller takes the
 * general path); other errors <0 (nothing changed).
 */
static int cached_claim(struct img_cache *c, const struct img_ref *ref,
			const struct img_checksum *ck, const char *key, uint64_t disk_gb,
			const char *uuid, const char *name, const char *path, char **base,
			uint64_t *size_out)
{
	const char *have = NULL;
	char *file = NULL;
	uint64_t size;
	json_t *e;
	int r = img_index_begin(c);

	if (r < 0)
		return r;
	if (entry_of_user(c, uuid, &have)) {
		if (strcmp(have, key) != 0)
			return img_index_end(c, false, err_set(-EEXIST, "instance %s: already has a "
							       "disk on image %s", uuid, have));
		if (access(path, F_OK) == 0)
			return img_index_end(c, false, 2);
	}
	e = json_object_get(img_index_images(c), key);
	if (!e || strcmp(img_jstr(e, "format"), img_format_name(ref->format)) != 0)
		return img_index_end(c, false, 0); /* img_acquire says why */
	file = img_cache_file(c, ck);
	if (!file)
		return img_index_end(c, false, err_set(-ENOMEM, "out of memory"));
	if (access(file, R_OK) < 0) {
		free(file);
		return img_index_end(c, false, 0); /* gone: img_acquire fetches it again */
	}
	size = disk_gb ? disk_gb * GIB : (uint64_t)img_jint(e, "virtual_size");
	if (disk_gb > UINT64_MAX / GIB || size < (uint64_t)img_jint(e, "virtual_size")) {
		free(file);
		return img_index_end(c, false, 0); /* disk_size() reports it */
	}
	r = img_pin_add(c, key);
	if (r < 0) {
		free(file);
		return img_index_end(c, false, r);
	}
	json_object_set_new(e, "last_used_ms", json_integer(time_wall_ms()));
	json_object_set_new(e, "use_seq", json_integer((json_int_t)img_index_next_seq(c)));
	json_object_set_new(json_object_get(e, "users"), uuid, json_string(path));
	r = img_index_end(c, true, 0);
	if (r < 0) {
		img_release(c, key);
		free(file);
		return err_prefix(r, "instance %s: image %s", uuid, name);
	}
	*base = file;
	*size_out = size;
	return 1;
}

/* Write the qcow2 overlay as tmp (img_qcow2_overlay_write: the file
 * qemu-img create writes, without running it), fsync it, rename it to
 * path (the caller fsyncs the directory). */
static int write_overlay(enum img_format base_fmt, const char *base, const char *tmp,
			 const char *path, uint64_t size, const char *uuid)
{
	int r, fd;

	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return err_sys(-errno, "instance %s: creating %s", uuid, tmp);
	r = img_qcow2_overlay_write(fd, base, base_fmt, size);
	if (r < 0) {
		r = err_prefix(r, "instance %s", uuid);
		goto out;
	}
	if (fsync(fd) < 0) {
		r = err_sys(-errno, "instance %s: %s", uuid, tmp);
		goto out;
	}
	if (rename(tmp, path) < 0) {
		r = err_sys(-errno, "instance %s: rename %s", uuid, path);
		goto out;
	}
	r = 0;
out:
	close(fd);
	return r;
}

int img_overlay_create(struct img_cache *c, const struct img_ref *ref,
		       const char *instance_uuid, uint64_t disk_gb, const char *dir,
		       char **overlay_path)
{
	const char *name = ref && ref->name ? ref->name : ref ? ref->url : NULL;
	char *base = NULL, *path = NULL, *tmp = NULL, *key = NULL;
	struct img_checksum ck;
	uint64_t size = 0;
	bool pinned = false, user = false;
	int r;

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

	r = mkdir_p(dir, 0755);
	if (r < 0)
		goto out;
	/* The reference first: from now on the base cannot be evicted. */
	r = cached_claim(c, ref, &ck, key, disk_gb, instance_uuid, name, path, &base, &size);
	if (r < 0)
		goto out;
	if (r == 2) { /* idempotent: the instance already has its disk */
		*overlay_path = path;
		path = NULL;
		r = 0;
		goto out;
	}
	if (r == 1) {
		pinned = user = true;
		r = 0;
	} else {
		r = img_acquire(c, ref, NULL, NULL, &base);
		if (r < 0)
			goto out;
		pinned = true;
		r = disk_size(c, key, disk_gb, instance_uuid, name, &size);
		if (r == 0)
			r = set_user(c, key, instance_uuid, path);
		user = r == 0;
	}
	if (r < 0)
		goto out;
	r = write_overlay(ref->format, base, tmp, path, size, instance_uuid);
	if (r < 0)
		goto out;
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
	r = img_index_begin(c);
	if (r < 0)
		return r;
	e = entry_of_user(c, instance_uuid, &key);
	if (!e)
		return img_index_end(c, false, 0);
	overlay = json_string_value(json_object_get(json_object_get(e, "users"), instance_uuid));
	if (overlay && unlink(overlay) < 0 && errno != ENOENT) {
		r = err_sys(-errno, "instance %s: remove %s", instance_uuid, overlay);
		return img_index_end(c, false, r);
	}
	log_info("deleted instance disk instance=%s image=%s", instance_uuid, key);
	json_object_del(json_object_get(e, "users"), instance_uuid);
	return img_index_end(c, true, 0);
}

/* ---- growing an overlay (resize, issue 18) -------------------------------- */

/* The virtual size in a qcow2 header (bytes 24..31, big endian). */
static int qcow2_size(const char *path, uint64_t *out)
{
	unsigned char h[32];
	uint64_t v = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return err_sys(-errno, "disk %s", path);
	n = pread(fd, h, sizeof(h), 0);
	close(fd);
	if (n != (ssize_t)sizeof(h) || memcmp(h, "QFI\xfb", 4) != 0)
		return err_set(-EINVAL, "disk %s: not a qcow2 file", path);
	for (int i = 24; i < 32; i++)
		v = v << 8 | h[i];
	*out = v;
	return 0;
}

int img_overlay_size(const char *path, uint64_t *bytes)
{
	return qcow2_size(path, bytes);
}

int img_overlay_grow(struct img_cache *c, const char *path, uint64_t disk_gb, bool *grown)
{
	char size[32], *out = NULL, *file = NULL;
	uint64_t have = 0;
	int r;

	*grown = false;
	if (disk_gb == 0 || disk_gb > UINT64_MAX / GIB)
		return disk_gb ? err_set(-EINVAL, "disk %s: %" PRIu64 " GiB is too large", path,
					 disk_gb) : 0;
	r = qcow2_size(path, &have);
	if (r < 0 || have >= disk_gb * GIB)
		return r; /* never shrunk: qcow2 cannot give back what a guest wrote */
	snprintf(size, sizeof(size), "%" PRIu64, (uint64_t)(disk_gb * GIB));
	file = strdup(path);
	if (!file)
		return err_set(-ENOMEM, "out of memory");
	char *const argv[] = { c->cfg.qemu_img, "resize", "-q", "-f", "qcow2", file, size, NULL };

	r = img_run(argv, &out);
	free(file);
	if (r < 0)
		r = err_prefix(r, "disk %s: growing to %" PRIu64 " GiB", path, disk_gb);
	else if (r > 0)
		r = err_set(-EIO, "disk %s: qemu-img resize to %" PRIu64 " GiB exited %d: %s", path,
			    disk_gb, r, out ? out : "");
	else
		*grown = true;
	free(out);
	return r;
}
