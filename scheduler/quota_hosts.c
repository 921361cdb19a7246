/*
 * quota.show / quota.set, host.list, and the hosts' reports
 * (host.report on stratus.metrics).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

/* ---- quotas ------------------------------------------------------------ */


static json_t *amounts_json(const struct quota_amounts *a)
{
	json_t *o = json_object();

	for (int i = 0; o && i < QUOTA_RESOURCE_LAST; i++)
		json_object_set_new(o, quota_resource_names[i], json_integer(a->v[i]));
	return o;
}

static int quota_data(struct sched *s, const char *project, json_t **out)
{
	struct quota_amounts lim, used;
	int r = quota_limits_get(s->quotas, project, &lim);

	if (r == 0)
		r = quota_usage_get(s->quotas, project, &used);
	if (r < 0)
		return r;
	*out = json_pack("{s:s, s:o, s:o}", "project", project, "limits", amounts_json(&lim),
			 "usage", amounts_json(&used));
	return *out ? 0 : err_set(-ENOMEM, "out of memory");
}

int sched_on_quota_show(struct sched *s, struct sched_call *c)
{
	const char *project = c->project;
	json_t *data = NULL;
	int r;

	if (!project)
		return sched_reject(s, c, "quota.show: project is required");
	r = quota_data(s, project, &data);
	return r < 0 ? r : sched_accept(s, c, NULL, data);
}

int sched_on_quota_set(struct sched *s, struct sched_call *c)
{
	const char *project = c->project;
	json_t *lim = json_object_get(c->body, "limits");
	struct quota_amounts set;
	json_t *data = NULL, *v;
	const char *k;
	int r;

	if (!project || !json_is_object(lim))
		return sched_reject(s, c, "quota.set: project and limits are required");
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
		set.v[i] = -2; /* leave alone */
	json_object_foreach(lim, k, v) {
		enum quota_resource res;

		if (quota_resource_parse(k, &res) < 0)
			return sched_reject(s, c, "quota.set: %s", err_msg());
		if (!json_is_integer(v) || json_integer_value(v) < -1)
			return sched_reject(s, c, "quota.set: limits.%s: expected an integer of at least -1 "
				      "(-1 = unlimited)", k);
		set.v[res] = (long)json_integer_value(v);
	}
	r = sched_tx_begin(s);
	if (r == 0)
		r = quota_limits_set(s->quotas, project, &set);
	if (r == 0)
		r = quota_data(s, project, &data);
	if (r == 0)
		r = sched_accept(s, c, NULL, data);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0)
		log_info("quota set project=%s", project);
	return r;
}

/* ---- hosts ------------------------------------------------------------- */


static int host_cmp(const void *a, const void *b)
{
	const struct sched_host *x = *(struct sched_host *const *)a;
	const struct sched_host *y = *(struct sched_host *const *)b;

	return strcmp(x->name, y->name);
}

int sched_on_host_list(struct sched *s, struct sched_call *c)
{
	json_t *arr = json_array();
	struct sched_host **sorted = malloc((s->n_hosts ? s->n_hosts : 1) * sizeof(*sorted));

	if (!sorted) {
		json_decref(arr);
		return err_set(-ENOMEM, "out of memory");
	}
	if (s->n_hosts)
		memcpy(sorted, s->hosts, s->n_hosts * sizeof(*sorted));
	qsort(sorted, s->n_hosts, sizeof(*sorted), host_cmp);
	for (size_t i = 0; arr && i < s->n_hosts; i++) {
		const struct sched_host *h = sorted[i];
		bool up = sched_host_up(h, s->cfg, c->now_ms);
		json_t *o = json_pack(
			"{s:s, s:s, s:s, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, "
			"s:I, s:f, s:I}",
			"name", h->name, "availability_zone", h->az ? h->az : "nova", "state",
			!up ? "down" : h->degraded ? "degraded" : "up", "vcpus", "used", (json_int_t)h->vcpu_used, "total",
			(json_int_t)sched_host_vcpu_cap(h), "pcpus", "used", (json_int_t)h->pcpu_used,
			"total", (json_int_t)h->pcpu_total, "ram_mb", "used", (json_int_t)h->ram_used,
			"total", (json_int_t)sched_host_ram_cap(h), "disk_gb", "used",
			(json_int_t)h->disk_used, "total", (json_int_t)sched_host_disk_cap(h),
			"instances", (json_int_t)h->instances, "steal_pct", h->steal_pct,
			"recent_failures", (json_int_t)h->recent_failures);

		if (o) {
			json_object_set_new(o, "volumes_gb", json_integer(h->vol_gb));
			json_object_set_new(o, "last_report_ms",
					    json_integer(h->last_report_ms ? c->now_ms - h->last_report_ms
									   : -1));
			/* stale: not heard from since a start or broker move */
			json_object_set_new(o, "recovery",
					    json_string(sched_host_stale(s, h) ? "stale"
							: h->reannounced_ms && h->reannounced_ms >= s->epoch_ms
							? "re-announced" : "-"));
			json_object_set_new(o, "maintenance",
					    json_string(h->draining ? "draining"
							: h->disabled ? "disabled" : "-"));
			json_object_set_new(o, "reannounced_ms",
					    json_integer(h->reannounced_ms ? c->now_ms - h->reannounced_ms
									   : -1));
		}
		json_array_append_new(arr, o);
	}
	free(sorted);
	return sched_accept(s, c, NULL, arr);
}

int sched_on_report(struct sched *s, struct sched_call *c)
{
	const char *name = sched_jstr(c->body, "host");
	struct sched_host *h;
	_cleanup_free_ char *text = NULL;
	sqlite3_stmt *q = s->st[SST_HOST_PUT];
	bool first, was_down;

	if (!name) {
		log_warn("host.report without a host name: skipped");
		return 0;
	}
	h = sched_host_get(s, name);
	if (!h)
		return err_set(-ENOMEM, "out of memory");
	first = h->last_report_ms == 0;
	was_down = !first && !sched_host_up(h, s->cfg, c->now_ms);
	if (sched_host_apply_report(h, c->body, s->cfg, c->now_ms) < 0) {
		log_warn("host report skipped host=%s error=\"%s\"", name, err_msg());
		return 0;
	}
	if (first)
		log_info("host reported host=%s az=%s vcpus=%ld pcpus=%ld ram_mb=%ld", name, h->az,
			 sched_host_vcpu_cap(h), h->pcpu_total, sched_host_ram_cap(h));
	if (json_is_object(json_object_get(c->body, "reannounce"))) {
		int r = sched_reconcile_host(s, c, h, json_object_get(c->body, "reannounce"));

		if (r < 0)
			return r;
	}
	/* back after being down: copies of instances evacuated meanwhile go */
	if ((first || was_down) && sched_evacuation_comeback(s, c, h->name) < 0)
		return -EIO;
	text = json_dumps(c->body, JSON_COMPACT);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, c->now_ms);
	return sched_db_step_done(s, SST_HOST_PUT, "storing a host report");
}

