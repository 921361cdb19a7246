/*
 * PCI passthrough in the scheduler: hosts report their usable devices
 * (inventory.pci_devices, with alias and NUMA node); a flavor's
 * pci_passthrough:alias requests are counted against them per (alias,
 * node) pool; a placement claims devices in the pci_claims table, which
 * a trigger empties with the allocation, and which the start-up reads
 * back. The agent picks the actual devices (vmm/pci.c) and refuses when
 * the scheduler's count was wrong, which sends a reschedule.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

static struct sched_pci_pool *pool_find(struct sched_pci_pool *p, int n, const char *alias,
					int node)
{
	for (int i = 0; i < n; i++)
		if (p[i].node == node && strcmp(p[i].alias, alias) == 0)
			return &p[i];
	return NULL;
}

/* H's pools, allocated on first use; false on ENOMEM. */
static bool pools(struct sched_host *h)
{
	if (!h->pci)
		h->pci = calloc(SCHED_MAX_PCI_POOLS, sizeof(*h->pci));
	return h->pci != NULL;
}

void sched_pci_apply_report(struct sched_host *h, const json_t *devices)
{
	struct sched_pci_pool old[SCHED_MAX_PCI_POOLS];
	int old_n = h->n_pci;
	size_t i;
	json_t *d;

	if (!h->pci && json_array_size(devices) == 0)
		return; /* no devices, none claimed */
	if (!pools(h))
		return;
	memcpy(old, h->pci, sizeof(old));
	memset(h->pci, 0, SCHED_MAX_PCI_POOLS * sizeof(*h->pci));
	h->n_pci = 0;
	json_array_foreach(devices, i, d) {
		const char *alias = json_string_value(json_object_get(d, "alias"));
		json_t *nv = json_object_get(d, "numa_node");
		int node = json_is_integer(nv) ? (int)json_integer_value(nv) : -1;
		struct sched_pci_pool *p;

		if (!alias || !model_alias_valid(alias) || !json_is_true(json_object_get(d, "usable")))
			continue;
		if (node < -1)
			node = -1;
		p = pool_find(h->pci, h->n_pci, alias, node);
		if (!p) {
			struct sched_pci_pool *o = pool_find(old, old_n, alias, node);

			if (h->n_pci == SCHED_MAX_PCI_POOLS)
				continue;
			p = &h->pci[h->n_pci++];
			snprintf(p->alias, sizeof(p->alias), "%s", alias);
			p->node = node;
			p->used = o ? o->used : 0;
		}
		p->total++;
	}
	/* claims on pools the report no longer has stay visible as used */
	for (int k = 0; k < old_n; k++) {
		if (old[k].used && !pool_find(h->pci, h->n_pci, old[k].alias, old[k].node) &&
		    h->n_pci < SCHED_MAX_PCI_POOLS) {
			h->pci[h->n_pci] = old[k];
			h->pci[h->n_pci++].total = 0;
		}
	}
}

static long pool_free(const struct sched_pci_pool *p)
{
	return p->total > p->used ? p->total - p->used : 0;
}

/* May pool P serve a guest on node id NODE (-1: no NUMA binding)? 0 on
 * the node, 1 elsewhere but allowed, -1 not at all (vmm/pci.c's rules). */
static int pool_affinity(const struct sched_pci_pool *p, int node, enum model_pci_numa pol)
{
	if (node < 0 || p->node == node)
		return 0;
	switch (pol) {
	case MODEL_PCI_NUMA_REQUIRED:
		return -1;
	case MODEL_PCI_NUMA_LEGACY:
		return p->node < 0 ? 0 : -1;
	case MODEL_PCI_NUMA_PREFERRED:
		return 1;
	case MODEL_PCI_NUMA_LAST:
		break;
	}
	return -1;
}

static int node_id(const struct sched_host *h, int n)
{
	return n >= 0 && n < h->n_numa ? h->numa[n].id : -1;
}

/* Is the request NUMA-bound (the host's fit puts it on one node)? */
static bool numa_bound(const struct sched_req *r)
{
	return r->flavor->dedicated || r->flavor->page_kb != SCHED_PAGE_SMALL;
}

bool sched_pci_node_ok(const struct sched_host *h, const struct sched_req *r, int n)
{
	const struct model_flavor_hw *hw = &r->flavor->hw;

	for (int q = 0; q < hw->n_pci; q++) {
		long have = 0;

		for (int i = 0; i < h->n_pci; i++)
			if (strcmp(h->pci[i].alias, hw->pci[q].alias) == 0 &&
			    pool_affinity(&h->pci[i], node_id(h, n), hw->pci_numa) >= 0)
				have += pool_free(&h->pci[i]);
		if (have < hw->pci[q].count)
			return false;
	}
	return true;
}

#define WHY(...)                                            \
	do {                                                \
		if (why)                                    \
			snprintf(why, whylen, __VA_ARGS__); \
	} while (0)

bool sched_pci_plan(const struct sched_host *h, const struct sched_req *r, struct sched_fit *fit,
		    char *why, size_t whylen)
{
	const struct model_flavor_hw *hw = &r->flavor->hw;
	int node = numa_bound(r) ? node_id(h, fit->node) : -1;
	struct sched_fit f = *fit;

	f.n_pci = 0;
	for (int q = 0; q < hw->n_pci; q++) {
		long need = hw->pci[q].count, total = 0, free_any = 0;

		for (int pass = 0; pass < 2 && need > 0; pass++) {
			for (int i = 0; i < h->n_pci && need > 0; i++) {
				const struct sched_pci_pool *p = &h->pci[i];
				long take;

				if (strcmp(p->alias, hw->pci[q].alias) != 0 ||
				    pool_affinity(p, node, hw->pci_numa) != pass || !pool_free(p))
					continue;
				take = pool_free(p) < need ? pool_free(p) : need;
				if (f.n_pci == MODEL_MAX_PCI_DEVICES)
					break;
				snprintf(f.pci[f.n_pci].alias, MODEL_ALIAS_MAX, "%s", p->alias);
				f.pci[f.n_pci].node = p->node;
				f.pci[f.n_pci++].count = (int)take;
				need -= take;
			}
		}
		if (need == 0)
			continue;
		for (int i = 0; i < h->n_pci; i++) {
			if (strcmp(h->pci[i].alias, hw->pci[q].alias) == 0) {
				total += h->pci[i].total;
				free_any += pool_free(&h->pci[i]);
			}
		}
		if (total == 0)
			WHY("PCI: no usable device with alias %s", hw->pci[q].alias);
		else if (node >= 0 && hw->pci_numa != MODEL_PCI_NUMA_PREFERRED)
			WHY("PCI: needs %d %s on NUMA node %d (hw:pci_numa_affinity_policy=%s), "
			    "%ld of %ld free on the host", hw->pci[q].count, hw->pci[q].alias, node,
			    model_pci_numa_names[hw->pci_numa], free_any, total);
		else
			WHY("PCI: needs %d %s, %ld of %ld free", hw->pci[q].count, hw->pci[q].alias,
			    free_any, total);
		return false;
	}
	*fit = f;
	return true;
}

void sched_pci_adjust(struct sched_host *h, long sign, const struct sched_fit *fit)
{
	for (int i = 0; i < fit->n_pci; i++) {
		struct sched_pci_pool *p = !h->pci ? NULL : pool_find(h->pci, h->n_pci, fit->pci[i].alias,
						     fit->pci[i].node);

		if (!p && sign > 0 && pools(h) && h->n_pci < SCHED_MAX_PCI_POOLS) {
			/* a claim (from the state) before the host's first report */
			p = &h->pci[h->n_pci++];
			memset(p, 0, sizeof(*p));
			snprintf(p->alias, sizeof(p->alias), "%s", fit->pci[i].alias);
			p->node = fit->pci[i].node;
		}
		if (!p)
			continue;
		p->used += sign * fit->pci[i].count;
		if (p->used < 0)
			p->used = 0;
	}
}

/* ---- the pci_claims table -------------------------------------------------- */

int sched_pci_open(struct sched *s)
{
	char *emsg = NULL;

	if (sqlite3_exec(s->db,
			 "CREATE TABLE IF NOT EXISTS pci_claims ("
			 " uuid TEXT NOT NULL, host TEXT NOT NULL, alias TEXT NOT NULL,"
			 " node INTEGER NOT NULL, count INTEGER NOT NULL,"
			 " PRIMARY KEY(uuid, alias, node)) WITHOUT ROWID;"
			 "CREATE TRIGGER IF NOT EXISTS pci_claims_go AFTER DELETE ON allocations"
			 " BEGIN DELETE FROM pci_claims WHERE uuid = OLD.uuid; END;",
			 NULL, NULL, &emsg) != SQLITE_OK) {
		int r = err_set(-EIO, "scheduler state: pci_claims: %s", emsg ? emsg : "?");

		sqlite3_free(emsg);
		return r;
	}
	return 0;
}

int sched_pci_load(struct sched *s)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT host, alias, node, count FROM pci_claims", -1, &q,
			       NULL) != SQLITE_OK)
		return err_set(-EIO, "loading PCI claims: %s", sqlite3_errmsg(s->db));
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW) {
		struct sched_host *h = sched_host_get(s, (const char *)sqlite3_column_text(q, 0));
		struct sched_fit f = { .node = -1, .n_pci = 1 };

		if (!h) {
			r = err_set(-ENOMEM, "out of memory");
			break;
		}
		snprintf(f.pci[0].alias, MODEL_ALIAS_MAX, "%s", (const char *)sqlite3_column_text(q, 1));
		f.pci[0].node = sqlite3_column_int(q, 2);
		f.pci[0].count = sqlite3_column_int(q, 3);
		sched_pci_adjust(h, 1, &f);
	}
	sqlite3_finalize(q);
	return r;
}

/* SQL (a literal: its statement is prepared once, stmts.c) run with UUID bound. */
static int exec_uuid(struct sched *s, const char *sql, const char *uuid)
{
	sqlite3_stmt *q = NULL;
	int rc;

	if (sched_stmt(s, sql, &q) < 0)
		return err_prefix(-EIO, "PCI claims");
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	rc = rc == SQLITE_DONE ? 0 : err_set(-EIO, "PCI claims: %s", sqlite3_errmsg(s->db));
	sched_stmt_done(s, q);
	return rc;
}

int sched_pci_rows_put(struct sched *s, const char *uuid, const char *host,
		       const struct sched_fit *fit)
{
	sqlite3_stmt *q = NULL;
	int r = exec_uuid(s, "DELETE FROM pci_claims WHERE uuid = ?1", uuid);

	if (r < 0 || fit->n_pci == 0)
		return r;
	if (sched_stmt(s, "INSERT INTO pci_claims(uuid, host, alias, node, count) "
		       "VALUES (?1, ?2, ?3, ?4, ?5)", &q) < 0)
		return err_prefix(-EIO, "PCI claims");
	for (int i = 0; r == 0 && i < fit->n_pci; i++) {
		sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, host, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, fit->pci[i].alias, -1, SQLITE_STATIC);
		sqlite3_bind_int(q, 4, fit->pci[i].node);
		sqlite3_bind_int(q, 5, fit->pci[i].count);
		if (sqlite3_step(q) != SQLITE_DONE)
			r = err_set(-EIO, "writing a PCI claim: %s", sqlite3_errmsg(s->db));
		sqlite3_reset(q);
	}
	sched_stmt_done(s, q);
	return r;
}

int sched_pci_rows_get(struct sched *s, const char *uuid, struct sched_fit *fit)
{
	sqlite3_stmt *q = NULL;

	fit->n_pci = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT alias, node, count FROM pci_claims WHERE uuid = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "PCI claims: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	while (sqlite3_step(q) == SQLITE_ROW && fit->n_pci < MODEL_MAX_PCI_DEVICES) {
		struct sched_pci_claim *c = &fit->pci[fit->n_pci++];

		snprintf(c->alias, sizeof(c->alias), "%s", (const char *)sqlite3_column_text(q, 0));
		c->node = sqlite3_column_int(q, 1);
		c->count = sqlite3_column_int(q, 2);
	}
	sqlite3_finalize(q);
	return 0;
}
