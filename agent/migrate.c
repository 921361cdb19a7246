/*
 * Live migration on the agent (issue 15): the three commands the scheduler
 * relays (scheduler/migrate.c has the whole conversation) and their jobs.
 *
 *   instance.migrate.prepare (here the destination): the build's steps up
 *     to the seed, then this host's domain XML; answers instance.migration
 *     {phase: prepared, domain_xml, dest_uri} or {phase: failed}
 *   instance.migrate.perform (here the source): libvirt peer-to-peer live
 *     migration with storage copied and the destination's XML, progress
 *     events, then {phase: completed, total_ms, downtime_ms} and this host
 *     cleaned, or {phase: failed} and the guest still running here
 *   instance.migrate.finish (the destination): commit (the instance is
 *     active here) or abort (everything prepare made is undone)
 *
 * Each side keeps a store migration record (store_migration_*) while the
 * migration lasts, so a restart finishes or undoes it: reconcile_row of a
 * `migrating` row calls agent_migrate_reconcile.
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <string.h>

#include "agent/agent_priv.h"

/* Migration durations and downtimes for the Prometheus histograms (s). */
static const double dur_bounds[AGENT_MIG_BUCKETS] = { 1, 2, 4, 8, 15, 30, 60, 120, 300, 900 };
static const double down_bounds[AGENT_MIG_BUCKETS] = { 0.025, 0.05, 0.1, 0.2, 0.3,
						       0.5, 1,	  2,   5,   10 };

static void observe(uint64_t *hist, const double *bounds, double *sum, double v)
{
	int b;

	for (b = 0; b < AGENT_MIG_BUCKETS && v > bounds[b]; b++)
		;
	hist[b]++;
	*sum += v;
}

static void observe_migration(struct agent *a, bool ok, const struct vmm_migrate_result *res)
{
	pthread_mutex_lock(&a->m_lock);
	if (!ok) {
		a->m.migrations_failed++;
	} else if (!res->cold) { /* a cold move's time is a stop, a copy and a boot */
		a->m.migrations_ok++;
		observe(a->m.mig_dur, dur_bounds, &a->m.mig_dur_sum, (double)res->total_ms / 1e3);
		if (res->have_downtime)
			observe(a->m.mig_down, down_bounds, &a->m.mig_down_sum,
				(double)res->downtime_ms / 1e3);
	} else {
		a->m.migrations_ok++;
	}
	pthread_mutex_unlock(&a->m_lock);
}

static void hist_text(struct strbuf *sb, const char *name, const char *help, const char *host,
		      const uint64_t *hist, const double *bounds, double sum)
{
	uint64_t cum = 0;

	sb_printf(sb, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int b = 0; b <= AGENT_MIG_BUCKETS; b++) {
		cum += hist[b];
		if (b < AGENT_MIG_BUCKETS)
			sb_printf(sb, "%s_bucket{host=\"%s\",le=\"%g\"} %llu\n", name, host, bounds[b],
				  (unsigned long long)cum);
		else
			sb_printf(sb, "%s_bucket{host=\"%s\",le=\"+Inf\"} %llu\n", name, host,
				  (unsigned long long)cum);
	}
	sb_printf(sb, "%s_sum{host=\"%s\"} %.6f\n", name, host, sum);
	sb_printf(sb, "%s_count{host=\"%s\"} %llu\n", name, host, (unsigned long long)cum);
}

void agent_migration_metrics(struct agent *a, struct strbuf *sb)
{
	const char *h = a->cfg->host;

	/* the caller holds m_lock */
	hist_text(sb, "stratus_migration_duration_seconds",
		  "Live migrations out of this host: libvirt's total time.", h, a->m.mig_dur,
		  dur_bounds, a->m.mig_dur_sum);
	hist_text(sb, "stratus_migration_downtime_seconds",
		  "Live migrations out of this host: the guest's downtime libvirt measured.", h,
		  a->m.mig_down, down_bounds, a->m.mig_down_sum);
	sb_printf(sb, "# HELP stratus_migrations_total Live migrations out of this host, by "
		      "result.\n# TYPE stratus_migrations_total counter\n");
	sb_printf(sb, "stratus_migrations_total{host=\"%s\",result=\"ok\"} %llu\n", h,
		  (unsigned long long)a->m.migrations_ok);
	sb_printf(sb, "stratus_migrations_total{host=\"%s\",result=\"failed\"} %llu\n", h,
		  (unsigned long long)a->m.migrations_failed);
}

/* instance.migration on stratus.events (EXTRA taken, may be NULL). */
static void emit_migration(struct agent *a, const char *uuid, const char *migration,
			   const char *phase, const char *request_id, json_t *extra)
{
	json_t *b = json_pack("{s:s, s:s, s:s, s:s}", "uuid", uuid, "migration", migration,
			      "phase", phase, "host", a->cfg->host);

	if (b && extra)
		json_object_update(b, extra);
	json_decref(extra);
	if (strcmp(phase, "progress") != 0)
		log_info("migration instance=%s migration=%s phase=%s", uuid, migration, phase);
	agent_emit_event(a, "instance.migration", request_id, b);
}

static void emit_failed(struct agent *a, const char *uuid, const char *migration,
			const char *step, const char *request_id, const char *error)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "host %s: %s", a->cfg->host, error ? error : "failed");
	log_warn("migration failed instance=%s migration=%s step=%s error=\"%s\"", uuid, migration,
		 step, msg);
	emit_migration(a, uuid, migration, "failed", request_id,
		       json_pack("{s:s, s:s}", "step", step, "error", msg));
}

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* ---- the commands, at the edge (agent_handle_message checked them) ------- */

int agent_on_migrate_prepare(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	const char *mig = jstr(e->body, "migration"), *src = jstr(e->body, "source_host");
	struct store_instance row = { 0 };
	struct store_migration m = { 0 };
	struct instance_spec spec;
	json_t *body;
	int r;

	if (store_instance_get(a->store, uuid, &row) == 0) {
		/* redelivered, or the instance is here already */
		bool ours = store_migration_get(a->store, uuid, &m) == 0 &&
			    strcmp(m.migration, mig) == 0;

		if (ours && strcmp(m.phase, "prepared") == 0)
			emit_migration(a, uuid, mig, "prepared", e->request_id,
				       json_pack("{s:s, s:s}", "domain_xml", m.domain_xml ? m.domain_xml : "",
						 "dest_uri", a->cfg->migration_uri));
		else if (!ours)
			emit_failed(a, uuid, mig, "prepare", e->request_id,
				    "the instance is already on this host");
		store_migration_free(&m);
		store_instance_free(&row);
		return 0;
	}
	if (!*a->cfg->migration_uri) {
		emit_failed(a, uuid, mig, "prepare", e->request_id,
			    "agent.migration_uri is not set: the source cannot reach this host's "
			    "libvirtd");
		return 0;
	}
	body = json_deep_copy(e->body);
	if (!body)
		return err_set(-ENOMEM, "out of memory");
	r = agent_trust_open_build(a, body);
	if (r == 0)
		r = model_spec_parse(body, &spec);
	/* the project's groups on this host with the incoming port, as a build
	 * carries them: the filter step applies them before the guest arrives */
	if (r == 0 && json_is_object(json_object_get(body, "secgroups")) &&
	    agent_sg_update(a, json_object_get(body, "secgroups"), false) < 0) {
		r = err_prefix(-EINVAL, "instance %s: secgroups", uuid);
		model_spec_free(&spec);
	}
	json_decref(body);
	if (r < 0) {
		emit_failed(a, uuid, mig, "prepare", e->request_id, err_msg());
		return 0; /* nothing will make this message valid here */
	}
	snprintf(row.uuid, sizeof(row.uuid), "%s", uuid);
	row.state = INST_MIGRATING;
	row.name = spec.name;
	row.project = spec.project;
	row.step = (char *)(uintptr_t) "accepted";
	row.request_id = (char *)(uintptr_t)e->request_id;
	snprintf(m.uuid, sizeof(m.uuid), "%s", uuid);
	m.migration = (char *)(uintptr_t)mig;
	m.role = (char *)(uintptr_t) "dest";
	m.peer = (char *)(uintptr_t)src;
	m.phase = (char *)(uintptr_t) "preparing";
	m.request_id = (char *)(uintptr_t)e->request_id;
	r = agent_row_set_spec(&row, &spec);
	if (r == 0)
		r = store_migration_put(a->store, &m);
	if (r == 0)
		r = store_instance_put(a->store, &row);
	free(row.spec_json);
	if (r < 0) {
		model_spec_free(&spec);
		return r; /* not durable: the message comes again */
	}
	return agent_enqueue_spec(a, "instance.migrate.prepare", e->request_id, &spec);
}

int agent_on_migrate_perform(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	const char *mig = jstr(e->body, "migration");
	struct store_instance row = { 0 };
	struct store_migration m = { 0 };
	char *limits = NULL;
	bool cold;
	int r;

	r = store_instance_get(a->store, uuid, &row);
	if (r < 0) {
		emit_failed(a, uuid, mig, "perform", e->request_id, "the instance is not on this host");
		return 0;
	}
	cold = json_is_true(json_object_get(json_object_get(e->body, "limits"), "cold"));
	if (row.state != INST_ACTIVE && !(cold && row.state == INST_STOPPED)) {
		emit_failed(a, uuid, mig, "perform", e->request_id,
			    row.state == INST_MIGRATING ? "the instance is migrating already"
			    : cold			? "the instance is neither active nor stopped here"
							: "the instance is not active here");
		store_instance_free(&row);
		return 0;
	}
	{
		/* the record says what the move was: a restart decides from it */
		json_t *l = json_deep_copy(json_object_get(e->body, "limits"));

		if (json_is_object(l) && cold)
			json_object_set_new(l, "stopped", json_boolean(row.state == INST_STOPPED));
		limits = json_is_object(l) ? json_dumps(l, JSON_COMPACT) : NULL;
		json_decref(l);
	}
	snprintf(m.uuid, sizeof(m.uuid), "%s", uuid);
	m.migration = (char *)(uintptr_t)mig;
	m.role = (char *)(uintptr_t) "source";
	m.peer = (char *)(uintptr_t)jstr(e->body, "dest_host");
	m.phase = (char *)(uintptr_t) "performing";
	m.dest_uri = (char *)(uintptr_t)jstr(e->body, "dest_uri");
	m.domain_xml = (char *)(uintptr_t)jstr(e->body, "domain_xml");
	m.request_id = (char *)(uintptr_t)e->request_id;
	m.params_json = limits;
	r = limits ? store_migration_put(a->store, &m) : err_set(-ENOMEM, "out of memory");
	if (r == 0)
		r = store_instance_set_state(a->store, uuid, INST_MIGRATING, "migrating-out", NULL);
	free(limits);
	store_instance_free(&row);
	if (r < 0)
		return r;
	r = store_request_put(a->store, e->request_id, uuid, e->type, NULL);
	if (r < 0)
		return r;
	agent_fault_point("accept", e->type);
	return agent_enqueue(a, e->type, uuid, e->request_id, NULL);
}

int agent_on_migrate_finish(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	const char *mig = jstr(e->body, "migration"), *outcome = jstr(e->body, "outcome");
	struct store_migration m = { 0 };
	int r = store_migration_get(a->store, uuid, &m);

	if (r == -ENOENT) {
		/* prepare failed here (and cleaned up), or finished already */
		store_request_put(a->store, e->request_id, uuid, e->type, "{\"ok\":true}");
		return 0;
	}
	if (r < 0)
		return r;
	if (strcmp(m.migration, mig) != 0 || strcmp(m.role, "dest") != 0) {
		log_warn("migration finish ignored instance=%s migration=%s (ours: %s as %s)", uuid,
			 mig, m.migration, m.role);
		store_migration_free(&m);
		return 0;
	}
	free(m.phase);
	m.phase = strdup(strcmp(outcome, "commit") == 0 ? "commit" : "abort");
	if (json_is_true(json_object_get(e->body, "stopped"))) {
		/* a cold move of a stopped instance: shut off here is its state */
		free(m.params_json);
		m.params_json = strdup("{\"stopped\":true}");
	}
	r = m.phase ? store_migration_put(a->store, &m) : err_set(-ENOMEM, "out of memory");
	store_migration_free(&m);
	if (r == 0)
		r = store_request_put(a->store, e->request_id, uuid, e->type, NULL);
	if (r < 0)
		return r;
	agent_fault_point("accept", e->type);
	return agent_enqueue(a, e->type, uuid, e->request_id, NULL);
}

/* ---- the jobs --------------------------------------------------------------- */

int agent_do_migrate_prepare(struct agent *a, struct job *j)
{
	struct store_migration m = { 0 };
	char *xml = NULL;
	int r = store_migration_get(a->store, j->uuid, &m);

	if (r < 0)
		return r;
	r = agent_build_incoming(a, j, &xml);
	if (r == -EALREADY) {
		r = 0;
		goto out;
	}
	if (r < 0) {
		emit_failed(a, j->uuid, m.migration, "prepare", j->request_id, err_msg());
		store_migration_delete(a->store, j->uuid);
		store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":false}");
		r = 0;
		goto out;
	}
	free(m.phase);
	free(m.domain_xml);
	m.phase = strdup("prepared");
	m.domain_xml = xml;
	xml = NULL;
	r = m.phase ? store_migration_put(a->store, &m) : err_set(-ENOMEM, "out of memory");
	if (r < 0)
		goto out;
	store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":true}");
	agent_fault_point("migrate", "prepared");
	emit_migration(a, j->uuid, m.migration, "prepared", j->request_id,
		       json_pack("{s:s, s:s}", "domain_xml", m.domain_xml, "dest_uri",
				 a->cfg->migration_uri));
out:
	free(xml);
	store_migration_free(&m);
	return r;
}

struct progress_ctx {
	struct agent *a;
	const char *uuid, *migration, *request_id;
	int64_t last_ms;
};

static void on_progress(const struct vmm_migrate_progress *p, void *opaque)
{
	struct progress_ctx *c = opaque;
	int64_t now = time_mono_ms();

	if (now - c->last_ms < 1000)
		return; /* one event a second at most */
	c->last_ms = now;
	emit_migration(c->a, c->uuid, c->migration, "progress", c->request_id,
		       json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "memory_processed",
				 (json_int_t)p->mem_processed, "memory_remaining",
				 (json_int_t)p->mem_remaining, "memory_total",
				 (json_int_t)p->mem_total, "disk_processed",
				 (json_int_t)p->disk_processed, "disk_remaining",
				 (json_int_t)p->disk_remaining, "disk_total", (json_int_t)p->disk_total,
				 "total_ms", (json_int_t)p->elapsed_ms));
}

static int limits_parse(const char *text, struct vmm_migrate_opts *o, bool *cold)
{
	json_t *l = text ? json_loads(text, 0, NULL) : NULL;
	const char *action;
	int r = 0;

	if (!json_is_object(l)) {
		json_decref(l);
		return err_set(-EINVAL, "migration limits: not an object");
	}
	o->downtime_ms = (long)json_integer_value(json_object_get(l, "downtime_ms"));
	o->downtime_steps = (int)json_integer_value(json_object_get(l, "downtime_steps"));
	o->downtime_delay_ms = json_integer_value(json_object_get(l, "downtime_delay_ms"));
	o->completion_timeout_ms = json_integer_value(json_object_get(l, "completion_timeout_ms"));
	o->auto_converge = json_is_true(json_object_get(l, "auto_converge"));
	*cold = json_is_true(json_object_get(l, "cold"));
	action = jstr(l, "timeout_action");
	o->timeout_action = VMM_MIG_ABORT;
	for (int i = 0; action && i < VMM_MIG_ACTION_LAST; i++)
		if (strcmp(vmm_migrate_action_names[i], action) == 0)
			o->timeout_action = (enum vmm_migrate_action)i;
	json_decref(l);
	return r;
}

int agent_do_migrate_perform(struct agent *a, struct job *j)
{
	struct store_migration m = { 0 };
	struct store_instance row = { 0 };
	struct vmm_migrate_opts o = { .copy_storage = true };
	struct vmm_migrate_result res = { 0 };
	struct progress_ctx pc = { .a = a, .uuid = j->uuid, .request_id = j->request_id };
	enum instance_state back = INST_ACTIVE;
	enum vmm_power pw = VMM_POWER_NONE;
	bool cold = false;
	int r = store_migration_get(a->store, j->uuid, &m);

	if (r < 0)
		return r;
	if (strcmp(m.phase, "performing") != 0 || store_instance_get(a->store, j->uuid, &row) < 0)
		goto out; /* finished before a restart (agent_migrate_reconcile) */
	pc.migration = m.migration;
	o.dest_uri = m.dest_uri;
	o.dest_xml = m.domain_xml;
	o.progress = on_progress;
	o.opaque = &pc;
	o.shutdown_timeout_ms = a->vmm_cfg->shutdown_timeout_ms;
	r = limits_parse(m.params_json, &o, &cold);
	if (r == 0) {
		log_info("migration starting instance=%s migration=%s to=%s uri=%s cold=%d "
			 "downtime_ms=%ld timeout_ms=%lld action=%s", j->uuid, m.migration, m.peer,
			 m.dest_uri, cold, o.downtime_ms, (long long)o.completion_timeout_ms,
			 vmm_migrate_action_names[o.timeout_action]);
		/* a cold move of a guest that is off leaves it off: its state after a failure */
		if (cold && vmm_power_state(a->conn, j->uuid, &pw) == 0 && pw != VMM_POWER_RUNNING &&
		    pw != VMM_POWER_PAUSED)
			back = INST_STOPPED;
		r = cold ? vmm_migrate_cold(a->conn, j->uuid, &o, &res)
			 : vmm_migrate(a->conn, j->uuid, &o, &res);
	}
	if (r < 0) {
		char why[1024];

		snprintf(why, sizeof(why), "%s", err_msg());
		/* libvirt aborted it (or the cold move undid its steps): the guest runs
		 * here, as before (a cold one that was off stays off) */
		store_instance_set_state(a->store, j->uuid, back, "done", NULL);
		store_migration_delete(a->store, j->uuid);
		store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":false}");
		observe_migration(a, false, &res);
		emit_failed(a, j->uuid, m.migration, "perform", j->request_id, why);
		r = 0;
		goto out;
	}
	/* the guest runs there now: durable before this host lets go of it */
	free(m.phase);
	m.phase = strdup("completed");
	if (m.phase)
		store_migration_put(a->store, &m);
	agent_fault_point("migrate", "completed");
	observe_migration(a, true, &res);
	agent_cleanup_instance(a, &row);
	store_migration_delete(a->store, j->uuid);
	store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":true}");
	log_info("migration completed instance=%s migration=%s to=%s total_ms=%lld "
		 "downtime_ms=%lld", j->uuid, m.migration, m.peer, (long long)res.total_ms,
		 (long long)res.downtime_ms);
	{
		json_t *x = json_pack("{s:I, s:I, s:I, s:b, s:s}", "total_ms", (json_int_t)res.total_ms,
				      "memory_bytes", (json_int_t)res.mem_bytes, "disk_bytes",
				      (json_int_t)res.disk_bytes, "timed_out", res.timed_out,
				      "action", vmm_migrate_action_names[res.action]);

		if (x && res.have_downtime)
			json_object_set_new(x, "downtime_ms", json_integer(res.downtime_ms));
		if (x && res.cold) {
			/* downtime: stop here -> boot there, ours (libvirt's is the copy's) */
			json_object_set_new(x, "cold", json_true());
			json_object_set_new(x, "stopped", json_boolean(!res.was_running));
		}
		emit_migration(a, j->uuid, m.migration, "completed", j->request_id, x);
	}
out:
	store_instance_free(&row);
	store_migration_free(&m);
	return r;
}

int agent_do_migrate_finish(struct agent *a, struct job *j)
{
	struct store_migration m = { 0 };
	struct store_instance row = { 0 };
	int r = store_migration_get(a->store, j->uuid, &m);

	if (r < 0)
		return r == -ENOENT ? 0 : r;
	r = store_instance_get(a->store, j->uuid, &row);
	if (r < 0) {
		store_migration_delete(a->store, j->uuid);
		r = 0;
		goto out;
	}
	if (strcmp(m.phase, "commit") == 0) {
		enum vmm_power pw = VMM_POWER_NONE;
		json_t *params = m.params_json ? json_loads(m.params_json, 0, NULL) : NULL;
		bool stopped = json_is_true(json_object_get(params, "stopped"));
		enum instance_state st;

		json_decref(params);

		vmm_power_state(a->conn, j->uuid, &pw);
		st = pw == VMM_POWER_RUNNING || pw == VMM_POWER_PAUSED ? INST_ACTIVE
		     : stopped && pw == VMM_POWER_SHUTOFF		  ? INST_STOPPED
									  : INST_ERROR;
		r = store_instance_set_state(a->store, j->uuid, st, "done",
					     st == INST_ERROR
						     ? "migrated here but its domain is not running"
						     : NULL);
		if (r < 0)
			goto out;
		store_migration_delete(a->store, j->uuid);
		store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":true}");
		agent_emit_state(a, j->uuid, row.project, st, "migrated here", j->request_id,
				 json_pack("{s:s, s:s}", "address", row.address ? row.address : "",
					   "mac", row.mac ? row.mac : ""));
	} else {
		/* the guest stays on the source: what prepare made goes */
		log_info("migration aborted: cleaning up instance=%s migration=%s", j->uuid,
			 m.migration);
		agent_cleanup_instance(a, &row);
		store_migration_delete(a->store, j->uuid);
		store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":true}");
	}
out:
	store_instance_free(&row);
	store_migration_free(&m);
	return r;
}

/* ---- after a restart ---------------------------------------------------------- */

/*
 * A `migrating` row at start: the migration record says which side we were
 * and how far it got; libvirt says where the guest runs (PW here).
 *   source, performing: the libvirt job died with us (p2p migrations are
 *     driven by the source libvirtd: it aborts when its client goes, or
 *     completes): the guest runs here -> active, failed reported; it does
 *     not -> it moved: completed reported, this host cleaned
 *   source, completed: cleanup was interrupted: clean, completed again
 *   dest, preparing (steps interrupted): undone, failed reported
 *   dest, prepared / commit / abort: the job comes back (commit and abort
 *     are queued again; prepared waits for the scheduler's finish)
 */
const char *const agent_cold_plan_names[] = { "rollback", "finish" };
_Static_assert(sizeof(agent_cold_plan_names) / sizeof(agent_cold_plan_names[0]) ==
		       AGENT_COLD_PLAN_LAST, "agent_cold_plan_names");

enum agent_cold_plan agent_cold_plan(enum vmm_power src, enum vmm_power dst)
{
	/* libvirt leaves the source shut off only once the copy completed: a
	 * source copy that is paused (the copy's) or running was not moved */
	if (src == VMM_POWER_RUNNING || src == VMM_POWER_PAUSED)
		return AGENT_COLD_ROLLBACK;
	switch (dst) {
	case VMM_POWER_NONE:
		return AGENT_COLD_ROLLBACK; /* the copy never arrived */
	case VMM_POWER_RUNNING:	 /* booted there already */
	case VMM_POWER_PAUSED:	 /* the copy arrived, not booted yet */
	case VMM_POWER_SHUTOFF:	 /* paused copy destroyed, boot pending (or a stopped one) */
	case VMM_POWER_CRASHED:
	case VMM_POWER_OTHER:
		return AGENT_COLD_FINISH;
	case VMM_POWER_LAST:
		break;
	}
	return AGENT_COLD_ROLLBACK;
}

/* The state a row gets from its domain here after a rollback (AS_WAS when
 * the domain is not there: the sync pass reports it). */
static enum instance_state state_of(struct agent *a, const char *uuid, enum instance_state as_was)
{
	enum vmm_power pw = VMM_POWER_NONE;

	if (vmm_power_state(a->conn, uuid, &pw) < 0)
		return as_was;
	switch (pw) {
	case VMM_POWER_RUNNING:
	case VMM_POWER_PAUSED:
		return INST_ACTIVE;
	case VMM_POWER_SHUTOFF:
	case VMM_POWER_CRASHED:
		return INST_STOPPED;
	case VMM_POWER_NONE:
	case VMM_POWER_OTHER:
	case VMM_POWER_LAST:
		break;
	}
	return as_was;
}

/* Whether UUID's domain is active (running or paused) on the libvirtd at
 * URI; false also when URI is NULL or cannot be asked. */
static bool runs_at(const char *uri, const char *uuid)
{
	enum vmm_power p = VMM_POWER_NONE;

	return uri && vmm_remote_power(uri, uuid, &p) == 0 &&
	       (p == VMM_POWER_RUNNING || p == VMM_POWER_PAUSED || p == VMM_POWER_OTHER);
}

static void cold_reconcile(struct agent *a, const struct store_instance *row,
			   const struct store_migration *m, enum vmm_power pw, bool stopped)
{
	enum vmm_power dst = VMM_POWER_NONE;
	enum agent_cold_plan plan;
	enum instance_state st;
	char why[1024];
	int r;

	r = m->dest_uri ? vmm_remote_power(m->dest_uri, row->uuid, &dst) : -EINVAL;
	/* the destination cannot be asked: roll back here; its agent's abort
	 * (the scheduler's, on our failed) undefines its copy */
	plan = r < 0 ? AGENT_COLD_ROLLBACK : agent_cold_plan(pw, dst);
	log_warn("reconcile: cold migration interrupted instance=%s to=%s source=%s dest=%s "
		 "stopped=%d plan=%s", row->uuid, m->peer, vmm_power_names[pw],
		 r < 0 ? "unknown" : vmm_power_names[dst], stopped, agent_cold_plan_names[plan]);
	if (plan == AGENT_COLD_FINISH) {
		r = vmm_migrate_cold_finish(a->conn, m->dest_uri, row->uuid, !stopped);
		if (r == 0) {
			agent_cleanup_instance(a, row);
			store_migration_delete(a->store, row->uuid);
			emit_migration(a, row->uuid, m->migration, "completed", m->request_id,
				       json_pack("{s:b, s:b, s:b}", "cold", 1, "stopped", stopped,
						 "timed_out", 0));
			return;
		}
		log_warn("reconcile: finishing the cold move failed, rolling back instance=%s: %s",
			 row->uuid, err_msg());
	}
	snprintf(why, sizeof(why), "the source agent restarted during the cold migration "
		 "(here %s, on %s %s): rolled back", vmm_power_names[pw], m->peer,
		 r < 0 && plan == AGENT_COLD_ROLLBACK ? "unknown" : vmm_power_names[dst]);
	if (m->dest_uri && vmm_migrate_cold_rollback(a->conn, m->dest_uri, row->uuid, !stopped) < 0)
		log_warn("reconcile: cold rollback instance=%s: %s", row->uuid, err_msg());
	st = state_of(a, row->uuid, stopped ? INST_STOPPED : INST_ACTIVE);
	store_instance_set_state(a->store, row->uuid, st, "done", NULL);
	store_migration_delete(a->store, row->uuid);
	emit_failed(a, row->uuid, m->migration, "perform", m->request_id, why);
}

void agent_migrate_reconcile(struct agent *a, const struct store_instance *row, enum vmm_power pw)
{
	struct store_migration m = { 0 };
	bool here = pw == VMM_POWER_RUNNING || pw == VMM_POWER_PAUSED;

	if (store_migration_get(a->store, row->uuid, &m) < 0) {
		/* a migrating row without its record: libvirt decides */
		log_warn("reconcile: migrating instance without a migration record instance=%s",
			 row->uuid);
		if (here)
			store_instance_set_state(a->store, row->uuid, INST_ACTIVE, "done", NULL);
		else
			agent_cleanup_instance(a, row);
		return;
	}
	if (strcmp(m.role, "source") == 0) {
		json_t *params = m.params_json ? json_loads(m.params_json, 0, NULL) : NULL;
		bool cold = json_is_true(json_object_get(params, "cold"));
		bool stopped = json_is_true(json_object_get(params, "stopped"));

		json_decref(params);
		if (cold && strcmp(m.phase, "performing") == 0) {
			cold_reconcile(a, row, &m, pw, stopped);
		} else if (here && strcmp(m.phase, "performing") == 0) {
			vmm_migrate_abort(a->conn, row->uuid);
			store_instance_set_state(a->store, row->uuid, INST_ACTIVE, "done", NULL);
			store_migration_delete(a->store, row->uuid);
			emit_failed(a, row->uuid, m.migration, "perform", m.request_id,
				    "the source agent restarted during the migration; the guest "
				    "kept running here");
		} else if (strcmp(m.phase, "performing") == 0 &&
			   !runs_at(m.dest_uri, row->uuid)) {
			/* neither here nor there (or there cannot be asked): not a success */
			char why[512];

			snprintf(why, sizeof(why), "the source agent restarted during the migration "
				 "and the guest runs neither here nor on %s", m.peer);
			store_instance_set_state(a->store, row->uuid, INST_ACTIVE, "done", NULL);
			store_migration_delete(a->store, row->uuid);
			emit_failed(a, row->uuid, m.migration, "perform", m.request_id, why);
		} else {
			log_warn("reconcile: instance migrated away while we were down instance=%s "
				 "to=%s", row->uuid, m.peer);
			agent_cleanup_instance(a, row);
			store_migration_delete(a->store, row->uuid);
			emit_migration(a, row->uuid, m.migration, "completed", m.request_id,
				       cold ? json_pack("{s:b, s:b}", "cold", 1, "stopped", stopped)
					    : NULL);
		}
	} else if (strcmp(m.phase, "preparing") == 0) {
		agent_cleanup_instance(a, row);
		store_migration_delete(a->store, row->uuid);
		emit_failed(a, row->uuid, m.migration, "prepare", m.request_id,
			    "the destination agent restarted while preparing");
	} else if (strcmp(m.phase, "commit") == 0 || strcmp(m.phase, "abort") == 0) {
		agent_enqueue(a, "instance.migrate.finish", row->uuid, m.request_id, NULL);
	} else if (strcmp(m.phase, "prepared") == 0 && !here) {
		/* we may have died before saying so: say it again (the scheduler
		 * ignores a second one) */
		emit_migration(a, row->uuid, m.migration, "prepared", m.request_id,
			       json_pack("{s:s, s:s}", "domain_xml", m.domain_xml ? m.domain_xml : "",
					 "dest_uri", a->cfg->migration_uri));
	}
	store_migration_free(&m);
}
