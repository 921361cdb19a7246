/*
 * The qcow2 overlay writer (images/qcow2.c) against qemu-img: for each
 * size and backing format, our file and `qemu-img create`'s of the same
 * overlay give the same `qemu-img info`, pass `qemu-img check`, have the
 * same header fields, refcounts and length, and a guest's writes land in
 * the overlay (qemu-io) while reads of untouched sectors come from the
 * base. Names and sizes qcow2 cannot hold are refused and write nothing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "images/images_priv.h"
#include "tests/images/helpers.h"

#define GIB (1ULL << 30)

static char *top;

static int setup_all(void **state)
{
	char *cmd;
	int r;

	(void)state;
	top = th_mkdtemp("qcow2");
	cmd = th_printf("cd '%s' && qemu-img create -q -f raw base.raw 64M && "
			"qemu-io -f raw -c 'write -P 0x5a 0 1M' base.raw >/dev/null && "
			"qemu-img create -q -f qcow2 base.qcow2 64M", top);
	r = th_sh(cmd);
	free(cmd);
	return r == 0 ? 0 : -1;
}

static int teardown_all(void **state)
{
	(void)state;
	th_rm_rf(top);
	free(top);
	return 0;
}

/* stdout of a shell command (at most 64 KiB), malloc'd. */
static char *sh_out(const char *cmd)
{
	FILE *p = popen(cmd, "r");
	char *out = calloc(1, 65536);
	size_t n;

	if (!p || !out)
		th_die("popen");
	n = fread(out, 1, 65535, p);
	out[n] = '\0';
	if (pclose(p) != 0)
		fail_msg("command failed: %s", cmd);
	return out;
}

/* qemu-img info of PATH without the lines that name the file itself or
 * count its allocated bytes. */
static char *info_of(const char *path)
{
	char *cmd = th_printf("qemu-img info --output=json '%s' | "
			      "grep -v -e '\"filename\"' -e '\"actual-size\"' -e '\"dirty-flag\"'",
			      path);
	char *out = sh_out(cmd);

	free(cmd);
	return out;
}

static int th_count_substr(const char *s, const char *needle)
{
	int n = 0;

	for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf;
	long n;

	if (!f || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0)
		th_die(path);
	rewind(f);
	buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		th_die(path);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void write_ours(const char *path, const char *base, enum img_format fmt, uint64_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	if (img_qcow2_overlay_write(fd, base, fmt, size) < 0)
		fail_msg("overlay of %llu bytes: %s", (unsigned long long)size, err_msg());
	close(fd);
}

static void same_as_qemu_img(const char *base, enum img_format fmt, uint64_t size)
{
	char *ours = th_printf("%s/ours.qcow2", top), *theirs = th_printf("%s/theirs.qcow2", top);
	char *cmd, *a, *b;
	unsigned char *x, *y;
	size_t nx, ny;

	unlink(ours);
	unlink(theirs);
	write_ours(ours, base, fmt, size);
	cmd = th_printf("qemu-img create -q -f qcow2 -F %s -b '%s' '%s' %llu", img_format_name(fmt),
			base, theirs, (unsigned long long)size);
	assert_int_equal(th_sh(cmd), 0);
	free(cmd);

	a = info_of(ours);
	b = info_of(theirs);
	assert_string_equal(a, b);
	assert_non_null(strstr(a, base));
	free(a);
	free(b);
	cmd = th_printf("qemu-img check -q '%s'", ours);
	assert_int_equal(th_sh(cmd), 0);
	free(cmd);

	/* byte for byte: the header fields (0..103), the refcount table and
	 * block, the L1 table and the file's length; the header extensions
	 * differ only by qemu-img's optional feature-name table */
	x = slurp(ours, &nx);
	y = slurp(theirs, &ny);
	assert_int_equal(nx, ny);
	assert_memory_equal(x + 0, y + 0, 8);     /* magic, version */
	assert_memory_equal(x + 16, y + 16, 88);  /* backing size .. header length */
	assert_memory_equal(x + 65536, y + 65536, nx - 65536);
	free(x);
	free(y);
	free(ours);
	free(theirs);
}

static void test_same_as_qemu_img(void **state)
{
	char *raw = th_printf("%s/base.raw", top), *qcow = th_printf("%s/base.qcow2", top);
	static const uint64_t sizes[] = {
		64ULL << 20, 1 * GIB, 20 * GIB, 20 * GIB + 1000, 5ULL << 40, /* L1: 2 clusters */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		print_message("overlay of %llu bytes on a raw base\n", (unsigned long long)sizes[i]);
		same_as_qemu_img(raw, IMG_FMT_RAW, sizes[i]);
	}
	same_as_qemu_img(qcow, IMG_FMT_QCOW2, 64ULL << 20);
	same_as_qemu_img(qcow, IMG_FMT_QCOW2, 4 * GIB);
	free(raw);
	free(qcow);
}

/* A guest's view: reads fall through to the base, writes stay in the
 * overlay, the base is unchanged. */
static void test_guest_io(void **state)
{
	char *raw = th_printf("%s/base.raw", top), *ov = th_printf("%s/io.qcow2", top);
	char *cmd, *sum_before, *sum_after;

	(void)state;
	sum_before = th_sha256(raw);
	unlink(ov);
	write_ours(ov, raw, IMG_FMT_RAW, 4 * GIB);
	cmd = th_printf("qemu-io -f qcow2 -c 'read -P 0x5a 0 1M' -c 'read -P 0 1M 1M' "
			"-c 'write -P 0xa5 512k 64k' -c 'write -P 0x11 3G 1M' '%s' >/dev/null", ov);
	assert_int_equal(th_sh(cmd), 0);
	free(cmd);
	cmd = th_printf("qemu-io -f qcow2 -c 'read -P 0x5a 0 512k' -c 'read -P 0xa5 512k 64k' "
			"-c 'read -P 0x5a 576k 448k' -c 'read -P 0x11 3G 1M' '%s' 2>&1", ov);
	{
		char *out = sh_out(cmd);

		/* qemu-io prints "Pattern verification failed" and goes on */
		assert_null(strstr(out, "Pattern"));
		assert_int_equal(th_count_substr(out, "read "), 4);
		free(out);
	}
	free(cmd);
	cmd = th_printf("qemu-img check -q '%s'", ov);
	assert_int_equal(th_sh(cmd), 0);
	free(cmd);
	sum_after = th_sha256(raw);
	assert_string_equal(sum_before, sum_after);
	free(sum_before);
	free(sum_after);
	free(raw);
	free(ov);
}

/* What qcow2 cannot hold is refused with a reason, and nothing written. */
static void test_refusals(void **state)
{
	char *ov = th_printf("%s/bad.qcow2", top), *raw = th_printf("%s/base.raw", top);
	char longname[1100];
	struct stat st;
	int fd;

	(void)state;
	memset(longname, 'a', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	unlink(ov);
	fd = open(ov, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(img_qcow2_overlay_write(fd, longname, IMG_FMT_RAW, GIB), -EINVAL);
	assert_non_null(strstr(err_msg(), "backing file name must be 1 to 1023 bytes"));
	assert_int_equal(img_qcow2_overlay_write(fd, "", IMG_FMT_RAW, GIB), -EINVAL);
	assert_int_equal(img_qcow2_overlay_write(fd, raw, IMG_FMT_RAW, 0), -EINVAL);
	assert_non_null(strstr(err_msg(), "size 0 is out of range"));
	assert_int_equal(img_qcow2_overlay_write(fd, raw, IMG_FMT_RAW, 3ULL << 50), -EFBIG);
	assert_non_null(strstr(err_msg(), "larger than qcow2 allows"));
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 0);
	close(fd);
	free(ov);
	free(raw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_as_qemu_img),
		cmocka_unit_test(test_guest_io),
		cmocka_unit_test(test_refusals),
	};

	log_init("test_qcow2", false, LOG_LVL_WARN);
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
