/*
 * cli: stratusctl, the Stratus command-line client.
 *
 * The frame (cli/main.c) parses the global options and dispatches to a
 * row of the command table; each command group lives in its own file
 * (cli/bus.c, cli/instance.c, cli/catalog.c ...) and adds one row to cli_commands[]
 * in cli/main.c. A command returns the process exit code.
 */
#ifndef STRATUS_CLI_H
#define STRATUS_CLI_H

#include <stdbool.h>

#include "bus/bus.h"

/* Exit codes of every command (docs/stratusctl.md). */
enum cli_exit {
	CLI_OK = 0,      /* done */
	CLI_ERROR = 1,   /* the request failed: invalid input, bus unreachable ... */
	CLI_USAGE = 2,   /* bad command line */
};

/* What the global options and the config file give every command. */
struct cli_ctx {
	const char *prog;          /* "stratusctl" */
	bool json;                 /* --json: machine-readable output */
	struct bus_config bus;     /* config bus: section, --bootstrap applied */
};

struct cli_command {
	const char *name;
	const char *summary;
	/* argv[0] is the command name; returns an enum cli_exit */
	int (*run)(struct cli_ctx *ctx, int argc, char **argv);
};

/* cli/bus.c: operator commands on the message bus */
int cli_bus(struct cli_ctx *ctx, int argc, char **argv);

/* Print "stratusctl: <msg>" on stderr. */
void cli_error(const struct cli_ctx *ctx, const char *fmt, ...) PRINTF_LIKE(2, 3);

#endif
