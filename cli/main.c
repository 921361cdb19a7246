/* stratusctl: the Stratus command-line client (the frame and the command table) */
#define LOG_TAG "cli"
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/tenant.h"
#include "core/core.h"

#define DEFAULT_CONFIG "/etc/stratus/stratus.yaml"

/* THE command table: a command group is one row and one file. */
static const struct cli_command cli_commands[] = {
	{ "bus", "operator: send and tail messages on the bus", cli_bus },
	/* cli/instance.c and cli/catalog.c: requests to stratus-scheduler */
	{ "boot", "boot instances and wait until they are active", cli_boot },
	{ "delete", "delete an instance (waits until deleted)", cli_delete },
	{ "stop", "stop an instance", cli_stop },
	{ "start", "start a stopped instance", cli_start },
	{ "reboot", "reboot an instance", cli_reboot },
	{ "console", "print an instance's serial console log; --attach: type into it", cli_console },
	{ "list", "list the project's instances", cli_list },
	{ "show", "show one instance", cli_show },
	{ "rebuild", "reinstall an instance from its (or a new) image, same address", cli_rebuild },
	{ "resize", "give an instance a new flavor on its host (then confirm or revert)", cli_resize },
	{ "resize-confirm", "keep a resized instance's new flavor", cli_resize_confirm },
	{ "resize-revert", "put a resized instance back on its old flavor", cli_resize_revert },
	{ "snapshot", "save an instance's disk as a new private image (NAME IMAGE_NAME)", cli_snapshot },
	{ "migrate", "admin: move an instance to another host (--host H; --cold: stop, copy, start)", cli_migrate },
	{ "quota", "show or set a project's quota", cli_quota },
	{ "flavor", "list, add, remove flavors", cli_flavor },
	{ "image", "list, add, remove, share images", cli_image },
	{ "secgroup", "security groups: list, show, create, delete; rule add, delete", cli_secgroup },
	{ "host", "list hosts with usage and steal; forget NAME: drop its pinned key; admin: disable, enable, drain, evacuate NAME", cli_host },
	{ "credential", "admin: create, list, revoke credentials", cli_credential },
	{ "volume", "create, list, show, delete, attach, detach volumes", cli_volume },
};

/*
 * Global options may also follow the command (`stratusctl list --json`, as
 * users type `openstack server list -f json`): their long forms are taken
 * out of the command's arguments, up to a "--", before the command parses
 * the rest. Short forms after the command stay the command's own. Returns
 * the new argument count; *cfg, *boot are set to values found, and 0, or
 * -1 with the error printed for a missing value.
 */
static int hoist_globals(struct cli_ctx *ctx, int argc, char **argv, const char **config,
			 const char **bootstrap, bool *debug)
{
	static const struct {
		const char *name;
		bool has_arg;
	} globals[] = {
		{ "--json", false }, { "--debug", false }, { "--config", true }, { "--bootstrap", true },
		{ "--credential", true },
	};
	int out = 1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = NULL;
		size_t g;

		if (strcmp(a, "--") == 0) {
			while (i < argc)
				argv[out++] = argv[i++];
			break;
		}
		for (g = 0; g < ARRAY_SIZE(globals); g++) {
			size_t n = strlen(globals[g].name);

			if (strncmp(a, globals[g].name, n) != 0)
				continue;
			if (a[n] == '\0')
				break;
			if (a[n] == '=' && globals[g].has_arg) {
				val = a + n + 1;
				break;
			}
		}
		if (g == ARRAY_SIZE(globals)) {
			argv[out++] = argv[i];
			continue;
		}
		if (globals[g].has_arg && !val) {
			if (i + 1 >= argc) {
				cli_error(ctx, "option %s needs a value", a);
				return -1;
			}
			val = argv[++i];
		}
		switch (g) {
		case 0:
			ctx->json = true;
			break;
		case 1:
			*debug = true;
			break;
		case 2:
			*config = val;
			break;
		case 3:
			*bootstrap = val;
			break;
		default:
			setenv("STRATUS_CREDENTIAL", val, 1); /* read by cli/credential.c */
			break;
		}
	}
	argv[out] = NULL;
	return out;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: stratusctl [OPTIONS] COMMAND [ARGS...]\n"
		"The Stratus command-line client.\n\n"
		"Options:\n"
		"  -p, --project P         the project of tenant commands (default: $STRATUS_PROJECT,\n"
		"                          else the credential's, else 'default')\n"
		"  -C, --credential FILE   sign requests with FILE (mode 0600; default:\n"
		"                          $STRATUS_CREDENTIAL, ~/.config/stratus/credential,\n"
		"                          /etc/stratus/credential)\n"
		"  -c, --config FILE       read the bus: section of FILE (default: $STRATUS_CONFIG,\n"
		"                          then " DEFAULT_CONFIG " if it exists)\n"
		"  -b, --bootstrap HOST:PORT  Kafka bootstrap servers (default: bus.bootstrap_servers,\n"
		"                          else the address file of stratus-bus: bus.address_file,\n"
		"                          $" BUS_ADDR_FILE_ENV ", " BUS_DEFAULT_ADDR_FILE ")\n"
		"      --json              machine-readable output: one JSON document (bus tail: one\n"
		"                          per envelope, a line each)\n"
		"  -d, --debug             log at debug level on stderr\n"
		"  -h, --help              this help; COMMAND --help for a command's\n"
		"  -V, --version           print the version\n"
		"The long options may also follow the command: stratusctl list --json.\n\n"
		"Commands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(cli_commands); i++)
		fprintf(f, "  %-10s %s\n", cli_commands[i].name, cli_commands[i].summary);
	fprintf(f, "\nExit status: 0 ok, 1 error, 2 usage, 3 no answer in time.\n");
}

int main(int argc, char **argv)
{
	enum { OPT_JSON = 256 };
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "project", required_argument, NULL, 'p' },
		{ "credential", required_argument, NULL, 'C' },
		{ "bootstrap", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_ctx ctx = { .prog = "stratusctl" };
	const struct cfg_section sections[] = {
		{ .name = "bus", .fields = bus_config_fields, .dst = &ctx.bus },
		{ 0 },
	};
	const char *config = NULL, *bootstrap = NULL;
	const struct cli_command *cmd = NULL;
	bool debug = false;
	int c, r, rc = CLI_USAGE;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+c:b:p:C:dhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'b':
			bootstrap = optarg;
			break;
		case 'p':
			/* read by the tenant commands (cli/tenant.c) */
			setenv("STRATUS_PROJECT", optarg, 1);
			break;
		case 'C':
			/* read by the session (cli/credential.c) */
			setenv("STRATUS_CREDENTIAL", optarg, 1);
			break;
		case OPT_JSON:
			ctx.json = true;
			break;
		case 'd':
			debug = true;
			break;
		case 'h':
			usage(stdout);
			return CLI_OK;
		case 'V':
			printf("stratusctl %s\n", STRATUS_VERSION);
			return CLI_OK;
		default:
			cli_error(&ctx, "unknown option or missing argument: %s", argv[optind - 1]);
			usage(stderr);
			return CLI_USAGE;
		}
	}
	if (optind >= argc) {
		cli_error(&ctx, "no command given");
		usage(stderr);
		return CLI_USAGE;
	}
	for (size_t i = 0; i < ARRAY_SIZE(cli_commands); i++)
		if (strcmp(cli_commands[i].name, argv[optind]) == 0)
			cmd = &cli_commands[i];
	if (!cmd) {
		cli_error(&ctx, "unknown command '%s'", argv[optind]);
		usage(stderr);
		return CLI_USAGE;
	}
	{
		int n = hoist_globals(&ctx, argc - optind, argv + optind, &config, &bootstrap, &debug);

		if (n < 0) {
			usage(stderr);
			return CLI_USAGE;
		}
		argc = optind + n;
	}
	log_init("stratusctl", false, debug ? LOG_LVL_DEBUG : LOG_LVL_WARN);

	if (!config)
		config = getenv("STRATUS_CONFIG");
	if (!config && access(DEFAULT_CONFIG, F_OK) == 0)
		config = DEFAULT_CONFIG;
	r = config ? cfg_load_file(config, sections) : cfg_load_string("(defaults)", "", 0, sections);
	if (r < 0) {
		cli_error(&ctx, "%s", err_msg());
		rc = CLI_ERROR;
		goto out;
	}
	if (bootstrap) {
		free(ctx.bus.bootstrap_servers);
		ctx.bus.bootstrap_servers = strdup(bootstrap);
	}
	if (!ctx.bus.client_id)
		ctx.bus.client_id = strdup("stratusctl");
	rc = cmd->run(&ctx, argc - optind, argv + optind);
out:
	bus_config_free(&ctx.bus);
	return rc;
}
