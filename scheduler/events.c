/*
 * The agents' events on stratus.events: instance.state (the instance's
 * host reports a new state) and instance.reschedule (the host could not
 * build it: the claim moves to an alternate, or the instance fails).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"


int sched_on_state(struct sched *s, struct sched_call *c)
{
	const char *uuid = sched_jstr(c->body, "uuid"), *st = sched_jstr(c->body, "state");
	const char *host = sched_jstr(c->body, "host"), *reason = sched_jstr(c->body, "reason");
	struct inst_row row = { 0 };
	struct sched_alloc a = { 0 };
	enum instance_state state;
	bool have_alloc = false, was_rebuilding, was_building;
	char was[32];
	int r;

	if (!uuid || !st || instance_state_parse(st, &state) < 0)
		return 0;
	if (state == INST_SCHEDULING)
		return 0; /* ours */
	r = sched_inst_get(s, uuid, &row);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	if (state == INST_DELETED && host && row.host && strcmp(host, row.host) != 0 &&
	    sched_evacuation_cleaned(s, uuid, host) < 0) {
		/* an evacuated instance's stale copy, gone from its old host */
		inst_row_free(&row);
		return -EIO;
	}
	if (strcmp(row.state, "deleted") == 0 || strcmp(row.state, st) == 0 ||
	    (host && row.host && strcmp(host, row.host) != 0) ||
	    sched_resize_stale(s, uuid, row.state, state, c->rid)) {
		/* terminal, no change, from a host the instance has left, or not
		 * the answer to the resize (or revert) under way */
		inst_row_free(&row);
		return 0;
	}
	was_rebuilding = strcmp(row.state, "rebuilding") == 0;
	snprintf(was, sizeof(was), "%s", row.state);
	was_building = strcmp(row.state, "building") == 0 || strcmp(row.state, "scheduling") == 0;
	free(row.state);
	free(row.reason);
	row.state = strdup(st);
	row.reason = reason ? strdup(reason) : NULL;
	if (state == INST_ACTIVE && !reason && was_building && row.host)
		/* its first start after an evacuation says what was lost */
		row.reason = sched_evacuation_note(s, uuid, row.host, sched_jstr(c->body, "address"));
	if (!row.state) {
		inst_row_free(&row);
		return err_set(-ENOMEM, "out of memory");
	}
	r = sched_tx_begin(s);
	if (r == 0 && state == INST_DELETED) {
		r = sched_alloc_get(s, uuid, &a);
		have_alloc = r == 0;
		if (r == -ENOENT)
			r = 0;
		if (have_alloc) {
			sqlite3_bind_text(s->st[SST_ALLOC_DEL], 1, uuid, -1, SQLITE_STATIC);
			r = sched_db_step_done(s, SST_ALLOC_DEL, "deleting an allocation");
			if (r == 0)
				r = quota_release(s->quotas, row.project, &a.amt);
		}
	}
	if (r == 0 && was_rebuilding && state != INST_REBUILDING)
		/* failed or rolled back: the host has the old disk and spec again */
		r = sched_rebuild_settle(s, uuid, state == INST_ERROR ||
					 json_is_true(json_object_get(c->body, "rolled_back")));
	if (r == 0) /* resize.c: verify_resize waits, the rest undoes a resize */
		r = sched_resize_settle(s, uuid, was, state, c->now_ms);
	if (r == 0)
		r = sched_inst_update(s, &row);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0) {
		struct sched_host *h = row.host ? sched_host_find(s, row.host) : NULL;

		if (have_alloc)
			sched_alloc_release(s, &a);
		if (h && state == INST_ACTIVE)
			h->recent_failures = 0;
		/* evacuated while stopped: stopped again once rebuilt */
		if (state == INST_ACTIVE && was_building && row.host &&
		    sched_evacuation_settle(s, c->out, uuid, row.host) < 0)
			log_warn("instance=%s: %s", uuid, err_msg());
		/* the address its host gave it: a migration's destination takes it */
		if (state == INST_ACTIVE &&
		    sched_port_record(s, uuid, sched_jstr(c->body, "mac"),
				      sched_jstr(c->body, "address")) < 0)
			log_warn("instance=%s: %s", uuid, err_msg());
		log_info("instance state instance=%s host=%s state=%s", uuid,
			 row.host ? row.host : "-", st);
		/* its address joins (or leaves) its groups' member sets */
		r = sched_sg_on_state(s, c, uuid, row.project, state);
		if (r == 0)
			r = sched_volumes_instance_state(s, c, uuid, row.host, st);
	}
	free(a.host);
	inst_row_free(&row);
	return r;
}

/* "build failed on every host tried (2 of 3): h1: ...; h2: ..." */
static char *faults_text(json_t *faults, long attempts, long max)
{
	struct strbuf sb = { .max = 64 * 1024 };
	const char *k;
	json_t *v;
	bool first = true;

	sb_printf(&sb, "no host could build it (%ld of %ld attempts)", attempts, max);
	json_object_foreach(faults, k, v) {
		sb_printf(&sb, "%s %s: %s", first ? ":" : ";", k,
			  json_string_value(v) ? json_string_value(v) : "failed");
		first = false;
	}
	return sb_steal(&sb);
}

/* The first of ROW's alternates that still passes every filter and fits
 * (into *fit); those that no longer do get their reason in FAULTS. */
static struct sched_host *pick_alternate(struct sched *s, const struct sched_ctx *ctx,
					 const struct inst_row *row, const struct sched_req *req,
					 json_t *faults, struct sched_fit *fit)
{
	json_t *alts = json_loads(row->alternates ? row->alternates : "[]", 0, NULL), *v;
	struct sched_host *to = NULL;
	size_t i;

	json_array_foreach(alts, i, v) {
		struct sched_host *h = sched_host_find(s, json_string_value(v));
		char buf[256];

		if (!h)
			continue;
		if (sched_host_reject_reason(ctx, h, req, buf, sizeof(buf))) {
			if (!json_object_get(faults, h->name))
				json_object_set_new(faults, h->name, json_string(buf));
			continue;
		}
		if (sched_numa_fit(h, req, fit)) {
			to = h;
			break;
		}
	}
	json_decref(alts);
	return to;
}

/* The allocation of UUID moves to host TO, its NUMA part to FIT. */
static int alloc_move(struct sched *s, const char *uuid, const struct sched_host *to,
		      const struct sched_fit *fit)
{
	sqlite3_stmt *q = s->st[SST_ALLOC_MOVE];

	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, to->name, -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 3, fit->node);
	sqlite3_bind_int64(q, 4, fit->page_kb);
	sqlite3_bind_int64(q, 5, fit->pages);
	if (sched_db_step_done(s, SST_ALLOC_MOVE, "moving an allocation") < 0)
		return -EIO;
	return sched_pci_rows_put(s, uuid, to->name, fit);
}

int sched_on_reschedule(struct sched *s, struct sched_call *c)
{
	const char *uuid = sched_jstr(c->body, "uuid"), *failed = sched_jstr(c->body, "failed_host");
	const char *why = sched_jstr(c->body, "reason");
	struct inst_row row = { 0 };
	struct sched_alloc a = { 0 };
	struct sched_flavor fl = { 0 };
	struct sched_image img = { 0 };
	struct sched_req req = { 0 };
	struct sched_strvec tried = { 0 }, ghosts = { 0 };
	struct sched_ctx ctx = { .cfg = s->cfg, .now_ms = c->now_ms };
	struct sched_host *to = NULL, *from;
	struct sched_fit fit = { .node = -1 };
	json_t *spec = NULL, *faults = NULL, *v;
	_cleanup_free_ char *faults_s = NULL, *reason = NULL;
	char *old_state, *old_host, *old_faults, *old_reason;
	const char *k;
	int r;

	if (!uuid)
		return 0;
	r = sched_inst_get(s, uuid, &row);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	if ((strcmp(row.state, "scheduling") != 0 && strcmp(row.state, "building") != 0) ||
	    !row.host || (failed && strcmp(failed, row.host) != 0)) {
		log_info("reschedule ignored instance=%s state=%s host=%s failed_host=%s", uuid,
			 row.state, row.host ? row.host : "-", failed ? failed : "-");
		inst_row_free(&row);
		return 0;
	}
	r = sched_alloc_get(s, uuid, &a);
	if (r < 0) {
		if (r == -ENOENT)
			r = 0; /* not placed: nothing to move */
		goto out;
	}
	from = sched_host_find(s, row.host);
	if (from)
		from->recent_failures++;
	faults = json_loads(row.faults ? row.faults : "{}", 0, NULL);
	if (!faults)
		faults = json_object();
	json_object_set_new(faults, row.host, json_string(why ? why : "build failed"));
	json_object_foreach(faults, k, v)
		sched_strvec_add(&tried, k);
	spec = json_loads(row.spec, 0, NULL);
	if (spec && sched_flavor_from_json(json_object_get(spec, "flavor"), &fl) == 0 &&
	    sched_image_from_json(json_object_get(spec, "image"), &img) == 0) {
		req.flavor = &fl;
		req.image = &img;
		req.az = row.az;
		req.disk_gb = a.disk_gb;
		req.tried_hosts = (const char *const *)tried.v;
		req.n_tried_hosts = tried.n;
		if (row.server_group) {
			enum sched_group_policy pol;

			if (sched_group_policy(s, row.project, row.server_group, NULL, &pol) == 0 &&
			    sched_group_hosts(s, row.project, row.server_group, &ghosts) == 0) {
				req.group_policy = pol;
				req.group_hosts = (const char *const *)ghosts.v;
				req.n_group_hosts = ghosts.n;
			}
		}
		if (row.attempts < s->cfg->max_attempts)
			to = pick_alternate(s, &ctx, &row, &req, faults, &fit);
	}
	faults_s = json_dumps(faults, JSON_COMPACT);
	old_state = row.state;
	old_host = row.host;
	old_faults = row.faults;
	old_reason = row.reason;
	row.faults = faults_s;
	r = sched_tx_begin(s);
	if (r == 0 && to) {
		r = alloc_move(s, uuid, to, &fit);
		if (r == 0) /* an evacuated instance keeps its note on the next host */
			r = sched_evacuation_moved(s, uuid, row.host, to->name);
		row.state = (char *)"scheduling";
		row.host = to->name;
		row.attempts++;
		row.reason = NULL;
	} else if (r == 0) {
		sqlite3_bind_text(s->st[SST_ALLOC_DEL], 1, uuid, -1, SQLITE_STATIC);
		r = sched_db_step_done(s, SST_ALLOC_DEL, "deleting an allocation");
		if (r == 0)
			r = quota_release(s->quotas, row.project, &a.amt);
		reason = faults_text(faults, row.attempts, s->cfg->max_attempts);
		row.state = (char *)"error";
		row.host = NULL;
		row.reason = reason;
	}
	if (r == 0)
		r = sched_inst_update(s, &row);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0) {
		sched_alloc_release(s, &a);
		if (to) {
			sched_host_claim(to, &req, &fit);
			s->stats.reschedules++;
			log_info("instance rescheduled instance=%s from=%s to=%s attempt=%ld "
				 "reason=\"%s\"", uuid, old_host, to->name, row.attempts,
				 why ? why : "");
			r = sched_emit_state(c->out, row.request_id, uuid, row.project, to->name,
				       "scheduling", NULL);
			if (r == 0)
				r = sched_sg_send_build(s, c->out, to, row.spec, row.project,
							row.request_id, row.attempts, &fit);
		} else {
			log_warn("instance failed instance=%s reason=\"%s\"", uuid, reason);
			r = sched_emit_state(c->out, row.request_id, uuid, row.project, NULL, "error",
				       reason);
		}
	}
	row.state = old_state;
	row.host = old_host;
	row.faults = old_faults;
	row.reason = old_reason;
out:
	free(a.host);
	json_decref(spec);
	json_decref(faults);
	sched_flavor_free(&fl);
	sched_image_free(&img);
	sched_strvec_free(&tried);
	sched_strvec_free(&ghosts);
	inst_row_free(&row);
	return r;
}

