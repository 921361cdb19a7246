/*
 * A qcow2 overlay written directly, without running qemu-img: the same
 * file `qemu-img create -f qcow2 -F FMT -b BASE PATH SIZE` writes (qcow2
 * version 3, 64 KiB clusters, 16-bit refcounts; QEMU's
 * docs/interop/qcow2.txt), minus the optional feature-name table:
 *
 *   cluster 0   header, backing-format extension, end of extensions,
 *               the backing file's name
 *   cluster 1   refcount table: one entry, the block in cluster 2
 *   cluster 2   refcount block: 1 for each cluster of the file
 *   cluster 3.. L1 table, all zero (nothing allocated: every read goes to
 *               the backing file); the file ends with it
 *
 * Only zeros are sparse: the file is ftruncated to its length, and the
 * header, the refcount table entry and the refcount block written into it.
 */
#define LOG_TAG "images"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "images/images_priv.h"

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */
#define QCOW2_CLUSTER_BITS 16
#define QCOW2_CLUSTER ((uint64_t)1 << QCOW2_CLUSTER_BITS)
#define QCOW2_HEADER_LEN 112 /* version 3 with the compression type byte, padded */
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_REFCOUNT_ORDER 4 /* 16-bit refcounts */
#define QCOW2_L1_MAX_ENTRIES (32u * 1024 * 1024 / 8) /* QEMU's QCOW_MAX_L1_SIZE */
#define QCOW2_BACKING_MAX 1023 /* QEMU refuses longer backing file names */

static void be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void be64(unsigned char *p, uint64_t v)
{
	be32(p, (uint32_t)(v >> 32));
	be32(p + 4, (uint32_t)v);
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Header cluster contents up to the end of the backing file's name, into
 * h (at least QCOW2_CLUSTER bytes, zeroed); returns its length. */
static size_t header_build(unsigned char *h, const char *base, const char *fmt, uint64_t size,
			   uint32_t l1_entries)
{
	size_t flen = strlen(fmt), blen = strlen(base);
	size_t off = QCOW2_HEADER_LEN;
	uint64_t backing_off;

	/* extensions: backing format (padded to 8), then the end marker */
	be32(h + off, QCOW2_EXT_BACKING_FORMAT);
	be32(h + off + 4, (uint32_t)flen);
	memcpy(h + off + 8, fmt, flen);
	off += 8 + ((flen + 7) & ~(size_t)7);
	off += 8; /* type 0, length 0: end of the header extensions */
	backing_off = off;
	memcpy(h + off, base, blen);

	be32(h + 0, QCOW2_MAGIC);
	be32(h + 4, 3);                      /* version */
	be64(h + 8, backing_off);            /* backing_file_offset */
	be32(h + 16, (uint32_t)blen);        /* backing_file_size */
	be32(h + 20, QCOW2_CLUSTER_BITS);
	be64(h + 24, size);
	be32(h + 32, 0);                     /* crypt_method: none */
	be32(h + 36, l1_entries);            /* l1_size */
	be64(h + 40, 3 * QCOW2_CLUSTER);     /* l1_table_offset */
	be64(h + 48, 1 * QCOW2_CLUSTER);     /* refcount_table_offset */
	be32(h + 56, 1);                     /* refcount_table_clusters */
	be32(h + 60, 0);                     /* nb_snapshots */
	be64(h + 64, 0);                     /* snapshots_offset */
	/* 72..95: incompatible, compatible, autoclear features: none */
	be32(h + 96, QCOW2_REFCOUNT_ORDER);
	be32(h + 100, QCOW2_HEADER_LEN);
	/* 104: compression type zlib (0), then padding */
	return off + blen;
}

int img_qcow2_overlay_write(int fd, const char *base, enum img_format base_fmt, uint64_t size)
{
	const char *fmt = img_format_name(base_fmt);
	uint64_t l2_cover = QCOW2_CLUSTER * (QCOW2_CLUSTER / 8); /* bytes one L1 entry maps */
	uint64_t l1_entries, l1_clusters, clusters;
	unsigned char *buf = NULL;
	size_t hlen;
	int r;

	if (!base || !*base || strlen(base) > QCOW2_BACKING_MAX)
		return err_set(-EINVAL, "qcow2 overlay: backing file name must be 1 to %d bytes",
			       QCOW2_BACKING_MAX);
	if (!fmt || strlen(fmt) > 16)
		return err_set(-EINVAL, "qcow2 overlay on %s: unknown backing format", base);
	if (size == 0 || size > UINT64_MAX - l2_cover)
		return err_set(-EINVAL, "qcow2 overlay on %s: size %" PRIu64 " is out of range",
			       base, size);
	size = (size + 511) & ~(uint64_t)511; /* whole sectors, as qemu-img rounds */
	l1_entries = (size + l2_cover - 1) / l2_cover;
	if (l1_entries > QCOW2_L1_MAX_ENTRIES)
		return err_set(-EFBIG, "qcow2 overlay on %s: size %" PRIu64 " bytes is larger than "
				       "qcow2 allows with 64 KiB clusters", base, size);
	l1_clusters = (l1_entries * 8 + QCOW2_CLUSTER - 1) / QCOW2_CLUSTER;
	clusters = 3 + l1_clusters; /* one refcount block (32768 entries) covers them all */

	buf = calloc(1, QCOW2_CLUSTER);
	if (!buf)
		return err_set(-ENOMEM, "out of memory");
	/* the file's length first: the L1 table is zeros, a hole */
	if (ftruncate(fd, (off_t)(3 * QCOW2_CLUSTER + l1_entries * 8)) < 0) {
		r = err_sys(-errno, "qcow2 overlay on %s: setting the file's length", base);
		goto out;
	}
	for (uint64_t i = 0; i < clusters; i++) { /* refcount block: 1 per cluster */
		buf[2 * i] = 0;
		buf[2 * i + 1] = 1;
	}
	r = pwrite_all(fd, buf, (size_t)clusters * 2, 2 * QCOW2_CLUSTER);
	if (r == 0) {
		memset(buf, 0, 8);
		be64(buf, 2 * QCOW2_CLUSTER); /* refcount table entry 0 */
		r = pwrite_all(fd, buf, 8, 1 * QCOW2_CLUSTER);
	}
	if (r == 0) {
		memset(buf, 0, QCOW2_CLUSTER);
		hlen = header_build(buf, base, fmt, size, (uint32_t)l1_entries);
		r = pwrite_all(fd, buf, hlen, 0);
	}
	if (r < 0)
		r = err_sys(r, "qcow2 overlay on %s: writing", base);
out:
	free(buf);
	return r;
}
