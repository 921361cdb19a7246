/*
 * stratusctl catalog and operator commands: host list, quota show|set,
 * flavor and image list|add|remove. One request each, its data printed
 * as a table or JSON (cli_request_print).
 */
#define LOG_TAG "cli"
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli_priv.h"
#include "core/core.h"

int cli_host(struct cli_ctx *ctx, int argc, char **argv)
{
	static const char *const cols[] = { "name", "state", "availability_zone", "instances",
					    "vcpus", "pcpus", "ram_mb", "disk_gb", "steal_pct",
					    "recent_failures", "recovery", NULL };
	static const char *const heads[] = { "HOST", "STATE", "AZ", "INSTANCES", "VCPUS", "PCPUS",
					     "RAM_MB", "DISK_GB", "STEAL%", "FAILURES", "RECOVERY" };
	struct cli_common co = { .timeout_s = 30 };
	int i = cli_common_only(ctx, argc, argv, "host list", &co);

	if (i == -CLI_OK - 100)
		return CLI_OK;
	if (i < 0)
		return -i;
	if (argc - i != 1 || strcmp(argv[i], "list") != 0)
		return cli_usage_error(ctx, "host list", "%s", "host: expected 'list'");
	return cli_request_print(ctx, &co, "host.list", json_object(), cols, heads);
}

static const char quota_usage[] =
	"quota show [P] | quota set P [--instances N] [--cores N] [--ram-mb N] [--pcpus N] "
	"[--hugepages-mb N]";

int cli_quota(struct cli_ctx *ctx, int argc, char **argv)
{
	enum { Q_INST = 3000, Q_CORES, Q_RAM, Q_PCPUS, Q_HP };
	static const struct option opts[] = {
		{ "instances", required_argument, NULL, Q_INST },
		{ "cores", required_argument, NULL, Q_CORES },
		{ "ram-mb", required_argument, NULL, Q_RAM },
		{ "pcpus", required_argument, NULL, Q_PCPUS },
		{ "hugepages-mb", required_argument, NULL, Q_HP },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	static const char *const res[] = { "instances", "cores", "ram_mb", "pcpus", "hugepages_mb" };
	struct cli_common co = { .project = cli_default_project(), .timeout_s = 30 };
	json_t *limits = json_object();
	const char *sub, *project;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		long v;
		int r = cli_common_opt(ctx, c, &co);

		if (r < 0)
			goto usage;
		if (r == 0)
			continue;
		if (c == CLI_OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, quota_usage);
			json_decref(limits);
			return CLI_OK;
		}
		if (c < Q_INST || c > Q_HP || parse_long(optarg, 0, 1L << 40, &v) < 0) {
			cli_error(ctx, "quota: bad option or value %s", argv[optind - 1]);
			goto usage;
		}
		json_object_set_new(limits, res[c - Q_INST], json_integer(v));
	}
	if (argc - optind < 1 || argc - optind > 2)
		goto usage;
	sub = argv[optind];
	project = argc - optind == 2 ? argv[optind + 1] : co.project;
	if (strcmp(sub, "show") == 0 && json_object_size(limits) == 0) {
		struct cli_session ss;
		json_t *data = NULL;
		int rc = cli_session_open(&ss, ctx, co.timeout_s);
		json_t *body = json_pack("{s:s}", "project", project);

		if (rc == CLI_OK)
			rc = cli_request(&ss, "quota.show", body, &data);
		if (rc == CLI_OK && ctx->json) {
			cli_print_json(data);
		} else if (rc == CLI_OK) {
			printf("%-14s %10s %10s\n", "RESOURCE", "USED", "LIMIT");
			for (size_t i = 0; i < ARRAY_SIZE(res); i++) {
				long lim = (long)json_integer_value(
					json_object_get(json_object_get(data, "limits"), res[i]));
				char l[32];

				snprintf(l, sizeof(l), "%ld", lim);
				printf("%-14s %10lld %10s\n", res[i],
				       (long long)json_integer_value(json_object_get(
					       json_object_get(data, "usage"), res[i])),
				       lim < 0 ? "unlimited" : l);
			}
		}
		cli_session_close(&ss);
		json_decref(data);
		json_decref(body);
		json_decref(limits);
		return rc;
	}
	if (strcmp(sub, "set") == 0 && argc - optind == 2 && json_object_size(limits) > 0) {
		json_t *body = json_pack("{s:s, s:o}", "project", project, "limits", limits);

		int rc = cli_request_print(ctx, &co, "quota.set", body, NULL, NULL);

		if (rc == CLI_OK && !ctx->json)
			printf("quota of %s set\n", project);
		return rc;
	}
usage:
	json_decref(limits);
	return cli_usage_only(ctx, quota_usage);
}

static const char flavor_usage[] =
	"flavor list | flavor add NAME --vcpus N --ram-mb N [--disk-gb N] [--spec K=V]... | "
	"flavor remove NAME";
static const char image_usage[] =
	"image list | image add NAME --url URL --checksum sha256:HEX [--format qcow2|raw] "
	"[--min-disk-gb N] | image remove NAME";

/* flavor and image: list, add, remove. */
static int catalog_cmd(struct cli_ctx *ctx, int argc, char **argv, bool flavor)
{
	enum { C_VCPUS = 4000, C_RAM, C_DISK, C_SPEC, C_URL, C_SUM, C_FMT, C_MIN };
	static const struct option opts[] = {
		{ "vcpus", required_argument, NULL, C_VCPUS },
		{ "ram-mb", required_argument, NULL, C_RAM },
		{ "disk-gb", required_argument, NULL, C_DISK },
		{ "spec", required_argument, NULL, C_SPEC },
		{ "url", required_argument, NULL, C_URL },
		{ "checksum", required_argument, NULL, C_SUM },
		{ "format", required_argument, NULL, C_FMT },
		{ "min-disk-gb", required_argument, NULL, C_MIN },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	static const char *const fcols[] = { "name", "vcpus", "ram_mb", "disk_gb", NULL };
	static const char *const fheads[] = { "NAME", "VCPUS", "RAM_MB", "DISK_GB" };
	static const char *const icols[] = { "name", "disk_format", "min_disk_gb", "url", NULL };
	static const char *const iheads[] = { "NAME", "FORMAT", "MIN_DISK_GB", "URL" };
	const char *usage = flavor ? flavor_usage : image_usage;
	const char *kind = flavor ? "flavor" : "image";
	struct cli_common co = { .timeout_s = 30 };
	json_t *body = json_object(), *specs = json_object();
	char type[32];
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		long v = 0;
		int r = cli_common_opt(ctx, c, &co);
		static const char *const keys[] = { "vcpus", "ram_mb", "disk_gb", NULL, "url",
						    "checksum", "disk_format", "min_disk_gb" };

		if (r < 0)
			goto usage;
		if (r == 0)
			continue;
		if (c == CLI_OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, usage);
			json_decref(body);
			json_decref(specs);
			return CLI_OK;
		}
		if (c == C_SPEC) {
			char *eq = strchr(optarg, '=');

			if (!eq || eq == optarg)
				goto usage;
			*eq = '\0';
			json_object_set_new(specs, optarg, json_string(eq + 1));
		} else if (c == C_VCPUS || c == C_RAM || c == C_DISK || c == C_MIN) {
			if (parse_long(optarg, 0, 1L << 30, &v) < 0) {
				cli_error(ctx, "%s: expected a number, got '%s'", argv[optind - 1], optarg);
				goto usage;
			}
			json_object_set_new(body, keys[c - C_VCPUS], json_integer(v));
		} else if (c >= C_URL && c <= C_FMT) {
			json_object_set_new(body, keys[c - C_VCPUS], json_string(optarg));
		} else {
			goto usage;
		}
	}
	if (argc - optind == 1 && strcmp(argv[optind], "list") == 0) {
		json_decref(body);
		json_decref(specs);
		snprintf(type, sizeof(type), "%s.list", kind);
		return cli_request_print(ctx, &co, type, json_object(), flavor ? fcols : icols,
			      flavor ? fheads : iheads);
	}
	if (argc - optind == 2 && (strcmp(argv[optind], "add") == 0 ||
				   strcmp(argv[optind], "remove") == 0)) {
		bool add = strcmp(argv[optind], "add") == 0;

		json_object_set_new(body, "name", json_string(argv[optind + 1]));
		if (add && flavor && json_object_size(specs))
			json_object_set(body, "extra_specs", specs);
		if (add && !flavor && !json_object_get(body, "disk_format"))
			json_object_set_new(body, "disk_format", json_string("qcow2"));
		if (add && flavor && !json_object_get(body, "disk_gb"))
			json_object_set_new(body, "disk_gb", json_integer(0));
		if (!add) {
			json_decref(body);
			body = json_pack("{s:s}", "name", argv[optind + 1]);
		}
		snprintf(type, sizeof(type), "%s.%s", kind, argv[optind]);
		json_decref(specs);
		return cli_request_print(ctx, &co, type, body, add ? (flavor ? fcols : icols) : NULL,
			      flavor ? fheads : iheads);
	}
usage:
	json_decref(body);
	json_decref(specs);
	return cli_usage_only(ctx, usage);
}

int cli_flavor(struct cli_ctx *ctx, int argc, char **argv)
{
	return catalog_cmd(ctx, argc, argv, true);
}

int cli_image(struct cli_ctx *ctx, int argc, char **argv)
{
	return catalog_cmd(ctx, argc, argv, false);
}
