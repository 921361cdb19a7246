/*
 * Security groups (Neutron's model, docs/scheduler.md "Security groups"):
 * per-project groups of rules; every instance is in one or more; the
 * `default` group of a project is created on first use and admits ingress
 * only from its own members, all egress.
 *
 * Tables:
 *   secgroups(id PK, project, name, description, created)    UNIQUE(project, name)
 *   secgroup_rules(id PK, group_id, project, rule)           rule: model JSON,
 *                                                            remote_group as a group id
 *   secgroup_members(uuid, group_id, project)                an instance's groups
 *   secgroup_ports(uuid PK, project, address)                its address (from the
 *                                                            agent's active event)
 *
 * A rule change or a membership change sends secgroup.apply to every host
 * with a port of the project: the project's ports there, their groups'
 * rules, and the addresses of every remote group's members on all hosts
 * (the agent compiles them, agent/secgroup.c). A build carries the same
 * inputs (`secgroups`), so a new port is filtered before its guest starts;
 * so does a migration's prepare, and a host's view holds the ports
 * migrating to it (docs/operations.md "Security groups and migration").
 * Every view is numbered (`seq`): an agent reads a build's, a prepare's
 * (keyed by instance) and secgroup.apply (keyed by project) in any order
 * and keeps the latest.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

static const char sg_schema[] =
	"CREATE TABLE IF NOT EXISTS secgroups ("
	" id TEXT PRIMARY KEY, project TEXT NOT NULL, name TEXT NOT NULL,"
	" description TEXT NOT NULL DEFAULT '', created TEXT NOT NULL, UNIQUE(project, name));"
	"CREATE TABLE IF NOT EXISTS secgroup_rules ("
	" id TEXT PRIMARY KEY, group_id TEXT NOT NULL, project TEXT NOT NULL, rule TEXT NOT NULL);"
	"CREATE INDEX IF NOT EXISTS secgroup_rules_group ON secgroup_rules(group_id);"
	"CREATE TABLE IF NOT EXISTS secgroup_members ("
	" uuid TEXT NOT NULL, group_id TEXT NOT NULL, project TEXT NOT NULL,"
	" PRIMARY KEY(uuid, group_id));"
	"CREATE INDEX IF NOT EXISTS secgroup_members_group ON secgroup_members(group_id);"
	"CREATE INDEX IF NOT EXISTS secgroup_members_project ON secgroup_members(project);"
	"CREATE TABLE IF NOT EXISTS secgroup_ports ("
	" uuid TEXT PRIMARY KEY, project TEXT NOT NULL, address TEXT);"
	/* one row: the scheduler's starts, numbering the views (sched_sg_open) */
	"CREATE TABLE IF NOT EXISTS secgroup_epoch ("
	" id INTEGER PRIMARY KEY CHECK (id = 0), epoch INTEGER NOT NULL);"
	/* a build's view: the project's instances on one host (sched_sg_view) */
	"CREATE INDEX IF NOT EXISTS allocations_host ON allocations(host, project);"
	/* and the addresses of a remote group's members */
	"CREATE INDEX IF NOT EXISTS secgroup_ports_addressed ON secgroup_ports(project, address)"
	" WHERE address IS NOT NULL;";

int sched_sg_open(struct sched *s)
{
	sqlite3_stmt *q = NULL;
	char *emsg = NULL;
	int r;

	if (sqlite3_exec(s->db, sg_schema, NULL, NULL, &emsg) != SQLITE_OK) {
		r = err_set(-EIO, "scheduler state %s: %s", s->cfg->state_path, emsg ? emsg : "?");
		sqlite3_free(emsg);
		return r;
	}
	/* the views' numbers: this start's epoch in the high half, a counter in
	 * the low one, so they grow across restarts whatever the clock says */
	if (sqlite3_prepare_v2(s->db, "INSERT INTO secgroup_epoch(id, epoch) VALUES (0, 1) "
			       "ON CONFLICT(id) DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
			       -1, &q, NULL) != SQLITE_OK || sqlite3_step(q) != SQLITE_ROW) {
		r = err_set(-EIO, "scheduler state %s: secgroup_epoch: %s", s->cfg->state_path,
			    sqlite3_errmsg(s->db));
		sqlite3_finalize(q);
		return r;
	}
	s->sg_seq = (int64_t)sqlite3_column_int64(q, 0) << 32;
	sqlite3_finalize(q);
	return 0;
}

/* ---- small database helpers ------------------------------------------------- */

/* The statement of SQL (prepared once, stmts.c) with the strings ARGS
 * bound (N of them; a NULL value binds NULL). Give it back with
 * sched_stmt_done. */
static int prep(struct sched *s, sqlite3_stmt **q, const char *sql, int n, ...)
{
	va_list ap;
	int r = sched_stmt(s, sql, q);

	if (r < 0)
		return r;
	va_start(ap, n);
	for (int i = 1; i <= n; i++) {
		const char *v = va_arg(ap, const char *);

		if (v)
			sqlite3_bind_text(*q, i, v, -1, SQLITE_TRANSIENT);
		else
			sqlite3_bind_null(*q, i);
	}
	va_end(ap);
	return 0;
}

/* Run a statement that returns no rows. */
static int exec_sql(struct sched *s, const char *sql, int n, const char *a1, const char *a2,
		    const char *a3, const char *a4)
{
	sqlite3_stmt *q = NULL;
	int r = prep(s, &q, sql, n, a1, a2, a3, a4), rc;

	if (r < 0)
		return r;
	rc = sqlite3_step(q);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = err_set(-EIO, "scheduler state: %s", sqlite3_errmsg(s->db));
	sched_stmt_done(s, q);
	return r;
}

static const char *col(sqlite3_stmt *q, int i)
{
	const unsigned char *t = sqlite3_column_text(q, i);

	return t ? (const char *)t : "";
}

/* The id of group NAME of PROJECT into ID: 0, -ENOENT, <0. */
static int group_id(struct sched *s, const char *project, const char *name, char id[UUID_STRLEN])
{
	sqlite3_stmt *q = NULL;
	int r = prep(s, &q, "SELECT id FROM secgroups WHERE project = ?1 AND name = ?2", 2,
		     project, name);

	if (r < 0)
		return r;
	r = sqlite3_step(q) == SQLITE_ROW ? 0 : -ENOENT;
	if (r == 0)
		snprintf(id, UUID_STRLEN, "%s", col(q, 0));
	sched_stmt_done(s, q);
	return r;
}

/* The name of group ID into NAME ("?" when gone). */
static void group_name(struct sched *s, const char *id, char name[SG_NAME_MAX + 1])
{
	sqlite3_stmt *q = NULL;

	snprintf(name, SG_NAME_MAX + 1, "?");
	if (prep(s, &q, "SELECT name FROM secgroups WHERE id = ?1", 1, id) == 0 &&
	    sqlite3_step(q) == SQLITE_ROW)
		snprintf(name, SG_NAME_MAX + 1, "%s", col(q, 0));
	sched_stmt_done(s, q);
}

/* "default, web": the project's group names (malloc'd). */
static char *group_names(struct sched *s, const char *project)
{
	struct strbuf sb = { .max = 16 * 1024 };
	sqlite3_stmt *q = NULL;

	if (prep(s, &q, "SELECT name FROM secgroups WHERE project = ?1 ORDER BY name", 1,
		 project) == 0)
		while (sqlite3_step(q) == SQLITE_ROW)
			sb_printf(&sb, "%s%s", sb.len ? ", " : "", col(q, 0));
	sched_stmt_done(s, q);
	if (!sb.len)
		sb_printf(&sb, "none");
	return sb_steal(&sb);
}

static int insert_rule(struct sched *s, const char *project, const char *gid, struct sg_rule *ru)
{
	_cleanup_free_ char *text = NULL;
	json_t *j;

	if (!ru->id[0])
		uuid_generate_str(ru->id);
	j = model_sg_rule_to_json(ru);
	text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	return exec_sql(s, "INSERT INTO secgroup_rules(id, group_id, project, rule) "
			   "VALUES (?1, ?2, ?3, ?4)", 4, ru->id, gid, project, text);
}

static int insert_group(struct sched *s, const char *project, const char *name, const char *desc,
			char id[UUID_STRLEN])
{
	char ts[RFC3339_STRLEN];
	sqlite3_stmt *q = NULL;
	int r;

	uuid_generate_str(id);
	time_rfc3339_now(ts);
	r = prep(s, &q, "INSERT INTO secgroups(id, project, name, description, created) "
			"VALUES (?1, ?2, ?3, ?4, ?5)", 5, id, project, name, desc ? desc : "", ts);
	if (r == 0 && sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "scheduler state: %s", sqlite3_errmsg(s->db));
	sched_stmt_done(s, q);
	return r;
}

/* The project's `default` group, created with Neutron's four rules on
 * first use: egress IPv4 and IPv6 to anywhere, ingress IPv4 and IPv6 from
 * members of `default`. Inside the caller's transaction. */
int sched_sg_ensure_default(struct sched *s, const char *project)
{
	char id[UUID_STRLEN];
	int r = group_id(s, project, "default", id);

	if (r != -ENOENT)
		return r;
	r = insert_group(s, project, "default", "default security group", id);
	for (int i = 0; r == 0 && i < 4; i++) {
		struct sg_rule ru = { .direction = i < 2 ? SG_EGRESS : SG_INGRESS,
				      .ethertype = i % 2 ? SG_IPV6 : SG_IPV4,
				      .protocol = SG_PROTO_ANY, .port_min = -1, .port_max = -1 };

		if (i >= 2)
			snprintf(ru.remote_group, sizeof(ru.remote_group), "%s", id);
		r = insert_rule(s, project, id, &ru);
	}
	if (r == 0)
		log_info("security group created project=%s group=default id=%s", project, id);
	return r;
}

/* ---- what a host gets ----------------------------------------------------------- */

/* Add ID to the array of strings A unless it is there. */
static void add_unique(json_t *a, const char *id)
{
	size_t i;
	json_t *v;

	json_array_foreach(a, i, v)
		if (strcmp(json_string_value(v), id) == 0)
			return;
	json_array_append_new(a, json_string(id));
}

/*
 * Rules parsed once: a direct-mapped table from a rule's stored text to its
 * JSON (shared by reference: views are read, never changed). The text is
 * the key, so an entry can never be stale: a changed or new rule is a new
 * text (issue 17: parsing the rules was a tenth of a decision).
 */
#define SG_MEMO_SLOTS 4096 /* about 6 MB at most; 4 rules per project's default */

struct sched_sg_memo {
	char *text[SG_MEMO_SLOTS];
	json_t *rule[SG_MEMO_SLOTS];
};

static uint32_t text_hash(const char *t)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (; *t; t++)
		h = (h ^ (unsigned char)*t) * 16777619u;
	return h;
}

/* The JSON of rule TEXT: a new reference, NULL when it does not parse. */
static json_t *rule_json(struct sched *s, const char *text)
{
	struct sched_sg_memo *m = s->sg_memo;
	uint32_t i = text_hash(text) % SG_MEMO_SLOTS;
	json_t *ru;
	char *copy;

	if (!m)
		m = s->sg_memo = calloc(1, sizeof(*m));
	if (m && m->text[i] && strcmp(m->text[i], text) == 0)
		return json_incref(m->rule[i]);
	ru = json_loads(text, 0, NULL);
	if (ru && m && (copy = strdup(text)) != NULL) {
		free(m->text[i]);
		json_decref(m->rule[i]);
		m->text[i] = copy;
		m->rule[i] = json_incref(ru);
	}
	return ru;
}

void sched_sg_close(struct sched *s)
{
	struct sched_sg_memo *m = s->sg_memo;

	for (size_t i = 0; m && i < SG_MEMO_SLOTS; i++) {
		free(m->text[i]);
		json_decref(m->rule[i]);
	}
	free(m);
	s->sg_memo = NULL;
}

/* The rules of group GID (remote_group as ids), remote groups into REMOTES. */
static json_t *group_rules(struct sched *s, const char *gid, json_t *remotes)
{
	json_t *rules = json_array();
	sqlite3_stmt *q = NULL;

	if (rules && prep(s, &q, "SELECT rule FROM secgroup_rules WHERE group_id = ?1 ORDER BY rowid",
			  1, gid) == 0)
		while (sqlite3_step(q) == SQLITE_ROW) {
			json_t *ru = rule_json(s, col(q, 0));
			const char *rg = sched_jstr(ru, "remote_group");

			if (rg && remotes)
				add_unique(remotes, rg);
			if (ru)
				json_array_append_new(rules, ru);
		}
	sched_stmt_done(s, q);
	return rules;
}

/* PROJECT's secgroup.apply inputs for HOST (a new reference; NULL on error). */
json_t *sched_sg_view(struct sched *s, const char *project, const char *host)
{
	json_t *ports = json_array(), *gids = json_array(), *remotes = json_array();
	json_t *groups = json_array(), *members = json_object(), *port = NULL, *v, *view = NULL;
	sqlite3_stmt *q = NULL;
	char last[UUID_STRLEN] = "";
	size_t i;

	if (!ports || !gids || !remotes || !groups || !members)
		goto out;
	/* the project's instances on HOST first (allocations_host), then their
	 * groups: not every member of the project (CROSS JOIN keeps the order) */
	if (prep(s, &q, "SELECT m.uuid, m.group_id, m.rowid FROM allocations a CROSS JOIN "
			"secgroup_members m ON m.uuid = a.uuid WHERE a.host = ?2 AND a.project = ?1 "
			"AND +m.project = ?1 UNION "
			/* and those migrating here: their port is made before the guest
			 * arrives (docs/operations.md "Maintenance") */
			"SELECT m.uuid, m.group_id, m.rowid FROM migrations g CROSS JOIN "
			"secgroup_members m ON m.uuid = g.uuid WHERE g.dest = ?2 AND g.project = ?1 "
			"AND +m.project = ?1 ORDER BY 1, 3", 2, project, host) < 0)
		goto out;
	while (sqlite3_step(q) == SQLITE_ROW) {
		if (strcmp(last, col(q, 0)) != 0) {
			snprintf(last, sizeof(last), "%s", col(q, 0));
			port = json_pack("{s:s, s:[]}", "uuid", last, "groups");
			json_array_append_new(ports, port);
		}
		json_array_append_new(json_object_get(port, "groups"), json_string(col(q, 1)));
		add_unique(gids, col(q, 1));
	}
	sched_stmt_done(s, q);
	q = NULL;
	json_array_foreach(gids, i, v) {
		char name[SG_NAME_MAX + 1];

		group_name(s, json_string_value(v), name);
		json_array_append_new(groups, json_pack("{s:s, s:s, s:o}", "id", json_string_value(v),
							"name", name, "rules",
							group_rules(s, json_string_value(v), remotes)));
	}
	json_array_foreach(remotes, i, v) {
		json_t *addrs = json_array();

		/* the project's ports that have an address (secgroup_ports_addressed),
		 * then whether each is a member: a group's members are of its
		 * project, and those still building have no address to give */
		if (prep(s, &q, "SELECT p.address FROM secgroup_ports p CROSS JOIN secgroup_members m "
				"ON m.uuid = p.uuid AND m.group_id = ?1 WHERE p.project = ?2 AND "
				"p.address IS NOT NULL ORDER BY p.address", 2, json_string_value(v),
			 project) == 0)
			while (sqlite3_step(q) == SQLITE_ROW)
				json_array_append_new(addrs, json_string(col(q, 0)));
		sched_stmt_done(s, q);
		q = NULL;
		json_object_set_new(members, json_string_value(v), addrs);
	}
	/* numbered: an agent keeps the latest of the views it reads in any order */
	view = json_pack("{s:s, s:O, s:O, s:O, s:I}", "project", project, "ports", ports, "groups",
			 groups, "members", members, "seq", (json_int_t)++s->sg_seq);
out:
	sched_stmt_done(s, q);
	json_decref(ports);
	json_decref(gids);
	json_decref(remotes);
	json_decref(groups);
	json_decref(members);
	return view;
}

int sched_sg_propagate(struct sched *s, struct sched_out *out, const char *project,
		       const char *rid)
{
	struct sched_strvec hosts = { 0 };
	sqlite3_stmt *q = NULL;
	int r = prep(s, &q, "SELECT a.host FROM secgroup_members m JOIN allocations a "
			    "ON a.uuid = m.uuid WHERE m.project = ?1 AND a.host IS NOT NULL "
			    "UNION SELECT g.dest FROM migrations g JOIN secgroup_members m "
			    "ON m.uuid = g.uuid WHERE m.project = ?1 ORDER BY 1", 1, project);

	while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
		r = sched_strvec_add(&hosts, col(q, 0));
	sched_stmt_done(s, q);
	for (size_t i = 0; r == 0 && i < hosts.n; i++)
		r = sched_sg_send_host(s, out, project, hosts.v[i], rid);
	sched_strvec_free(&hosts);
	return r;
}

int sched_sg_send_host(struct sched *s, struct sched_out *out, const char *project,
		       const char *host, const char *rid)
{
	json_t *view = sched_sg_view(s, project, host);

	if (!view)
		return err_set(-ENOMEM, "security groups of project %s: the view of host %s",
			       project, host);
	log_info("security groups sent project=%s host=%s ports=%zu seq=%lld", project, host,
		 json_array_size(json_object_get(view, "ports")),
		 (long long)json_integer_value(json_object_get(view, "seq")));
	return sched_emit_host_cmd(out, host, "secgroup.apply", rid, project, view);
}

/* ---- boots, builds and events ------------------------------------------------ */

int sched_sg_boot_groups(struct sched *s, const char *project, const json_t *body, json_t **names)
{
	const json_t *want = json_object_get(body, "security_groups");
	json_t *out = json_array(), *v;
	size_t i;
	int r;

	if (!out)
		return err_set(-ENOMEM, "out of memory");
	if ((r = sched_sg_ensure_default(s, project)) < 0)
		goto fail;
	if (!want || json_array_size(want) == 0) {
		json_array_append_new(out, json_string("default"));
		*names = out;
		return 0;
	}
	json_array_foreach(want, i, v) {
		const char *n = json_string_value(v);
		char id[UUID_STRLEN];

		if (!n || !model_sg_name_valid(n)) {
			r = err_set(1, "security_groups: entry %zu: expected a group name", i);
			goto fail;
		}
		r = group_id(s, project, n, id);
		if (r == -ENOENT) {
			_cleanup_free_ char *known = group_names(s, project);

			r = err_set(1, "security group '%s' not found in project %s (known: %s)", n,
				    project, known ? known : "?");
		}
		if (r != 0)
			goto fail;
		add_unique(out, n);
	}
	*names = out;
	return 0;
fail:
	json_decref(out);
	return r;
}

int sched_sg_add_members(struct sched *s, const char *project, const char *uuid,
			 const json_t *names)
{
	size_t i;
	json_t *v;
	int r = 0;

	json_array_foreach(names, i, v) {
		char id[UUID_STRLEN];

		if (r == 0)
			r = group_id(s, project, json_string_value(v), id);
		if (r == 0)
			r = exec_sql(s, "INSERT OR IGNORE INTO secgroup_members(uuid, group_id, project) "
					"VALUES (?1, ?2, ?3)", 3, uuid, id, project, NULL);
	}
	if (r == 0)
		r = exec_sql(s, "INSERT OR IGNORE INTO secgroup_ports(uuid, project) VALUES (?1, ?2)",
			     2, uuid, project, NULL, NULL);
	return r;
}

int sched_sg_build_inputs(struct sched *s, const char *project, const char *host, json_t *build)
{
	json_t *view = sched_sg_view(s, project, host);

	if (!view)
		return err_set(-ENOMEM, "security groups of project %s: the view of host %s", project,
			       host);
	return json_object_set_new(build, "secgroups", view) == 0 ? 0
								   : err_set(-ENOMEM, "out of memory");
}

int sched_sg_send_build(struct sched *s, struct sched_out *out, const struct sched_host *h,
			const char *spec_text, const char *project, const char *rid, long attempt,
			const struct sched_fit *fit)
{
	json_t *b = json_loads(spec_text, 0, NULL);
	int r = b ? sched_sg_build_inputs(s, project, h->name, b) : 0;

	if (r < 0) {
		json_decref(b);
		return r;
	}
	return sched_send_build_json(s, out, h, b, rid, attempt, fit);
}

int sched_sg_on_state(struct sched *s, struct sched_call *c, const char *uuid,
		      const char *project, enum instance_state state)
{
	const char *addr = sched_jstr(c->body, "address");
	char ip[64];
	int r;

	if (state == INST_ACTIVE && addr) {
		snprintf(ip, sizeof(ip), "%.*s", (int)strcspn(addr, "/"), addr);
		r = exec_sql(s, "UPDATE secgroup_ports SET address = ?2 WHERE uuid = ?1 AND "
				"(address IS NULL OR address != ?2)", 2, uuid, ip, NULL, NULL);
		if (r < 0 || sqlite3_changes(s->db) == 0)
			return r; /* not a member of any group, or no change */
	} else if (state == INST_DELETED) {
		r = exec_sql(s, "DELETE FROM secgroup_ports WHERE uuid = ?1", 1, uuid, NULL, NULL, NULL);
		if (r == 0)
			r = exec_sql(s, "DELETE FROM secgroup_members WHERE uuid = ?1", 1, uuid, NULL,
				     NULL, NULL);
		if (r < 0 || sqlite3_changes(s->db) == 0)
			return r;
	} else {
		return 0;
	}
	return sched_sg_propagate(s, c->out, project, c->rid);
}
