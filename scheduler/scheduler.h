/*
 * scheduler: host state, placement (filters and weighers), claims,
 * reschedule with alternates, and the request handlers of
 * stratus-scheduler.
 *
 * The handlers are functions over the state: a message in (type,
 * request id, body), messages out (struct sched_out: events and host
 * commands for the daemon to produce). Hosts live in memory, SQLite (WAL)
 * is the durable record: hosts' last reports, instances, allocations,
 * quotas, processed requests, catalogs. Nothing here talks to Kafka: the
 * daemon (scheduler/main.c) does.
 *
 * See docs/scheduler.md.
 */
#ifndef STRATUS_SCHEDULER_H
#define STRATUS_SCHEDULER_H

#include <jansson.h>
#include <stdio.h>

#include "core/core.h"
#include "images/images.h" /* struct img_url_filter */
#include "quotas/quotas.h"

/* Where placement puts the next instance among hosts that fit. */
enum sched_policy { SCHED_SPREAD, SCHED_PACK, SCHED_POLICY_LAST };
extern const char *const sched_policy_names[];

/* SQLite synchronous mode of the state database. */
enum sched_sync { SCHED_SYNC_NORMAL, SCHED_SYNC_FULL, SCHED_SYNC_LAST };

/* The `scheduler:` config section. */
/* scheduler.migration (issue 15): Nova's live-migration settings, the
 * defaults of every migration; flavors override them with migration:*
 * extra specs (docs/scheduler.md "Migration"). */
struct sched_migrate_config {
	int64_t downtime_ms;           /* live_migration_downtime */
	long downtime_steps;           /* live_migration_downtime_steps */
	int64_t downtime_delay_ms;     /* live_migration_downtime_delay, per GiB */
	int64_t completion_timeout_ms; /* live_migration_completion_timeout, per GiB */
	int timeout_action;            /* abort, pause, postcopy */
	bool auto_converge;            /* live_migration_permit_auto_converge */
	int64_t prepare_timeout_ms;    /* a destination silent this long: aborted */
	long drain_concurrency;        /* host drain: migrations at once */
};
extern const char *const sched_migrate_action_names[];

struct sched_config {
	char *state_path;                 /* SQLite file */
	char *key_dir;                    /* the scheduler's keys; "" = state_path's directory */
	enum sched_sync sync;             /* SQLite synchronous mode */
	int64_t heartbeat_interval_ms;    /* agents report this often */
	long missed_heartbeats;           /* this many missed = down */
	enum sched_policy placement;
	double ram_weight_multiplier;
	double cpu_weight_multiplier;
	double steal_weight_multiplier;
	double build_failure_weight_multiplier;
	double instance_count_weight_multiplier;
	double steal_threshold_pct;       /* filter hosts above it; 0 = off */
	double steal_smoothing;           /* moving average weight of a new sample */
	double cpu_allocation_ratio;      /* when a host does not report one */
	double ram_allocation_ratio;
	long reserved_host_memory_mb;
	long max_attempts;                /* hosts tried per instance */
	long candidates;                  /* hosts that fit, weighed per decision (0 = all) */
	long batch_max;                   /* requests per group commit (1 = one commit each) */
	int64_t batch_window_ms;          /* longest a batch stays open */
	struct quota_amounts default_quotas;
	struct cfg_map flavors;           /* name -> "vcpus=2 ram_mb=1024 disk_gb=4 hw:...=..." */
	struct cfg_map images;            /* name -> "url=... checksum=... disk_format=qcow2 ..." */
	struct cfg_map host_keys;         /* host -> its Ed25519 public key (base64 or .pub file) */
	char *metrics_listen;             /* ADDR:PORT of /metrics; NULL = none */
	int64_t request_window_ms;        /* signed requests: timestamp window, replay memory */
	char *admin_credential;           /* the bootstrap admin credential file (NULL: beside state) */
	struct img_url_filter image_url_filter; /* image add: URLs pass it (images/urlfilter.c) */
	struct sched_migrate_config migration;
	int64_t resize_confirm_window_ms; /* auto-confirm of a resize; 0 = never */
};
extern const struct cfg_field sched_config_fields[];
void sched_config_free(struct sched_config *c);
/* Check what the field table cannot: the catalogs parse. err_msg() names
 * the entry: "scheduler.flavors.m1.big: vcpus: expected an integer ...". */
int sched_config_check(const struct sched_config *c);

/* A message for the daemon to send. topic: "stratus.events" or
 * "stratus.host.<host>"; key: the partition key. All owned. */
struct sched_msg {
	char *topic;
	char *key;
	char *type;
	char request_id[UUID_STRLEN];
	json_t *body;
};
struct sched_out {
	struct sched_msg *v;
	size_t n, cap;
};
/* Free every message and empty the list (it stays usable). */
void sched_out_clear(struct sched_out *o);

struct sched;
struct bus_envelope;

/* The envelope of M, signed with the scheduler's key when M goes to a host
 * topic. *out: bus_envelope_free(). */
int sched_msg_envelope(const struct sched *s, const struct sched_msg *m,
		       struct bus_envelope **out);
/* The envelopes of all OUT's messages into V[0 .. out->n - 1] (each:
 * bus_envelope_free()), those that need the scheduler's signature signed
 * together: one Ed25519 signature per batch (bus_envelopes_sign). A message
 * whose envelope cannot be made gets NULL, its error logged (a bug of
 * ours, not a reason to stop). On failure to sign: every V[i] NULL. */
int sched_out_envelopes(const struct sched *s, const struct sched_out *out,
			struct bus_envelope **v);
/* `stratus-scheduler keys`: create the keys if missing, print their public
 * parts and files (sign_key, key_id, box_key, ...) on F. */
int sched_keys_print(const struct sched_config *cfg, FILE *f);

/*
 * Open (create) the state database at cfg->state_path, load the catalogs
 * (config entries, then what was added or removed over the bus), the
 * hosts' last reports and the allocations. cfg must outlive the handle.
 * *out: sched_close().
 */
int sched_open(const struct sched_config *cfg, struct sched **out);
void sched_close(struct sched *s);

/*
 * Handle one message: a request from stratus.api (instance.boot, ...), an
 * event from stratus.events (instance.state, instance.reschedule) or a
 * host.report from stratus.metrics. now_ms is wall-clock time. Adds what
 * must be sent to OUT. Returns 0 when the effect is durable (a request
 * answered with an error is durable too), <0 when it is not (the state
 * database failed: deliver the message again).
 */
int sched_handle(struct sched *s, const char *type, const char *request_id, json_t *body,
		 int64_t now_ms, struct sched_out *out);
/*
 * The bus's entry (the daemon's): E as received, ORIGIN its
 * "partition:offset" (NULL: unknown). A request on stratus.api is verified
 * first (docs/bus.md "auth"): unsigned, unknown, revoked, bad signature,
 * stale, replayed, another project, an admin type from a member: refused
 * with a request.result error naming the reason, nothing else done. Its
 * project and role then come from the credential only. sched_handle above
 * is the in-process entry (tests, benchmarks): trusted as an admin, the
 * project from the body.
 */
struct bus_envelope;
int sched_handle_envelope(struct sched *s, const struct bus_envelope *e, const char *origin,
			  int64_t now_ms, struct sched_out *out);

/*
 * Group commit. Between sched_batch_begin and sched_batch_commit every
 * request runs in a savepoint of one transaction: a request that fails
 * rolls back alone, and the batch reaches the disk with one commit. The
 * messages the handlers added to OUT must be sent only after
 * sched_batch_commit returned 0 (and the consumer's offsets committed
 * after that). When it fails, nothing of the batch is durable and the
 * in-memory state is ahead of the database: close and reopen the handle
 * (the messages come again: the handlers are idempotent).
 */
int sched_batch_begin(struct sched *s);
int sched_batch_commit(struct sched *s);
bool sched_in_batch(const struct sched *s);

/* Send instance.build again for every instance still in `scheduling`
 * (after a restart: agents ignore a build they already have). */
int sched_resume(struct sched *s, struct sched_out *out);

/*
 * Recovery (docs/scheduler.md "Recovery"). sched_warmup_begin: the daemon
 * started at NOW_MS; sched_broker_moved: its bus clients followed the
 * broker to a new address. Either way, for one heartbeat window hosts that
 * have not reported since are stale, not down, and boots wait (durable).
 * sched_warmup_over: the wait can end (every host reported, or the window
 * passed); sched_warmup_end runs the boots that waited, inside the
 * caller's batch, adding their messages to OUT (returns how many ran).
 */
int sched_warmup_begin(struct sched *s, int64_t now_ms);
void sched_broker_moved(struct sched *s, int64_t now_ms);
bool sched_warmup_over(const struct sched *s, int64_t now_ms);
int sched_warmup_end(struct sched *s, int64_t now_ms, struct sched_out *out);

/* migration.prepare_timeout: is a migration still `preparing` after it?
 * sched_migration_timeouts aborts those (step prepare: the guest stays on
 * its source, the destination's claim is released), inside the caller's
 * batch, adding their messages to OUT. */
bool sched_migration_overdue(struct sched *s, int64_t now_ms);
int sched_migration_timeouts(struct sched *s, int64_t now_ms, struct sched_out *out);
/* At start: the prepare of every migration still `preparing` sent again
 * (it may have died with the previous process before the broker had it). */
int sched_migration_resume(struct sched *s, int64_t now_ms, struct sched_out *out);

/* Liveness: log hosts that went down or came back since the last tick. */
void sched_tick(struct sched *s, int64_t now_ms);
/* Resizes waiting longer than scheduler.resize_confirm_window (0: never)
 * are confirmed, as by instance.resize.confirm (run inside a batch): due
 * says whether any is, autoconfirm confirms them (how many, or <0). */
bool sched_resize_due(struct sched *s, int64_t now_ms);
int sched_resize_autoconfirm(struct sched *s, int64_t now_ms, struct sched_out *out);
/* Snapshots in progress on a host that is down (or forgotten): abandoned
 * (image.snapshot failed, step host; the name free again), inside a batch.
 * Never while the scheduler waits for its hosts' first reports. */
bool sched_snapshot_orphaned(struct sched *s, int64_t now_ms);
int sched_snapshot_abandon(struct sched *s, int64_t now_ms, struct sched_out *out);

/* Counters for logs and the benchmark. */
struct sched_stats {
	uint64_t decisions;       /* instances placed (first attempt) */
	uint64_t reschedules;
	uint64_t no_valid_host;
	uint64_t over_quota;
	uint64_t hosts_scanned;   /* hosts run through the filters */
	uint64_t migrations;      /* live migrations completed */
	size_t hosts;
	size_t hosts_up;
};
void sched_get_stats(const struct sched *s, int64_t now_ms, struct sched_stats *out);

/* /metrics (scheduler/metrics.c, docs/scheduler.md "Metrics"). check: the
 * listen address, for -n; start: serve it (nothing when unset, *out NULL);
 * sample: the gauges, from the main loop each tick (CONSUMER_LAG -1 when
 * unknown); handled: one message's handling time. */
struct prom_server;
int sched_metrics_check(const struct sched_config *c);
int sched_metrics_start(const struct sched_config *c, struct prom_server **out);
void sched_metrics_stop(struct prom_server *p);
void sched_metrics_sample(struct sched *s, int64_t now_ms, int64_t consumer_lag);
void sched_metrics_handled(const char *type, double seconds);
/* The exposition text (malloc'd; caller frees), NULL on ENOMEM. */
char *sched_metrics_text(void);

#endif
