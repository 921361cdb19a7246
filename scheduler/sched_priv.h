/*
 * scheduler internals shared by its files and its unit tests.
 */
#ifndef STRATUS_SCHED_PRIV_H
#define STRATUS_SCHED_PRIV_H

#include <pthread.h>
#include <sqlite3.h>

#include "bus/bus.h" /* BUS_TOPIC_EVENTS, BUS_TOPIC_HOST_PREFIX */
#include "model/model.h"
#include "scheduler/scheduler.h"

#define SCHED_MAX_NUMA 8
#define SCHED_MAX_PAGE_SIZES 3 /* huge page sizes per node (2M, 1G, ...) */
#define SCHED_MAX_REASONS 20   /* hosts named in a "no valid host" error */
#define SCHED_MAX_PCI_POOLS 16 /* (alias, NUMA node) pairs of PCI devices per host */

/* ---- catalog ----------------------------------------------------------- */

/* hw:mem_page_size: small (0), a size in KiB, large (-1: any huge size),
 * any (-2: huge if there is room, else small). */
#define SCHED_PAGE_SMALL 0
#define SCHED_PAGE_LARGE (-1)
#define SCHED_PAGE_ANY (-2)

struct sched_flavor {
	char *name;
	long vcpus, ram_mb, disk_gb;
	long ephemeral_gb, swap_mb; /* Nova's extra local disks (0: none) */
	struct cfg_map extra_specs;
	bool dedicated;  /* hw:cpu_policy=dedicated */
	long page_kb;    /* hw:mem_page_size, see above */
	struct model_flavor_hw hw; /* pci_passthrough:alias, hw:cpu_* (scheduler/pci.c) */
};

struct sched_image {
	char *name, *url, *checksum, *disk_format;
	long min_disk_gb;
	/* optional direct kernel boot (model/model.h struct spec_image) */
	char *kernel_url, *kernel_checksum, *initrd_url, *initrd_checksum, *cmdline;
	/* Glance properties (hw_firmware_type=uefi ...), model_image_props_parse'd */
	struct cfg_map properties;
};

/* Parse "vcpus=2 ram_mb=1024 disk_gb=4 hw:cpu_policy=dedicated". */
int sched_flavor_parse(const char *name, const char *text, struct sched_flavor *out);
int sched_flavor_from_json(const json_t *o, struct sched_flavor *out);
json_t *sched_flavor_to_json(const struct sched_flavor *f);
void sched_flavor_free(struct sched_flavor *f);
/* Parse "url=... checksum=sha256:... disk_format=qcow2 min_disk_gb=2", and
 * for direct kernel boot "kernel=URL kernel_checksum=... initrd=URL
 * initrd_checksum=... cmdline=root=/dev/vda%20console=ttyS0" (%20 is a
 * space in a cmdline); image properties by their Glance names
 * ("hw_firmware_type=uefi"). */
int sched_image_parse(const char *name, const char *text, struct sched_image *out);
int sched_image_from_json(const json_t *o, struct sched_image *out);
json_t *sched_image_to_json(const struct sched_image *i);
void sched_image_free(struct sched_image *i);

/* ---- hosts ------------------------------------------------------------- */

struct sched_pagepool {
	long size_kb;
	long total, used; /* pages */
};

struct sched_numa {
	int id;           /* the report's node id */
	long pcpu_total, pcpu_used;
	long memory_mb;
	struct sched_pagepool pages[SCHED_MAX_PAGE_SIZES];
	int n_pages;
};

struct sched_host {
	char *name;
	char *az;
	int64_t last_report_ms;    /* wall clock; 0 = never */
	bool was_up;               /* for sched_tick's transitions */
	bool degraded;             /* the agent says it cannot build (lost libvirtd) */
	/* inventories (from reports) */
	long vcpu_total, vcpu_reserved;
	double vcpu_ratio;
	long pcpu_total;
	long ram_total, ram_reserved;
	double ram_ratio;
	long disk_total, disk_reserved;
	struct sched_numa numa[SCHED_MAX_NUMA];
	int n_numa;
	/* claims (from allocations) */
	long vcpu_used, pcpu_used, ram_used, disk_used;
	long vol_gb; /* GB of the volumes on it (volumes.c): disk no instance gets */
	long instances;
	/* health */
	double steal_pct;          /* moving average */
	bool has_steal;
	long recent_failures;      /* builds failed since the last success */
	/* what the agent itself says it uses (shown by host list) */
	long reported_vcpu_used, reported_ram_used;
	int64_t reannounced_ms;    /* wall clock of its last re-announce; 0 = none */
	/* its X25519 public key (report's box_key): builds' secrets are sealed to it */
	unsigned char box_key[BUS_KEY_LEN];
	bool has_box_key;
	/* usable PCI devices per (alias, NUMA node) from reports; used from claims */
	struct sched_pci_pool {
		char alias[MODEL_ALIAS_MAX];
		int node;                /* node id, -1 unknown */
		long total, used;
	} *pci;                      /* malloc'd: SCHED_MAX_PCI_POOLS */
	int n_pci;
	/* maint.c: an operator took it out of placement (host disable / drain) */
	bool disabled, draining;
};

long sched_host_vcpu_cap(const struct sched_host *h);
long sched_host_ram_cap(const struct sched_host *h);
long sched_host_disk_cap(const struct sched_host *h);
bool sched_host_up(const struct sched_host *h, const struct sched_config *cfg, int64_t now_ms);

/* Fill H's inventory from a host.report body (name and claims are left
 * alone). Unknown fields are ignored; missing ones keep their defaults. */
int sched_host_apply_report(struct sched_host *h, const json_t *report,
			    const struct sched_config *cfg, int64_t now_ms);

/* ---- placement --------------------------------------------------------- */

enum sched_group_policy { SCHED_GROUP_NONE, SCHED_GROUP_AFFINITY, SCHED_GROUP_ANTI_AFFINITY,
			  SCHED_GROUP_POLICY_LAST };
extern const char *const sched_group_policy_names[];

/* What one instance asks of a host. */
struct sched_req {
	const struct sched_flavor *flavor;
	const struct sched_image *image;
	const char *az;                 /* NULL = any */
	long disk_gb;                   /* max(flavor disk, image min_disk) + ephemeral
					   + swap (GB, rounded up) */
	enum sched_group_policy group_policy;
	const char *const *group_hosts; /* hosts holding the group's members */
	size_t n_group_hosts;
	const char *const *tried_hosts; /* hosts that already failed this instance */
	size_t n_tried_hosts;
	const char *volume_host;        /* a boot with a volume: its host only; NULL = any */
};

/* Where on a host the instance's NUMA-bound resources go. */
struct sched_fit {
	int node;       /* -1 when nothing is NUMA-bound */
	long page_kb;   /* 0 = small pages */
	long pages;
	int n_pci;      /* PCI devices claimed: COUNT of ALIAS on node id NODE */
	struct sched_pci_claim {
		char alias[MODEL_ALIAS_MAX];
		int node;
		int count;
	} pci[MODEL_MAX_PCI_DEVICES];
};

struct sched_ctx {
	const struct sched_config *cfg;
	int64_t now_ms;
};

/* A filter passes or fails a host; on failure, when WHY is not NULL, it
 * writes the reason ("RAM: needs 4096 MB, 1024 MB free"). */
struct sched_filter {
	const char *name;
	bool (*pass)(const struct sched_ctx *c, const struct sched_host *h,
		     const struct sched_req *r, char *why, size_t whylen);
};
extern const struct sched_filter sched_filters[];
extern const size_t sched_n_filters;

/* A weigher gives a raw value (more = better); placement normalises it
 * over the candidates to 0..1 and multiplies by the config multiplier. */
struct sched_weigher {
	const char *name;
	double (*raw)(const struct sched_host *h, const struct sched_req *r);
	double (*multiplier)(const struct sched_config *cfg);
};
extern const struct sched_weigher sched_weighers[];
extern const size_t sched_n_weighers;

/* First failing filter's reason for H, or NULL when it passes
 * (WHY is filled). */
const char *sched_host_reject_reason(const struct sched_ctx *c, const struct sched_host *h,
				     const struct sched_req *r, char *why, size_t whylen);
bool sched_host_passes(const struct sched_ctx *c, const struct sched_host *h,
		       const struct sched_req *r);
/* Where the NUMA-bound part goes on H (false: it does not fit). */
bool sched_numa_fit(const struct sched_host *h, const struct sched_req *r, struct sched_fit *out);

/* Claim / release a request's resources on H in memory. */
void sched_host_claim(struct sched_host *h, const struct sched_req *r, const struct sched_fit *f);
/* Add (sign 1) or take back (sign -1) shared vCPUs, pCPUs, RAM, disk and
 * the NUMA part F (may be NULL) on H; counts the instance too. */
void sched_host_adjust(struct sched_host *h, long sign, long vcpus, long pcpus, long ram_mb,
		       long disk_gb, const struct sched_fit *f);

/*
 * Pick hosts for R among HOSTS (n): run the filters from *cursor
 * (round-robin, advanced) until `candidates` hosts pass or all were seen,
 * weigh them, and write up to max_out host indices best first into OUT.
 * Returns how many were written (0 = no valid host); *scanned gets the
 * number of hosts filtered.
 */
size_t sched_select(const struct sched_ctx *c, struct sched_host *const *hosts, size_t n,
		    const struct sched_req *r, size_t *cursor, size_t *out, size_t max_out,
		    size_t *scanned);
/* The weighted score of every candidate (for tests): same as the
 * weighing inside sched_select. */
void sched_weigh(const struct sched_ctx *c, struct sched_host *const *cand, size_t n,
		 const struct sched_req *r, double *score);

/* "no valid host for web-1 (3 hosts): h1: down ...; h2: RAM: ..." as a
 * malloc'd string. */
char *sched_no_host_reason(const struct sched_ctx *c, struct sched_host *const *hosts, size_t n,
			   const struct sched_req *r, const char *instance);

/* ---- the state (state.c) ----------------------------------------------- */

enum sched_stmt {
	SST_BEGIN,
	SST_COMMIT,
	SST_ROLLBACK,
	SST_REQ_GET,
	SST_REQ_PUT,
	SST_INST_INSERT,
	SST_INST_FIND,
	SST_INST_GET,
	SST_INST_UPDATE,
	SST_ALLOC_INSERT,
	SST_ALLOC_GET,
	SST_ALLOC_MOVE,
	SST_ALLOC_DEL,
	SST_HOST_PUT,
	SST_GROUP_HOSTS,
	SST_SAVEPOINT,
	SST_RELEASE,
	SST_ROLLBACK_TO,
	SST_LAST
};

/* ---- keys (sign.c) ----------------------------------------------------- */

#define SCHED_KEY_LEN BUS_KEY_LEN
struct sched_keys {
	unsigned char sign_priv[SCHED_KEY_LEN], sign_pub[SCHED_KEY_LEN]; /* Ed25519 */
	unsigned char box_priv[SCHED_KEY_LEN], box_pub[SCHED_KEY_LEN];   /* X25519 */
	char key_id[BUS_KEY_ID_LEN + 1];
};
/* Load the key pairs from scheduler.key_dir, creating what is missing. */
int sched_keys_open(const struct sched_config *cfg, struct sched_keys *out);
/* {sign_key, key_id, box_key}: the public parts. New reference. */
json_t *sched_keys_json(const struct sched_keys *k);

struct sched {
	const struct sched_config *cfg;
	struct sched_keys keys;
	struct crypto_sealer *build_sealer; /* builds' secrets to hosts (sign.c) */
	sqlite3 *db;
	struct quota_store *quotas;
	sqlite3_stmt *st[SST_LAST];
	struct sched_host **hosts;
	size_t n_hosts, cap_hosts;
	size_t *ht;            /* host index + 1 by name hash; 0 = empty */
	size_t ht_cap;
	struct sched_flavor *flavors;
	size_t n_flavors;
	struct sched_image *images;
	size_t n_images;
	size_t cursor;         /* round-robin start of the next decision */
	bool in_batch;         /* inside sched_batch_begin: requests are savepoints */
	bool sp_open;          /* a request's savepoint is open */
	/* the WAL checkpointer: its own connection, off the decision path */
	pthread_t ckpt;
	bool ckpt_started;
	bool ckpt_stop;
	pthread_mutex_t ckpt_mu;
	pthread_cond_t ckpt_cv;
	struct sched_stats stats;
	/* recovery (recover.c): hosts not reported since epoch_ms are stale;
	 * until warm_until_ms boots wait while some are (0 = not warming) */
	int64_t epoch_ms, warm_until_ms;
	long deferred;         /* rows in the deferred table */
	long broker_moves;
	bool evac_ready;       /* evacuations table made and up to date (evacuate.c) */
	struct sched_auth *auth; /* credentials and the replay window (auth.c) */
	struct sched_pins *pins; /* hosts' pinned signing keys (pins.c) */
	struct sched_stmts *stmts; /* statements prepared once (stmts.c) */
	struct sched_sg_memo *sg_memo; /* security-group rules parsed once (secgroups.c) */
	int64_t sg_seq;        /* the last view's number (secgroups.c) */
};

/* One row of the instances table (strings malloc'd; inst_row_free). */
struct inst_row {
	char uuid[UUID_STRLEN];
	char *project, *name, *state, *host, *flavor, *image, *server_group, *request_id;
	char *spec, *alternates, *faults, *reason, *created, *updated;
	char *az; /* the availability zone asked for, NULL = any */
	long attempts;
};
void inst_row_free(struct inst_row *r);
/* 0 found, -ENOENT not found, <0 error. */
int sched_inst_get(struct sched *s, const char *uuid, struct inst_row *out);
/* Find by name or uuid within a project among instances not deleted: 0,
 * -ENOENT, -EEXIST (the name is ambiguous) or another error. */
int sched_inst_find(struct sched *s, const char *project, const char *ref, struct inst_row *out);
int sched_inst_update(struct sched *s, const struct inst_row *r);

int sched_db_step_done(struct sched *s, enum sched_stmt st, const char *what);
/* A state file of an earlier version: TABLE gets COLUMN (DECL) if it lacks it. */
int sched_db_add_column(struct sched *s, const char *table, const char *column,
			const char *decl);
int sched_tx_begin(struct sched *s);
int sched_tx_commit(struct sched *s);
void sched_tx_rollback(struct sched *s);

struct sched_host *sched_host_find(struct sched *s, const char *name);
/* Find or add (not yet reported) host NAME. NULL on ENOMEM. */
struct sched_host *sched_host_get(struct sched *s, const char *name);

const struct sched_flavor *sched_flavor_find(const struct sched *s, const char *name);
const struct sched_image *sched_image_find(const struct sched *s, const char *name);
int sched_catalog_add_flavor(struct sched *s, struct sched_flavor *f); /* takes f */
int sched_catalog_add_image(struct sched *s, struct sched_image *i);  /* takes i */
/* Remove from memory and mark removed in the database; -ENOENT when absent. */
int sched_catalog_remove(struct sched *s, bool flavor, const char *name);

/* ---- requests: answers and messages out (reply.c) ---------------------- */

/* One message being handled (requests.c fills it for the handler). */
struct sched_call {
	const char *type;
	const char *rid;
	json_t *body;
	int64_t now_ms;
	struct sched_out *out;
	bool stored; /* the outcome is kept for duplicates */
	/* who asks (auth.c): the project the request acts on (a member's own,
	 * an admin's from the body), the role, and the key its results with
	 * tenant data are sealed to (NULL: in the clear, in-process callers) */
	const char *project;
	bool admin;
	const char *credential;
	const unsigned char *seal_key;
	bool sealed; /* the type's data is tenant data (requests.c's table) */
};

/* A non-empty string member of O, or NULL. */
const char *sched_jstr(const json_t *o, const char *k);

/* Append a message to O (BODY taken, also on failure). */
int sched_out_add(struct sched_out *o, const char *topic, const char *key, const char *type,
		  const char *request_id, json_t *body);
/* {ok, error?, data?} (DATA taken); NULL on ENOMEM. */
json_t *sched_result_new(bool ok, const char *error, json_t *data);
/* pins.c: hosts' signing keys. check_config: scheduler.host_keys parse
 * (for -n); open/close: the host_keys table and the configured keys;
 * check: 0 when E (a report or event) may be handled, 1 refused (logged,
 * counted; nothing changed), <0 error. */
enum sched_refusal { SCHED_REFUSED_NONE, SCHED_REFUSED_UNSIGNED, SCHED_REFUSED_UNKNOWN_KEY,
		     SCHED_REFUSED_BAD_SIGNATURE, SCHED_REFUSED_WRONG_HOST,
		     SCHED_REFUSED_NOT_PINNED, SCHED_REFUSED_LAST };
extern const char *const sched_refusal_names[];
int sched_pins_check_config(const struct sched_config *cfg);
int sched_pins_open(struct sched *s);
void sched_pins_close(struct sched *s);

/* ---- statements prepared once (stmts.c) -------------------------------- */

/* The statement of SQL (a string that lives as long as the program: its
 * address is the key), prepared on first use and kept; one of its own when
 * the kept one is in use. Give it back with sched_stmt_done (reset, or
 * finalized when not kept; NULL is fine). */
int sched_stmt(struct sched *s, const char *sql, sqlite3_stmt **out);
void sched_stmt_done(struct sched *s, sqlite3_stmt *q);
void sched_stmts_close(struct sched *s); /* before the database closes */
void sched_sg_close(struct sched *s);    /* the rules parsed once (secgroups.c) */
int sched_pins_check(struct sched *s, const struct bus_envelope *e, int64_t now_ms);
int sched_on_host_forget(struct sched *s, struct sched_call *c);
void sched_metrics_refused(enum sched_refusal why);

/* Store RES as C's outcome when C's type keeps outcomes. */
int sched_store_result(struct sched *s, const struct sched_call *c, const json_t *res);
/* Send RES (taken) as C's request.result, keyed KEY (NULL: the request id). */
int sched_emit_result(struct sched_call *c, const char *key, json_t *res);
/* Answer with an error: stored (when the type is), sent, and durable. */
int sched_reject(struct sched *s, struct sched_call *c, const char *fmt, ...) PRINTF_LIKE(3, 4);
/* Answer ok with DATA (taken); stored when the type is. */
int sched_accept(struct sched *s, struct sched_call *c, const char *key, json_t *data);
int sched_emit_state(struct sched_out *out, const char *rid, const char *uuid,
		     const char *project, const char *host, const char *state, const char *reason);
/* A command to stratus.host.HOST (BODY taken). */
int sched_emit_host_cmd(struct sched_out *out, const char *host, const char *type,
			const char *rid, const char *uuid, json_t *body);
/* instance.build to H: the spec B (reference taken, its secrets sealed
 * to H through S's build sealer) + zone, attempt, request id and claim.
 * sched_send_build: the spec as stored text. */
int sched_send_build_json(struct sched *s, struct sched_out *out, const struct sched_host *h,
			  json_t *b, const char *rid, long attempt, const struct sched_fit *fit);
int sched_send_build(struct sched *s, struct sched_out *out, const struct sched_host *h,
		     const char *spec_text, const char *rid, long attempt,
		     const struct sched_fit *fit);

/* sign.c: instance.boot's sealed secrets opened into BODY (re-validated);
 * instance.build's sealed to H (-ENOKEY when H reported no box_key). */
int sched_open_boot(const struct sched *s, json_t *body);
int sched_seal_build(struct sched *s, const struct sched_host *h, json_t *body);
/* sched_out_envelopes in its two steps (the bench times the second): V[i]
 * unsigned (NULL, logged, when it cannot be made) and SIGN[i] whether it
 * must carry our signature; then those signed in one batch. */
int sched_out_envelopes_new(const struct sched_out *out, struct bus_envelope **v, bool *sign);
int sched_envelopes_sign(const struct sched *s, struct bus_envelope **v, const bool *sign,
			 size_t n);

/* ---- claims: allocations and server groups (claims.c) ------------------ */

/* One row of the allocations table (host malloc'd: free it). */
struct sched_alloc {
	char *host;
	struct quota_amounts amt;
	long disk_gb;
	struct sched_fit fit;
};
/* 0 found, -ENOENT not found, <0 error. */
int sched_alloc_get(struct sched *s, const char *uuid, struct sched_alloc *out);
int sched_alloc_insert(struct sched *s, const char *uuid, const char *project, const char *host,
		       const struct quota_amounts *amt, long disk_gb, const struct sched_fit *fit);
/* Take A's claim back from its host in memory. */
void sched_alloc_release(struct sched *s, const struct sched_alloc *a);

/* A growable list of malloc'd strings. */
struct sched_strvec {
	char **v;
	size_t n, cap;
};
int sched_strvec_add(struct sched_strvec *sv, const char *s);
void sched_strvec_free(struct sched_strvec *sv);

/* The group's policy (created with WANT on first use). -EINVAL when WANT
 * differs from the stored one. */
int sched_group_policy(struct sched *s, const char *project, const char *group, const char *want,
		       enum sched_group_policy *out);
/* The hosts holding the group's members, added to SV. */
int sched_group_hosts(struct sched *s, const char *project, const char *group,
		      struct sched_strvec *sv);

/* ---- the handlers (one row each in requests.c's table) ----------------- */

/* boot.c */
int sched_on_boot(struct sched *s, struct sched_call *c);
/* Send the builds of the instances in UUIDS that are still `scheduling`. */
int sched_resend_builds(struct sched *s, const struct sched_strvec *uuids, struct sched_out *out);
/* instances.c */
int sched_on_delete(struct sched *s, struct sched_call *c);
int sched_on_power(struct sched *s, struct sched_call *c); /* stop, start, reboot, console */
int sched_on_show(struct sched *s, struct sched_call *c);
int sched_on_list(struct sched *s, struct sched_call *c);
/* quota_hosts.c */
int sched_on_quota_show(struct sched *s, struct sched_call *c);
int sched_on_quota_set(struct sched *s, struct sched_call *c);
int sched_on_host_list(struct sched *s, struct sched_call *c);
int sched_on_report(struct sched *s, struct sched_call *c);
/* catalog.c */
int sched_on_flavor_list(struct sched *s, struct sched_call *c);
int sched_on_flavor_add(struct sched *s, struct sched_call *c);
int sched_on_flavor_remove(struct sched *s, struct sched_call *c);
int sched_on_image_list(struct sched *s, struct sched_call *c);
int sched_on_image_add(struct sched *s, struct sched_call *c);
int sched_on_image_remove(struct sched *s, struct sched_call *c);
/* image_access.c: private and shared images (docs/images.md) */
int sched_on_image_share(struct sched *s, struct sched_call *c);
int sched_on_image_unshare(struct sched *s, struct sched_call *c);
int sched_image_access_open(struct sched *s);
/* rebuild.c: instance.rebuild (issue 18) */
int sched_on_rebuild(struct sched *s, struct sched_call *c);
/* An instance leaves `rebuilding` (events.c, inside its transaction): the
 * spec and image before come back when the host ROLLED_BACK (or failed). */
int sched_rebuild_settle(struct sched *s, const char *uuid, bool rolled_back);
/* resize.c: instance.resize, .confirm, .revert (issue 18); the resizes
 * table and the old flavors' claims held at start (open); an instance's
 * new state from its host (events.c, inside its transaction; WAS: its
 * state before): verify_resize waits, anything else from resizing or
 * reverting (or deleted) undoes the accounting to the flavor before. */
int sched_on_resize(struct sched *s, struct sched_call *c);
int sched_on_resize_confirm(struct sched *s, struct sched_call *c);
int sched_on_resize_revert(struct sched *s, struct sched_call *c);
int sched_resize_open(struct sched *s);
int sched_resize_settle(struct sched *s, const char *uuid, const char *was,
			enum instance_state now, int64_t now_ms);
/* true when a state NOW for an instance in WAS (resizing, reverting) is
 * not the answer to that request (RID another): ignored. */
bool sched_resize_stale(struct sched *s, const char *uuid, const char *was,
			enum instance_state now, const char *rid);
/* snapshot.c: instance.snapshot (issue 18) and the hosts' image.snapshot events */
int sched_on_snapshot(struct sched *s, struct sched_call *c);
int sched_on_snapshot_event(struct sched *s, struct sched_call *c);
/* 1 when PROJECT (ADMIN: any) may see and boot image NAME, 0 not, <0 error. */
int sched_image_visible(struct sched *s, const char *name, const char *project, bool admin);
/* sched_image_find among the images PROJECT may see (NULL: none or hidden). */
const struct sched_image *sched_image_lookup(struct sched *s, const char *name,
					     const char *project, bool admin);
/* "a, b, c" of the images PROJECT may see (malloc'd; "none"). */
char *sched_image_names(struct sched *s, const char *project, bool admin);
/* NAME's owning project (malloc'd) or NULL when public. */
int sched_image_owner(struct sched *s, const char *name, char **owner);
/* Make NAME private to PROJECT (NULL: public); its shares are dropped. */
int sched_image_set_owner(struct sched *s, const char *name, const char *project);
/* Instances not deleted that use NAME: *count, and "proj/name, ..." (malloc'd). */
int sched_image_in_use(struct sched *s, const char *name, char **names, long *count);
/* sign.c: scheduler.keys */
int sched_on_keys(struct sched *s, struct sched_call *c);
/* volumes.c: the volumes table (created by sched_volumes_open), the volume
 * requests and the agents' volume.state events */
int sched_volumes_open(struct sched *s);
long sched_volumes_gb_on(struct sched *s, const char *host);
int sched_on_volume_create(struct sched *s, struct sched_call *c);
int sched_on_volume_list(struct sched *s, struct sched_call *c);
int sched_on_volume_show(struct sched *s, struct sched_call *c);
int sched_on_volume_delete(struct sched *s, struct sched_call *c);
int sched_on_volume_attach(struct sched *s, struct sched_call *c);
int sched_on_volume_detach(struct sched *s, struct sched_call *c);
int sched_on_volume_state(struct sched *s, struct sched_call *c);
/* A boot's volume (boot --volume): REF in C's project must be available
 * and COUNT 1; its uuid and host (malloc'd) out. 0, 1 refused (answered),
 * <0. Then, in the boot's transaction, reserved for INSTANCE (attaching;
 * the attach is sent when the instance becomes active). */
int sched_volume_for_boot(struct sched *s, struct sched_call *c, const char *ref, long count,
			  char uuid[UUID_STRLEN], char **host);
int sched_volume_reserve(struct sched *s, const char *uuid, const char *instance);
/* An instance's new state (events.c): active sends the attach of the
 * volumes reserved for it; error or deleted gives them back (available). */
int sched_volumes_instance_state(struct sched *s, struct sched_call *c, const char *instance,
				 const char *host, const char *state);
/* events.c */
int sched_on_state(struct sched *s, struct sched_call *c);
int sched_on_reschedule(struct sched *s, struct sched_call *c);

/* metrics hooks (scheduler/metrics.c): a request's answer, a boot no host
 * could take, a quota refusal (OVER: QUOTA_RESOURCE_LAST when unknown). */
void sched_metrics_result(const char *type, const json_t *res);
void sched_metrics_no_valid_host(const struct sched_ctx *c, struct sched_host *const *hosts,
				 size_t n, const struct sched_req *r);
void sched_metrics_quota_refused(enum quota_resource over);
/* A signed request refused: by its signature, credential, time or replay
 * (authorize false), or by what its credential may do (true). */
void sched_metrics_auth_refused(bool authorize);

/* ---- security groups (secgroups.c, secgroup_requests.c) ---------------- */

int sched_sg_open(struct sched *s); /* the tables */
/* The project's `default` group, created on first use (in the caller's tx). */
int sched_sg_ensure_default(struct sched *s, const char *project);
/* instance.boot's security_groups (default: ["default"]) checked against the
 * project's groups into *names (new reference): 0, 1 refused (err_msg()
 * says why: an unknown group and the known ones), <0. In the boot's tx. */
int sched_sg_boot_groups(struct sched *s, const char *project, const json_t *body, json_t **names);
/* UUID joins the groups NAMES (in the boot's tx). */
int sched_sg_add_members(struct sched *s, const char *project, const char *uuid,
			 const json_t *names);
/* PROJECT's secgroup.apply inputs for HOST: its ports there, their groups'
 * rules, the remote groups' member addresses (new reference, NULL on error). */
json_t *sched_sg_view(struct sched *s, const char *project, const char *host);
/* secgroup.apply to every host with a port of PROJECT (or one migrating
 * there); _send_host: to HOST alone. */
int sched_sg_propagate(struct sched *s, struct sched_out *out, const char *project,
		       const char *rid);
int sched_sg_send_host(struct sched *s, struct sched_out *out, const char *project,
		       const char *host, const char *rid);
/* A build's `secgroups`: the view of its host, set into BUILD. */
int sched_sg_build_inputs(struct sched *s, const char *project, const char *host, json_t *build);
/* sched_send_build with the build's `secgroups`. */
int sched_sg_send_build(struct sched *s, struct sched_out *out, const struct sched_host *h,
			const char *spec_text, const char *project, const char *rid, long attempt,
			const struct sched_fit *fit);
/* An instance.state: active with an address, or deleted: members change. */
int sched_sg_on_state(struct sched *s, struct sched_call *c, const char *uuid,
		      const char *project, enum instance_state state);
int sched_on_sg_create(struct sched *s, struct sched_call *c);
int sched_on_sg_list(struct sched *s, struct sched_call *c);
int sched_on_sg_show(struct sched *s, struct sched_call *c);
int sched_on_sg_delete(struct sched *s, struct sched_call *c);
int sched_on_sg_rule_add(struct sched *s, struct sched_call *c);
int sched_on_sg_rule_delete(struct sched *s, struct sched_call *c);
/* ---- live migration (migrate.c) ---------------------------------------- */

/* One row of the migrations table: an instance moving (strings malloc'd). */
struct sched_migration {
	char uuid[UUID_STRLEN], id[UUID_STRLEN];
	char *project, *source, *dest;
	char *phase;          /* preparing (prepare sent), performing (perform sent) */
	struct sched_fit fit; /* the destination's NUMA part of the claim */
	int64_t started_ms;
	bool cold;            /* stop, copy, start (stratusctl migrate --cold) */
	bool stopped;         /* cold: it was stopped, and stays stopped */
};
void sched_migration_free(struct sched_migration *m);
/* 0, -ENOENT (not migrating) or another error. */
int sched_migration_get(struct sched *s, const char *uuid, struct sched_migration *out);
/* The address the instance's host gave it (its active event), kept so a
 * destination takes the same. */
int sched_port_record(struct sched *s, const char *uuid, const char *mac, const char *address);
/* The limits the source applies: scheduler.migration, the flavor's
 * migration:* extra specs, scaled by the GiB to move. New reference. */
json_t *sched_migration_limits(const struct sched_config *cfg, const struct sched_flavor *f,
			       long disk_gb);
/* F's migration:* extra specs: known names, values in range (the error
 * lists what is accepted). */
int sched_migration_specs_check(const struct sched_flavor *f);
int sched_on_migrate(struct sched *s, struct sched_call *c);   /* instance.migrate */
/* Start migrating ROW (to WANT, or the best host): 0 started, 1 refused
 * (answered when ANSWER, else err_msg() says why), <0 failed. */
int sched_migration_start(struct sched *s, struct sched_call *c, struct inst_row *row,
			  const char *want, bool answer);
int sched_on_migration(struct sched *s, struct sched_call *c); /* agents' instance.migration */
/* maint.c: host.disable, host.enable, host.drain (admin); the disabled
 * hosts loaded at start; a drain's next migrations after one of HOST's ends. */
int sched_on_host_disable(struct sched *s, struct sched_call *c); /* and host.enable */
int sched_on_host_drain(struct sched *s, struct sched_call *c);
int sched_maint_load(struct sched *s);
/* FAILED: the instance whose migration off HOST just failed (not tried
 * again by the drain), or NULL. */
int sched_drain_next(struct sched *s, struct sched_call *c, const char *host, const char *failed);
/* evacuate.c: host.evacuate (admin) of a host that is down; the reason of
 * an evacuated instance's first `active` on HOST (malloc'd, NULL: not
 * evacuated there); its stale copy on HOST destroyed (its `deleted` from
 * there); HOST back after being down: its stale copies destroyed. */
int sched_on_host_evacuate(struct sched *s, struct sched_call *c);
char *sched_evacuation_note(struct sched *s, const char *uuid, const char *host,
			    const char *address);
/* UUID became active on HOST after an evacuation of it while it was
 * stopped: instance.stop to HOST (once), as Nova powers it off again. */
int sched_evacuation_settle(struct sched *s, struct sched_out *out, const char *uuid,
			    const char *host);
int sched_evacuation_cleaned(struct sched *s, const char *uuid, const char *host);
/* An evacuated UUID's build failed on FROM and moves to TO (the caller's
 * transaction): its note goes with it. 0 also when it was not evacuated. */
int sched_evacuation_moved(struct sched *s, const char *uuid, const char *from, const char *to);
/* UUID was evacuated off HOST and its copy there is not destroyed yet. */
bool sched_evacuation_pending(struct sched *s, const char *uuid, const char *host);
int sched_evacuation_comeback(struct sched *s, struct sched_call *c, const char *host);

/* ---- recovery (recover.c) ---------------------------------------------- */

/* H has not reported since the start or the last broker move. */
bool sched_host_stale(const struct sched *s, const struct sched_host *h);
/* Boots wait now: in the warm-up window, and some host is stale or none is
 * known yet. */
bool sched_warming(const struct sched *s, int64_t now_ms);
/* Keep C (a boot) durable until the warm-up ends; no answer yet. */
int sched_defer(struct sched *s, struct sched_call *c);
/* A deferred request run at the warm-up's end, bound again to CREDENTIAL
 * (NULL: a row of a version without credentials, run as sched_handle). */
int sched_handle_deferred(struct sched *s, const char *type, const char *request_id,
			  json_t *body, const char *credential, int64_t now_ms,
			  struct sched_out *out);
/* A host.report's `reannounce` from H: compare the host's instances with
 * ours there and answer what was in flight (docs/scheduler.md). */
int sched_reconcile_host(struct sched *s, struct sched_call *c, struct sched_host *h,
			 const json_t *reannounce);
/* ---- PCI passthrough (pci.c) -------------------------------------------- */

/* H's PCI pools from a report's inventory.pci_devices (usable devices
 * counted per alias and NUMA node; claims kept). */
void sched_pci_apply_report(struct sched_host *h, const json_t *devices);
/* Plan R's devices on H into FIT (fit->node chosen already, -1 = any):
 * false when H lacks them, with the reason in WHY (may be NULL). */
bool sched_pci_plan(const struct sched_host *h, const struct sched_req *r, struct sched_fit *fit,
		    char *why, size_t whylen);
/* Can NUMA node index N of H hold R's devices as its policy wants? */
bool sched_pci_node_ok(const struct sched_host *h, const struct sched_req *r, int n);
/* Add (sign 1) or take back (-1) FIT's devices on H. */
void sched_pci_adjust(struct sched_host *h, long sign, const struct sched_fit *fit);
/* The pci_claims table (and its trigger: rows go with their allocation). */
int sched_pci_open(struct sched *s);
/* Claims from the table onto the hosts (start-up). */
int sched_pci_load(struct sched *s);
/* Replace UUID's rows by FIT's devices on HOST; read them back into FIT. */
int sched_pci_rows_put(struct sched *s, const char *uuid, const char *host,
		       const struct sched_fit *fit);
int sched_pci_rows_get(struct sched *s, const char *uuid, struct sched_fit *fit);

/* ---- credentials and signed requests (auth.c) -------------------------- */

enum sched_role { SCHED_ROLE_MEMBER, SCHED_ROLE_ADMIN, SCHED_ROLE_LAST };
extern const char *const sched_role_names[];

/* A verified request's credential. */
struct sched_cred {
	char id[UUID_STRLEN];
	char project[128];
	enum sched_role role;
	unsigned char result_key[32]; /* HKDF(secret, "stratus result") */
};

/* Load the credential store; on first start (no credential at all) create
 * an admin credential for project `default` and write it, mode 0600, to
 * scheduler.admin_credential (default: beside the state file). */
int sched_auth_open(struct sched *s);
void sched_auth_close(struct sched *s);
/*
 * Check E's auth: known, not revoked credential, HMAC-SHA256 of the
 * canonical bytes, timestamp inside scheduler.request_window, envelope id
 * not seen in the window (ORIGIN "partition:offset" of the message: a
 * redelivery of the same message is no replay; NULL = unknown). Records the
 * envelope id. 0 with *out filled; 1 refused (err_msg() says why: the
 * request.result error); <0 the state failed.
 */
int sched_auth_verify(struct sched *s, const struct bus_envelope *e, const char *origin,
		      int64_t now_ms, struct sched_cred *out);
/* Bind C to CRED: project (a member only its own) and role (admin-only
 * types). 0, or 1 refused with err_msg() set. */
int sched_auth_bind(struct sched_call *c, const struct sched_cred *cred);
/* A request that waited (the warm-up's deferred boots): bound again to
 * credential ID as it is now (its signature was checked when it came):
 * 0, 1 refused (revoked, or no longer allowed) with err_msg() set, <0. */
int sched_auth_rebind(struct sched *s, const char *id, struct sched_call *c,
		      struct sched_cred *cred);
/* {ok: true, sealed: BASE64(AEAD(result key, aad = request id, DATA))}
 * (DATA taken); NULL on failure. */
json_t *sched_result_sealed(const struct sched_call *c, json_t *data);
/* The HMAC key and the result key of a credential secret (32 bytes). */
int sched_cred_keys(const unsigned char *secret, size_t n, unsigned char sign_key[32],
		    unsigned char result_key[32]);
/* credential.create, credential.list, credential.revoke (admin) */
int sched_on_credential_create(struct sched *s, struct sched_call *c);
int sched_on_credential_list(struct sched *s, struct sched_call *c);
int sched_on_credential_revoke(struct sched *s, struct sched_call *c);

#endif
