/*
 * stratus-agent: the per-host compute agent.
 *
 *   stratus-agent [-c FILE] [-n] [-d]          run the daemon (issue 6)
 *   stratus-agent [-c FILE] SUBCOMMAND ARGS    operator tools (table below)
 */
#define LOG_TAG "agent"
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/commands.h"
#include "bus/bus.h"
#include "core/core.h"
#include "images/images.h"
#include "vmm/vmm.h"

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} subcommands[] = {
	{ "host-info", agent_cmd_host_info, "host CPUs, NUMA nodes and hugepages as JSON" },
	{ "render-domain", agent_cmd_render_domain, "the libvirt domain XML for an instance spec" },
	{ "image", agent_cmd_image, "fetch, inspect, list and evict cached images" },
	{ "seed", agent_cmd_seed, "build a cloud-init seed disk for an instance spec" },
	{ "port-filter", agent_cmd_port_filter, "a port's anti-spoofing filter: render, drops" },
	{ "secgroup", agent_cmd_secgroup, "the security groups nft script: render" },
};

static struct log_config log_cfg;
static struct bus_config bus_cfg;
static struct agent_config agent_cfg;
static struct vmm_config vmm_cfg;
static struct img_config img_cfg;
static struct agent *the_agent;
const char *agent_config_path;

static void on_signal(int sig)
{
	(void)sig;
	if (the_agent)
		agent_stop(the_agent);
}

static int run_daemon(void)
{
	struct sigaction sa = { .sa_handler = on_signal };
	_cleanup_free_ char *lock_path = NULL;
	int r, lock_fd = -1;

	/* one agent per state dir (its store.db) */
	if (asprintf(&lock_path, "%s/agent.pid", agent_cfg.state_dir) < 0)
		return 1;
	if (daemon_lock("stratus-agent", lock_path, &lock_fd) < 0) {
		fprintf(stderr, "%s\n", err_msg());
		return 1;
	}
	if (!bus_cfg.group_id)
		bus_cfg.group_id = strdup("stratus-agent");
	r = agent_new(&agent_cfg, &bus_cfg, &vmm_cfg, &img_cfg, &the_agent);
	if (r < 0) {
		log_error("cannot start: %s", err_msg());
		daemon_unlock(lock_path, lock_fd);
		return 1;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	r = agent_run(the_agent);
	agent_free(the_agent); /* finishes work in flight, flushes the producer */
	the_agent = NULL;
	log_info("agent stopped");
	daemon_unlock(lock_path, lock_fd);
	return r < 0 ? 1 : 0;
}

static int validate(void *ud)
{
	int r = agent_config_check(ud);

	return r < 0 ? r : vmm_config_check(&vmm_cfg);
}

int main(int argc, char **argv)
{
	const struct cfg_section sections[] = {
		{ .name = "log", .fields = log_config_fields, .dst = &log_cfg },
		{ .name = "bus", .fields = bus_config_fields, .dst = &bus_cfg },
		{ .name = "agent", .fields = agent_config_fields, .dst = &agent_cfg },
		{ .name = "vmm", .fields = vmm_config_fields, .dst = &vmm_cfg },
		{ .name = "images", .fields = img_config_fields, .dst = &img_cfg },
		{ 0 },
	};
	char extra[1024];
	size_t off = 0;

	off += (size_t)snprintf(extra, sizeof(extra), "subcommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(subcommands) && off < sizeof(extra); i++)
		off += (size_t)snprintf(extra + off, sizeof(extra) - off, "  %-14s %s\n",
					subcommands[i].name, subcommands[i].summary);

	struct daemon_opts o = {
		.prog = "stratus-agent",
		.summary = "the per-host compute agent (without a subcommand: the daemon)",
		.usage_extra = extra,
		.default_config = "/etc/stratus/stratus.yaml",
		.sections = sections,
		.log = &log_cfg,
		.validate = validate,
		.validate_ud = &agent_cfg,
	};
	int argi, r;

	r = daemon_setup(&o, argc, argv, &argi);
	if (r > 0)
		return r - 1;
	agent_config_path = o.config_path;
	if (argi < argc) {
		for (size_t i = 0; i < ARRAY_SIZE(subcommands); i++) {
			if (strcmp(argv[argi], subcommands[i].name) == 0) {
				r = subcommands[i].run(argc - argi, argv + argi);
				goto out;
			}
		}
		fprintf(stderr, "stratus-agent: unknown subcommand '%s' (try --help)\n", argv[argi]);
		r = 2;
		goto out;
	}
	r = run_daemon();
out:
	cfg_free(log_config_fields, &log_cfg);
	bus_config_free(&bus_cfg);
	agent_config_free(&agent_cfg);
	vmm_config_free(&vmm_cfg);
	img_config_free(&img_cfg);
	return r;
}
