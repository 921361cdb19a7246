/*
 * Format inspection before an image is used (the lesson of CVE-2024-32498
 * and Nova's format_inspector): never let QEMU guess, never accept a qcow2
 * that points at other files.
 *
 * qcow2 header (docs/interop/qcow2.txt in QEMU), big-endian:
 *    0 magic "QFI\xfb"        4 version (2, 3)
 *    8 backing_file_offset   16 backing_file_size
 *   20 cluster_bits          24 size (virtual)
 *   32 crypt_method          36 l1_size
 *   40 l1_table_offset       48 refcount_table_offset
 *   56 refcount_table_clusters 60 nb_snapshots  64 snapshots_offset
 *   v3: 72 incompatible_features  80 compatible_features
 *       88 autoclear_features     96 refcount_order  100 header_length
 * then header extensions (type, length, data padded to 8) up to type 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/images_priv.h"

#define HEAD_LEN 4096
#define QCOW2_EXT_MAX (1u << 16) /* extensions we read: the first 64 KiB */

/* qcow2 incompatible feature bits */
#define QCOW2_INCOMPAT_DIRTY (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN 0x1fULL

/* qcow2 header extension types */
#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const unsigned char *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static bool has(const unsigned char *buf, size_t len, size_t off, const char *magic, size_t n)
{
	return off + n <= len && memcmp(buf + off, magic, n) == 0;
}

/* Magic numbers at the start of the file (Nova's format_inspector, QEMU's
 * block drivers' probe functions), one table line per format. */
static const struct {
	enum img_kind kind;
	size_t off;
	const char *magic;
	size_t len;
} head_magics[] = {
	{ IMG_KIND_QCOW2, 0, "QFI\xfb", 4 },
	{ IMG_KIND_VMDK, 0, "KDMV", 4 },
	{ IMG_KIND_VMDK, 0, "COWD", 4 },
	{ IMG_KIND_VMDK, 0, "# Disk DescriptorFile", 21 },
	{ IMG_KIND_VHD, 0, "conectix", 8 },
	{ IMG_KIND_VHDX, 0, "vhdxfile", 8 },
	{ IMG_KIND_QED, 0, "QED\0", 4 },
	{ IMG_KIND_LUKS, 0, "LUKS\xba\xbe", 6 },
	{ IMG_KIND_PARALLELS, 0, "WithoutFreeSpace", 16 },
	{ IMG_KIND_PARALLELS, 0, "WithouFreSpacExt", 16 },
	{ IMG_KIND_BOCHS, 0, "Bochs Virtual HD Image", 22 },
	{ IMG_KIND_CLOOP, 0, "#!/bin/sh\n#V2.0 Format\n", 23 },
	{ IMG_KIND_VDI, 0, "<<< Oracle VM VirtualBox Disk Image >>>", 39 },
	{ IMG_KIND_VDI, 0, "<<< Sun VirtualBox Disk Image >>>", 33 },
	{ IMG_KIND_VDI, 0, "<<< Sun xVM VirtualBox Disk Image >>>", 37 },
	{ IMG_KIND_VDI, 0, "<<< innotek VirtualBox Disk Image >>>", 37 },
};

static enum img_kind detect_head(const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < ARRAY_SIZE(head_magics); i++)
		if (has(b, n, head_magics[i].off, head_magics[i].magic, head_magics[i].len))
			return head_magics[i].kind;
	if (n >= 0x44 && le32(b + 0x40) == 0xbeda107fu)
		return IMG_KIND_VDI;
	return IMG_KIND_RAW;
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

/* Backing file name for the message, printable characters only. */
static void backing_name(int fd, const unsigned char *h, char *out, size_t len)
{
	uint64_t off = be64(h + 8);
	uint32_t n = be32(h + 16);
	size_t got = 0;

	out[0] = '\0';
	if (n >= len)
		n = (uint32_t)(len - 1);
	if (pread_full(fd, out, n, off, &got) < 0)
		got = 0;
	out[got] = '\0';
	for (size_t i = 0; i < got; i++)
		if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e)
			out[i] = '?';
}

static int inspect_qcow2(int fd, const char *path, const unsigned char *h, size_t n,
			 struct img_info *info)
{
	uint32_t version, cluster_bits, crypt, header_len;
	uint64_t incompat = 0, cluster_size, end;
	unsigned char *ext = NULL;
	size_t got = 0;
	int r = 0;

	if (n < 72)
		return err_set(-EINVAL, "%s: qcow2 header truncated (%zu bytes)", path, n);
	version = be32(h + 4);
	cluster_bits = be32(h + 20);
	info->qcow2_version = version;
	info->cluster_bits = cluster_bits;
	info->virtual_size = be64(h + 24);
	if (version != 2 && version != 3)
		return err_set(-EINVAL, "%s: qcow2 version %u is not supported (2 or 3)", path,
			       version);
	if (cluster_bits < 9 || cluster_bits > 21)
		return err_set(-EINVAL, "%s: qcow2 cluster_bits %u out of range (9 to 21)", path,
			       cluster_bits);
	cluster_size = 1ULL << cluster_bits;
	if (be64(h + 8) != 0 || be32(h + 16) != 0) {
		char name[256];

		backing_name(fd, h, name, sizeof(name));
		return err_set(-EINVAL, "%s: qcow2 has a backing file ('%s'): refused, an image "
				       "must not point at other files",
			       path, name);
	}
	crypt = be32(h + 32);
	if (crypt != 0)
		return err_set(-EINVAL, "%s: qcow2 is encrypted (method %u): refused", path, crypt);
	if (be64(h + 40) % cluster_size || be64(h + 48) % cluster_size || be64(h + 48) == 0)
		return err_set(-EINVAL, "%s: qcow2 L1 or refcount table offset not aligned to "
				       "the cluster size",
			       path);
	header_len = 72;
	if (version == 3) {
		if (n < 104)
			return err_set(-EINVAL, "%s: qcow2 v3 header truncated", path);
		incompat = be64(h + 72);
		header_len = be32(h + 100);
		if (header_len < 104 || header_len % 8 || header_len > cluster_size)
			return err_set(-EINVAL, "%s: qcow2 header_length %u is invalid", path,
				       header_len);
		if (incompat & QCOW2_INCOMPAT_DATA_FILE)
			return err_set(-EINVAL, "%s: qcow2 uses an external data file: refused, "
					       "an image must not point at other files",
				       path);
		if (incompat & QCOW2_INCOMPAT_CORRUPT)
			return err_set(-EINVAL, "%s: qcow2 is marked corrupt: refused", path);
		if (incompat & ~QCOW2_INCOMPAT_KNOWN)
			return err_set(-EINVAL, "%s: qcow2 has unknown incompatible features "
					       "0x%llx: refused",
				       path,
				       (unsigned long long)(incompat & ~QCOW2_INCOMPAT_KNOWN));
	}
	(void)QCOW2_INCOMPAT_DIRTY;
	(void)QCOW2_INCOMPAT_COMPRESSION;
	(void)QCOW2_INCOMPAT_EXTL2;

	/* Header extensions live in the first cluster. */
	end = cluster_size < QCOW2_EXT_MAX ? cluster_size : QCOW2_EXT_MAX;
	ext = malloc(end);
	if (!ext)
		return err_set(-ENOMEM, "out of memory");
	r = pread_full(fd, ext, end, 0, &got);
	if (r < 0) {
		r = err_sys(r, "%s: read", path);
		goto out;
	}
	for (uint64_t off = header_len;;) {
		uint32_t type, len;

		if (off + 8 > got) {
			if (got < end) /* the file ends inside the extensions */
				r = err_set(-EINVAL, "%s: qcow2 header extensions truncated", path);
			else
				r = err_set(-EINVAL, "%s: qcow2 header extensions run past %llu "
						     "bytes: refused",
					    path, (unsigned long long)end);
			goto out;
		}
		type = be32(ext + off);
		len = be32(ext + off + 4);
		if (type == QCOW2_EXT_END)
			break;
		if (off + 8 + len > got) {
			r = err_set(-EINVAL, "%s: qcow2 header extension 0x%08x overruns the "
					     "header",
				    path, type);
			goto out;
		}
		switch (type) {
		case QCOW2_EXT_DATA_FILE:
			r = err_set(-EINVAL, "%s: qcow2 names an external data file: refused",
				    path);
			goto out;
		case QCOW2_EXT_CRYPTO:
			r = err_set(-EINVAL, "%s: qcow2 carries an encryption header: refused",
				    path);
			goto out;
		default: /* backing format (no backing file), feature table, bitmaps... */
			break;
		}
		off += 8 + (((uint64_t)len + 7) & ~7ULL);
	}
out:
	free(ext);
	return r;
}

int img_inspect(const char *path, enum img_format declared, uint64_t max_virtual_size,
		struct img_info *out)
{
	struct img_info info = { .kind = IMG_KIND_RAW };
	unsigned char *head = NULL, tail[512];
	struct stat st;
	size_t n = 0, tn = 0;
	int fd = -1, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return err_sys(-errno, "%s", path);
	if (fstat(fd, &st) < 0) {
		r = err_sys(-errno, "%s: stat", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = err_set(-EINVAL, "%s: not a regular file", path);
		goto out;
	}
	info.file_size = (uint64_t)st.st_size;
	head = malloc(HEAD_LEN);
	if (!head) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	r = pread_full(fd, head, HEAD_LEN, 0, &n);
	if (r < 0) {
		r = err_sys(r, "%s: read", path);
		goto out;
	}
	if (n == 0) {
		r = err_set(-EINVAL, "%s: empty file: refused", path);
		goto out;
	}
	info.kind = detect_head(head, n);
	/* Footers: a fixed VHD is raw data with a footer; a DMG ends in "koly". */
	if (info.kind == IMG_KIND_RAW && info.file_size >= 512) {
		r = pread_full(fd, tail, sizeof(tail), info.file_size - 512, &tn);
		if (r < 0) {
			r = err_sys(r, "%s: read", path);
			goto out;
		}
		if (has(tail, tn, 0, "conectix", 8))
			info.kind = IMG_KIND_VHD;
		else if (has(tail, tn, 0, "koly", 4))
			info.kind = IMG_KIND_DMG;
	}
	switch (info.kind) {
	case IMG_KIND_RAW:
		info.virtual_size = info.file_size;
		break;
	case IMG_KIND_QCOW2:
		r = inspect_qcow2(fd, path, head, n, &info);
		if (r < 0)
			goto out;
		break;
	case IMG_KIND_VMDK:
	case IMG_KIND_VHD:
	case IMG_KIND_VHDX:
	case IMG_KIND_QED:
	case IMG_KIND_VDI:
	case IMG_KIND_LUKS:
	case IMG_KIND_DMG:
	case IMG_KIND_PARALLELS:
	case IMG_KIND_BOCHS:
	case IMG_KIND_CLOOP:
	case IMG_KIND_LAST:
		r = err_set(-EINVAL, "%s: the file is %s, which is not accepted (only raw or "
				     "qcow2)",
			    path, img_kind_name(info.kind));
		goto out;
	}
	if (declared != IMG_FMT_LAST &&
	    !((declared == IMG_FMT_RAW && info.kind == IMG_KIND_RAW) ||
	      (declared == IMG_FMT_QCOW2 && info.kind == IMG_KIND_QCOW2))) {
		r = err_set(-EINVAL, "%s: declared %s but the file is %s: refused", path,
			    img_format_name(declared), img_kind_name(info.kind));
		goto out;
	}
	if (max_virtual_size && info.virtual_size > max_virtual_size) {
		char a[32], b[32];

		human_size(info.virtual_size, a, sizeof(a));
		human_size(max_virtual_size, b, sizeof(b));
		r = err_set(-EINVAL, "%s: virtual size %s (%llu bytes) is above the cap of %s: "
				     "refused",
			    path, a, (unsigned long long)info.virtual_size, b);
		goto out;
	}
	r = 0;
out:
	if (out && (r == 0 || r == -EINVAL))
		*out = info;
	free(head);
	if (fd >= 0)
		close(fd);
	return r;
}
