/*
 * images without a network: checksums, the hostile corpus (made with
 * qemu-img), the cache (file:// URLs), eviction, overlays, restarts.
 * The HTTP behaviour is in test_fetch.c against a real nginx.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/file.h>
#include <cmocka.h>

#include "images/images_priv.h"
#include "tests/images/helpers.h"

#define MIB (1u << 20)

static char *top;   /* temp dir of this run */
static char *corpus; /* top/corpus */

static void corpus_make(const char *cmd)
{
	char *full = th_printf("cd '%s' && { %s; } >/dev/null 2>&1", corpus, cmd);

	if (th_sh(full) != 0) {
		fprintf(stderr, "corpus command failed: %s\n", cmd);
		exit(99);
	}
	free(full);
}

static int setup_all(void **state)
{
	(void)state;
	top = th_mkdtemp("images");
	corpus = th_printf("%s/corpus", top);
	mkdir(corpus, 0755);
	corpus_make("qemu-img create -f qcow2 good.qcow2 64M");
	corpus_make("qemu-img create -f qcow2 -o compat=0.10 good-v2.qcow2 16M");
	corpus_make("qemu-img create -f qcow2 -F qcow2 -b good.qcow2 backing.qcow2");
	corpus_make("qemu-img create -f qcow2 -o data_file=data.raw datafile.qcow2 16M");
	corpus_make("qemu-img create -f raw plain.raw 8M && head -c 4096 /dev/urandom | "
		    "dd of=plain.raw conv=notrunc");
	corpus_make("qemu-img create -f qcow2 huge.qcow2 4T");
	corpus_make("qemu-img create -f vmdk disk.vmdk 16M");
	corpus_make("qemu-img create -f vpc disk.vhd 16M");
	corpus_make("qemu-img create -f vpc -o subformat=fixed fixed.vhd 16M");
	corpus_make("qemu-img create -f vhdx disk.vhdx 16M");
	corpus_make("qemu-img create -f qed disk.qed 16M");
	corpus_make("qemu-img create -f vdi disk.vdi 16M");
	/* LUKS and encrypted qcow2 by header (qemu-img's key derivation is slow and
	 * fails on a loaded machine): a LUKS v1 magic; crypt_method 2 (luks) */
	corpus_make("printf 'LUKS\\272\\276\\000\\001' > disk.luks && "
		    "head -c 1048576 /dev/zero >> disk.luks");
	corpus_make("cp good.qcow2 enc.qcow2 && printf '\\002' | "
		    "dd of=enc.qcow2 bs=1 seek=35 conv=notrunc");
	/* unknown incompatible feature bit 10: byte 78 of the header (bits 8..15) */
	corpus_make("cp good.qcow2 unknown-feature.qcow2 && printf '\\004' | "
		    "dd of=unknown-feature.qcow2 bs=1 seek=78 conv=notrunc");
	/* corrupt bit */
	corpus_make("cp good.qcow2 corrupt.qcow2 && printf '\\002' | "
		    "dd of=corrupt.qcow2 bs=1 seek=79 conv=notrunc");
	corpus_make("head -c 40 good.qcow2 > truncated.qcow2");
	corpus_make(": > empty.raw");
	return 0;
}

static int teardown_all(void **state)
{
	(void)state;
	th_rm_rf(top);
	free(top);
	free(corpus);
	return 0;
}

static void test_checksum_parse(void **state)
{
	struct img_checksum c;
	char *long_hex;

	(void)state;
	assert_int_equal(img_checksum_parse("sha256:" "ABCDEF0123456789abcdef0123456789"
					    "abcdef0123456789abcdef0123456789", &c), 0);
	assert_int_equal(c.algo, IMG_ALGO_SHA256);
	assert_string_equal(c.hex, "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
	long_hex = th_printf("sha512:%0128d", 7);
	assert_int_equal(img_checksum_parse(long_hex, &c), 0);
	assert_int_equal(c.algo, IMG_ALGO_SHA512);
	free(long_hex);
	assert_int_equal(img_checksum_parse("md5:d41d8cd98f00b204e9800998ecf8427e", &c), -EINVAL);
	assert_non_null(strstr(err_msg(), "unknown algorithm"));
	assert_int_equal(img_checksum_parse("sha256:abcd", &c), -EINVAL);
	assert_non_null(strstr(err_msg(), "64 hex digits"));
	assert_int_equal(img_checksum_parse("sha256:" "zz" "cdef0123456789abcdef0123456789"
					    "abcdef0123456789abcdef0123456789", &c), -EINVAL);
	assert_int_equal(img_checksum_parse("0123", &c), -EINVAL);
}

/* One line per corpus file: declared format, expected result, reason. */
static const struct {
	const char *file;
	enum img_format declared;
	int rc;
	const char *reason; /* in err_msg() when refused */
	enum img_kind kind;
} corpus_cases[] = {
	{ "good.qcow2", IMG_FMT_QCOW2, 0, NULL, IMG_KIND_QCOW2 },
	{ "good-v2.qcow2", IMG_FMT_QCOW2, 0, NULL, IMG_KIND_QCOW2 },
	{ "plain.raw", IMG_FMT_RAW, 0, NULL, IMG_KIND_RAW },
	{ "backing.qcow2", IMG_FMT_QCOW2, -EINVAL, "has a backing file ('good.qcow2')", IMG_KIND_QCOW2 },
	{ "datafile.qcow2", IMG_FMT_QCOW2, -EINVAL, "external data file", IMG_KIND_QCOW2 },
	{ "plain.raw", IMG_FMT_QCOW2, -EINVAL, "declared qcow2 but the file is raw", IMG_KIND_RAW },
	{ "good.qcow2", IMG_FMT_RAW, -EINVAL, "declared raw but the file is qcow2", IMG_KIND_QCOW2 },
	{ "huge.qcow2", IMG_FMT_QCOW2, -EINVAL, "virtual size 4.0 TiB (4398046511104 bytes) is above the cap of 1.0 TiB", IMG_KIND_QCOW2 },
	{ "disk.vmdk", IMG_FMT_RAW, -EINVAL, "the file is vmdk, which is not accepted", IMG_KIND_VMDK },
	{ "disk.vhd", IMG_FMT_RAW, -EINVAL, "the file is vhd, which is not accepted", IMG_KIND_VHD },
	{ "fixed.vhd", IMG_FMT_RAW, -EINVAL, "the file is vhd, which is not accepted", IMG_KIND_VHD },
	{ "disk.vhdx", IMG_FMT_QCOW2, -EINVAL, "the file is vhdx, which is not accepted", IMG_KIND_VHDX },
	{ "disk.qed", IMG_FMT_QCOW2, -EINVAL, "the file is qed, which is not accepted", IMG_KIND_QED },
	{ "disk.vdi", IMG_FMT_RAW, -EINVAL, "the file is vdi, which is not accepted", IMG_KIND_VDI },
	{ "disk.luks", IMG_FMT_RAW, -EINVAL, "the file is luks, which is not accepted", IMG_KIND_LUKS },
	{ "enc.qcow2", IMG_FMT_QCOW2, -EINVAL, "qcow2 is encrypted", IMG_KIND_QCOW2 },
	{ "unknown-feature.qcow2", IMG_FMT_QCOW2, -EINVAL, "unknown incompatible features 0x400", IMG_KIND_QCOW2 },
	{ "corrupt.qcow2", IMG_FMT_QCOW2, -EINVAL, "marked corrupt", IMG_KIND_QCOW2 },
	{ "truncated.qcow2", IMG_FMT_QCOW2, -EINVAL, "header truncated", IMG_KIND_QCOW2 },
	{ "empty.raw", IMG_FMT_RAW, -EINVAL, "empty file", IMG_KIND_RAW },
	{ "missing.raw", IMG_FMT_RAW, -ENOENT, "No such file", IMG_KIND_RAW },
};

/* human_size (core), the sizes of inspection messages and the image commands */
static const struct {
	uint64_t v;
	const char *want;
} size_cases[] = {
	{ 0, "0 B" },
	{ 1023, "1023 B" },
	{ 1024, "1.0 KiB" },
	{ 1536, "1.5 KiB" },
	{ 192 * 1024, "192.0 KiB" },
	{ 64ULL << 20, "64.0 MiB" },
	{ 1ULL << 40, "1.0 TiB" },
	{ UINT64_MAX, "16.0 EiB" },
};

static void test_human_size(void **state)
{
	char buf[32];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(size_cases); i++) {
		human_size(size_cases[i].v, buf, sizeof(buf));
		if (strcmp(buf, size_cases[i].want) != 0)
			fail_msg("%llu bytes: got '%s', want '%s'",
				 (unsigned long long)size_cases[i].v, buf, size_cases[i].want);
	}
	human_size(1024, buf, 4); /* truncated, still terminated */
	assert_string_equal(buf, "1.0");
}

static void test_inspect_corpus(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(corpus_cases); i++) {
		char *path = th_printf("%s/%s", corpus, corpus_cases[i].file);
		struct img_info info = { .kind = IMG_KIND_LAST };
		int r = img_inspect(path, corpus_cases[i].declared, 1ULL << 40, &info);

		if (r != corpus_cases[i].rc ||
		    (corpus_cases[i].reason && !strstr(err_msg(), corpus_cases[i].reason)) ||
		    (r != -ENOENT && info.kind != corpus_cases[i].kind))
			fail_msg("%s declared %s: got %d kind %s '%s', want %d kind %s '%s'",
				 corpus_cases[i].file, img_format_name(corpus_cases[i].declared), r,
				 img_kind_name(info.kind), r ? err_msg() : "",
				 corpus_cases[i].rc, img_kind_name(corpus_cases[i].kind),
				 corpus_cases[i].reason ? corpus_cases[i].reason : "");
		free(path);
	}
}

static void test_inspect_sizes(void **state)
{
	struct img_info info;
	char *p = th_printf("%s/good.qcow2", corpus);

	(void)state;
	assert_int_equal(img_inspect(p, IMG_FMT_QCOW2, 0, &info), 0);
	assert_true(info.virtual_size == 64ULL * MIB);
	assert_int_equal(info.qcow2_version, 3);
	assert_int_equal(info.cluster_bits, 16);
	/* a cap just below the virtual size refuses it */
	assert_int_equal(img_inspect(p, IMG_FMT_QCOW2, 64ULL * MIB - 1, &info), -EINVAL);
	free(p);
	p = th_printf("%s/plain.raw", corpus);
	assert_int_equal(img_inspect(p, IMG_FMT_LAST, 0, &info), 0);
	assert_int_equal(info.kind, IMG_KIND_RAW);
	assert_true(info.virtual_size == 8ULL * MIB);
	free(p);
}

/* ---- the cache with file:// URLs ------------------------------------------ */

struct fixture {
	struct img_config cfg;
	struct img_cache *c;
	char *dir;
};

static struct fixture *fx_new(const char *tag)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(img_config_defaults(&f->cfg), 0);
	f->dir = th_printf("%s/%s", top, tag);
	free(f->cfg.cache_dir);
	f->cfg.cache_dir = th_printf("%s/cache", f->dir);
	f->cfg.retries = 0;
	f->cfg.allow_file_urls = true;
	mkdir(f->dir, 0755);
	if (img_cache_open(&f->cfg, &f->c) < 0)
		fail_msg("open: %s", err_msg());
	return f;
}

static void fx_reopen(struct fixture *f)
{
	img_cache_close(f->c);
	f->c = NULL;
	if (img_cache_open(&f->cfg, &f->c) < 0)
		fail_msg("reopen: %s", err_msg());
}

static void fx_free(struct fixture *f)
{
	img_cache_close(f->c);
	img_config_free(&f->cfg);
	free(f->dir);
	free(f);
}

/* A raw image of n MiB in the fixture dir; returns its URL and checksum. */
static void make_raw(struct fixture *f, const char *name, unsigned mib, char **url,
		     char **sum)
{
	char *p = th_printf("%s/%s", f->dir, name);

	unsigned seed = mib;

	for (const char *q = name; *q; q++)
		seed = seed * 131u + (unsigned char)*q;
	th_make_file(p, (size_t)mib * MIB, seed);
	*url = th_printf("file://%s", p);
	*sum = th_sha256(p);
	free(p);
}

static void acquire_ok(struct fixture *f, const char *url, const char *sum, enum img_format fmt,
		       char **path)
{
	struct img_ref ref = { .url = url, .checksum = sum, .format = fmt };
	char *p = NULL;

	if (img_acquire(f->c, &ref, NULL, NULL, &p) < 0)
		fail_msg("acquire %s: %s", url, err_msg());
	img_release(f->c, sum);
	if (path)
		*path = p;
	else
		free(p);
}

static bool cached(struct fixture *f, const char *sum)
{
	struct img_entry *v = NULL;
	size_t n = 0;
	bool found = false;

	assert_int_equal(img_list(f->c, &v, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].checksum, sum) == 0)
			found = true;
	img_entries_free(v, n);
	return found;
}

static void test_cache_fetch_file_and_restart(void **state)
{
	struct fixture *f = fx_new("restart");
	char *url, *sum, *path = NULL, *path2 = NULL, *qurl, *qsum, *idx;
	struct img_entry *v = NULL;
	size_t n = 0;

	(void)state;
	make_raw(f, "a.raw", 2, &url, &sum);
	acquire_ok(f, url, sum, IMG_FMT_RAW, &path);
	{
		char *got = th_sha256(path);

		assert_string_equal(got, sum);
		free(got);
	}
	qurl = th_printf("file://%s/good.qcow2", corpus);
	qsum = th_printf("%s/good.qcow2", corpus);
	{
		char *s = th_sha256(qsum);

		free(qsum);
		qsum = s;
	}
	acquire_ok(f, qurl, qsum, IMG_FMT_QCOW2, NULL);

	/* A restart keeps both, with what was recorded. */
	fx_reopen(f);
	assert_int_equal(img_list(f->c, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].checksum, sum); /* least recently used first */
	assert_int_equal(v[0].format, IMG_FMT_RAW);
	assert_true(v[0].size == 2 * MIB);
	assert_string_equal(v[0].url, url);
	assert_int_equal(v[1].format, IMG_FMT_QCOW2);
	assert_true(v[1].virtual_size == 64ULL * MIB);
	img_entries_free(v, n);
	/* Cached: served without touching the URL. */
	{
		struct img_ref ref = { .url = "http://127.0.0.1:1/gone", .checksum = sum,
				       .format = IMG_FMT_RAW };

		assert_int_equal(img_acquire(f->c, &ref, NULL, NULL, &path2), 0);
		assert_string_equal(path, path2);
		img_release(f->c, sum);
		/* The same content declared as another format is refused. */
		ref.format = IMG_FMT_QCOW2;
		free(path2);
		path2 = NULL;
		assert_int_equal(img_acquire(f->c, &ref, NULL, NULL, &path2), -EINVAL);
		assert_non_null(strstr(err_msg(), "declared qcow2 but the cached image"));
	}

	/* The index lost: the files rebuild it (adopted, format detected). */
	idx = th_printf("%s/index.json", f->cfg.cache_dir);
	unlink(idx);
	fx_reopen(f);
	assert_true(cached(f, sum));
	assert_true(cached(f, qsum));
	/* A corrupt index is set aside and rebuilt. */
	{
		FILE *fp = fopen(idx, "w");

		fputs("{not json", fp);
		fclose(fp);
	}
	fx_reopen(f);
	assert_true(cached(f, sum));
	free(idx);
	idx = th_printf("%s/index.json.corrupt", f->cfg.cache_dir);
	assert_true(th_exists(idx));

	free(idx);
	free(url);
	free(sum);
	free(qurl);
	free(qsum);
	free(path);
	fx_free(f);
}

static void test_cache_refusals(void **state)
{
	struct fixture *f = fx_new("refuse");
	char *url, *sum, *p = NULL, *partial;
	struct img_ref ref = { .format = IMG_FMT_RAW };

	(void)state;
	partial = th_printf("%s/partial", f->cfg.cache_dir);
	make_raw(f, "b.raw", 3, &url, &sum);
	ref.url = url;

	/* checksum mismatch: the expected one, never the fetched file's; nothing left behind */
	ref.checksum = "sha256:00000000000000000000000000000000000000000000000000000000000000ff";
	assert_int_equal(img_acquire(f->c, &ref, NULL, NULL, &p), -EBADMSG);
	assert_non_null(strstr(err_msg(), "checksum differs from the expected sha256:0000"));
	assert_null(strstr(err_msg(), sum + strlen("sha256:")));
	assert_int_equal(th_count_files(partial), 0);
	assert_false(cached(f, ref.checksum));

	/* size cap */
	fx_free(f);
	f = fx_new("refuse-cap");
	free(partial);
	partial = th_printf("%s/partial", f->cfg.cache_dir);
	img_cache_close(f->c);
	f->cfg.max_image_size = 1 * MIB;
	assert_int_equal(img_cache_open(&f->cfg, &f->c), 0);
	ref.checksum = sum;
	assert_int_equal(img_acquire(f->c, &ref, NULL, NULL, &p), -EFBIG);
	assert_non_null(strstr(err_msg(), "larger than max_image_size"));
	assert_int_equal(th_count_files(partial), 0);

	/* a verified image that inspection refuses never enters the cache */
	{
		char *burl = th_printf("file://%s/backing.qcow2", corpus);
		char *bpath = th_printf("%s/backing.qcow2", corpus);
		char *bsum = th_sha256(bpath);
		struct img_ref b = { .url = burl, .checksum = bsum, .format = IMG_FMT_QCOW2 };

		assert_int_equal(img_acquire(f->c, &b, NULL, NULL, &p), -EINVAL);
		assert_non_null(strstr(err_msg(), "has a backing file"));
		assert_false(cached(f, bsum));
		assert_int_equal(th_count_files(partial), 0);
		/* qcow2 declared raw: refused (the CVE-2024-32498 shape) */
		b.format = IMG_FMT_RAW;
		free(burl);
		burl = th_printf("file://%s/good.qcow2", corpus);
		free(bpath);
		bpath = th_printf("%s/good.qcow2", corpus);
		free(bsum);
		bsum = th_sha256(bpath);
		b.url = burl;
		b.checksum = bsum;
		assert_int_equal(img_acquire(f->c, &b, NULL, NULL, &p), -EINVAL);
		assert_non_null(strstr(err_msg(), "declared raw but the file is qcow2"));
		free(burl);
		free(bpath);
		free(bsum);
	}
	/* file:// only where the config allows it (the daemon's default: no) */
	img_cache_close(f->c);
	f->cfg.allow_file_urls = false;
	assert_int_equal(img_cache_open(&f->cfg, &f->c), 0);
	ref.url = url;
	assert_int_equal(img_acquire(f->c, &ref, NULL, NULL, &p), -EPERM);
	assert_non_null(strstr(err_msg(), "file:// URLs are not allowed"));
	img_cache_close(f->c);
	f->cfg.allow_file_urls = true;
	assert_int_equal(img_cache_open(&f->cfg, &f->c), 0);
	/* a missing file: an error, not a hang */
	ref.url = "file:///nonexistent/x.raw";
	assert_int_equal(img_acquire(f->c, &ref, NULL, NULL, &p), -EIO);
	assert_non_null(strstr(err_msg(), "failed"));
	assert_null(p);
	free(partial);
	free(url);
	free(sum);
	fx_free(f);
}

/* A complete, verified .part left by a crash before the rename is used
 * without downloading again; a stale .part is swept; a locked one is not. */
static void test_cache_crash_leftovers(void **state)
{
	struct fixture *f = fx_new("crash");
	char *url, *sum, *src, *part, *stale, *locked, *cmd, *p = NULL;
	struct img_ref ref = { .url = "http://127.0.0.1:1/unreachable", .format = IMG_FMT_RAW };
	unsigned removed = 0;
	int fd;

	(void)state;
	make_raw(f, "c.raw", 1, &url, &sum);
	src = th_printf("%s/c.raw", f->dir);
	part = th_printf("%s/partial/sha256-%s.part", f->cfg.cache_dir, sum + 7);
	cmd = th_printf("cp '%s' '%s'", src, part);
	assert_int_equal(th_sh(cmd), 0);
	ref.checksum = sum;
	assert_int_equal(img_acquire(f->c, &ref, NULL, NULL, &p), 0);
	img_release(f->c, sum);
	assert_false(th_exists(part));
	assert_true(cached(f, sum));

	stale = th_printf("%s/partial/sha256-%064d.part", f->cfg.cache_dir, 1);
	locked = th_printf("%s/partial/sha256-%064d.part", f->cfg.cache_dir, 2);
	th_make_file(stale, 1000, 1);
	th_make_file(locked, 1000, 2);
	fd = open(locked, O_RDONLY);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	assert_int_equal(img_sweep_partials(f->c, 3600 * 1000, &removed), 0);
	assert_int_equal(removed, 0); /* young */
	assert_int_equal(img_sweep_partials(f->c, 0, &removed), 0);
	assert_int_equal(removed, 1);
	assert_false(th_exists(stale));
	assert_true(th_exists(locked)); /* a download holds it */
	close(fd);
	free(p);
	free(cmd);
	free(stale);
	free(locked);
	free(src);
	free(part);
	free(url);
	free(sum);
	fx_free(f);
}

static const char uuid_a[] = "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d";
static const char uuid_b[] = "1c7f5c2f-6d8b-4d2f-8b64-1e2f3a4b5c6d";

static void test_eviction_order_and_in_use(void **state)
{
	struct fixture *f = fx_new("evict");
	char *ua, *sa, *ub, *sb, *uc, *sc, *ov = NULL, *dir, *pb = NULL;
	struct img_evict_stats st;
	struct img_ref rc = { .format = IMG_FMT_RAW };

	(void)state;
	dir = th_printf("%s/instances", f->dir);
	make_raw(f, "A.raw", 1, &ua, &sa);
	make_raw(f, "B.raw", 1, &ub, &sb);
	make_raw(f, "C.raw", 1, &uc, &sc);
	acquire_ok(f, ua, sa, IMG_FMT_RAW, NULL);
	acquire_ok(f, ub, sb, IMG_FMT_RAW, NULL);
	acquire_ok(f, uc, sc, IMG_FMT_RAW, NULL);
	acquire_ok(f, ua, sa, IMG_FMT_RAW, NULL); /* A used again: LRU is B, C, A */
	rc.url = uc;
	rc.checksum = sc;
	if (img_overlay_create(f->c, &rc, uuid_a, 1, dir, &ov) < 0) /* C in use */
		fail_msg("overlay: %s", err_msg());

	/* 3 MiB, budget 2 MiB: the least recently used (B) goes */
	assert_int_equal(img_evict(f->c, 2 * MIB, &st), 0);
	if (st.evicted != 1)
		fail_msg("evicted %u total %llu in_use %u: %s", st.evicted,
			 (unsigned long long)st.total, st.in_use, err_msg());

	assert_false(cached(f, sb));
	assert_true(cached(f, sa));
	assert_true(cached(f, sc));
	/* budget 0: A goes, C stays because an instance uses it */
	assert_int_equal(img_evict(f->c, 0, &st), 0);
	assert_int_equal(st.evicted, 1);
	assert_int_equal(st.in_use, 1);
	assert_true(st.total == 1 * MIB);
	assert_false(cached(f, sa));
	assert_true(cached(f, sc));
	/* a restart does not forget the reference */
	fx_reopen(f);
	assert_int_equal(img_evict(f->c, 0, &st), 0);
	assert_true(cached(f, sc));
	/* a pinned image (acquired, not released) is not evicted either */
	{
		struct img_ref rb = { .url = ub, .checksum = sb, .format = IMG_FMT_RAW };

		assert_int_equal(img_acquire(f->c, &rb, NULL, NULL, &pb), 0);
		assert_int_equal(img_evict(f->c, 0, &st), 0);
		assert_true(cached(f, sb));
		img_release(f->c, sb);
		assert_int_equal(img_evict(f->c, 0, &st), 0);
		assert_false(cached(f, sb));
	}
	/* deleting the instance's disk drops the reference: now C can go */
	assert_int_equal(img_overlay_delete(f->c, uuid_a), 0);
	assert_false(th_exists(ov));
	assert_int_equal(img_overlay_delete(f->c, uuid_a), 0); /* idempotent */
	assert_int_equal(img_evict(f->c, 0, &st), 0);
	assert_false(cached(f, sc));
	assert_true(st.total == 0);

	/* the budget applies after each fetch: keep at most 2 MiB */
	img_cache_close(f->c);
	f->cfg.budget = 2 * MIB;
	assert_int_equal(img_cache_open(&f->cfg, &f->c), 0);
	acquire_ok(f, ua, sa, IMG_FMT_RAW, NULL);
	acquire_ok(f, ub, sb, IMG_FMT_RAW, NULL);
	acquire_ok(f, uc, sc, IMG_FMT_RAW, NULL);
	assert_false(cached(f, sa));
	assert_true(cached(f, sb));
	assert_true(cached(f, sc));

	free(pb);
	free(ov);
	free(dir);
	free(ua);
	free(sa);
	free(ub);
	free(sb);
	free(uc);
	free(sc);
	fx_free(f);
}

/* qemu-img info --output=json of a file, into a malloc'd string. */
static char *qemu_info(const char *path)
{
	char *cmd = th_printf("qemu-img info --output=json -U '%s'", path);
	FILE *p = popen(cmd, "r");
	char *out = calloc(1, 65536);
	size_t n = 0;

	assert_non_null(p);
	n = fread(out, 1, 65535, p);
	out[n] = '\0';
	pclose(p);
	free(cmd);
	return out;
}

static void test_overlays(void **state)
{
	struct fixture *f = fx_new("overlay");
	char *url, *sum, *base = NULL, *ov = NULL, *ov2 = NULL, *info, *dir, *qurl, *qsum, *qp;
	struct img_ref ref = { .format = IMG_FMT_RAW };
	int64_t t0;

	(void)state;
	dir = th_printf("%s/instances", f->dir);
	make_raw(f, "base.raw", 2, &url, &sum);
	ref.url = url;
	ref.checksum = sum;
	acquire_ok(f, url, sum, IMG_FMT_RAW, &base);

	t0 = time_mono_ms();
	if (img_overlay_create(f->c, &ref, uuid_a, 4, dir, &ov) < 0)
		fail_msg("overlay: %s", err_msg());
	print_message("overlay on a cached raw image: %lld ms\n",
		      (long long)(time_mono_ms() - t0));
	info = qemu_info(ov);
	assert_non_null(strstr(info, "\"format\": \"qcow2\""));
	assert_non_null(strstr(info, "\"virtual-size\": 4294967296"));
	assert_non_null(strstr(info, "\"backing-filename-format\": \"raw\""));
	assert_non_null(strstr(info, base));
	free(info);
	/* our own inspection refuses the overlay as an image (it has a backing file) */
	assert_int_equal(img_inspect(ov, IMG_FMT_QCOW2, 0, NULL), -EINVAL);
	/* idempotent */
	assert_int_equal(img_overlay_create(f->c, &ref, uuid_a, 4, dir, &ov2), 0);
	assert_string_equal(ov, ov2);
	/* one instance, one image */
	{
		struct img_ref other = ref;
		char *x = NULL;

		qp = th_printf("%s/good.qcow2", corpus);
		qsum = th_sha256(qp);
		qurl = th_printf("file://%s", qp);
		other.url = qurl;
		other.checksum = qsum;
		other.format = IMG_FMT_QCOW2;
		assert_int_equal(img_overlay_create(f->c, &other, uuid_a, 4, dir, &x), -EEXIST);
		/* qcow2 base, disk size 0: the image's virtual size */
		assert_int_equal(img_overlay_create(f->c, &other, uuid_b, 0, dir, &x), 0);
		info = qemu_info(x);
		assert_non_null(strstr(info, "\"virtual-size\": 67108864"));
		assert_non_null(strstr(info, "\"backing-filename-format\": \"qcow2\""));
		free(info);
		/* qemu-img check agrees the overlay is sound */
		{
			char *cmd = th_printf("qemu-img check -q '%s'", x);

			assert_int_equal(th_sh(cmd), 0);
			free(cmd);
		}
		assert_int_equal(img_overlay_delete(f->c, uuid_b), 0);
		assert_false(th_exists(x));
		free(x);
		x = NULL;
		/* a flavor disk smaller than the image */
		{
			char *hp = th_printf("%s/huge.qcow2", corpus);
			char *hs = th_sha256(hp);
			char *hu = th_printf("file://%s", hp);
			struct img_ref h = { .url = hu, .checksum = hs, .format = IMG_FMT_QCOW2 };

			img_cache_close(f->c);
			f->cfg.max_virtual_size = 8ULL << 40;
			assert_int_equal(img_cache_open(&f->cfg, &f->c), 0);
			assert_int_equal(img_overlay_create(f->c, &h, uuid_b, 20, dir, &x), -EINVAL);
			assert_non_null(strstr(err_msg(), "smaller than image"));
			assert_null(x);
			free(hp);
			free(hs);
			free(hu);
		}
		free(qp);
		free(qsum);
		free(qurl);
	}
	/* the base deleted behind our back: fetched again, the reference kept */
	assert_int_equal(unlink(base), 0);
	acquire_ok(f, url, sum, IMG_FMT_RAW, NULL);
	assert_true(th_exists(base));
	{
		struct img_entry *v = NULL;
		size_t n = 0;
		bool kept = false;

		assert_int_equal(img_list(f->c, &v, &n), 0);
		for (size_t i = 0; i < n; i++)
			kept |= strcmp(v[i].checksum, sum) == 0 && v[i].n_users == 1 &&
				strcmp(v[i].users[0], uuid_a) == 0;
		img_entries_free(v, n);
		assert_true(kept);
	}
	assert_int_equal(img_overlay_delete(f->c, uuid_a), 0);
	assert_false(th_exists(ov));
	assert_int_equal(img_overlay_delete(f->c, "not-a-uuid"), -EINVAL);
	free(ov);
	free(ov2);
	free(base);
	free(dir);
	free(url);
	free(sum);
	fx_free(f);
}

/* 8 threads, one image: one download (file:// so no network here; the
 * nginx request count is in test_fetch.c). */
struct racer {
	struct img_cache *c;
	const struct img_ref *ref;
	int rc;
	char *path;
	int progress_calls;
};

static int count_progress(const struct img_progress *p, void *ud)
{
	(void)p;
	((struct racer *)ud)->progress_calls++;
	return 0;
}

static void *race(void *arg)
{
	struct racer *r = arg;

	r->rc = img_acquire(r->c, r->ref, count_progress, r, &r->path);
	if (r->rc == 0)
		img_release(r->c, r->ref->checksum);
	return NULL;
}

static void test_single_flight_threads(void **state)
{
	struct fixture *f = fx_new("flight");
	char *url, *sum;
	struct racer rs[8];
	pthread_t t[8];
	int downloaders = 0;

	(void)state;
	make_raw(f, "d.raw", 8, &url, &sum);
	struct img_ref ref = { .url = url, .checksum = sum, .format = IMG_FMT_RAW };

	for (int i = 0; i < 8; i++) {
		rs[i] = (struct racer){ .c = f->c, .ref = &ref };
		pthread_create(&t[i], NULL, race, &rs[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(rs[i].rc, 0);
		assert_string_equal(rs[i].path, rs[0].path);
		downloaders += rs[i].progress_calls > 0;
	}
	assert_int_equal(downloaders, 1); /* only the leader's transfer reports */
	for (int i = 0; i < 8; i++)
		free(rs[i].path);
	free(url);
	free(sum);
	fx_free(f);
}

/*
 * Instance disks made by 8 threads at once: their index commits are group
 * committed (images_priv.h), and each img_overlay_create that returned 0
 * is in the file (a reopened cache lists all 8 users). A failed index
 * write fails every commit that was waiting for it and leaves the file
 * as it was.
 */
struct ov_racer {
	struct img_cache *c;
	const struct img_ref *ref;
	const char *dir;
	char uuid[40];
	char *path;
	int rc;
	bool del;
};

static void *ov_race(void *arg)
{
	struct ov_racer *r = arg;

	if (r->del)
		r->rc = img_overlay_delete(r->c, r->uuid);
	else
		r->rc = img_overlay_create(r->c, r->ref, r->uuid, 1, r->dir, &r->path);
	return NULL;
}

static size_t users_of(struct fixture *f, const char *sum)
{
	struct img_entry *v = NULL;
	size_t n = 0, users = 0;

	assert_int_equal(img_list(f->c, &v, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].checksum, sum) == 0)
			users = v[i].n_users;
	img_entries_free(v, n);
	return users;
}

static void ov_run(struct ov_racer *rs, pthread_t *t, int n, bool del)
{
	for (int i = 0; i < n; i++) {
		rs[i].del = del;
		pthread_create(&t[i], NULL, ov_race, &rs[i]);
	}
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
}

static void test_overlays_threads(void **state)
{
	struct fixture *f = fx_new("ovthreads");
	char *url, *sum, *dir, *blocker, *ipath, *before = NULL, *after = NULL;
	struct ov_racer rs[8];
	pthread_t t[8];
	size_t len;

	(void)state;
	dir = th_printf("%s/instances", f->dir);
	make_raw(f, "base.raw", 2, &url, &sum);
	struct img_ref ref = { .url = url, .checksum = sum, .format = IMG_FMT_RAW };

	acquire_ok(f, url, sum, IMG_FMT_RAW, NULL);
	for (int i = 0; i < 8; i++) {
		rs[i] = (struct ov_racer){ .c = f->c, .ref = &ref, .dir = dir };
		snprintf(rs[i].uuid, sizeof(rs[i].uuid), "2d8f6d3a-7e9c-4e3a-9c75-2f3a4b5c6d%02d", i);
	}
	ov_run(rs, t, 8, false);
	for (int i = 0; i < 8; i++) {
		if (rs[i].rc != 0)
			fail_msg("overlay %d: rc %d", i, rs[i].rc);
		assert_true(th_exists(rs[i].path));
	}
	fx_reopen(f); /* what the file says, not what this process holds */
	assert_int_equal(users_of(f, sum), 8);
	for (int i = 0; i < 8; i++)
		rs[i].c = f->c;
	ov_run(rs, t, 8, true);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(rs[i].rc, 0);
		assert_false(th_exists(rs[i].path));
		free(rs[i].path);
		rs[i].path = NULL;
	}
	fx_reopen(f);
	assert_int_equal(users_of(f, sum), 0);

	/* the index cannot be written (a directory where its temporary file
	 * goes): every commit fails, the file is unchanged, no disk is left */
	for (int i = 0; i < 8; i++)
		rs[i].c = f->c;
	ipath = th_printf("%s/index.json", f->cfg.cache_dir);
	assert_int_equal(read_file(ipath, 1 << 20, &before, &len), 0);
	blocker = th_printf("%s/.index.json.tmp.%d", f->cfg.cache_dir, (int)getpid());
	assert_int_equal(mkdir(blocker, 0755), 0);
	ov_run(rs, t, 8, false);
	for (int i = 0; i < 8; i++) {
		assert_true(rs[i].rc < 0);
		assert_null(rs[i].path);
	}
	assert_int_equal(img_overlay_create(f->c, &ref, rs[0].uuid, 1, dir, &rs[0].path), -EISDIR);
	assert_non_null(strstr(err_msg(), "image index"));
	assert_int_equal(read_file(ipath, 1 << 20, &after, &len), 0);
	assert_string_equal(before, after);
	assert_int_equal(rmdir(blocker), 0);
	fx_reopen(f);
	assert_int_equal(users_of(f, sum), 0);
	/* and it works again */
	assert_int_equal(img_overlay_create(f->c, &ref, rs[0].uuid, 1, dir, &rs[0].path), 0);
	assert_int_equal(users_of(f, sum), 1);
	assert_int_equal(img_overlay_delete(f->c, rs[0].uuid), 0);
	free(rs[0].path);
	free(before);
	free(after);
	free(blocker);
	free(ipath);
	free(dir);
	free(url);
	free(sum);
	fx_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_checksum_parse),
		cmocka_unit_test(test_human_size),
		cmocka_unit_test(test_inspect_corpus),
		cmocka_unit_test(test_inspect_sizes),
		cmocka_unit_test(test_cache_fetch_file_and_restart),
		cmocka_unit_test(test_cache_refusals),
		cmocka_unit_test(test_cache_crash_leftovers),
		cmocka_unit_test(test_eviction_order_and_in_use),
		cmocka_unit_test(test_overlays),
		cmocka_unit_test(test_single_flight_threads),
		cmocka_unit_test(test_overlays_threads),
	};

	log_init("test_images", false, LOG_LVL_WARN);
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
