/*
 * agent: the per-host compute daemon. It joins the bus, images, metadata
 * and vmm modules: commands arrive on stratus.host.<host>, every state
 * change leaves as an event on stratus.events, reports go to
 * stratus.metrics, and the host's instance store (store/store.h) records
 * what the agent promised so a restart can reconcile it against libvirt.
 * An instance.build is parsed once, at the agent's edge (model/model.h,
 * model_spec_parse).
 * See docs/agent.md.
 */
#ifndef STRATUS_AGENT_H
#define STRATUS_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"

enum agent_filter { AGENT_FILTER_NFTABLES, AGENT_FILTER_NONE, AGENT_FILTER_LAST };
extern const char *const agent_filter_names[];

/* agent.network: the instances' network on this host. */
struct agent_net_config {
	char *cidr;          /* 10.77.0.0/24 */
	char *range_start;   /* first address handed out */
	char *range_end;     /* last address handed out */
	char *gateway;
	struct cfg_strlist dns;
	/* one dnsmasq --dhcp-hostsdir entry per instance ("MAC,IP,hostname" in
	 * a file named by the uuid); "" = none */
	char *dhcp_hosts_dir;
	/* dnsmasq's pid file: it gets SIGHUP when an entry is removed (dnsmasq
	 * forgets removed entries only then); "" = none */
	char *dhcp_pid_file;
	/* anti-spoofing on every port (agent/netfilter.c): nftables or none */
	enum agent_filter filter;
	char *nft;       /* the nft binary */
	long port_mark;  /* the mark of frames a port filter passed (metadata.port_mark) */
	/* derived by agent_config_check: */
	uint32_t first, last; /* host order */
	int prefix;
};

/* agent.console: the console proxy (agent/console.c). */
struct agent_console_config {
	char *listen;          /* ADDR:PORT, "" = no proxy */
	char *advertise;       /* what clients are told to connect to; "" = listen */
	int64_t token_ttl_ms;  /* a console token's lifetime */
	char *web_dir;         /* xterm.js and xterm.css for the console page */
};

/* The agent's own keys. Paths of instance files and the bridge are the
 * vmm section's (vmm.instances_dir, vmm.console_log_dir, vmm.bridge), the
 * image cache the images section's. */
struct agent_config {
	char *host;                  /* default: the machine's host name */
	char *availability_zone;
	double cpu_allocation_ratio;
	double ram_allocation_ratio;
	long reserved_host_memory_mb;
	long reserved_host_cpus;
	char *metadata_address;
	char *state_dir;             /* store.db lives here */
	long build_concurrency;
	int64_t report_interval_ms;
	int64_t reconcile_interval_ms;
	char *metrics_listen;        /* ADDR:PORT for Prometheus, "" = off */
	bool reap_orphans;           /* destroy running domains of ours the store does not know */
	struct cfg_strlist scheduler_keys; /* Ed25519 public keys (base64 or files) commands need */
	int64_t command_max_age_ms;  /* commands with an older ts are refused; 0 = no limit */
	char *volume_dir;            /* volumes' files (made on the first volume.create) */
	struct agent_net_config network;
	char *migration_uri;         /* this host's libvirtd as other hosts reach it; "" = none */
	struct agent_console_config console;
};
extern const struct cfg_field agent_config_fields[];
/* Cross-field checks and derived values (address range inside the CIDR,
 * gateway outside the range, host name). Returns <0 with err_msg(). */
int agent_config_check(struct agent_config *c);
void agent_config_free(struct agent_config *c);

/* ---- the daemon ---------------------------------------------------------- */

struct agent;
struct bus_config;
struct vmm_config;
struct img_config;
struct bus_message;

/*
 * Wire the modules: open the store, read the topology, connect to libvirt
 * (with its event thread), open the image cache, rebuild pCPU/hugepage
 * usage from the store, start the workers, the producer and the consumer
 * of stratus.host.<host>. The configs are borrowed and must outlive *out.
 */
int agent_new(const struct agent_config *cfg, const struct bus_config *bus,
	      const struct vmm_config *vmm, const struct img_config *img, struct agent **out);
/* Reconcile the store against libvirt once (done at start and every
 * reconcile_interval by agent_run). */
int agent_reconcile(struct agent *a);
/* Consume commands, report, reconcile until agent_stop(). */
int agent_run(struct agent *a);
/* Async-signal-safe: ask agent_run to return. */
void agent_stop(struct agent *a);
/* Stop taking work, finish (or roll back) builds in flight, flush, free.
 * Running guests are never touched. */
void agent_free(struct agent *a);

/* The consumer's handler (exposed for tests and benchmarks). */
int agent_handle_message(void *opaque, const struct bus_message *m);
/* Wait until no job is queued or running (tests, benchmarks). */
void agent_drain(struct agent *a);

#endif
