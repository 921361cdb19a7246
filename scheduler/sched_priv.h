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

/* ---- catalog ----------------------------------------------------------- */

/* hw:mem_page_size: small (0), a size in KiB, large (-1: any huge size),
 * any (-2: huge if there is room, else small). */
#define SCHED_PAGE_SMALL 0
#define SCHED_PAGE_LARGE (-1)
#define SCHED_PAGE_ANY (-2)

struct sched_flavor {
	char *name;
	long vcpus, ram_mb, disk_gb;
	struct cfg_map extra_specs;
	bool dedicated;  /* hw:cpu_policy=dedicated */
	long page_kb;    /* hw:mem_page_size, see above */
};

struct sched_image {
	char *name, *url, *checksum, *disk_format;
	long min_disk_gb;
	/* optional direct kernel boot (model/model.h struct spec_image) */
	char *kernel_url, *kernel_checksum, *initrd_url, *initrd_checksum, *cmdline;
};

/* Parse "vcpus=2 ram_mb=1024 disk_gb=4 hw:cpu_policy=dedicated". */
int sched_flavor_parse(const char *name, const char *text, struct sched_flavor *out);
int sched_flavor_from_json(const json_t *o, struct sched_flavor *out);
json_t *sched_flavor_to_json(const struct sched_flavor *f);
void sched_flavor_free(struct sched_flavor *f);
/* Parse "url=... checksum=sha256:... disk_format=qcow2 min_disk_gb=2", and
 * for direct kernel boot "kernel=URL kernel_checksum=... initrd=URL
 * initrd_checksum=... cmdline=root=/dev/vda%20console=ttyS0" (%20 is a
 * space in a cmdline). */
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
	long disk_gb;                   /* max(flavor disk, image min_disk) */
	enum sched_group_policy group_policy;
	const char *const *group_hosts; /* hosts holding the group's members */
	size_t n_group_hosts;
	const char *const *tried_hosts; /* hosts that already failed this instance */
	size_t n_tried_hosts;
};

/* Where on a host the instance's NUMA-bound resources go. */
struct sched_fit {
	int node;       /* -1 when nothing is NUMA-bound */
	long page_kb;   /* 0 = small pages */
	long pages;
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
	struct sched_auth *auth; /* credentials and the replay window (auth.c) */
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
/* instance.build to H: the spec B (reference taken) + zone, attempt,
 * request id and claim. sched_send_build: the spec as stored text. */
int sched_send_build_json(struct sched_out *out, const struct sched_host *h, json_t *b,
			  const char *rid, long attempt, const struct sched_fit *fit);
int sched_send_build(struct sched_out *out, const struct sched_host *h, const char *spec_text,
		     const char *rid, long attempt, const struct sched_fit *fit);

/* sign.c: instance.boot's sealed secrets opened into BODY (re-validated);
 * instance.build's sealed to H (-ENOKEY when H reported no box_key). */
int sched_open_boot(const struct sched *s, json_t *body);
int sched_seal_build(const struct sched_host *h, json_t *body);

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
/* sign.c: scheduler.keys */
int sched_on_keys(struct sched *s, struct sched_call *c);
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

/* ---- recovery (recover.c) ---------------------------------------------- */

/* H has not reported since the start or the last broker move. */
bool sched_host_stale(const struct sched *s, const struct sched_host *h);
/* Boots wait now: in the warm-up window, and some host is stale or none is
 * known yet. */
bool sched_warming(const struct sched *s, int64_t now_ms);
/* Keep C (a boot) durable until the warm-up ends; no answer yet. */
int sched_defer(struct sched *s, struct sched_call *c);
/* A host.report's `reannounce` from H: compare the host's instances with
 * ours there and answer what was in flight (docs/scheduler.md). */
int sched_reconcile_host(struct sched *s, struct sched_call *c, struct sched_host *h,
			 const json_t *reannounce);
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
