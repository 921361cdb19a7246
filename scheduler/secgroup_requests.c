/*
 * The security group requests on stratus.api (docs/scheduler.md "Security
 * groups"): secgroup.create / list / show / delete, secgroup.rule.add /
 * delete. A member acts on its own project (auth.c); the project's
 * `default` group exists once any of them ran.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

#define SG_WHY_LEN 1024 /* a refusal's text */

/* One statement's first row's text columns: 0 found, -ENOENT, <0. */
static int row_get(struct sched *s, const char *sql, const char *a1, const char *a2, int ncols,
		   char (*cols)[256])
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, a1, -1, SQLITE_TRANSIENT);
	if (a2)
		sqlite3_bind_text(q, 2, a2, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(q) != SQLITE_ROW)
		r = -ENOENT;
	for (int i = 0; r == 0 && i < ncols; i++) {
		const unsigned char *t = sqlite3_column_text(q, i);

		snprintf(cols[i], sizeof(cols[i]), "%s", t ? (const char *)t : "");
	}
	sqlite3_finalize(q);
	return r;
}

static int run(struct sched *s, const char *sql, const char *a1, const char *a2)
{
	sqlite3_stmt *q = NULL;
	int r = 0, rc;

	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, a1, -1, SQLITE_TRANSIENT);
	if (a2)
		sqlite3_bind_text(q, 2, a2, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(q);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = err_set(-EIO, "scheduler state: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

/* {id, name, description, rules: [...], instances: N}: group GID as shown
 * (remote groups by name). */
static json_t *group_json(struct sched *s, const char *gid)
{
	char c[3][256];
	sqlite3_stmt *q = NULL;
	json_t *rules = json_array(), *g;
	long members = 0;

	if (row_get(s, "SELECT name, description, project FROM secgroups WHERE id = ?1", gid, NULL,
		    3, c) < 0) {
		json_decref(rules);
		return NULL;
	}
	if (sqlite3_prepare_v2(s->db, "SELECT r.rule, g.name FROM secgroup_rules r LEFT JOIN "
			       "secgroups g ON g.id = json_extract(r.rule, '$.remote_group') "
			       "WHERE r.group_id = ?1 ORDER BY r.rowid", -1, &q, NULL) == SQLITE_OK) {
		sqlite3_bind_text(q, 1, gid, -1, SQLITE_TRANSIENT);
		while (sqlite3_step(q) == SQLITE_ROW) {
			json_t *ru = json_loads((const char *)sqlite3_column_text(q, 0), 0, NULL);

			if (ru && sqlite3_column_text(q, 1))
				json_object_set_new(ru, "remote_group",
						    json_string((const char *)sqlite3_column_text(q, 1)));
			if (ru)
				json_array_append_new(rules, ru);
		}
	}
	sqlite3_finalize(q);
	q = NULL;
	if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM secgroup_members WHERE group_id = ?1",
			       -1, &q, NULL) == SQLITE_OK) {
		sqlite3_bind_text(q, 1, gid, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(q) == SQLITE_ROW)
			members = sqlite3_column_int64(q, 0);
	}
	sqlite3_finalize(q);
	g = json_pack("{s:s, s:s, s:s, s:s, s:o, s:I}", "id", gid, "name", c[0], "description",
		      c[1], "project", c[2], "rules", rules, "instances", (json_int_t)members);
	return g;
}

/* The group named by body.KEY (a name or an id) of C's project into GID:
 * 0, 1 refused (WHY says why), <0. */
static int find_group(struct sched *s, struct sched_call *c, const char *key, char gid[UUID_STRLEN],
		      char *why)
{
	const char *name = sched_jstr(c->body, key);
	char col[1][256];
	int r;

	if (!name) {
		snprintf(why, SG_WHY_LEN, "%s: %s is required", c->type, key);
		return 1;
	}
	r = row_get(s, "SELECT id FROM secgroups WHERE project = ?1 AND (name = ?2 OR id = ?2)",
		    c->project, name, 1, col);
	if (r == -ENOENT) {
		snprintf(why, SG_WHY_LEN, "%s: security group '%s' not found in project %s", c->type,
			 name, c->project);
		return 1;
	}
	if (r < 0)
		return r;
	snprintf(gid, UUID_STRLEN, "%.36s", col[0]);
	return 0;
}

/* Answer the refusal of a change after the transaction is rolled back. */
static int refuse_later(struct sched_call *c, char *why, size_t len, const char *fmt, ...)
	PRINTF_LIKE(4, 5);
static int refuse_later(struct sched_call *c, char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	(void)c;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return 1;
}

static int do_create(struct sched *s, struct sched_call *c, json_t **data, bool *changed, char *why)
{
	const char *name = sched_jstr(c->body, "name"), *desc = sched_jstr(c->body, "description");
	char col[1][256], id[UUID_STRLEN];
	int r;

	(void)changed;
	if (!model_sg_name_valid(name))
		return refuse_later(c, why, SG_WHY_LEN, "secgroup.create: name: expected 1 to %d "
				    "of A-Z a-z 0-9 . _ -, got '%.80s'", SG_NAME_MAX, name ? name : "");
	if (desc && strlen(desc) > 255)
		return refuse_later(c, why, SG_WHY_LEN, "secgroup.create: description: at most "
				    "255 bytes");
	if (row_get(s, "SELECT id FROM secgroups WHERE project = ?1 AND name = ?2", c->project,
		    name, 1, col) == 0)
		return refuse_later(c, why, SG_WHY_LEN, "security group %s already exists in "
				    "project %s", name, c->project);
	uuid_generate_str(id);
	{
		char ts[RFC3339_STRLEN];
		sqlite3_stmt *q = NULL;

		time_rfc3339_now(ts);
		if (sqlite3_prepare_v2(s->db, "INSERT INTO secgroups(id, project, name, description, "
				       "created) VALUES (?1, ?2, ?3, ?4, ?5)", -1, &q, NULL) != SQLITE_OK)
			return err_set(-EIO, "scheduler state: %s", sqlite3_errmsg(s->db));
		sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, c->project, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 4, desc ? desc : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 5, ts, -1, SQLITE_STATIC);
		r = sqlite3_step(q) == SQLITE_DONE ? 0 : err_set(-EIO, "scheduler state: %s",
								 sqlite3_errmsg(s->db));
		sqlite3_finalize(q);
	}
	if (r == 0) {
		log_info("security group created project=%s group=%s id=%s", c->project, name, id);
		*data = group_json(s, id);
	}
	return r;
}

static int do_delete(struct sched *s, struct sched_call *c, json_t **data, bool *changed, char *why)
{
	char gid[UUID_STRLEN], col[2][256];
	int r = find_group(s, c, "group", gid, why);

	(void)changed;
	if (r != 0)
		return r;
	if (row_get(s, "SELECT name FROM secgroups WHERE id = ?1", gid, NULL, 1, col) == 0 &&
	    strcmp(col[0], "default") == 0)
		return refuse_later(c, why, SG_WHY_LEN, "security group default of project %s "
				    "cannot be deleted", c->project);
	if (row_get(s, "SELECT i.name, i.uuid FROM secgroup_members m JOIN instances i ON "
		    "i.uuid = m.uuid WHERE m.group_id = ?1 AND i.state != 'deleted' LIMIT 1", gid,
		    NULL, 2, col) == 0)
		return refuse_later(c, why, SG_WHY_LEN, "security group %s is in use by "
				    "instance %s (%s): delete the instance first",
				    sched_jstr(c->body, "group"), col[0], col[1]);
	if (row_get(s, "SELECT g.name FROM secgroup_rules r JOIN secgroups g ON g.id = r.group_id "
		    "WHERE json_extract(r.rule, '$.remote_group') = ?1 AND r.group_id != ?1 LIMIT 1",
		    gid, NULL, 1, col) == 0)
		return refuse_later(c, why, SG_WHY_LEN, "security group %s is the remote group "
				    "of a rule of group %s: delete that rule first",
				    sched_jstr(c->body, "group"), col[0]);
	*data = group_json(s, gid);
	r = run(s, "DELETE FROM secgroup_rules WHERE group_id = ?1", gid, NULL);
	if (r == 0)
		r = run(s, "DELETE FROM secgroup_members WHERE group_id = ?1", gid, NULL);
	if (r == 0)
		r = run(s, "DELETE FROM secgroups WHERE id = ?1", gid, NULL);
	if (r == 0)
		log_info("security group deleted project=%s group=%s", c->project, gid);
	return r;
}

static int do_rule_add(struct sched *s, struct sched_call *c, json_t **data, bool *changed, char *why)
{
	char gid[UUID_STRLEN], col[1][256];
	struct sg_rule ru;
	json_t *body = json_deep_copy(c->body), *j;
	_cleanup_free_ char *text = NULL;
	int r = find_group(s, c, "group", gid, why);

	if (r != 0) {
		json_decref(body);
		return r;
	}
	json_object_del(body, "id"); /* the scheduler names rules */
	r = model_sg_rule_parse(body, &ru);
	json_decref(body);
	if (r < 0)
		return refuse_later(c, why, SG_WHY_LEN, "secgroup.rule.add: %s", err_msg());
	if (ru.remote_group[0]) {
		if (row_get(s, "SELECT id FROM secgroups WHERE project = ?1 AND name = ?2", c->project,
			    ru.remote_group, 1, col) < 0)
			return refuse_later(c, why, SG_WHY_LEN, "secgroup.rule.add: remote_group: "
					    "security group '%s' not found in project %s (a remote "
					    "group is one of the project's own)", ru.remote_group,
					    c->project);
		snprintf(ru.remote_group, sizeof(ru.remote_group), "%.36s", col[0]);
	}
	uuid_generate_str(ru.id);
	j = model_sg_rule_to_json(&ru);
	text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	if (row_get(s, "SELECT id FROM secgroup_rules WHERE group_id = ?1 AND "
		    "json_remove(rule, '$.id') = json_remove(?2, '$.id')", gid, text, 1, col) == 0)
		return refuse_later(c, why, SG_WHY_LEN, "secgroup.rule.add: group %s already has "
				    "that rule (%s)", sched_jstr(c->body, "group"), col[0]);
	{
		sqlite3_stmt *q = NULL;

		if (sqlite3_prepare_v2(s->db, "INSERT INTO secgroup_rules(id, group_id, project, rule) "
				       "VALUES (?1, ?2, ?3, ?4)", -1, &q, NULL) != SQLITE_OK)
			return err_set(-EIO, "scheduler state: %s", sqlite3_errmsg(s->db));
		sqlite3_bind_text(q, 1, ru.id, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, gid, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, c->project, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 4, text, -1, SQLITE_STATIC);
		r = sqlite3_step(q) == SQLITE_DONE ? 0 : err_set(-EIO, "scheduler state: %s",
								 sqlite3_errmsg(s->db));
		sqlite3_finalize(q);
	}
	if (r == 0) {
		*changed = true;
		*data = model_sg_rule_to_json(&ru);
		json_object_set_new(*data, "group", json_string(sched_jstr(c->body, "group")));
		if (ru.remote_group[0])
			json_object_set_new(*data, "remote_group",
					    json_string(json_string_value(json_object_get(c->body,
										"remote_group"))));
		log_info("security group rule added project=%s group=%s rule=%s", c->project,
			 sched_jstr(c->body, "group"), ru.id);
	}
	return r;
}

static int do_rule_delete(struct sched *s, struct sched_call *c, json_t **data, bool *changed, char *why)
{
	const char *id = sched_jstr(c->body, "id");
	char col[1][256];
	int r;

	if (!id || !uuid_valid(id))
		return refuse_later(c, why, SG_WHY_LEN, "secgroup.rule.delete: id: expected a "
				    "rule uuid (stratusctl secgroup show GROUP lists them)");
	if (row_get(s, "SELECT group_id FROM secgroup_rules WHERE id = ?1 AND project = ?2", id,
		    c->project, 1, col) < 0)
		return refuse_later(c, why, SG_WHY_LEN, "security group rule %s not found in "
				    "project %s", id, c->project);
	r = run(s, "DELETE FROM secgroup_rules WHERE id = ?1", id, NULL);
	if (r == 0) {
		*changed = true;
		*data = json_pack("{s:s, s:s}", "id", id, "group_id", col[0]);
		log_info("security group rule deleted project=%s rule=%s", c->project, id);
	}
	return r;
}

/* Every request: in one transaction with the project's default group in
 * place; a refusal (1) is answered after the rollback; a change of rules
 * goes to the project's hosts once committed. */
static int change(struct sched *s, struct sched_call *c,
		  int (*fn)(struct sched *s, struct sched_call *c, json_t **data, bool *changed, char *why))
{
	char why[SG_WHY_LEN] = "";
	json_t *data = NULL;
	bool changed = false;
	int r;

	if (!c->project)
		return sched_reject(s, c, "%s: project is required", c->type);
	r = sched_tx_begin(s);
	if (r == 0)
		r = sched_sg_ensure_default(s, c->project);
	if (r == 0)
		r = fn(s, c, &data, &changed, why);
	if (r == 1) { /* refused: nothing changed; the refusal stored alone */
		json_decref(data);
		sched_tx_rollback(s);
		return sched_reject(s, c, "%s", why);
	}
	if (r == 0)
		r = sched_accept(s, c, NULL, data);
	else
		json_decref(data);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0 && changed)
		r = sched_sg_propagate(s, c->out, c->project, c->rid);
	return r;
}

int sched_on_sg_create(struct sched *s, struct sched_call *c) { return change(s, c, do_create); }
int sched_on_sg_delete(struct sched *s, struct sched_call *c) { return change(s, c, do_delete); }
int sched_on_sg_rule_add(struct sched *s, struct sched_call *c) { return change(s, c, do_rule_add); }
int sched_on_sg_rule_delete(struct sched *s, struct sched_call *c)
{
	return change(s, c, do_rule_delete);
}

static int do_list(struct sched *s, struct sched_call *c, json_t **data, bool *changed, char *why)
{
	sqlite3_stmt *q = NULL;
	json_t *arr = json_array();

	(void)changed;
	(void)why;
	if (!arr || sqlite3_prepare_v2(s->db, "SELECT id FROM secgroups WHERE project = ?1 ORDER BY "
				       "name", -1, &q, NULL) != SQLITE_OK) {
		json_decref(arr);
		return err_set(-EIO, "scheduler state: %s", sqlite3_errmsg(s->db));
	}
	sqlite3_bind_text(q, 1, c->project, -1, SQLITE_STATIC);
	while (sqlite3_step(q) == SQLITE_ROW) {
		json_t *g = group_json(s, (const char *)sqlite3_column_text(q, 0));

		if (g)
			json_array_append_new(arr, g);
	}
	sqlite3_finalize(q);
	*data = arr;
	return 0;
}

static int do_show(struct sched *s, struct sched_call *c, json_t **data, bool *changed, char *why)
{
	char gid[UUID_STRLEN];
	int r = find_group(s, c, "group", gid, why);

	(void)changed;
	if (r != 0)
		return r;
	*data = group_json(s, gid);
	return *data ? 0 : err_set(-ENOMEM, "out of memory");
}

int sched_on_sg_list(struct sched *s, struct sched_call *c) { return change(s, c, do_list); }
int sched_on_sg_show(struct sched *s, struct sched_call *c) { return change(s, c, do_show); }
