/*
 * metadata: ONE renderer of an instance's metadata documents, two
 * presenters (DESIGN.md).
 *
 *   renderer   md_render(spec) -> struct md_tree: every document cloud-init's
 *              NoCloud, ConfigDrive/OpenStack and EC2 datasources read, each
 *              under one path, built from the table in metadata/render.c;
 *   presenter  md_seed_write(): a NoCloud (`cidata`) or config drive
 *              (`config-2`) ISO 9660 image written with libisofs;
 *   presenter  struct md_service: the HTTP metadata API's request handling
 *              (EC2 + OpenStack paths, IMDSv2 tokens, proxied mode, rate
 *              limits), socket-free so it can be tested and fuzzed;
 *              md_http_start() puts it behind libmicrohttpd.
 *
 * Instances reach the service through a struct md_source (lookup by source
 * address or by instance id): a JSON file of specs, or the agent's SQLite
 * store read-only (see docs/metadata.md "Sources").
 */
#ifndef STRATUS_METADATA_H
#define STRATUS_METADATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "core/core.h"

/* ---- the rendered tree ------------------------------------------------- */
/*
 * Paths in the tree (no leading slash):
 *   nocloud/meta-data, nocloud/user-data, nocloud/vendor-data, nocloud/network-config
 *   openstack/VERSION/meta_data.json, .../user_data, .../network_data.json, ...
 *   ec2/VERSION/meta-data/instance-id, ..., ec2/VERSION/user-data,
 *   ec2/VERSION/meta-data.json (config drive only)
 * A path ending in '/' is an explicit directory listing (EC2 public-keys/).
 * Each file says which presenters show it.
 */
enum md_view {
	MD_VIEW_NOCLOUD = 1u << 0,     /* the cidata ISO */
	MD_VIEW_CONFIGDRIVE = 1u << 1, /* the config-2 ISO */
	MD_VIEW_HTTP = 1u << 2,        /* the metadata service */
};

struct md_file {
	char *path;
	unsigned char *data; /* NUL-terminated for convenience */
	size_t len;
	unsigned views; /* enum md_view bits */
};

struct md_tree {
	struct md_file *files; /* sorted by path (strcmp) */
	size_t n;
};

/* Render every document of an instance. On success *out is a new tree
 * (free with md_tree_free); on failure -errno with err_msg() set. */
int md_render(const struct instance_spec *s, struct md_tree **out);
void md_tree_free(struct md_tree *t);
/* The file at PATH visible in VIEWS, or NULL. */
const struct md_file *md_tree_find(const struct md_tree *t, const char *path, unsigned views);
/*
 * A directory listing of DIR (without trailing slash; "" is the root) in
 * VIEWS, as EC2 and Nova print them: one name per line, subdirectories with
 * a trailing '/' (except version directories directly under "ec2" and
 * "openstack", printed bare as Nova does). An explicit listing file
 * "DIR/" wins. Returns 0 and a malloc'd text (caller frees), or -ENOENT
 * when DIR has no visible entries.
 */
int md_tree_list(const struct md_tree *t, const char *dir, unsigned views, char **out,
		 size_t *len);

/* The OpenStack metadata versions we serve, oldest first, then "latest". */
extern const char *const md_openstack_versions[];
/* The EC2 metadata versions we serve. */
extern const char *const md_ec2_versions[];

/* ---- seed disks -------------------------------------------------------- */
enum md_seed_format { MD_SEED_NOCLOUD, MD_SEED_CONFIGDRIVE, MD_SEED_LAST };
extern const char *const md_seed_format_names[]; /* "nocloud", "configdrive" */
int md_seed_format_parse(const char *s, enum md_seed_format *out);
/* The seed format an instance spec asks for; -ENOENT for seed "none"
 * (cloud-init then asks the metadata service). */
int md_seed_format_of_spec(const struct instance_spec *s, enum md_seed_format *out);

/*
 * Write the seed ISO of instance S to PATH (atomically and durably: a
 * temporary beside it, fsync, rename, fsync of PATH's directory, so that
 * neither the contents nor the name are lost in a crash): ISO 9660 with Rock Ridge and Joliet, volume id "cidata" (NoCloud)
 * or "config-2" (config drive).
 */
int md_seed_write(const struct instance_spec *s, enum md_seed_format fmt, const char *path);
/* Same into memory: *out is malloc'd (caller frees). */
int md_seed_build(const struct instance_spec *s, enum md_seed_format fmt, unsigned char **out,
		  size_t *len);

/* ---- instances and where they come from -------------------------------- */
/*
 * An instance as the service sees it: the spec, a render cache and its
 * rate-limit state. Reference counted: a source hands out references
 * (md_instance_unref when done); a reload replaces changed instances by new
 * objects (so their cache starts empty) and keeps unchanged ones.
 */
struct md_instance;
void md_instance_unref(struct md_instance *in);
const struct instance_spec *md_instance_spec(const struct md_instance *in);

/*
 * Where the service finds instances. Implementations: the JSON file of
 * specs (md_source_json_open) and the agent's SQLite store
 * (md_source_store_open), with the same operations.
 */
struct md_source_ops {
	const char *name;
	/* By the guest's IPv4 address (dotted text). 0 and a reference in
	 * *out, -ENOENT when unknown, other <0 on failure. */
	int (*lookup_addr)(void *impl, const char *addr, struct md_instance **out);
	/* By instance uuid (proxied mode). Same returns. */
	int (*lookup_id)(void *impl, const char *uuid, struct md_instance **out);
	/* Re-read the backing store (SIGHUP). On failure the old data stays. */
	int (*reload)(void *impl);
	void (*close)(void *impl);
};

struct md_source {
	const struct md_source_ops *ops;
	void *impl;
};

/* A JSON array of instance specs in PATH (at most 64 MiB). Each spec's
 * network.address (without prefix) is the address its requests come from. */
int md_source_json_open(const char *path, struct md_source **out);
/* Same from a string (tests, fuzzing); name is used in messages. */
int md_source_json_open_string(const char *name, const char *json, struct md_source **out);
/* The agent's SQLite store (store/store.h), opened read-only: every lookup
 * reads the store; renderings are cached while a row is unchanged. */
int md_source_store_open(const char *path, struct md_source **out);
void md_source_close(struct md_source *src);
static inline int md_source_reload(struct md_source *src)
{
	return src->ops->reload(src->impl);
}

/* ---- the service ------------------------------------------------------- */
enum md_tokens { MD_TOKENS_OPTIONAL, MD_TOKENS_REQUIRED, MD_TOKENS_LAST };
extern const char *const md_tokens_names[]; /* "optional", "required" */

/* The `metadata:` config section (fields table: md_config_fields). */
struct md_config {
	char *listen;        /* ADDR:PORT */
	enum md_tokens tokens;
	bool proxy;          /* identify by X-Instance-ID + signature */
	char *shared_secret; /* proxied mode HMAC key */
	long rate_limit;     /* requests/s per instance, 0 = off */
	long rate_burst;     /* bucket size */
	long threads;        /* HTTP worker threads */
	char *instances;     /* JSON file of specs (the --instances default) */
	char *store;         /* the agent's SQLite store (the --store default) */
	char *metrics_listen; /* ADDR:PORT of /metrics (operators'); NULL = none */
	/* direct mode: answer only connections whose SYN carries this mark, set
	 * by the agent's port filters (agent.network.port_mark); 0 = off */
	long port_mark;
	int64_t header_timeout_ms; /* a request head must arrive within this */
	long per_source_limit;     /* open connections per client address */
};
extern const struct cfg_field md_config_fields[];
/* Cross-field checks after loading (proxy needs a secret ...). */
int md_config_check(const struct md_config *c);

/* /metrics (metadata/metrics.c, docs/metadata.md "Metrics"): check the
 * address (for -n); serve it (nothing when unset: *out NULL); stop. */
struct prom_server;
int md_metrics_check(const struct md_config *c);
int md_metrics_start(const struct md_config *c, struct prom_server **out);
void md_metrics_stop(struct prom_server *p);
/* The exposition text (malloc'd; caller frees), NULL on ENOMEM. */
char *md_metrics_text(void);

#define MD_URL_MAX 1024            /* longer request targets: 414 */
#define MD_HEADERS_MAX 8192        /* more header bytes: 431 */
#define MD_HEADER_COUNT_MAX 64     /* more header lines: 431 */
#define MD_TOKEN_TTL_MAX 21600     /* seconds, as EC2 */

struct md_header {
	const char *name;
	const char *value;
};

/* One request as the HTTP layer received it. */
struct md_request {
	const char *method;
	const char *url;    /* path, percent-decoded, without the query */
	const struct md_header *headers;
	size_t n_headers;
	const char *source; /* the peer's IP address, text */
	unsigned mark;      /* the connection's mark (SO_MARK of the accepted socket) */
	size_t body_len;    /* bytes of request body received */
};

struct md_reply {
	int status;
	char *body; /* malloc'd; md_reply_clear frees */
	size_t len;
	const char *content_type;
	long retry_after;  /* >0: Retry-After header (429) */
	long token_ttl;    /* >0: X-aws-ec2-metadata-token-ttl-seconds header */
	const char *allow; /* Allow header (405) */
};
void md_reply_clear(struct md_reply *r);

struct md_service;
/* SRC is borrowed (must outlive the service). */
int md_service_new(const struct md_config *cfg, struct md_source *src, struct md_service **out);
void md_service_free(struct md_service *svc);
/* Answer one request. Never fails: errors are HTTP statuses. Thread-safe. */
void md_service_handle(struct md_service *svc, const struct md_request *req,
		       struct md_reply *rep);

/* ---- HTTP (libmicrohttpd) ---------------------------------------------- */
struct md_http;
/* Listen on LISTEN ("ADDR:PORT", IPv4) with THREADS workers. */
/* threads, header_timeout_ms and per_source_limit from CFG; 0s: off. */
int md_http_start(struct md_service *svc, const char *listen, const struct md_config *cfg,
		  struct md_http **out);
/* The port actually bound (for ":0"). */
int md_http_port(const struct md_http *h);
void md_http_stop(struct md_http *h);

#endif
