/*
 * stratus-agent image fetch|inspect|list|evict: the operator's view of the
 * image cache (module images). Exit 0 success, 1 failure, 2 usage.
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/commands.h"
#include "core/core.h"
#include "images/images.h"

static const char image_usage[] =
	"usage: stratus-agent image fetch URL --checksum sha256:HEX --format qcow2|raw\n"
	"                                [--name NAME] [--cache DIR] [--max-size SIZE]\n"
	"       stratus-agent image inspect FILE --format qcow2|raw [--max-virtual-size SIZE]\n"
	"       stratus-agent image list [--cache DIR] [--json]\n"
	"       stratus-agent image evict [--cache DIR] [--budget SIZE]\n";

struct progress_state {
	bool tty;
	int64_t last_ms;
	bool printed;
};

/* One progress line on stderr: bytes, rate, ETA. Rewritten in place on a
 * terminal, a line per second otherwise. */
static int show_progress(const struct img_progress *p, void *ud)
{
	struct progress_state *ps = ud;
	int64_t now = time_mono_ms();
	char done[32], total[32], rate[32], eta[32] = "?";

	if (!p->done && !ps->tty && now - ps->last_ms < 1000)
		return 0;
	ps->last_ms = now;
	human_size(p->bytes, done, sizeof(done));
	human_size(p->total, total, sizeof(total));
	human_size((uint64_t)p->rate, rate, sizeof(rate));
	if (p->eta_s >= 0)
		snprintf(eta, sizeof(eta), "%.0fs", p->eta_s);
	fprintf(stderr, "%s%s: %s / %s  %s/s  ETA %s%s%s", ps->tty ? "\r\033[K" : "", p->name,
		done, p->total ? total : "?", rate, eta,
		p->attempt > 1 ? "  (retry)" : "", ps->tty && !p->done ? "" : "\n");
	ps->printed = true;
	return 0;
}

enum { OPT_CHECKSUM = 1, OPT_FORMAT, OPT_CACHE, OPT_MAX_SIZE, OPT_MAX_VSIZE, OPT_JSON,
       OPT_BUDGET, OPT_NAME, OPT_HELP };

static const struct option image_opts[] = {
	{ "checksum", required_argument, NULL, OPT_CHECKSUM },
	{ "format", required_argument, NULL, OPT_FORMAT },
	{ "cache", required_argument, NULL, OPT_CACHE },
	{ "max-size", required_argument, NULL, OPT_MAX_SIZE },
	{ "max-virtual-size", required_argument, NULL, OPT_MAX_VSIZE },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "budget", required_argument, NULL, OPT_BUDGET },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "help", no_argument, NULL, OPT_HELP },
	{ 0 },
};

struct image_args {
	const char *verb, *arg, *checksum, *name;
	enum img_format format;
	bool have_format, json, have_budget;
	uint64_t budget;
};

static int usage_error(const char *fmt, ...) PRINTF_LIKE(1, 2);

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "stratus-agent image: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s", image_usage);
	return 2;
}

static int parse_args(int argc, char **argv, struct img_config *cfg, struct image_args *a)
{
	int c;

	optind = 0; /* fresh getopt state (glibc) */
	opterr = 1;
	while ((c = getopt_long(argc, argv, "", image_opts, NULL)) != -1) {
		uint64_t sz;

		switch (c) {
		case OPT_CHECKSUM:
			a->checksum = optarg;
			break;
		case OPT_FORMAT:
			if (img_format_parse(optarg, &a->format) < 0)
				return usage_error("%s", err_msg());
			a->have_format = true;
			break;
		case OPT_CACHE:
			free(cfg->cache_dir);
			cfg->cache_dir = strdup(optarg);
			if (!cfg->cache_dir)
				return 1;
			break;
		case OPT_MAX_SIZE:
		case OPT_MAX_VSIZE:
		case OPT_BUDGET:
			if (parse_size(optarg, &sz) < 0)
				return usage_error("'%s' is not a size like 512M or 2G", optarg);
			if (c == OPT_MAX_SIZE)
				cfg->max_image_size = sz;
			else if (c == OPT_MAX_VSIZE)
				cfg->max_virtual_size = sz;
			else {
				a->budget = sz;
				a->have_budget = true;
			}
			break;
		case OPT_JSON:
			a->json = true;
			break;
		case OPT_NAME:
			a->name = optarg;
			break;
		case OPT_HELP:
			fputs(image_usage, stdout);
			return 0;
		default:
			fputs(image_usage, stderr);
			return 2;
		}
	}
	while (optind < argc) {
		if (a->arg)
			return usage_error("unexpected argument '%s'", argv[optind]);
		a->arg = argv[optind++];
	}
	return -1; /* carry on */
}

static int do_fetch(struct img_config *cfg, const struct image_args *a)
{
	struct progress_state ps = { .tty = isatty(2) };
	struct img_ref ref = { .name = a->name ? a->name : a->arg, .url = a->arg,
			       .checksum = a->checksum, .format = a->format };
	struct img_cache *c = NULL;
	char *path = NULL;
	int r;

	if (!a->arg || !a->checksum || !a->have_format)
		return usage_error("%s", "fetch needs URL, --checksum and --format");
	r = img_cache_open(cfg, &c);
	if (r == 0)
		r = img_acquire(c, &ref, show_progress, &ps, &path);
	if (r < 0) {
		if (ps.tty && ps.printed)
			fputc('\n', stderr);
		fprintf(stderr, "stratus-agent image fetch: %s\n", err_msg());
		img_cache_close(c);
		return 1;
	}
	printf("%s\n", path);
	img_release(c, a->checksum);
	free(path);
	img_cache_close(c);
	return 0;
}

static int do_inspect(struct img_config *cfg, const struct image_args *a)
{
	struct img_info info;
	char vs[32], fs[32];
	int r;

	if (!a->arg || !a->have_format)
		return usage_error("%s", "inspect needs FILE and --format");
	r = img_inspect(a->arg, a->format, cfg->max_virtual_size, &info);
	if (r < 0) {
		fprintf(stderr, "stratus-agent image inspect: %s\n", err_msg());
		return 1;
	}
	human_size(info.virtual_size, vs, sizeof(vs));
	human_size(info.file_size, fs, sizeof(fs));
	printf("%s: format %s", a->arg, img_kind_name(info.kind));
	if (info.kind == IMG_KIND_QCOW2)
		printf(" (version %u, cluster size %u)", info.qcow2_version,
		       1u << info.cluster_bits);
	printf(", virtual size %s (%" PRIu64 " bytes), file size %s: accepted\n", vs,
	       info.virtual_size, fs);
	return 0;
}

static void time_text(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int do_list(struct img_config *cfg, const struct image_args *a)
{
	struct img_cache *c = NULL;
	struct img_entry *v = NULL;
	size_t n = 0;
	int r;

	r = img_cache_open(cfg, &c);
	if (r == 0)
		r = img_list(c, &v, &n);
	if (r < 0) {
		fprintf(stderr, "stratus-agent image list: %s\n", err_msg());
		img_cache_close(c);
		return 1;
	}
	if (a->json) {
		json_t *arr = json_array();

		for (size_t i = 0; i < n; i++) {
			char ts[32];
			json_t *users = json_array();

			for (size_t j = 0; j < v[i].n_users; j++)
				json_array_append_new(users, json_string(v[i].users[j]));
			time_text(v[i].last_used_ms, ts, sizeof(ts));
			json_array_append_new(
				arr, json_pack("{s:s, s:s?, s:s?, s:s, s:s, s:I, s:I, s:s, s:o}",
					       "checksum", v[i].checksum, "name", v[i].name, "url",
					       v[i].url, "path", v[i].path, "format",
					       img_format_name(v[i].format), "size",
					       (json_int_t)v[i].size, "virtual_size",
					       (json_int_t)v[i].virtual_size, "last_used", ts,
					       "users", users));
		}
		char *text = json_dumps(arr, JSON_INDENT(2));

		if (text)
			printf("%s\n", text);
		free(text);
		json_decref(arr);
	} else {
		printf("%-23s %-6s %10s %10s %5s %-20s %s\n", "CHECKSUM", "FORMAT", "SIZE",
		       "VSIZE", "USERS", "LAST USED", "NAME");
		for (size_t i = 0; i < n; i++) {
			char sz[32], vs[32], ts[32];

			human_size(v[i].size, sz, sizeof(sz));
			human_size(v[i].virtual_size, vs, sizeof(vs));
			time_text(v[i].last_used_ms, ts, sizeof(ts));
			printf("%-.23s %-6s %10s %10s %5zu %-20s %s\n", v[i].checksum,
			       img_format_name(v[i].format), sz, vs, v[i].n_users, ts,
			       v[i].name ? v[i].name : "-");
		}
	}
	img_entries_free(v, n);
	img_cache_close(c);
	return 0;
}

static int do_evict(struct img_config *cfg, const struct image_args *a)
{
	struct img_cache *c = NULL;
	struct img_evict_stats st;
	char fr[32], tot[32];
	int r;

	r = img_cache_open(cfg, &c);
	if (r == 0)
		r = img_evict(c, a->have_budget ? a->budget : cfg->budget, &st);
	if (r < 0) {
		fprintf(stderr, "stratus-agent image evict: %s\n", err_msg());
		img_cache_close(c);
		return 1;
	}
	human_size(st.freed, fr, sizeof(fr));
	human_size(st.total, tot, sizeof(tot));
	printf("evicted %u image%s (%s); the cache holds %s, %u image%s in use\n", st.evicted,
	       st.evicted == 1 ? "" : "s", fr, tot, st.in_use, st.in_use == 1 ? "" : "s");
	img_cache_close(c);
	return 0;
}

static const struct {
	const char *verb;
	int (*run)(struct img_config *cfg, const struct image_args *a);
} verbs[] = {
	{ "fetch", do_fetch },
	{ "inspect", do_inspect },
	{ "list", do_list },
	{ "evict", do_evict },
};

int agent_cmd_image(int argc, char **argv)
{
	struct img_config cfg = { 0 };
	struct image_args a = { 0 };
	int r = 2;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(image_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (agent_config_path) {
		/* the host's images: section; flags below override it */
		const struct cfg_section sections[] = {
			{ .name = "images", .fields = img_config_fields, .dst = &cfg },
			{ 0 },
		};

		if (cfg_load_file(agent_config_path, sections) < 0) {
			fprintf(stderr, "stratus-agent image: %s\n", err_msg());
			img_config_free(&cfg);
			return 1;
		}
	} else if (img_config_defaults(&cfg) < 0) {
		fprintf(stderr, "stratus-agent image: %s\n", err_msg());
		return 1;
	}
	cfg.allow_file_urls = true; /* the operator names local files */
	a.verb = argv[1];
	r = parse_args(argc - 1, argv + 1, &cfg, &a);
	if (r >= 0)
		goto out;
	for (size_t i = 0; i < ARRAY_SIZE(verbs); i++) {
		if (strcmp(verbs[i].verb, a.verb) == 0) {
			r = verbs[i].run(&cfg, &a);
			goto out;
		}
	}
	r = usage_error("unknown command '%s'", a.verb);
out:
	img_config_free(&cfg);
	return r;
}
