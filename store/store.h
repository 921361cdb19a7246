/*
 * The agent's local store: SQLite in WAL mode, one file per host.
 *
 * It records what the agent has promised (instances with their full spec,
 * state and build step, address and MAC allocations, pCPU and hugepage
 * assignments, the files made for each instance) and which requests it has
 * already processed, so that every handler is idempotent and a restart can
 * reconcile the store against libvirt. stratus-metadata opens it read-only
 * (see docs/agent.md for the schema, which is part of that contract).
 */
#ifndef STRATUS_STORE_STORE_H
#define STRATUS_STORE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

#define STORE_SCHEMA_VERSION 2

struct store;

/* One row of `instances`. Strings are malloc'd (free with
 * store_instance_free); any may be NULL except uuid and spec_json. */
struct store_instance {
	char uuid[UUID_STRLEN];
	char *name;
	char *project;
	char *spec_json;      /* the parsed spec, serialized (model_spec_to_json) */
	enum instance_state state;
	char *step;           /* build step reached, e.g. "image", "seed", "define" */
	char *placement_json; /* the vmm fit: pCPUs, NUMA nodes, hugepages */
	char *address;        /* 10.77.0.5/24 */
	char *mac;
	char *overlay_path;
	char *seed_path;
	char *error;
	char *request_id;     /* the request that last changed it */
	int64_t created_ms, updated_ms;
};
void store_instance_free(struct store_instance *i);

/* Open (creating and migrating the schema) or open read-only. */
int store_open(const char *path, bool readonly, struct store **out);
void store_close(struct store *st);

/* Insert or replace the whole row. */
int store_instance_put(struct store *st, const struct store_instance *i);
/* -ENOENT when unknown. */
int store_instance_get(struct store *st, const char *uuid, struct store_instance *out);
/* Update state (+ step and error; NULL keeps step, clears error). */
int store_instance_set_state(struct store *st, const char *uuid, enum instance_state s,
			     const char *step, const char *error);
int store_instance_delete(struct store *st, const char *uuid);
/* Calls fn for each instance (ordered by creation); stops when fn returns
 * non-zero and returns that value. */
int store_instance_foreach(struct store *st,
			   int (*fn)(const struct store_instance *i, void *ud), void *ud);
/* The instance owning an IPv4 address (no prefix), -ENOENT otherwise. */
int store_instance_by_ip(struct store *st, const char *ip, struct store_instance *out);

/* The MAC of an instance address: 52:54:00 + the low 24 bits of the IPv4
 * address (host order), unique within a host's instance network. */
void store_mac_for_ip(uint32_t ip, char out[18]);

/*
 * Addresses: the lowest free address of [first, last] (host order) goes
 * to the instance, with its MAC, in one transaction. Allocating again for
 * the same instance returns the address it already has. mac NULL: the
 * one store_mac_for_ip gives.
 */
int store_address_allocate(struct store *st, const char *uuid, uint32_t first,
			   uint32_t last, int prefix, const char *mac, char *addr_out,
			   size_t addr_len);
int store_address_release(struct store *st, const char *uuid);
int store_address_count(struct store *st, int *n);

/*
 * Processed requests: handlers call store_request_get first (a redelivered
 * or duplicated message is answered with the recorded outcome) and
 * store_request_put once the effect is durable.
 */
int store_request_get(struct store *st, const char *request_id, char **outcome_json);
int store_request_put(struct store *st, const char *request_id, const char *uuid,
		      const char *type, const char *outcome_json);

/* Requests accepted but without an outcome yet (pending commands), oldest
 * first: fn(request_id, uuid, type, ud). */
int store_request_foreach_pending(struct store *st,
					int (*fn)(const char *request_id, const char *uuid,
						  const char *type, void *ud),
					void *ud);

/*
 * Migrations (issue 15): the durable record of an instance moving out of
 * this host (role "source") or into it (role "dest"), so that a restart
 * finishes or undoes it (docs/agent.md "Migration"). Strings malloc'd.
 */
struct store_migration {
	char uuid[UUID_STRLEN];
	char *migration;   /* the scheduler's migration id */
	char *role;        /* "source" or "dest" */
	char *peer;        /* the other host */
	char *phase;       /* dest: preparing, prepared; source: performing, completed */
	char *dest_uri;    /* source: the destination's libvirt URI */
	char *domain_xml;  /* source: the destination's domain XML */
	char *request_id;
	char *params_json; /* source: the migration limits */
};
int store_migration_put(struct store *st, const struct store_migration *m);
/* 0, -ENOENT (none for uuid) or another error; *out untouched on failure. */
int store_migration_get(struct store *st, const char *uuid, struct store_migration *out);
int store_migration_delete(struct store *st, const char *uuid);
void store_migration_free(struct store_migration *m);
/* One row of `volumes` (issue 19): a volume file of this host. Strings
 * malloc'd (store_volume_free); instance and reason may be NULL. state is
 * a volume state name (creating, available, attaching, in-use, detaching,
 * deleting, error). */
struct store_volume {
	char uuid[UUID_STRLEN];
	char *project, *name, *path, *state, *instance, *reason;
	long size_gb;
	int64_t created_ms, updated_ms;
};
void store_volume_free(struct store_volume *v);
/* Insert or replace the whole row (created_ms 0: now). */
int store_volume_put(struct store *st, const struct store_volume *v);
/* -ENOENT ("volume U: not on this host") when unknown. */
int store_volume_get(struct store *st, const char *uuid, struct store_volume *out);
int store_volume_delete(struct store *st, const char *uuid);
/* fn for each volume (by creation); stops at fn's non-zero and returns it. */
int store_volume_foreach(struct store *st, int (*fn)(const struct store_volume *v, void *ud),
			 void *ud);

#endif
