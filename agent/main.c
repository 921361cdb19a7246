/* stratus-agent: the per-host compute agent */
#define LOG_TAG "agent"
#include <stdio.h>

#include "bus/bus.h"
#include "core/core.h"

static struct log_config log_cfg;
static struct bus_config bus_cfg;

int main(int argc, char **argv)
{
	const struct cfg_section sections[] = {
		{ .name = "log", .fields = log_config_fields, .dst = &log_cfg },
		{ .name = "bus", .fields = bus_config_fields, .dst = &bus_cfg },
		{ 0 },
	};
	struct daemon_opts o = {
		.prog = "stratus-agent",
		.summary = "the per-host compute agent",
		.default_config = "/etc/stratus/stratus.yaml",
		.sections = sections,
		.log = &log_cfg,
	};
	int argi, r;

	r = daemon_setup(&o, argc, argv, &argi);
	if (r > 0)
		return r - 1;
	fprintf(stderr, "%s: not implemented yet (issue 6): the configuration loads, the service does not run\n",
		o.prog);
	cfg_free(log_config_fields, &log_cfg);
	bus_config_free(&bus_cfg);
	return 1;
}
