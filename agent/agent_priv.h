/* The agent's internals, shared by its files and its tests. */
#ifndef STRATUS_AGENT_PRIV_H
#define STRATUS_AGENT_PRIV_H

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>

#include "agent/agent.h"
#include "agent/console.h"
#include "store/store.h"
#include "bus/bus.h"
#include "model/model.h"
#include "images/images.h"
#include "metadata/metadata.h"
#include "vmm/vmm.h"

#define AGENT_MAX_WORKERS 64
#define AGENT_CONSOLE_DEFAULT_LINES 50
#define AGENT_CONSOLE_MAX_BYTES (64 * 1024)
#define AGENT_KEY_LEN BUS_KEY_LEN

/*
 * A command waiting for (or in) a worker. It carries no JSON: an
 * instance.build arrives here as the spec model_spec_parse validated at the
 * agent's edge (agent_handle_message, or reconcile from the stored
 * spec_json), so no build step can parse the message again.
 */
struct job {
	char type[BUS_TYPE_MAX];
	char uuid[UUID_STRLEN];
	char request_id[UUID_STRLEN];
	struct instance_spec *spec; /* instance.build: owned; NULL for other types */
	const char *reason;         /* instance.sync: why (a static string), or NULL */
	bool hard;                  /* instance.reboot: "hard": true, no soft step */
	int64_t queued_ns;
	struct job *next;
};

/* Build durations for the Prometheus histogram (seconds). */
#define AGENT_HIST_BUCKETS 10
extern const double agent_hist_bounds[AGENT_HIST_BUCKETS];

/* Migration durations / downtimes (migrate.c). */
#define AGENT_MIG_BUCKETS 10

struct agent_metrics {
	uint64_t builds_ok, builds_failed, commands, rejected_fits;
	uint64_t reannounces;  /* re-announces after a broker change */
	uint64_t refused;          /* commands refused at the edge (signature, age, seal) */
	uint64_t filters_applied, filters_restored; /* port filters (netfilter.c) */
	uint64_t filter_ports;                      /* ports filtered at the last reconcile */
	uint64_t sg_applies, sg_restored, sg_ports; /* security groups (secgroup.c) */
	uint64_t hist[AGENT_HIST_BUCKETS + 1]; /* last: +Inf */
	double hist_sum;
	uint64_t hist_count;
	uint64_t migrations_ok, migrations_failed;
	uint64_t mig_dur[AGENT_MIG_BUCKETS + 1], mig_down[AGENT_MIG_BUCKETS + 1];
	double mig_dur_sum, mig_down_sum;
};

/* Per-instance sample kept between reports for rates and steal. */
struct agent_sample {
	char uuid[UUID_STRLEN];
	struct vmm_dom_stats last;
	bool have_last;
	double steal_pct, steal_avg; /* last interval, exponential moving average */
	uint64_t steal_ns_total;
};

struct agent {
	const struct agent_config *cfg;
	const struct bus_config *bus_cfg;
	const struct vmm_config *vmm_cfg;
	const struct img_config *img_cfg;
	char *topic;               /* stratus.host.<host> */
	char *source;              /* "agent/<host>" */
	char *store_path;
	enum vmm_virt virt;

	struct store *store;
	struct vmm_topology *topo;
	struct vmm_conn *conn;
	struct img_cache *images;
	struct bus_producer *prod;
	struct bus_consumer *cons;

	/* pCPU and hugepage usage: claims happen under this lock */
	pthread_mutex_t usage_lock;
	struct vmm_host_usage usage;

	/* the job queue: one job in flight per instance */
	pthread_mutex_t q_lock;
	pthread_cond_t q_cond, q_idle;
	struct job *q_head;
	char busy[AGENT_MAX_WORKERS][UUID_STRLEN];
	int n_running;
	bool q_closing;
	pthread_t workers[AGENT_MAX_WORKERS];
	int n_workers;

	/* port filters: one nft transaction at a time (netfilter.c) */
	pthread_mutex_t filter_lock;
	struct agent_sg *sg;       /* security groups (secgroup.c), under filter_lock */

	/* metrics and samples, under m_lock */
	pthread_mutex_t m_lock;
	struct agent_metrics m;
	struct agent_sample *samples;
	size_t n_samples;
	struct vmm_host_cpu host_cpu_last;
	bool have_host_cpu;
	double host_steal_pct, host_steal_avg;
	bool degraded;             /* libvirtd unreachable */
	bool reconciled;           /* the start-up reconcile has run */
	uint64_t bus_moves;        /* the bus clients' reconnects seen so far */
	struct prom_server *http;    /* /metrics, /healthz (core/prom.h) */

	/* trust.c: the scheduler keys commands must be signed with, and this
	 * host's X25519 key pair that builds' secrets are sealed to */
	unsigned char (*sched_keys)[AGENT_KEY_LEN];
	size_t n_sched_keys;
	unsigned char box_priv[AGENT_KEY_LEN], box_pub[AGENT_KEY_LEN];
	char box_pub_text[48];      /* base64, in every host report */
	/* and its Ed25519 key pair (<state_dir>/host-sign.key) that signs
	 * everything it publishes; the public part is the report's sign_key */
	unsigned char sign_priv[AGENT_KEY_LEN], sign_pub[AGENT_KEY_LEN];
	char sign_pub_text[48];

	char *volume_dir;          /* agent.volume_dir: <uuid>.img files (volumes.c) */
	struct agent_console *console; /* console tokens and proxy (agent/console.c) */

	volatile sig_atomic_t stopping;
};

/* jobs.c */
/* Queue a command without a spec (delete, stop, start, reboot, sync);
 * reason: instance.sync's, a static string, else NULL. */
int agent_enqueue(struct agent *a, const char *type, const char *uuid, const char *request_id,
		  const char *reason);
/* Queue instance.reboot; hard: no soft step (vmm_reboot). */
int agent_enqueue_reboot(struct agent *a, const char *uuid, const char *request_id, bool hard);
/* The pending-request type of a hard reboot in the agent's store, so that a
 * restart resumes it hard (the bus type stays instance.reboot). */
#define AGENT_PENDING_REBOOT_HARD "instance.reboot.hard"
/* Queue instance.build for spec->uuid. The spec moves into the job: *spec
 * is emptied, and freed on failure too; the caller only forgets it. */
int agent_enqueue_build(struct agent *a, const char *request_id, struct instance_spec *spec);
/* The same for instance.rebuild (the spec of the rebuilt instance). */
int agent_enqueue_rebuild(struct agent *a, const char *request_id, struct instance_spec *spec);
/* The same for a job of TYPE that carries a spec (instance.migrate.prepare). */
int agent_enqueue_spec(struct agent *a, const char *type, const char *request_id,
		       struct instance_spec *spec);
/* An operation accepted at the edge: ROW goes STATE at STEP for E's request
 * (the row changed in memory too) and the request is pending, both durable
 * before the offset is stored (rebuild.c, resize.c). */
int agent_accept_row(struct agent *a, const struct bus_envelope *e, struct store_instance *row,
		     enum instance_state state, const char *step);
int agent_workers_start(struct agent *a);
void agent_workers_stop(struct agent *a);

/* events.c: emit on stratus.events (failures are logged, not fatal). */
void agent_emit_state(struct agent *a, const char *uuid, const char *project,
		      enum instance_state st, const char *reason, const char *request_id,
		      json_t *extra);
void agent_emit_result(struct agent *a, const char *request_id, bool ok, const char *error,
		       json_t *data);
/* A request.result with a ready BODY (taken), e.g. bus_result_sealed's;
 * NULL: an error result saying the answer could not be sealed. */
void agent_emit_result_body(struct agent *a, const char *request_id, json_t *body);
/* Any event TYPE with BODY (taken), signed like the others. */
void agent_emit_event(struct agent *a, const char *type, const char *request_id, json_t *body);
void agent_emit_reschedule(struct agent *a, const char *uuid, const char *project,
			   const char *reason, const char *request_id);

/* A volume.state event for V (request_id may be NULL). */
void agent_emit_volume(struct agent *a, const struct store_volume *v, const char *request_id);

/* volumes.c: volume.create / delete / attach / detach (one handler for the
 * four rows of daemon.c's table); the volumes of a deleted instance made
 * available (agent_cleanup_instance); the reconcile of the volume rows
 * against their files and the domains, and the files without a row. */
int agent_volume_handle(struct agent *a, const struct bus_envelope *e, const char *uuid);
void agent_volumes_instance_gone(struct agent *a, const char *instance);
struct agent_volume_report {
	unsigned records;    /* rows seen */
	unsigned missing;    /* rows whose file is gone: error */
	unsigned orphans;    /* files in volume_dir without a row: reported */
	unsigned fixed;      /* rows an interrupted operation left, settled */
	unsigned reattached; /* disks put back into their instance's domain */
};
int agent_volumes_reconcile(struct agent *a, bool startup, struct agent_volume_report *rep);

/* build.c and ops.c: run in a worker; return 0 or <0 (already reported). */
int agent_do_build(struct agent *a, struct job *j);
int agent_do_delete(struct agent *a, struct job *j);
int agent_do_power(struct agent *a, struct job *j);
int agent_do_sync(struct agent *a, struct job *j);
/* rebuild.c (issue 18): the command at the edge (signed already: opens the
 * sealed secrets, parses the spec once, makes the intent durable), the
 * worker's job, and reconcile of a rebuild interrupted by our death (rolled
 * back: the old disk and spec back, the guest started again). */
int agent_handle_rebuild(struct agent *a, const struct bus_envelope *e, const char *uuid);
int agent_do_rebuild(struct agent *a, struct job *j);
void agent_rebuild_reconcile(struct agent *a, const struct store_instance *row);
/* Define the domain of SPEC on ROW's disk, seed and placement (the kernel
 * and initrd of direct kernel boot acquired for it); started when START
 * (rebuild.c, used by resize.c too). */
int agent_define_domain(struct agent *a, const struct store_instance *row,
			const struct instance_spec *spec, bool start);
/* resize.c (issue 18): instance.resize at the edge (the new spec made once,
 * the flavor before kept in <uuid>.resize.json), instance.resize.confirm
 * and .revert at the edge, their jobs, and reconcile of a row left
 * resizing or reverting by our death (back to the flavor before). */
int agent_handle_resize(struct agent *a, const struct bus_envelope *e, const char *uuid);
int agent_handle_resize_answer(struct agent *a, const struct bus_envelope *e, const char *uuid);
int agent_do_resize(struct agent *a, struct job *j);
int agent_do_resize_answer(struct agent *a, struct job *j);
void agent_resize_reconcile(struct agent *a, const struct store_instance *row);
/* snapshot.c (issue 18): instance.snapshot at the edge (intent durable),
 * the worker's job (quiesce, copy, flatten, upload, `uploaded`), and at
 * start the intent a kill -9 left (guest resumed, files removed, failed). */
int agent_handle_snapshot(struct agent *a, const struct bus_envelope *e, const char *uuid);
int agent_do_snapshot(struct agent *a, struct job *j);
void agent_snapshot_reconcile(struct agent *a, const struct store_instance *row);
/* Undo everything a build of this row made (domain, seed, overlay,
 * DHCP host entry, address, pCPUs, hugepages) and forget it. */
void agent_cleanup_instance(struct agent *a, const struct store_instance *row);
/* The last lines of the instance's serial console. New reference. */
json_t *agent_console_tail(struct agent *a, const char *uuid, long lines);
/* build.c: the row's spec_json, serialized from the struct (the only way
 * the agent writes that column). <0 with err_msg(); row untouched then. */
int agent_row_set_spec(struct store_instance *row, const struct instance_spec *spec);

/* domain.c: the one place that turns an instance into its domain, used by
 * the build's define step and by `stratus-agent render-domain`. */
/* Paths of an instance's files (file: ".qcow2", ".seed.iso", ".log"; the
 * console log lives in console_log_dir, the rest in instances_dir):
 * malloc'd, caller frees; NULL when out of memory. */
char *agent_instance_file(const struct vmm_config *vc, const char *uuid, const char *file);
/* local_disks.c: the flavor's ephemeral and swap disks, beside the root
 * disk as <uuid>.ephemeral0.qcow2 and <uuid>.swap.qcow2 (images/local.c
 * formats them). create: each the flavor has is made when missing, kept
 * when there (reboot, stop/start, a restarted build); fresh removes them
 * first (rebuild: Nova gives a rebuilt server new local disks). remove:
 * both, when there (the instance's cleanup). */
#define AGENT_EPHEMERAL_SUFFIX ".ephemeral0.qcow2"
#define AGENT_SWAP_SUFFIX ".swap.qcow2"
int agent_local_disks_create(struct agent *a, const struct instance_spec *spec, bool fresh);
void agent_local_disks_remove(struct agent *a, const char *uuid);
char *agent_instance_path(struct agent *a, const char *uuid, const char *file);
/* What the caller made for the instance (paths used as given). */
struct agent_domain_files {
	const char *disk;            /* the qcow2 overlay */
	const char *seed;            /* the seed ISO; NULL: none */
	const char *console_log;     /* NULL: pty only */
	const char *kernel, *initrd; /* direct kernel boot; NULL: boot the disk */
};
/* The domain XML the agent boots: vmm_domain_params from the spec (its
 * image.cmdline, only with a kernel), the vmm config (vmm.bridge; "" is no
 * NIC), virt and the files, then vmm_domain_xml. *xml is malloc'd (caller
 * frees), untouched on failure (<0 with err_msg()). */
int agent_domain_xml(const struct instance_spec *spec, const struct vmm_placement *pl,
		     const struct vmm_config *vc, enum vmm_virt virt,
		     const struct agent_domain_files *f, char **xml);

/*
 * Fault injection for the crash tests: with STRATUS_FAULT=KIND:WHAT in the
 * environment the agent kills itself (SIGKILL, like kill -9) at that point:
 * "build:STEP" right after a build step is durable, "accept:TYPE" right
 * after a command's intent is durable and before it is queued.
 */
void agent_fault_point(const char *kind, const char *what);

/* dhcp.c: dnsmasq --dhcp-hostsdir entries (agent.network.dhcp_hosts_dir;
 * every call does nothing when it is ""). */
/* The directory exists (created 0755 if missing), is a directory and is
 * writable by us; "" or NULL is fine. <0 with err_msg() otherwise. */
int agent_dhcp_dir_check(const char *dir);
/* "MAC,IP,hostname\n" (the address's prefix and the host name's domain
 * dropped) into buf. */
int agent_dhcp_line(const char *mac, const char *address, const char *hostname, char *buf,
		    size_t len);
/* Write <dir>/<uuid> atomically. address may carry a /prefix. */
int agent_dhcp_host_write(struct agent *a, const char *uuid, const char *mac,
			  const char *address, const char *hostname);
/* Remove <dir>/<uuid> (gone already is fine; other failures are logged). */
void agent_dhcp_host_remove(struct agent *a, const char *uuid);
/* Write the missing (or different) entries of live instances, remove the
 * entries of instances the store does not hold. */
void agent_dhcp_reconcile(struct agent *a);

/* trust.c: the edge. open: load agent.scheduler_keys, load or create
 * <state_dir>/host-box.key. check: 0 when E is signed by a trusted
 * scheduler key and its ts is within agent.command_max_age of NOW_MS,
 * else -EPERM with err_msg() naming the reason. open_build: the build's
 * sealed secrets opened into BODY (-EBADMSG: tampered or another key). */
int agent_trust_open(struct agent *a);
void agent_trust_close(struct agent *a);
int agent_trust_check(struct agent *a, const struct bus_envelope *e, int64_t now_ms);
int agent_trust_open_build(struct agent *a, json_t *body);
/*
 * netfilter.c: anti-spoofing filters on instance ports, nftables bridge
 * family (docs/agent.md "Port filters"). The port of an instance is the
 * tap AGENT_TAP_PREFIX + the first 8 and the last 4 hex digits of its uuid
 * (the domain's <target dev>), so its filter exists before the guest starts.
 */
#define AGENT_TAP_PREFIX "stx"
#define AGENT_TAP_LEN 16 /* IFNAMSIZ */
#define AGENT_FILTER_TABLE_PREFIX "stratus-"
#define AGENT_FILTER_TABLE_MAX 64
struct agent_port {
	char tap[AGENT_TAP_LEN];
	unsigned char mac[6];
	struct in_addr ip;
	struct in6_addr ll6; /* the EUI-64 link-local address of mac */
};
/* The tap name of an instance; <0 with err_msg() when uuid is no uuid. */
int agent_port_tap(const char *uuid, char out[AGENT_TAP_LEN]);
/* Parse a port (address with or without /prefix). Refuses with err_msg()
 * naming the instance: a bad or multicast/zero MAC, an address that is no
 * IPv4 unicast address. *p untouched on failure. */
int agent_port_parse(const char *uuid, const char *mac, const char *address,
		     struct agent_port *p);
/* "stratus-<bridge>"; <0 with err_msg() for "" or characters nft refuses. */
int agent_filter_table(const char *bridge, char *out, size_t len);
/* nft scripts, appended to sb: the table with its base chains (replacing
 * any), one port's chain and map element (replacing its old one), the
 * removal of a port (absent is fine). */
int agent_filter_base_script(const char *table, struct strbuf *sb);
int agent_filter_port_script(const char *table, const struct agent_port *p, uint32_t mark,
			     struct strbuf *sb);
int agent_filter_unport_script(const char *table, const char *tap, struct strbuf *sb);
size_t agent_filter_port_rule_count(void);
/* The comment (the reason) of port rule i into buf. */
int agent_filter_port_rule_comment(size_t i, char *buf, size_t len);
/* Run `NFT -f` on the script (one transaction). <0 with nft's message. */
int agent_filter_run(const char *nft, const char *script);
/* What the kernel holds (`nft -j list table`); present false: no table. */
struct agent_filter_state {
	bool present;
	json_t *doc;
};
int agent_filter_state_read(const char *nft, const char *table, struct agent_filter_state *s);
void agent_filter_state_free(struct agent_filter_state *s);
bool agent_filter_base_ok(const struct agent_filter_state *s);
/* The same from one chain listing (cheap): what a build checks. */
bool agent_filter_base_quick_ok(const char *nft, const char *table);
/* The port's map element and chain are there with every rule, in order. */
bool agent_filter_port_ok(const struct agent_filter_state *s, const char *tap);
/* Taps that have a port chain in the table; *taps malloc'd, caller frees. */
int agent_filter_port_taps(const struct agent_filter_state *s, char (**taps)[AGENT_TAP_LEN],
			   size_t *n);
/* Packets the port's rule with comment REASON dropped ("spoof-ip" ...). */
int agent_filter_drops(const struct agent_filter_state *s, const char *tap, const char *reason,
		       uint64_t *packets);
/* The agent's side (each does nothing with filter: none or no bridge):
 * sysctl + nft check at start; apply before the guest starts (builds the
 * table if it is missing); remove (logged, not fatal); reconcile: every
 * port of the store checked, missing or changed ones restored (log line,
 * stratus_agent_port_filters_restored_total), ports of no instance removed. */
int agent_filter_init(struct agent *a);
int agent_filter_apply(struct agent *a, const char *uuid, const char *mac, const char *address);
void agent_filter_remove(struct agent *a, const char *uuid);
int agent_filter_reconcile(struct agent *a);
/* Whether ROW's port may exist here (address and MAC, past the network
 * step, until its cleanup): the ports the filters and security groups cover. */
bool agent_row_has_port(const struct store_instance *row);

/* secgroup.c: security groups on the ports (docs/agent.md "Security groups").
 * compile: PROJECTS (project -> secgroup.apply inputs) to the chain part
 * and the members part of TABLE's script; script: both, as one nft -f. */
int agent_sg_compile(const char *table, const json_t *projects, struct strbuf *chains,
		     struct strbuf *sets, char (**taps)[AGENT_TAP_LEN], size_t *n_taps,
		     char ***set_names, size_t *n_sets);
int agent_sg_script(const char *table, const json_t *projects, struct strbuf *out);
/* init: <state_dir>/secgroups.json loaded; update: one project's inputs
 * replace its last (checked, saved; applied when APPLY); apply: the whole
 * state to the kernel; forget: a deleted instance's port; reconcile: the
 * kernel's chains checked and restored, stale ones removed. */
int agent_sg_init(struct agent *a);
void agent_sg_free(struct agent *a);
int agent_sg_update(struct agent *a, const json_t *inputs, bool apply);
int agent_sg_apply(struct agent *a);
void agent_sg_forget(struct agent *a, const char *uuid);
int agent_sg_reconcile(struct agent *a);
/* Sign E (about to be published on stratus.metrics or stratus.events)
 * with this host's signing key; 0 or a negative errno with err_msg(). */
int agent_trust_sign(struct agent *a, struct bus_envelope *e);

/* migrate.c (issue 15): the migration commands at the edge, their jobs,
 * the restart of a `migrating` row (PW: its domain's power state here), the
 * migration metrics (the caller holds m_lock). */
int agent_on_migrate_prepare(struct agent *a, const struct bus_envelope *e, const char *uuid);
int agent_on_migrate_perform(struct agent *a, const struct bus_envelope *e, const char *uuid);
int agent_on_migrate_finish(struct agent *a, const struct bus_envelope *e, const char *uuid);
int agent_do_migrate_prepare(struct agent *a, struct job *j);
int agent_do_migrate_perform(struct agent *a, struct job *j);
int agent_do_migrate_finish(struct agent *a, struct job *j);
void agent_migrate_reconcile(struct agent *a, const struct store_instance *row, enum vmm_power pw);
/* A cold move whose source agent died while performing: finish it (the
 * copy reached the destination) or roll it back, from the domain's state
 * here (SRC) and on the destination (DST, VMM_POWER_NONE: not there). */
enum agent_cold_plan { AGENT_COLD_ROLLBACK, AGENT_COLD_FINISH, AGENT_COLD_PLAN_LAST };
extern const char *const agent_cold_plan_names[]; /* "rollback", "finish" */
enum agent_cold_plan agent_cold_plan(enum vmm_power src, enum vmm_power dst);
void agent_migration_metrics(struct agent *a, struct strbuf *sb);
/* build.c: a migration's destination: the build's steps up to the seed,
 * then this host's domain XML in *xml (malloc'd); undone on failure
 * (-EALREADY: prepared before). */
int agent_build_incoming(struct agent *a, struct job *j, char **xml);

/* report.c */
int agent_report(struct agent *a);
/* After a broker change: a host.report with `reannounce: {reason,
 * instances: [{uuid, project, state}]}` (the store's rows), then one
 * instance.state per instance, as reconcile would say it. */
int agent_reannounce(struct agent *a);
int agent_http_start(struct agent *a);
void agent_http_stop(struct agent *a);
/* The Prometheus text exposition; malloc'd. */
char *agent_metrics_text(struct agent *a);
void agent_observe_build(struct agent *a, double seconds, bool ok);

#endif
