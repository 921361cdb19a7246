/*
 * Live migration (issue 15): instance.migrate (admin) and the migration's
 * conversation with the two agents, relayed by the scheduler.
 *
 *   stratusctl ─ instance.migrate ─> scheduler: destination picked (or the
 *     one asked for checked) with the boot's filters and weighers, claimed,
 *     `migrations` row, instance `migrating`
 *   scheduler ─ instance.migrate.prepare ─> destination agent: image,
 *     overlay at the same path, fit on its own topology, the address
 *   destination ─ instance.migration {phase: prepared, domain_xml} ─> scheduler
 *   scheduler ─ instance.migrate.perform {domain_xml, limits} ─> source agent:
 *     libvirt peer-to-peer live migration, storage copied
 *   source ─ instance.migration {phase: progress ... completed | failed}
 *   scheduler: completed -> the claim moves, the instance's host changes,
 *     instance.migrate.finish {commit} to the destination; failed -> claim
 *     released, instance.migrate.finish {abort} (the destination cleans up),
 *     the guest keeps running on the source. The scheduler's own
 *     instance.migration {phase: done | aborted} ends it for stratusctl.
 *
 * Why relayed and not agent to agent: agents accept commands only from
 * the scheduler's key (issue 13). A source agent that asked the destination
 * directly would need agents to trust each other's keys for commands, so
 * one compromised host could command every other; relayed, each step is a
 * command the scheduler signed, and the scheduler sees every step (it can
 * time out, abort and recover a migration from its own record).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

const char *const sched_migrate_action_names[] = { "abort", "pause", "postcopy", NULL };

void sched_migration_free(struct sched_migration *m)
{
	free(m->project);
	free(m->source);
	free(m->dest);
	free(m->phase);
	memset(m, 0, sizeof(*m));
}

static char *col(sqlite3_stmt *q, int i)
{
	const unsigned char *t = sqlite3_column_text(q, i);

	return t ? strdup((const char *)t) : NULL;
}

int sched_migration_get(struct sched *s, const char *uuid, struct sched_migration *out)
{
	sqlite3_stmt *q = NULL;
	int rc, r = 0;

	if (sqlite3_prepare_v2(s->db,
			       "SELECT uuid, migration, project, source, dest, phase, numa_node, "
			       "page_kb, pages, started_ms, cold, stopped FROM migrations WHERE uuid = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "reading a migration: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		struct sched_migration m = { 0 };

		snprintf(m.uuid, sizeof(m.uuid), "%s", (const char *)sqlite3_column_text(q, 0));
		snprintf(m.id, sizeof(m.id), "%s", (const char *)sqlite3_column_text(q, 1));
		m.project = col(q, 2);
		m.source = col(q, 3);
		m.dest = col(q, 4);
		m.phase = col(q, 5);
		m.fit.node = sqlite3_column_int(q, 6);
		m.fit.page_kb = (long)sqlite3_column_int64(q, 7);
		m.fit.pages = (long)sqlite3_column_int64(q, 8);
		m.started_ms = sqlite3_column_int64(q, 9);
		m.cold = sqlite3_column_int(q, 10) != 0;
		m.stopped = sqlite3_column_int(q, 11) != 0;
		if (!m.project || !m.source || !m.dest || !m.phase) {
			sched_migration_free(&m);
			r = err_set(-ENOMEM, "out of memory");
		} else {
			*out = m;
		}
	} else if (rc == SQLITE_DONE) {
		r = err_set(-ENOENT, "instance %s is not migrating", uuid);
	} else {
		r = err_set(-EIO, "reading a migration: %s", sqlite3_errmsg(s->db));
	}
	sqlite3_finalize(q);
	return r;
}

static int migration_put(struct sched *s, const struct sched_migration *m, const char *rid)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db,
			       "INSERT OR REPLACE INTO migrations(uuid, migration, project, source, "
			       "dest, phase, numa_node, page_kb, pages, started_ms, request_id, cold, "
			       "stopped) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "writing a migration: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, m->uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, m->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, m->project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, m->source, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 5, m->dest, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 6, m->phase, -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 7, m->fit.node);
	sqlite3_bind_int64(q, 8, m->fit.page_kb);
	sqlite3_bind_int64(q, 9, m->fit.pages);
	sqlite3_bind_int64(q, 10, m->started_ms);
	sqlite3_bind_text(q, 11, rid ? rid : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(q, 12, m->cold);
	sqlite3_bind_int(q, 13, m->stopped);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "writing a migration: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

static int migration_delete(struct sched *s, const char *uuid)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "DELETE FROM migrations WHERE uuid = ?1", -1, &q, NULL) !=
	    SQLITE_OK)
		return err_set(-EIO, "deleting a migration: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "deleting a migration: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

/* The address and MAC the instance's host gave it (instance_ports, from
 * its active event): {mac, address} or NULL when none is known. */
static json_t *port_of(struct sched *s, const char *uuid)
{
	sqlite3_stmt *q = NULL;
	json_t *o = NULL;

	if (sqlite3_prepare_v2(s->db, "SELECT mac, address FROM instance_ports WHERE uuid = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_text(q, 0) && sqlite3_column_text(q, 1))
		o = json_pack("{s:s, s:s}", "mac", (const char *)sqlite3_column_text(q, 0),
			      "address", (const char *)sqlite3_column_text(q, 1));
	sqlite3_finalize(q);
	return o;
}

int sched_port_record(struct sched *s, const char *uuid, const char *mac, const char *address)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (!mac || !address || !*mac || !*address)
		return 0;
	if (sqlite3_prepare_v2(s->db,
			       "INSERT OR REPLACE INTO instance_ports(uuid, mac, address) "
			       "VALUES (?1, ?2, ?3)",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "writing a port: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, mac, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, address, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "writing a port: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

/* ---- what the instance asks of a host: from its stored spec -------------- */

struct mig_req {
	struct sched_flavor fl;
	struct sched_image img;
	struct sched_req req;
	struct sched_alloc alloc;
	struct sched_strvec tried;
};

static void mig_req_free(struct mig_req *q)
{
	sched_flavor_free(&q->fl);
	sched_image_free(&q->img);
	free(q->alloc.host);
	sched_strvec_free(&q->tried);
}

static int mig_req_load(struct sched *s, const struct inst_row *row, struct mig_req *q)
{
	json_t *spec = json_loads(row->spec, 0, NULL);
	int r;

	if (!spec)
		return err_set(-EIO, "instance %s: its stored spec does not parse", row->name);
	r = sched_flavor_from_json(json_object_get(spec, "flavor"), &q->fl);
	if (r == 0)
		r = sched_image_from_json(json_object_get(spec, "image"), &q->img);
	json_decref(spec);
	if (r == 0)
		r = sched_alloc_get(s, row->uuid, &q->alloc);
	if (r == 0 && row->host && sched_strvec_add(&q->tried, row->host) < 0)
		r = err_set(-ENOMEM, "out of memory");
	if (r < 0)
		return r;
	q->req.flavor = &q->fl;
	q->req.image = &q->img;
	q->req.az = row->az;
	q->req.disk_gb = q->alloc.disk_gb;
	/* the source is no candidate: f_retry keeps it out */
	q->req.tried_hosts = (const char *const *)q->tried.v;
	q->req.n_tried_hosts = q->tried.n;
	return 0;
}

/* A refusal: answered (ANSWER: the request's result) or only in
 * err_msg() (a drain's migration); 1, or <0 when the answer failed. */
static int refuse(struct sched *s, struct sched_call *c, bool answer, const char *fmt, ...)
	PRINTF_LIKE(4, 5);

static int refuse(struct sched *s, struct sched_call *c, bool answer, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err_set(-EINVAL, "%s", msg);
	if (!answer)
		return 1;
	r = sched_reject(s, c, "%s", msg);
	return r < 0 ? r : 1;
}

/* The destination asked for (WANT), checked, or the best one picked: *to
 * and *fit set, or a refusal (1). */
static int pick_dest(struct sched *s, struct sched_call *c, const struct inst_row *row,
		     struct mig_req *q, const char *want, bool answer, struct sched_host **to,
		     struct sched_fit *fit)
{
	struct sched_ctx ctx = { .cfg = s->cfg, .now_ms = c->now_ms };
	char why[512];
	struct sched_host *h;

	if (want) {
		h = sched_host_find(s, want);
		if (!h)
			return refuse(s, c, answer, "migrate %s: host %s is not known", row->name, want);
		if (strcmp(want, row->host) == 0)
			return refuse(s, c, answer, "migrate %s: the instance is already on host %s",
				      row->name, want);
		if (sched_host_reject_reason(&ctx, h, &q->req, why, sizeof(why)))
			return refuse(s, c, answer, "migrate %s: host %s cannot take it: %s",
				      row->name, want, why);
		if (!sched_numa_fit(h, &q->req, fit))
			return refuse(s, c, answer, "migrate %s: host %s cannot take it: no NUMA "
				      "node fits its pCPUs and pages", row->name, want);
		*to = h;
		return 0;
	}
	{
		size_t pick[1], scanned = 0, cursor = s->cursor;
		size_t n = sched_select(&ctx, s->hosts, s->n_hosts, &q->req, &cursor, pick, 1,
					&scanned);

		if (n == 0 || !sched_numa_fit(s->hosts[pick[0]], &q->req, fit)) {
			_cleanup_free_ char *reason =
				sched_no_host_reason(&ctx, s->hosts, s->n_hosts, &q->req, row->name);

			return refuse(s, c, answer, "migrate %s: %s", row->name,
				      reason ? reason : "no valid host");
		}
		*to = s->hosts[pick[0]];
	}
	return 0;
}

/* ---- the limits the source applies (Nova's, per-flavor overrides) -------- */

/* The migration:* extra specs a flavor may carry: integers within
 * [min, max] (unit for the message), or one of NAMES. */
static const struct mig_spec {
	const char *key;
	long min, max;
	const char *unit;
	const char *const *names;
} mig_specs[] = {
	{ "migration:downtime", 10, 600000, "ms", NULL },
	{ "migration:downtime_steps", 1, 100, "steps", NULL },
	{ "migration:downtime_delay", 0, 86400, "s per GiB", NULL },
	{ "migration:completion_timeout", 0, 86400, "s per GiB (0: none)", NULL },
	{ "migration:timeout_action", 0, 0, NULL, sched_migrate_action_names },
	{ "migration:permit_auto_converge", 0, 0, NULL, (const char *const[]){ "true", "false",
									      NULL } },
};

static void names_text(char *buf, size_t len, const char *const *names)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; names[i] && used < len; i++) {
		int n = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", names[i]);

		if (n < 0)
			break;
		used += (size_t)n;
	}
}

static int mig_spec_check(const char *flavor, const struct mig_spec *m, const char *v)
{
	char list[128];
	char *end = NULL;
	long n;

	if (m->names) {
		for (size_t i = 0; m->names[i]; i++)
			if (strcmp(m->names[i], v) == 0)
				return 0;
		names_text(list, sizeof(list), m->names);
		return err_set(-EINVAL, "flavor %s: %s: invalid value '%s' (accepted: %s)", flavor,
			       m->key, v, list);
	}
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < m->min || n > m->max)
		return err_set(-EINVAL, "flavor %s: %s: invalid value '%s' (accepted: an integer "
			       "from %ld to %ld, %s)", flavor, m->key, v, m->min, m->max, m->unit);
	return 0;
}

int sched_migration_specs_check(const struct sched_flavor *f)
{
	for (size_t i = 0; i < f->extra_specs.n; i++) {
		const char *k = f->extra_specs.keys[i];
		const struct mig_spec *m = NULL;
		char list[512];
		size_t used = 0;

		if (strncmp(k, "migration:", strlen("migration:")) != 0)
			continue;
		for (size_t j = 0; j < ARRAY_SIZE(mig_specs); j++)
			if (strcmp(mig_specs[j].key, k) == 0)
				m = &mig_specs[j];
		if (m) {
			if (mig_spec_check(f->name, m, f->extra_specs.vals[i]) < 0)
				return -EINVAL;
			continue;
		}
		list[0] = '\0';
		for (size_t j = 0; j < ARRAY_SIZE(mig_specs) && used < sizeof(list); j++) {
			int n = snprintf(list + used, sizeof(list) - used, "%s%s", j ? ", " : "",
					 mig_specs[j].key);

			if (n < 0)
				break;
			used += (size_t)n;
		}
		return err_set(-EINVAL, "flavor %s: unknown extra spec '%s' (accepted migration "
			       "specs: %s)", f->name, k, list);
	}
	return 0;
}

static long spec_long(const struct sched_flavor *f, const char *key, long def)
{
	const char *v = cfg_map_get(&f->extra_specs, key);
	char *end = NULL;
	long n;

	if (!v)
		return def;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < 0)
		return def; /* checked when the flavor was added (sched_flavor_parse) */
	return n;
}

json_t *sched_migration_limits(const struct sched_config *cfg, const struct sched_flavor *f,
			       long disk_gb)
{
	const struct sched_migrate_config *mc = &cfg->migration;
	const char *action = cfg_map_get(&f->extra_specs, "migration:timeout_action");
	const char *ac = cfg_map_get(&f->extra_specs, "migration:permit_auto_converge");
	/* Nova: the timeouts scale with the data to move, at least 2 GiB of RAM */
	long ram_gb = (f->ram_mb + 1023) / 1024;
	long data_gb = (ram_gb < 2 ? 2 : ram_gb) + (disk_gb > 0 ? disk_gb : 0);
	long downtime = spec_long(f, "migration:downtime", mc->downtime_ms);
	long steps = spec_long(f, "migration:downtime_steps", mc->downtime_steps);
	long delay_s = spec_long(f, "migration:downtime_delay", mc->downtime_delay_ms / 1000);
	long timeout_s = spec_long(f, "migration:completion_timeout",
				   mc->completion_timeout_ms / 1000);
	int64_t delay_ms = f && cfg_map_get(&f->extra_specs, "migration:downtime_delay")
				   ? (int64_t)delay_s * 1000
				   : mc->downtime_delay_ms;
	int64_t timeout_ms = f && cfg_map_get(&f->extra_specs, "migration:completion_timeout")
				     ? (int64_t)timeout_s * 1000
				     : mc->completion_timeout_ms;
	bool auto_converge = ac ? strcmp(ac, "true") == 0 : mc->auto_converge;

	if (!action || (strcmp(action, "abort") != 0 && strcmp(action, "pause") != 0 &&
			strcmp(action, "postcopy") != 0))
		action = sched_migrate_action_names[mc->timeout_action];
	return json_pack("{s:I, s:I, s:I, s:I, s:s, s:b, s:I}", "downtime_ms", (json_int_t)downtime,
			 "downtime_steps", (json_int_t)steps, "downtime_delay_ms",
			 (json_int_t)(delay_ms * data_gb), "completion_timeout_ms",
			 (json_int_t)(timeout_ms * data_gb), "timeout_action", action,
			 "auto_converge", auto_converge, "data_gb", (json_int_t)data_gb);
}

/* ---- messages ------------------------------------------------------------- */

/* The scheduler's own instance.migration (done / aborted): signed like its
 * instance.state (sign.c). BODY taken. */
static int emit_migration(struct sched_call *c, const struct sched_migration *m,
			  const char *phase, json_t *body)
{
	if (!body)
		return err_set(-ENOMEM, "out of memory");
	json_object_set_new(body, "uuid", json_string(m->uuid));
	json_object_set_new(body, "migration", json_string(m->id));
	json_object_set_new(body, "phase", json_string(phase));
	json_object_set_new(body, "source", json_string(m->source));
	json_object_set_new(body, "dest", json_string(m->dest));
	return sched_out_add(c->out, BUS_TOPIC_EVENTS, m->uuid, "instance.migration", m->id, body);
}

/* A command of the migration to HOST, with a request id of its own (each
 * agent remembers the ids it processed). BODY taken. */
static int send_cmd(struct sched_call *c, const char *host, const char *type,
		    const struct sched_migration *m, json_t *body)
{
	char rid[UUID_STRLEN];

	if (!body)
		return err_set(-ENOMEM, "out of memory");
	uuid_generate_str(rid);
	json_object_set_new(body, "uuid", json_string(m->uuid));
	json_object_set_new(body, "migration", json_string(m->id));
	log_info("migration command type=%s instance=%s migration=%s host=%s", type, m->uuid,
		 m->id, host);
	return sched_emit_host_cmd(c->out, host, type, rid, m->uuid, body);
}

static int send_prepare(struct sched *s, struct sched_call *c, const struct inst_row *row,
			const struct sched_migration *m, const struct sched_host *to)
{
	json_t *spec = json_loads(row->spec, 0, NULL), *port;

	if (!spec)
		return err_set(-EIO, "instance %s: its stored spec does not parse", row->name);
	port = port_of(s, row->uuid);
	if (port)
		json_object_set_new(spec, "network", port);
	json_object_set_new(spec, "source_host", json_string(m->source));
	/* the port's groups, as a build carries them (the migrations row makes
	 * it one of the destination's ports): enforced before the guest arrives */
	if (sched_sg_build_inputs(s, m->project, to->name, spec) < 0) {
		json_decref(spec);
		return -ENOMEM;
	}
	if (sched_seal_build(s, to, spec) < 0) {
		json_decref(spec);
		return -ENOKEY;
	}
	return send_cmd(c, to->name, "instance.migrate.prepare", m, spec);
}

/* secgroup.apply to the hosts whose ports changed with the end of M: its
 * destination, and its source when DONE; each with a request id of its own. */
static int send_groups(struct sched *s, struct sched_call *c, const struct sched_migration *m,
		       bool done)
{
	char rid[UUID_STRLEN];
	int r;

	uuid_generate_str(rid);
	r = sched_sg_send_host(s, c->out, m->project, m->dest, rid);
	if (r == 0 && done) {
		uuid_generate_str(rid);
		r = sched_sg_send_host(s, c->out, m->project, m->source, rid);
	}
	return r;
}

/* ---- instance.migrate ------------------------------------------------------ */

/* Start migrating ROW (to WANT, or the best host), live or COLD: 0
 * started, 1 refused (answered when ANSWER, else err_msg() says why), <0
 * failed. */
static int migration_start(struct sched *s, struct sched_call *c, struct inst_row *rowp,
			   const char *want, bool answer, bool cold)
{
	struct inst_row row = *rowp;
	struct mig_req q = { 0 };
	struct sched_migration m = { 0 };
	struct sched_host *to = NULL;
	struct sched_fit fit = { .node = -1 };
	char *old_state;
	int r;

	if (!cold && row.host && strcmp(row.state, "stopped") == 0) {
		r = refuse(s, c, answer, "migrate %s: the instance is stopped: live migration needs "
			   "it active (a stopped instance moves with --cold)", row.name);
		goto out;
	}
	if (!row.host || (strcmp(row.state, "active") != 0 &&
			  !(cold && strcmp(row.state, "stopped") == 0))) {
		r = refuse(s, c, answer, "migrate %s: the instance is %s%s: %s", row.name, row.state,
			   row.host ? "" : " and has no host",
			   cold ? "cold migration needs it active or stopped on a host"
				: "live migration needs it active on a host");
		goto out;
	}
	r = mig_req_load(s, &row, &q);
	if (r < 0) {
		r = refuse(s, c, answer, "migrate %s: %s", row.name, err_msg());
		goto out;
	}
	r = pick_dest(s, c, &row, &q, want, answer, &to, &fit);
	if (r != 0)
		goto out;
	if (!to->has_box_key) {
		r = refuse(s, c, answer, "migrate %s: host %s reported no box_key: the instance's "
			   "secrets cannot be sealed to it", row.name, to->name);
		goto out;
	}
	snprintf(m.uuid, sizeof(m.uuid), "%s", row.uuid);
	uuid_generate_str(m.id);
	m.project = row.project;
	m.source = row.host;
	m.dest = to->name;
	m.phase = (char *)"preparing";
	m.fit = fit;
	m.started_ms = c->now_ms;
	m.cold = cold;
	m.stopped = cold && strcmp(row.state, "stopped") == 0;
	old_state = row.state;
	row.state = (char *)"migrating";
	r = sched_tx_begin(s);
	if (r == 0)
		r = migration_put(s, &m, c->rid);
	if (r == 0)
		r = sched_inst_update(s, &row);
	if (r == 0 && answer)
		r = sched_accept(s, c, row.uuid,
				 json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "uuid", row.uuid,
					   "name", row.name, "migration", m.id, "source", m.source,
					   "dest", m.dest, "state", "migrating", "cold", cold));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	row.state = old_state;
	if (r < 0)
		goto out;
	/* claimed before anything moves: no boot takes that room meanwhile */
	sched_host_claim(to, &q.req, &fit);
	log_info("migration started instance=%s migration=%s from=%s to=%s cold=%d", row.uuid,
		 m.id, m.source, m.dest, cold);
	r = sched_emit_state(c->out, c->rid, row.uuid, row.project, row.host, "migrating", NULL);
	if (r == 0)
		r = send_prepare(s, c, &row, &m, to);
	if (r == 0 && !answer)
		/* a drain's: stratusctl host drain follows these */
		r = emit_migration(c, &m, "started", json_object());
out:
	mig_req_free(&q);
	return r;
}

int sched_migration_start(struct sched *s, struct sched_call *c, struct inst_row *rowp,
			  const char *want, bool answer)
{
	return migration_start(s, c, rowp, want, answer, false);
}

int sched_on_migrate(struct sched *s, struct sched_call *c)
{
	const char *ref = sched_jstr(c->body, "instance");
	json_t *cold = json_object_get(c->body, "cold");
	struct inst_row row = { 0 };
	int r;

	if (!c->project || !ref)
		return sched_reject(s, c, "instance.migrate: project and instance are required");
	if (cold && !json_is_boolean(cold))
		return sched_reject(s, c, "instance.migrate: cold must be true or false");
	r = sched_inst_find(s, c->project, ref, &row);
	if (r == -ENOENT)
		return sched_reject(s, c, "instance %s not found in project %s", ref, c->project);
	if (r == -EEXIST)
		return sched_reject(s, c, "%s", err_msg());
	if (r < 0)
		return r;
	r = migration_start(s, c, &row, sched_jstr(c->body, "host"), true, json_is_true(cold));
	inst_row_free(&row);
	return r < 0 ? r : 0;
}

/* ---- the agents' instance.migration ---------------------------------------- */

/* The destination's claim taken back in memory. */
static void release_dest(struct sched *s, const struct sched_migration *m,
			 const struct sched_alloc *a)
{
	struct sched_alloc d = *a;

	d.host = m->dest;
	d.fit = m->fit;
	sched_alloc_release(s, &d);
}

/* Failed at STEP: the guest stays on the source, the destination cleans up. */
static int abort_migration(struct sched *s, struct sched_call *c, const struct sched_migration *m,
			   const char *step, const char *error)
{
	struct inst_row row = { 0 };
	struct sched_alloc a = { 0 };
	_cleanup_free_ char *reason = NULL;
	char *old_state, *old_reason;
	int r = sched_inst_get(s, m->uuid, &row);

	if (r < 0)
		return r == -ENOENT ? 0 : r;
	if (asprintf(&reason, "migration to %s failed at step %s: %s", m->dest, step,
		     error ? error : "failed") < 0)
		return err_set(-ENOMEM, "out of memory");
	old_state = row.state;
	old_reason = row.reason;
	row.state = (char *)(m->stopped ? "stopped" : "active");
	row.reason = reason;
	r = sched_tx_begin(s);
	if (r == 0)
		r = migration_delete(s, m->uuid);
	if (r == 0)
		r = sched_inst_update(s, &row);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	row.state = old_state;
	row.reason = old_reason;
	if (r == 0 && sched_alloc_get(s, m->uuid, &a) == 0)
		release_dest(s, m, &a);
	if (r == 0) {
		log_warn("migration aborted instance=%s migration=%s from=%s to=%s step=%s "
			 "error=\"%s\"", m->uuid, m->id, m->source, m->dest, step, error ? error : "");
		r = sched_emit_state(c->out, m->id, m->uuid, m->project, m->source,
				     m->stopped ? "stopped" : "active", reason);
	}
	if (r == 0)
		r = send_cmd(c, m->dest, "instance.migrate.finish", m,
			     json_pack("{s:s}", "outcome", "abort"));
	if (r == 0) /* the destination's view without the port */
		r = send_groups(s, c, m, false);
	if (r == 0)
		r = emit_migration(c, m, "aborted",
				   json_pack("{s:s, s:s, s:b}", "step", step, "error", reason, "cold",
					     m->cold));
	if (r == 0)
		r = sched_drain_next(s, c, m->source, m->uuid);
	free(a.host);
	inst_row_free(&row);
	return r;
}

/* Completed: the claim moves to the destination, so does the instance. */
static int commit_migration(struct sched *s, struct sched_call *c, const struct sched_migration *m)
{
	struct inst_row row = { 0 };
	struct sched_alloc a = { 0 };
	sqlite3_stmt *q = s->st[SST_ALLOC_MOVE];
	char *old_state, *old_host, *old_reason;
	json_t *stats;
	int r = sched_inst_get(s, m->uuid, &row);

	if (r < 0)
		return r == -ENOENT ? 0 : r;
	r = sched_alloc_get(s, m->uuid, &a);
	if (r < 0)
		goto out;
	old_state = row.state;
	old_host = row.host;
	old_reason = row.reason;
	row.state = (char *)(m->stopped ? "stopped" : "active");
	row.host = m->dest;
	row.reason = NULL;
	r = sched_tx_begin(s);
	if (r == 0) {
		sqlite3_bind_text(q, 1, m->uuid, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, m->dest, -1, SQLITE_STATIC);
		sqlite3_bind_int(q, 3, m->fit.node);
		sqlite3_bind_int64(q, 4, m->fit.page_kb);
		sqlite3_bind_int64(q, 5, m->fit.pages);
		r = sched_db_step_done(s, SST_ALLOC_MOVE, "moving an allocation");
	}
	if (r == 0)
		r = migration_delete(s, m->uuid);
	if (r == 0)
		r = sched_inst_update(s, &row);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	row.state = old_state;
	row.host = old_host;
	row.reason = old_reason;
	if (r < 0)
		goto out;
	sched_alloc_release(s, &a); /* the source's claim (a.host); the destination's stays */
	s->stats.migrations++;
	log_info("migration done instance=%s migration=%s from=%s to=%s", m->uuid, m->id,
		 m->source, m->dest);
	r = sched_emit_state(c->out, m->id, m->uuid, m->project, m->dest,
			     m->stopped ? "stopped" : "active", NULL);
	if (r == 0)
		r = send_cmd(c, m->dest, "instance.migrate.finish", m,
			     json_pack("{s:s, s:b}", "outcome", "commit", "stopped", m->stopped));
	if (r == 0) /* the port is the destination's now, no longer the source's */
		r = send_groups(s, c, m, true);
	stats = json_object();
	if (stats) {
		static const char *const copied[] = { "total_ms", "downtime_ms", "memory_bytes",
						      "disk_bytes", "timed_out", "action",
						      "stopped" };

		for (size_t i = 0; i < ARRAY_SIZE(copied); i++) {
			json_t *v = json_object_get(c->body, copied[i]);

			if (v)
				json_object_set(stats, copied[i], v);
		}
		json_object_set_new(stats, "elapsed_ms", json_integer(c->now_ms - m->started_ms));
		json_object_set_new(stats, "cold", json_boolean(m->cold));
	}
	if (r == 0)
		r = emit_migration(c, m, "done", stats);
	else
		json_decref(stats);
	if (r == 0)
		r = sched_drain_next(s, c, m->source, NULL);
out:
	free(a.host);
	inst_row_free(&row);
	return r;
}

int sched_on_migration(struct sched *s, struct sched_call *c)
{
	const char *uuid = sched_jstr(c->body, "uuid"), *id = sched_jstr(c->body, "migration");
	const char *phase = sched_jstr(c->body, "phase"), *host = sched_jstr(c->body, "host");
	struct sched_migration m = { 0 };
	int r;

	if (!uuid || !id || !phase || !host)
		return 0;
	if (strcmp(phase, "prepared") != 0 && strcmp(phase, "failed") != 0 &&
	    strcmp(phase, "completed") != 0)
		return 0; /* progress (for stratusctl), and our own done / aborted */
	r = sched_migration_get(s, uuid, &m);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	if (strcmp(m.id, id) != 0) {
		log_info("migration event ignored instance=%s migration=%s (current %s)", uuid, id,
			 m.id);
		goto out;
	}
	if (strcmp(phase, "prepared") == 0 && strcmp(host, m.dest) == 0 &&
	    strcmp(m.phase, "preparing") == 0) {
		const char *xml = sched_jstr(c->body, "domain_xml");
		const char *dest_uri = sched_jstr(c->body, "dest_uri");
		struct inst_row row = { 0 };
		struct mig_req q = { 0 };
		json_t *body, *limits;

		if (!xml || !dest_uri) {
			r = abort_migration(s, c, &m, "prepare",
					    "the destination sent no domain XML or libvirt URI "
					    "(agent.migration.uri)");
			goto out;
		}
		r = sched_inst_get(s, uuid, &row);
		if (r == 0)
			r = mig_req_load(s, &row, &q);
		limits = r == 0 ? sched_migration_limits(s->cfg, &q.fl, q.alloc.disk_gb) : NULL;
		if (limits && m.cold) /* the source stops, copies, starts */
			json_object_set_new(limits, "cold", json_true());
		body = limits ? json_pack("{s:s, s:s, s:s, s:o}", "dest_host", m.dest, "dest_uri",
					  dest_uri, "domain_xml", xml, "limits", limits)
			      : NULL;
		mig_req_free(&q);
		inst_row_free(&row);
		if (r < 0)
			goto out;
		free(m.phase);
		m.phase = strdup("performing");
		r = m.phase ? migration_put(s, &m, NULL) : err_set(-ENOMEM, "out of memory");
		if (r == 0)
			r = send_cmd(c, m.source, "instance.migrate.perform", &m, body);
		else
			json_decref(body);
	} else if (strcmp(phase, "failed") == 0 &&
		   (strcmp(host, m.dest) == 0 || strcmp(host, m.source) == 0)) {
		const char *step = sched_jstr(c->body, "step");

		r = abort_migration(s, c, &m, step ? step : strcmp(host, m.dest) == 0 ? "prepare"
										  : "perform",
				    sched_jstr(c->body, "error"));
	} else if (strcmp(phase, "completed") == 0 && strcmp(host, m.source) == 0) {
		r = commit_migration(s, c, &m);
	} else {
		log_info("migration event ignored instance=%s migration=%s phase=%s host=%s "
			 "(phase %s)", uuid, id, phase, host, m.phase);
	}
out:
	sched_migration_free(&m);
	return r;
}

/* ---- migration.prepare_timeout --------------------------------------------- */

static const char overdue_sql[] =
	"SELECT uuid FROM migrations WHERE phase = 'preparing' AND started_ms <= ?1 ORDER BY "
	"started_ms";

bool sched_migration_overdue(struct sched *s, int64_t now_ms)
{
	sqlite3_stmt *q = NULL;
	bool any;

	if (sqlite3_prepare_v2(s->db, overdue_sql, -1, &q, NULL) != SQLITE_OK)
		return false;
	sqlite3_bind_int64(q, 1, now_ms - s->cfg->migration.prepare_timeout_ms);
	any = sqlite3_step(q) == SQLITE_ROW;
	sqlite3_finalize(q);
	return any;
}

int sched_migration_timeouts(struct sched *s, int64_t now_ms, struct sched_out *out)
{
	struct sched_call c = { .type = "instance.migration", .now_ms = now_ms, .out = out };
	struct sched_strvec uuids = { 0 };
	sqlite3_stmt *q = NULL;
	char why[160];
	int r = 0;

	if (sqlite3_prepare_v2(s->db, overdue_sql, -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "migration timeouts: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_int64(q, 1, now_ms - s->cfg->migration.prepare_timeout_ms);
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
		if (sched_strvec_add(&uuids, (const char *)sqlite3_column_text(q, 0)) < 0)
			r = err_set(-ENOMEM, "out of memory");
	sqlite3_finalize(q);
	snprintf(why, sizeof(why), "the destination did not answer within "
		 "scheduler.migration.prepare_timeout (%.1f s)",
		 (double)s->cfg->migration.prepare_timeout_ms / 1e3);
	for (size_t i = 0; r == 0 && i < uuids.n; i++) {
		struct sched_migration m = { 0 };

		r = sched_migration_get(s, uuids.v[i], &m);
		if (r == -ENOENT) {
			r = 0;
			continue;
		}
		if (r == 0 && strcmp(m.phase, "preparing") == 0)
			r = abort_migration(s, &c, &m, "prepare", why);
		sched_migration_free(&m);
	}
	sched_strvec_free(&uuids);
	return r;
}

int sched_migration_resume(struct sched *s, int64_t now_ms, struct sched_out *out)
{
	struct sched_call c = { .type = "instance.migration", .now_ms = now_ms, .out = out };
	struct sched_strvec uuids = { 0 };
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT uuid FROM migrations WHERE phase = 'preparing'", -1,
			       &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "resuming migrations: %s", sqlite3_errmsg(s->db));
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
		if (sched_strvec_add(&uuids, (const char *)sqlite3_column_text(q, 0)) < 0)
			r = err_set(-ENOMEM, "out of memory");
	sqlite3_finalize(q);
	for (size_t i = 0; r == 0 && i < uuids.n; i++) {
		struct sched_migration m = { 0 };
		struct inst_row row = { 0 };
		struct sched_host *to;

		if (sched_migration_get(s, uuids.v[i], &m) < 0 ||
		    sched_inst_get(s, uuids.v[i], &row) < 0) {
			sched_migration_free(&m);
			continue;
		}
		to = sched_host_find(s, m.dest);
		if (to && to->has_box_key) {
			/* the prepare may have died with us before the broker had it; a
			 * destination that has it already answers again (agent/migrate.c) */
			log_info("migration prepare sent again instance=%s migration=%s to=%s",
				 m.uuid, m.id, m.dest);
			r = send_prepare(s, &c, &row, &m, to);
		}
		sched_migration_free(&m);
		inst_row_free(&row);
	}
	sched_strvec_free(&uuids);
	return r;
}
