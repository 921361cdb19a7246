/*
 * agent: the per-host compute daemon. It joins the bus, images, metadata
 * and vmm modules: commands arrive on stratus.host.<host>, every state
 * change leaves as an event on stratus.events, reports go to
 * stratus.metrics, and the local store (agent/store.h) records what the
 * agent promised so a restart can reconcile it against libvirt.
 * See docs/agent.md.
 */
#ifndef STRATUS_AGENT_H
#define STRATUS_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"

/* agent.network: the instances' network on this host. */
struct agent_net_config {
	char *bridge;        /* Linux bridge the guests' NICs join */
	char *cidr;          /* 10.77.0.0/24 */
	char *range_start;   /* first address handed out */
	char *range_end;     /* last address handed out */
	char *gateway;
	struct cfg_strlist dns;
	/* derived by agent_config_check: */
	uint32_t first, last; /* host order */
	int prefix;
};

/* The agent's own keys; the vmm and images parts are embedded sections. */
struct agent_config {
	char *host;                  /* default: the machine's host name */
	char *availability_zone;
	double cpu_allocation_ratio;
	double ram_allocation_ratio;
	long reserved_host_memory_mb;
	long reserved_host_cpus;
	char *metadata_address;
	char *state_dir;             /* store.db lives here */
	char *instances_dir;         /* overlays, seeds, console logs */
	long build_concurrency;
	int64_t report_interval_ms;
	int64_t reconcile_interval_ms;
	char *metrics_listen;        /* ADDR:PORT for Prometheus, "" = off */
	bool reap_orphans;           /* destroy running domains of ours the store does not know */
	struct agent_net_config network;
};
extern const struct cfg_field agent_config_fields[];
/* Cross-field checks and derived values (address range inside the CIDR,
 * gateway outside the range, host name). Returns <0 with err_msg(). */
int agent_config_check(struct agent_config *c);
void agent_config_free(struct agent_config *c);

#endif
