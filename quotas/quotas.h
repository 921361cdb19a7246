/*
 * quotas: per-project limits, usage, and the atomic check-and-claim.
 *
 * Resources: instances, cores (every vCPU), ram_mb (all guest memory),
 * pcpus (vCPUs of dedicated flavors, counted again on their own) and
 * hugepages_mb (guest memory backed by huge pages, counted again).
 *
 * Limits: a project's override row, else the default from config; -1 is
 * unlimited. Usage: the sum of the project's allocations. The scheduler
 * writes allocations; every allocation write goes through quota_claim /
 * quota_release inside the SAME SQLite write transaction (BEGIN IMMEDIATE)
 * as the placement claim, so the check, the usage and the allocation can
 * never disagree, even with many processes on one database file.
 * quota_usage_rebuild recomputes the usage rows from the allocations
 * table (used at start-up and by tests to prove they agree).
 *
 * See docs/quotas.md.
 */
#ifndef STRATUS_QUOTAS_H
#define STRATUS_QUOTAS_H

#include <sqlite3.h>

#include "core/core.h"

enum quota_resource {
	QUOTA_INSTANCES,
	QUOTA_CORES,
	QUOTA_RAM_MB,
	QUOTA_PCPUS,
	QUOTA_HUGEPAGES_MB,
	QUOTA_VOLUMES,   /* volumes of the project (any state but deleted) */
	QUOTA_GIGABYTES, /* their sizes, in GB */
	QUOTA_RESOURCE_LAST
};
/* "instances", "cores", "ram_mb", "pcpus", "hugepages_mb", "volumes",
 * "gigabytes"; NULL-terminated. */
extern const char *const quota_resource_names[];
int quota_resource_parse(const char *name, enum quota_resource *out);

#define QUOTA_UNLIMITED (-1L)
/* The resources an instance's allocation holds (the first ones of the enum;
 * the volume ones follow). */
#define QUOTA_INSTANCE_RESOURCES QUOTA_VOLUMES

/* One amount per resource: a limit, a usage or a request. */
struct quota_amounts {
	long v[QUOTA_RESOURCE_LAST];
};

/* The `scheduler.default_quotas:` section (struct quota_amounts). */
extern const struct cfg_field quota_default_fields[];

/*
 * A handle on the quota tables of one SQLite connection, with its
 * prepared statements. quota_store_open creates the tables when absent:
 *   quota_limits(project PK, instances, cores, ram_mb, pcpus, hugepages_mb)
 *       NULL column = the default;
 *   quota_usage(project PK, instances, cores, ram_mb, pcpus, hugepages_mb);
 *   allocations(uuid PK, project, host, instances, cores, ram_mb, pcpus,
 *       hugepages_mb, disk_gb, numa_node, page_kb, pages): the durable
 *       record of every claim (the scheduler fills in the host part).
 *   quota_volume_limits(project PK, volumes, gigabytes) and
 *   quota_volume_usage(project PK, volumes, gigabytes): the same for the
 *       volume resources (tables of their own: the instance ones keep
 *       their columns);
 *   volume_allocations(uuid PK, project, gigabytes): one row per volume,
 *       the durable record of a volume claim.
 * DEFAULTS is copied. *out: quota_store_free() (before closing db).
 */
struct quota_store;
int quota_store_open(sqlite3 *db, const struct quota_amounts *defaults, struct quota_store **out);
void quota_store_free(struct quota_store *q);

/* The effective limits of PROJECT (overrides over the defaults). */
int quota_limits_get(struct quota_store *q, const char *project, struct quota_amounts *out);
/* Set overrides: every v[i] >= -1 is stored; v[i] < -1 leaves it alone. */
int quota_limits_set(struct quota_store *q, const char *project, const struct quota_amounts *set);
/* What PROJECT uses now. */
int quota_usage_get(struct quota_store *q, const char *project, struct quota_amounts *out);

/*
 * Inside the caller's write transaction (BEGIN IMMEDIATE): when usage +
 * REQ fits every limit, add REQ to the usage and return 0. Otherwise
 * return -EDQUOT with err_msg() "quota exceeded for project P: cores:
 * requested 4, used 18, limit 20" (the first resource that does not fit),
 * change nothing, and set *over (may be NULL) to that resource.
 */
int quota_claim(struct quota_store *q, const char *project, const struct quota_amounts *req,
		enum quota_resource *over);
/* Inside the caller's write transaction: subtract AMT from the usage. */
int quota_release(struct quota_store *q, const char *project, const struct quota_amounts *amt);
/* Recompute every project's usage from the allocations table (one
 * transaction of its own). */
int quota_usage_rebuild(struct quota_store *q);

/*
 * A volume's claim, inside the caller's write transaction: quota_claim of
 * volumes 1 and gigabytes GB, and its volume_allocations row (uuid). The
 * release takes both back; a uuid without a row is no error (0).
 */
int quota_volume_claim(struct quota_store *q, const char *project, const char *uuid, long gb,
		       enum quota_resource *over);
int quota_volume_release(struct quota_store *q, const char *uuid);

/* The request of one instance: instances 1, cores vcpus, ram_mb, and
 * pcpus / hugepages_mb when the flavor asks for them. */
void quota_amounts_for(struct quota_amounts *out, long vcpus, long ram_mb, bool dedicated,
		       bool hugepages);

#endif
