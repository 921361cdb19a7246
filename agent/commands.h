/*
 * The operator subcommands of stratus-agent. Each takes its own argv
 * (argv[0] is the subcommand name) and returns the process exit code:
 * 0 success, 1 failure (message on stderr), 2 usage error.
 * Each lives in its own file: agent/cmd_*.c.
 */
#ifndef STRATUS_AGENT_COMMANDS_H
#define STRATUS_AGENT_COMMANDS_H

/* The configuration file stratus-agent loaded (-c, $STRATUS_CONFIG or the
 * default path), NULL when it runs on defaults: subcommands read their
 * sections from it, so `stratus-agent -c FILE image list` sees FILE's cache. */
extern const char *agent_config_path;

/* host-info [--sysfs ROOT]: host topology as JSON (vmm) */
int agent_cmd_host_info(int argc, char **argv);
/* render-domain [--sysfs ROOT] SPEC.json: the domain XML (vmm) */
int agent_cmd_render_domain(int argc, char **argv);
/* image fetch|inspect|list|evict ... (images) */
int agent_cmd_image(int argc, char **argv);
/* seed --instance SPEC.json --format nocloud|configdrive -o FILE (metadata) */
int agent_cmd_seed(int argc, char **argv);
/* port-filter render|drops ...: a port's nftables filter (agent/cmd_filter.c) */
int agent_cmd_port_filter(int argc, char **argv);
int agent_cmd_secgroup(int argc, char **argv);

#endif
