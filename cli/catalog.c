/*
 * stratusctl catalog and operator commands: host list|forget, quota show|set,
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
					    "recent_failures", "recovery", "maintenance", NULL };
	static const char *const heads[] = { "HOST", "STATE", "AZ", "INSTANCES", "VCPUS", "PCPUS",
					     "RAM_MB", "DISK_GB", "STEAL%", "FAILURES", "RECOVERY",
					     "MAINTENANCE" };
	static const char host_usage[] =
		"host list | host forget NAME | host disable NAME [REASON] | host enable NAME | "
		"host drain NAME | host evacuate NAME";
	static const char *const mcols[] = { "host", "maintenance", NULL };
	static const char *const mheads[] = { "HOST", "MAINTENANCE" };
	struct cli_common co = { .timeout_s = 30 };
	static const char *const fcols[] = { "host", NULL };
	static const char *const fheads[] = { "FORGOTTEN" };
	int i = cli_common_only(ctx, argc, argv, host_usage, &co);

	if (i == -CLI_OK - 100)
		return CLI_OK;
	if (i < 0)
		return -i;
	/* forget NAME: drop the host's pinned signing key (a reinstalled host) */
	if (argc - i == 2 && strcmp(argv[i], "forget") == 0)
		return cli_request_print(ctx, &co, "host.forget",
					 json_pack("{s:s}", "host", argv[i + 1]), fcols, fheads);
	/* maintenance (admin): no new instances; drain: and everything moved off */
	if ((argc - i == 2 || argc - i == 3) && strcmp(argv[i], "disable") == 0) {
		json_t *b = json_pack("{s:s}", "host", argv[i + 1]);

		if (b && argc - i == 3)
			json_object_set_new(b, "reason", json_string(argv[i + 2]));
		return cli_request_print(ctx, &co, "host.disable", b, mcols, mheads);
	}
	if (argc - i == 2 && strcmp(argv[i], "enable") == 0)
		return cli_request_print(ctx, &co, "host.enable",
					 json_pack("{s:s}", "host", argv[i + 1]), mcols, mheads);
	if (argc - i == 2 && strcmp(argv[i], "drain") == 0) {
		if (co.timeout_s == 30)
			co.timeout_s = 3600;
		return cli_host_drain(ctx, &co, argv[i + 1]);
	}
	/* evacuate NAME: a host that is down, its instances rebuilt elsewhere */
	if (argc - i == 2 && strcmp(argv[i], "evacuate") == 0) {
		if (co.timeout_s == 30)
			co.timeout_s = 600;
		return cli_host_evacuate(ctx, &co, argv[i + 1]);
	}
	if (argc - i != 1 || strcmp(argv[i], "list") != 0)
		return cli_usage_error(ctx, host_usage, "%s",
				       "host: expected list, forget, disable, enable, drain or "
				       "evacuate");
	return cli_request_print(ctx, &co, "host.list", json_object(), cols, heads);
}

static const char quota_usage[] =
	"quota show [P] | quota set P [--instances N] [--cores N] [--ram-mb N] [--pcpus N] "
	"[--hugepages-mb N] [--volumes N] [--gigabytes N]";

int cli_quota(struct cli_ctx *ctx, int argc, char **argv)
{
	enum { Q_INST = 3000, Q_CORES, Q_RAM, Q_PCPUS, Q_HP, Q_VOLS, Q_GB };
	static const struct option opts[] = {
		{ "instances", required_argument, NULL, Q_INST },
		{ "cores", required_argument, NULL, Q_CORES },
		{ "ram-mb", required_argument, NULL, Q_RAM },
		{ "pcpus", required_argument, NULL, Q_PCPUS },
		{ "hugepages-mb", required_argument, NULL, Q_HP },
		{ "volumes", required_argument, NULL, Q_VOLS },
		{ "gigabytes", required_argument, NULL, Q_GB },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	static const char *const res[] = { "instances", "cores", "ram_mb", "pcpus", "hugepages_mb",
					   "volumes", "gigabytes" };
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
		if (c < Q_INST || c > Q_GB || parse_long(optarg, 0, 1L << 40, &v) < 0) {
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
	"flavor list | flavor add NAME --vcpus N --ram-mb N [--disk-gb N] [--ephemeral-gb N]\n"
	"  [--swap-mb N] [--spec K=V]... | flavor remove NAME\n"
	"  (ephemeral and swap: extra disks, vdb and vdc, that cloud-init mounts at /mnt and\n"
	"   enables as swap; they count in the host's disk)";
static const char image_usage[] =
	"image list | image add NAME --url URL --checksum sha256:HEX [--format qcow2|raw] "
	"[--min-disk-gb N] [--property K=V]... [--private [--project P]] | image remove NAME |\n"
	"  image share NAME PROJECT | image unshare NAME PROJECT\n"
	"  (properties, Glance's names: hw_firmware_type=bios|uefi, os_secure_boot=disabled|required,\n"
	"   hw_machine_type=pc|q35, hw_disk_bus=virtio|scsi, hw_vif_model=virtio|e1000,\n"
	"   hw_qemu_guest_agent=no|yes, os_type=linux|windows)";

/* flavor and image: list, add, remove. */
static int catalog_cmd(struct cli_ctx *ctx, int argc, char **argv, bool flavor)
{
	enum { C_VCPUS = 4000, C_RAM, C_DISK, C_SPEC, C_URL, C_SUM, C_FMT, C_MIN, C_PROP, C_PRIVATE,
	       C_EPH, C_SWAP };
	static const struct option opts[] = {
		{ "vcpus", required_argument, NULL, C_VCPUS },
		{ "ram-mb", required_argument, NULL, C_RAM },
		{ "disk-gb", required_argument, NULL, C_DISK },
		{ "ephemeral-gb", required_argument, NULL, C_EPH },
		{ "swap-mb", required_argument, NULL, C_SWAP },
		{ "spec", required_argument, NULL, C_SPEC },
		{ "url", required_argument, NULL, C_URL },
		{ "checksum", required_argument, NULL, C_SUM },
		{ "format", required_argument, NULL, C_FMT },
		{ "min-disk-gb", required_argument, NULL, C_MIN },
		{ "property", required_argument, NULL, C_PROP },
		{ "private", no_argument, NULL, C_PRIVATE },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	static const char *const fcols[] = { "name", "vcpus", "ram_mb", "disk_gb", "ephemeral_gb",
					     "swap_mb", NULL };
	static const char *const fheads[] = { "NAME", "VCPUS", "RAM_MB", "DISK_GB", "EPHEMERAL_GB",
					      "SWAP_MB" };
	static const char *const icols[] = { "name", "visibility", "owner", "disk_format",
					     "min_disk_gb", "url", NULL };
	static const char *const iheads[] = { "NAME", "VISIBILITY", "OWNER", "FORMAT",
					      "MIN_DISK_GB", "URL" };
	const char *usage = flavor ? flavor_usage : image_usage;
	const char *kind = flavor ? "flavor" : "image";
	struct cli_common co = { .timeout_s = 30 };
	json_t *body = json_object(), *specs = json_object(), *props = json_object();
	char type[32];
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		long v = 0;
		int r = cli_common_opt(ctx, c, &co);
		static const char *const keys[] = { "vcpus", "ram_mb", "disk_gb", NULL, "url",
						    "checksum", "disk_format", "min_disk_gb",
						    NULL, NULL, "ephemeral_gb", "swap_mb" };

		if (r < 0)
			goto usage;
		if (r == 0)
			continue;
		if (c == CLI_OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, usage);
			json_decref(body);
			json_decref(specs);
			json_decref(props);
			return CLI_OK;
		}
		if (c == C_SPEC || c == C_PROP) {
			char *eq = strchr(optarg, '=');

			if (!eq || eq == optarg)
				goto usage;
			if ((c == C_SPEC) != flavor) {
				cli_error(ctx, "%s: %s is for %s add", kind,
					  c == C_SPEC ? "--spec" : "--property",
					  c == C_SPEC ? "flavor" : "image");
				goto usage;
			}
			*eq = '\0';
			json_object_set_new(c == C_SPEC ? specs : props, optarg, json_string(eq + 1));
		} else if ((c == C_EPH || c == C_SWAP) && !flavor) {
			cli_error(ctx, "image: --%s is for flavor add",
				  c == C_EPH ? "ephemeral-gb" : "swap-mb");
			goto usage;
		} else if (c == C_VCPUS || c == C_RAM || c == C_DISK || c == C_MIN || c == C_EPH ||
			   c == C_SWAP) {
			if (parse_long(optarg, 0, 1L << 30, &v) < 0) {
				const char *opt = "?";

				for (size_t i = 0; opts[i].name; i++)
					if (opts[i].val == c)
						opt = opts[i].name;
				cli_error(ctx, "--%s: expected a number, got '%s'", opt, optarg);
				goto usage;
			}
			json_object_set_new(body, keys[c - C_VCPUS], json_integer(v));
		} else if (c == C_PRIVATE && !flavor) {
			json_object_set_new(body, "visibility", json_string("private"));
		} else if (c >= C_URL && c <= C_FMT) {
			json_object_set_new(body, keys[c - C_VCPUS], json_string(optarg));
		} else {
			goto usage;
		}
	}
	if (argc - optind == 1 && strcmp(argv[optind], "list") == 0) {
		json_decref(body);
		json_decref(specs);
		json_decref(props);
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
		if (add && !flavor && json_object_size(props))
			json_object_set(body, "properties", props);
		if (add && !flavor && !json_object_get(body, "disk_format"))
			json_object_set_new(body, "disk_format", json_string("qcow2"));
		if (add && flavor && !json_object_get(body, "disk_gb"))
			json_object_set_new(body, "disk_gb", json_integer(0));
		if (!add) {
			json_decref(body);
			body = json_pack("{s:s}", "name", argv[optind + 1]);
		}
		if (add && !flavor && co.project)
			json_object_set_new(body, "project", json_string(co.project));
		snprintf(type, sizeof(type), "%s.%s", kind, argv[optind]);
		json_decref(specs);
		json_decref(props);
		return cli_request_print(ctx, &co, type, body, add ? (flavor ? fcols : icols) : NULL,
			      flavor ? fheads : iheads);
	}
	if (!flavor && argc - optind == 3 && (strcmp(argv[optind], "share") == 0 ||
					      strcmp(argv[optind], "unshare") == 0)) {
		static const char *const scols[] = { "name", "with", "shared", NULL };
		static const char *const sheads[] = { "NAME", "WITH", "SHARED" };

		json_decref(body);
		json_decref(specs);
		json_decref(props);
		body = json_pack("{s:s, s:s}", "name", argv[optind + 1], "with", argv[optind + 2]);
		if (co.project)
			json_object_set_new(body, "project", json_string(co.project));
		snprintf(type, sizeof(type), "image.%s", argv[optind]);
		return cli_request_print(ctx, &co, type, body, scols, sheads);
	}
usage:
	json_decref(body);
	json_decref(specs);
	json_decref(props);
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
