/*
 * Seed disks: the rendered tree written as an ISO 9660 image with Rock
 * Ridge and Joliet by libisofs, in memory, then atomically to a file.
 *
 *   nocloud      volume id "cidata":   meta-data, user-data, vendor-data,
 *                                      network-config (files of the NoCloud view)
 *   configdrive  volume id "config-2": openstack/VERSION/..., ec2/VERSION/...
 */
#include <errno.h>
#include <stdint.h>
#include <sys/types.h>
#define LIBISOFS_WITHOUT_LIBBURN 1 /* its copy of struct burn_source */
#include <libisofs/libisofs.h>
#include <pthread.h>
#include <string.h>

#include "metadata/metadata.h"

const char *const md_seed_format_names[] = {
	[MD_SEED_NOCLOUD] = "nocloud",
	[MD_SEED_CONFIGDRIVE] = "configdrive",
	[MD_SEED_LAST] = NULL,
};

static const struct {
	const char *volume_id;
	unsigned view;
	const char *strip; /* tree prefix that is the ISO's root */
} seed_formats[] = {
	[MD_SEED_NOCLOUD] = { "cidata", MD_VIEW_NOCLOUD, "nocloud/" },
	[MD_SEED_CONFIGDRIVE] = { "config-2", MD_VIEW_CONFIGDRIVE, "" },
};

#define SEED_MAX (16u << 20)

int md_seed_format_parse(const char *s, enum md_seed_format *out)
{
	for (int i = 0; i < MD_SEED_LAST; i++) {
		if (strcmp(s, md_seed_format_names[i]) == 0) {
			*out = (enum md_seed_format)i;
			return 0;
		}
	}
	return err_set(-EINVAL, "seed format: expected nocloud or configdrive, got '%s'", s);
}

static int iso_init_result;

static void iso_init_once(void)
{
	iso_init_result = iso_init();
	if (iso_init_result >= 0)
		iso_set_msgs_severities((char *)"NEVER", (char *)"NEVER", (char *)"libisofs");
}

static int iso_err(int code, const char *what)
{
	return err_set(-EIO, "seed: libisofs: %s: %s (0x%x)", what, iso_error_to_msg(code),
		       (unsigned)code);
}

/* The directory PATH below ROOT (made on the way). */
static int mkdirs(IsoDir *root, const char *path, IsoDir **out)
{
	IsoDir *at = root;
	char *copy = strdup(path), *p, *slash;
	int r = 0;

	if (!copy)
		return err_set(-ENOMEM, "out of memory");
	for (p = copy; (slash = strchr(p, '/')); p = slash + 1) {
		IsoNode *node = NULL;

		*slash = '\0';
		if (iso_dir_get_node(at, p, &node) == 1) {
			if (iso_node_get_type(node) != LIBISO_DIR) {
				r = err_set(-EEXIST, "seed: %s is a file and a directory", path);
				break;
			}
			at = (IsoDir *)node;
			continue;
		}
		IsoDir *sub = NULL;
		int ir = iso_tree_add_new_dir(at, p, &sub);

		if (ir < 0) {
			r = iso_err(ir, path);
			break;
		}
		iso_node_set_permissions((IsoNode *)sub, 0755);
		at = sub;
	}
	free(copy);
	if (r == 0)
		*out = at;
	return r;
}

static int add_file(IsoDir *root, const char *path, const unsigned char *data, size_t len)
{
	const char *base = strrchr(path, '/');
	IsoDir *dir = root;
	IsoStream *stream = NULL;
	IsoFile *file = NULL;
	unsigned char *copy;
	int r;

	if (base) {
		char *d = strndup(path, (size_t)(base - path + 1));

		if (!d)
			return err_set(-ENOMEM, "out of memory");
		r = mkdirs(root, d, &dir);
		free(d);
		if (r < 0)
			return r;
		base++;
	} else {
		base = path;
	}
	copy = malloc(len ? len : 1); /* the stream owns and frees it */
	if (!copy)
		return err_set(-ENOMEM, "out of memory");
	memcpy(copy, data, len);
	r = iso_memory_stream_new(copy, len, &stream);
	if (r < 0) {
		free(copy);
		return iso_err(r, path);
	}
	r = iso_tree_add_new_file(dir, base, stream, &file); /* takes our reference */
	if (r < 0) {
		iso_stream_unref(stream);
		return iso_err(r, path);
	}
	iso_node_set_permissions((IsoNode *)file, 0644);
	return 0;
}

static int build_image(const struct md_tree *t, enum md_seed_format fmt, IsoImage **out)
{
	IsoImage *img = NULL;
	size_t slen = strlen(seed_formats[fmt].strip);
	int r;

	r = iso_image_new(seed_formats[fmt].volume_id, &img);
	if (r < 0)
		return iso_err(r, "new image");
	iso_image_set_volume_id(img, seed_formats[fmt].volume_id);
	iso_image_set_application_id(img, "stratus " STRATUS_VERSION);
	for (size_t i = 0; i < t->n; i++) {
		const struct md_file *f = &t->files[i];

		if (!(f->views & seed_formats[fmt].view) || strncmp(f->path, seed_formats[fmt].strip,
								   slen) != 0)
			continue;
		r = add_file(iso_image_get_root(img), f->path + slen, f->data, f->len);
		if (r < 0) {
			iso_image_unref(img);
			return r;
		}
	}
	*out = img;
	return 0;
}

static int write_image(IsoImage *img, unsigned char **out, size_t *len)
{
	IsoWriteOpts *opts = NULL;
	struct burn_source *bs = NULL;
	unsigned char *buf = NULL;
	size_t cap = 0, n = 0;
	int r;

	r = iso_write_opts_new(&opts, 0);
	if (r < 0)
		return iso_err(r, "write options");
	iso_write_opts_set_iso_level(opts, 2);
	iso_write_opts_set_rockridge(opts, 1);
	iso_write_opts_set_joliet(opts, 1);
	iso_write_opts_set_always_gmt(opts, 1);
	/* the volume id as given ("cidata", as genisoimage writes it), not upper-cased */
	iso_write_opts_set_relaxed_vol_atts(opts, 1);
	/* Joliet names without ";1", as genisoimage writes them */
	iso_write_opts_set_omit_version_numbers(opts, 2);
	iso_write_opts_set_no_force_dots(opts, 2);
	r = iso_image_create_burn_source(img, opts, &bs);
	iso_write_opts_free(opts);
	if (r < 0)
		return iso_err(r, "start writing");
	for (;;) {
		if (n + 2048 > cap) {
			size_t ncap = cap ? cap * 2 : 64 * 2048;
			unsigned char *nb = ncap > SEED_MAX ? NULL : realloc(buf, ncap);

			if (!nb) {
				r = ncap > SEED_MAX ? err_set(-E2BIG, "seed: image larger than %u bytes",
							      SEED_MAX)
						    : err_set(-ENOMEM, "out of memory");
				break;
			}
			buf = nb;
			cap = ncap;
		}
		int got = bs->read_xt(bs, buf + n, 2048);

		if (got < 0) {
			r = err_set(-EIO, "seed: libisofs: writing the image failed");
			break;
		}
		if (got == 0)
			break;
		n += (size_t)got;
		if (got < 2048)
			break;
	}
	if (r < 0 && bs->cancel)
		bs->cancel(bs);
	bs->free_data(bs);
	free(bs);
	if (r < 0) {
		free(buf);
		return r;
	}
	*out = buf;
	*len = n;
	return 0;
}

int md_seed_build(const struct instance_spec *s, enum md_seed_format fmt, unsigned char **out,
		  size_t *len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct md_tree *t = NULL;
	IsoImage *img = NULL;
	int r;

	if ((unsigned)fmt >= MD_SEED_LAST)
		return err_set(-EINVAL, "seed: bad format %d", (int)fmt);
	pthread_once(&once, iso_init_once);
	if (iso_init_result < 0)
		return iso_err(iso_init_result, "init");
	r = md_render(s, &t);
	if (r < 0)
		return r;
	r = build_image(t, fmt, &img);
	md_tree_free(t);
	if (r < 0)
		return r;
	r = write_image(img, out, len);
	iso_image_unref(img);
	return r;
}

int md_seed_write(const struct instance_spec *s, enum md_seed_format fmt, const char *path)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	int r = md_seed_build(s, fmt, &buf, &len);

	if (r < 0)
		return r;
	r = write_file_durable(path, buf, len, 0644);
	free(buf);
	if (r < 0)
		return err_prefix(r, "seed");
	return 0;
}

int md_seed_format_of_spec(const struct instance_spec *s, enum md_seed_format *out)
{
	switch (s->seed) {
	case SPEC_SEED_NOCLOUD:
		*out = MD_SEED_NOCLOUD;
		return 0;
	case SPEC_SEED_CONFIGDRIVE:
		*out = MD_SEED_CONFIGDRIVE;
		return 0;
	case SPEC_SEED_NONE:
	case SPEC_SEED_LAST:
		break;
	}
	return -ENOENT;
}
