/*
 * Claims in the state database: the allocation rows of placed instances
 * and the server groups (policy, hosts of their members).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

/* ---- allocations ------------------------------------------------------- */


int sched_alloc_get(struct sched *s, const char *uuid, struct sched_alloc *out)
{
	sqlite3_stmt *q = s->st[SST_ALLOC_GET];
	int rc, ret = 0;

	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const unsigned char *h = sqlite3_column_text(q, 1);

		out->host = h ? strdup((const char *)h) : NULL;
		for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
			out->amt.v[i] = i < QUOTA_INSTANCE_RESOURCES
					? (long)sqlite3_column_int64(q, 2 + i) : 0;
		out->disk_gb = (long)sqlite3_column_int64(q, 7);
		out->fit.node = sqlite3_column_int(q, 8);
		out->fit.page_kb = (long)sqlite3_column_int64(q, 9);
		out->fit.pages = (long)sqlite3_column_int64(q, 10);
		out->fit.n_pci = 0;
	} else if (rc == SQLITE_DONE) {
		ret = err_set(-ENOENT, "instance %s has no allocation", uuid);
	} else {
		ret = err_set(-EIO, "reading an allocation: %s", sqlite3_errmsg(s->db));
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	if (ret == 0)
		ret = sched_pci_rows_get(s, uuid, &out->fit);
	return ret;
}

void sched_alloc_release(struct sched *s, const struct sched_alloc *a)
{
	struct sched_host *h = a->host ? sched_host_find(s, a->host) : NULL;

	if (h)
		sched_host_adjust(h, -1, a->amt.v[QUOTA_CORES] - a->amt.v[QUOTA_PCPUS],
				  a->amt.v[QUOTA_PCPUS], a->amt.v[QUOTA_RAM_MB], a->disk_gb, &a->fit);
}

int sched_alloc_insert(struct sched *s, const char *uuid, const char *project, const char *host,
			const struct quota_amounts *amt, long disk_gb, const struct sched_fit *fit)
{
	sqlite3_stmt *q = s->st[SST_ALLOC_INSERT];
	int r;

	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, host, -1, SQLITE_STATIC);
	for (int i = 0; i < QUOTA_INSTANCE_RESOURCES; i++)
		sqlite3_bind_int64(q, 4 + i, amt->v[i]);
	sqlite3_bind_int64(q, 9, disk_gb);
	sqlite3_bind_int(q, 10, fit->node);
	sqlite3_bind_int64(q, 11, fit->page_kb);
	sqlite3_bind_int64(q, 12, fit->pages);
	r = sched_db_step_done(s, SST_ALLOC_INSERT, "writing an allocation");
	return r < 0 ? r : sched_pci_rows_put(s, uuid, host, fit);
}

/* ---- server groups ----------------------------------------------------- */


int sched_strvec_add(struct sched_strvec *sv, const char *s)
{
	if (sv->n == sv->cap) {
		size_t cap = sv->cap ? sv->cap * 2 : 8;
		char **v = realloc(sv->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		sv->v = v;
		sv->cap = cap;
	}
	if (!(sv->v[sv->n] = strdup(s)))
		return -ENOMEM;
	sv->n++;
	return 0;
}

void sched_strvec_free(struct sched_strvec *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	memset(sv, 0, sizeof(*sv));
}

/* The group's policy (created with WANT on first use). -EINVAL when WANT
 * differs from the stored one. */
int sched_group_policy(struct sched *s, const char *project, const char *group, const char *want,
			enum sched_group_policy *out)
{
	sqlite3_stmt *q = NULL;
	_cleanup_free_ char *have = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db,
			       "SELECT policy FROM server_groups WHERE project = ?1 AND name = ?2", -1,
			       &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "server groups: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, group, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW)
		have = strdup((const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	if (have && want && strcmp(have, want) != 0)
		return err_set(-EINVAL, "server group %s has policy %s, not %s", group, have, want);
	if (!have) {
		have = strdup(want ? want : "anti-affinity");
		if (!have)
			return err_set(-ENOMEM, "out of memory");
		if (sqlite3_prepare_v2(s->db,
				       "INSERT INTO server_groups(project, name, policy) "
				       "VALUES (?1, ?2, ?3)",
				       -1, &q, NULL) != SQLITE_OK)
			return err_set(-EIO, "server groups: %s", sqlite3_errmsg(s->db));
		sqlite3_bind_text(q, 1, project, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, group, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, have, -1, SQLITE_STATIC);
		if (sqlite3_step(q) != SQLITE_DONE)
			r = err_set(-EIO, "server groups: %s", sqlite3_errmsg(s->db));
		sqlite3_finalize(q);
		if (r < 0)
			return r;
	}
	for (int i = SCHED_GROUP_AFFINITY; i < SCHED_GROUP_POLICY_LAST; i++) {
		if (strcmp(have, sched_group_policy_names[i]) == 0) {
			*out = (enum sched_group_policy)i;
			return 0;
		}
	}
	return err_set(-EINVAL, "server group %s: policy must be affinity or anti-affinity, got %s",
		       group, have);
}

int sched_group_hosts(struct sched *s, const char *project, const char *group, struct sched_strvec *sv)
{
	sqlite3_stmt *q = s->st[SST_GROUP_HOSTS];
	int rc, r = 0;

	sqlite3_bind_text(q, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, group, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW)
		if (sched_strvec_add(sv, (const char *)sqlite3_column_text(q, 0)) < 0)
			r = err_set(-ENOMEM, "out of memory");
	if (rc != SQLITE_DONE && r == 0)
		r = err_set(-EIO, "server group hosts: %s", sqlite3_errmsg(s->db));
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return r;
}

