/* images: config table, enum names, checksums, running qemu-img. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "images/images_priv.h"

extern char **environ;

static const char *const format_names[IMG_FMT_LAST] = {
	[IMG_FMT_RAW] = "raw",
	[IMG_FMT_QCOW2] = "qcow2",
};

static const char *const kind_names[IMG_KIND_LAST] = {
	[IMG_KIND_RAW] = "raw",
	[IMG_KIND_QCOW2] = "qcow2",
	[IMG_KIND_VMDK] = "vmdk",
	[IMG_KIND_VHD] = "vhd",
	[IMG_KIND_VHDX] = "vhdx",
	[IMG_KIND_QED] = "qed",
	[IMG_KIND_VDI] = "vdi",
	[IMG_KIND_LUKS] = "luks",
	[IMG_KIND_DMG] = "dmg",
	[IMG_KIND_PARALLELS] = "parallels",
	[IMG_KIND_BOCHS] = "bochs",
	[IMG_KIND_CLOOP] = "cloop",
};

static const char *const algo_names[IMG_ALGO_LAST] = {
	[IMG_ALGO_SHA256] = "sha256",
	[IMG_ALGO_SHA512] = "sha512",
};

static const size_t algo_hexlen[IMG_ALGO_LAST] = {
	[IMG_ALGO_SHA256] = 64,
	[IMG_ALGO_SHA512] = 128,
};

const char *img_format_name(enum img_format f)
{
	return (unsigned)f < IMG_FMT_LAST ? format_names[f] : NULL;
}

int img_format_parse(const char *s, enum img_format *out)
{
	for (int i = 0; i < IMG_FMT_LAST; i++) {
		if (s && strcmp(s, format_names[i]) == 0) {
			*out = (enum img_format)i;
			return 0;
		}
	}
	return err_set(-EINVAL, "unknown disk format '%s' (expected raw or qcow2)", s ? s : "");
}

const char *img_kind_name(enum img_kind k)
{
	return (unsigned)k < IMG_KIND_LAST ? kind_names[k] : "unknown";
}

const char *img_algo_name(enum img_algo a)
{
	return (unsigned)a < IMG_ALGO_LAST ? algo_names[a] : "unknown";
}

int img_checksum_parse(const char *s, struct img_checksum *out)
{
	const char *colon = s ? strchr(s, ':') : NULL;
	struct img_checksum c = { 0 };
	int i;

	if (!colon)
		return err_set(-EINVAL, "checksum '%s': expected sha256:HEX or sha512:HEX",
			       s ? s : "");
	for (i = 0; i < IMG_ALGO_LAST; i++)
		if (strlen(algo_names[i]) == (size_t)(colon - s) &&
		    strncmp(s, algo_names[i], (size_t)(colon - s)) == 0)
			break;
	if (i == IMG_ALGO_LAST)
		return err_set(-EINVAL, "checksum '%.80s': unknown algorithm (expected sha256 or sha512)",
			       s);
	c.algo = (enum img_algo)i;
	if (strlen(colon + 1) != algo_hexlen[i])
		return err_set(-EINVAL, "checksum '%.200s': %s needs %zu hex digits", s,
			       algo_names[i], algo_hexlen[i]);
	for (size_t k = 0; k < algo_hexlen[i]; k++) {
		unsigned char ch = (unsigned char)colon[1 + k];

		if (!isxdigit(ch))
			return err_set(-EINVAL, "checksum '%.200s': not a hex digit: '%c'", s, ch);
		c.hex[k] = (char)tolower(ch);
	}
	*out = c;
	return 0;
}

/* ---- config ------------------------------------------------------------- */

#define F(k, t, m) .key = k, .type = t, .offset = offsetof(struct img_config, m)

const struct cfg_field img_config_fields[] = {
	{ F("cache_dir", CFG_STRING, cache_dir), .def = "/var/lib/stratus/images",
	  .expected = "a directory path" },
	{ F("cache_budget", CFG_SIZE, budget), .def = "50G" },
	{ F("max_image_size", CFG_SIZE, max_image_size), .def = "20G" },
	{ F("max_virtual_size", CFG_SIZE, max_virtual_size), .def = "1T" },
	{ F("connect_timeout", CFG_DURATION, connect_timeout_ms), .def = "10s" },
	{ F("low_speed_limit", CFG_INT, low_speed_limit), .min = 0, .max = 1L << 40,
	  .def = "1024" },
	{ F("low_speed_time", CFG_DURATION, low_speed_time_ms), .def = "30s" },
	{ F("total_timeout", CFG_DURATION, total_timeout_ms), .def = "1h" },
	{ F("retries", CFG_INT, retries), .min = 0, .max = 100, .def = "4" },
	{ F("retry_backoff", CFG_DURATION, retry_backoff_ms), .def = "1s" },
	{ F("retry_backoff_max", CFG_DURATION, retry_backoff_max_ms), .def = "30s" },
	{ F("max_downloads", CFG_INT, max_downloads), .min = 1, .max = 64, .def = "2" },
	{ F("partial_max_age", CFG_DURATION, partial_max_age_ms), .def = "24h" },
	{ F("ca_file", CFG_STRING, ca_file), .expected = "a CA bundle path" },
	{ F("allow_file_urls", CFG_BOOL, allow_file_urls), .def = "false" },
	{ F("qemu_img", CFG_STRING, qemu_img), .def = "qemu-img",
	  .expected = "the qemu-img program" },
	{ F("url_filter", CFG_SECTION, url_filter), .sub = img_url_filter_fields },
	{ F("store_url", CFG_STRING, store_url), .expected = "the image store's http(s) URL" },
	{ 0 },
};

int img_config_defaults(struct img_config *cfg)
{
	const struct cfg_section s[] = {
		{ .name = "images", .fields = img_config_fields, .dst = cfg },
		{ 0 },
	};

	return cfg_load_string("defaults", "", 0, s);
}

void img_config_free(struct img_config *cfg)
{
	cfg_free(img_config_fields, cfg);
}

/* ---- running programs --------------------------------------------------- */

#define RUN_OUT_MAX 4096

int img_run(char *const argv[], char **out)
{
	posix_spawn_file_actions_t fa;
	struct strbuf sb = { .max = RUN_OUT_MAX + 1 };
	int p[2] = { -1, -1 }, status = 0, r;
	pid_t pid;
	char buf[512];

	if (pipe2(p, O_CLOEXEC) < 0)
		return err_sys(-errno, "%s: pipe", argv[0]);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_adddup2(&fa, p[1], 2);
	r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (r != 0) {
		close(p[0]);
		return err_sys(-r, "cannot run %s", argv[0]);
	}
	for (;;) {
		ssize_t n = read(p[0], buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (sb.len < RUN_OUT_MAX)
			sb_append(&sb, buf, (size_t)n < RUN_OUT_MAX - sb.len ? (size_t)n
									 : RUN_OUT_MAX - sb.len);
	}
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			sb_free(&sb);
			return err_sys(-errno, "%s: waitpid", argv[0]);
		}
	}
	if (out) {
		*out = sb.buf ? sb_steal(&sb) : strdup("");
		if (*out) {
			size_t l = strlen(*out);

			while (l > 0 && ((*out)[l - 1] == '\n' || (*out)[l - 1] == ' '))
				(*out)[--l] = '\0';
		}
	}
	sb_free(&sb);
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return err_set(-EINTR, "%s: killed by signal %d", argv[0],
		       WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}
