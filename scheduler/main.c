/*
 * stratus-scheduler: the central scheduler with quotas.
 *
 *   stratus-scheduler [-c FILE] [-n] [-d]
 *
 * Thin: load the config, open the state (scheduler/), and run the loop that
 * feeds messages from the bus to sched_handle and sends what it returns.
 */
#define LOG_TAG "scheduler"
#include <stdio.h>

#include "bus/bus.h"
#include "core/core.h"
#include "scheduler/scheduler.h"

static struct log_config log_cfg;
static struct bus_config bus_cfg;
static struct sched_config sched_cfg;

static int validate(void *ud)
{
	return sched_config_check(ud);
}

int main(int argc, char **argv)
{
	const struct cfg_section sections[] = {
		{ .name = "log", .fields = log_config_fields, .dst = &log_cfg },
		{ .name = "bus", .fields = bus_config_fields, .dst = &bus_cfg },
		{ .name = "scheduler", .fields = sched_config_fields, .dst = &sched_cfg },
		{ 0 },
	};
	struct daemon_opts o = {
		.prog = "stratus-scheduler",
		.summary = "the central scheduler with quotas",
		.default_config = "/etc/stratus/stratus.yaml",
		.sections = sections,
		.log = &log_cfg,
		.validate = validate,
		.validate_ud = &sched_cfg,
	};
	struct sched *s = NULL;
	int argi, r, rc = 1;

	r = daemon_setup(&o, argc, argv, &argi);
	if (r > 0) {
		rc = r - 1;
		goto out;
	}
	if (sched_open(&sched_cfg, &s) < 0) {
		log_error("%s", err_msg());
		goto out;
	}
	log_error("the bus loop is not wired yet (issue 7, phase 2)");
out:
	sched_close(s);
	cfg_free(log_config_fields, &log_cfg);
	bus_config_free(&bus_cfg);
	sched_config_free(&sched_cfg);
	return rc;
}
