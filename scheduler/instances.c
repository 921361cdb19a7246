/*
 * Instance commands: delete, stop / start / reboot / console (forwarded to
 * the instance's host), show and list.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/crypto.h"
#include "scheduler/sched_priv.h"


/* Find the instance the request names; rejects (returns 1) when absent. */
static int find_target(struct sched *s, struct sched_call *c, struct inst_row *row)
{
	const char *project = c->project, *ref = sched_jstr(c->body, "instance");
	int r;

	if (!project || !ref) {
		r = sched_reject(s, c, "%s: project and instance are required", c->type);
		return r < 0 ? r : 1;
	}
	r = sched_inst_find(s, project, ref, row);
	if (r == -EEXIST) {
		r = sched_reject(s, c, "%s", err_msg());
		return r < 0 ? r : 1;
	}
	if (r == -ENOENT) {
		r = sched_reject(s, c, "instance %s not found in project %s", ref, project);
		return r < 0 ? r : 1;
	}
	return r;
}

int sched_on_delete(struct sched *s, struct sched_call *c)
{
	struct inst_row row = { 0 };
	char *old_state = NULL;
	int r = find_target(s, c, &row);

	if (r != 0)
		return r < 0 ? r : 0;
	if (!row.host) {
		/* never placed (or every host failed): nothing to clean up anywhere */
		old_state = row.state;
		row.state = (char *)"deleted";
		r = sched_tx_begin(s);
		if (r == 0)
			r = sched_inst_update(s, &row);
		if (r == 0)
			r = sched_accept(s, c, row.uuid, json_pack("{s:s, s:s}", "uuid", row.uuid, "state",
							     "deleted"));
		if (r == 0)
			r = sched_tx_commit(s);
		else
			sched_tx_rollback(s);
		if (r == 0)
			r = sched_emit_state(c->out, c->rid, row.uuid, row.project, NULL, "deleted", NULL);
		row.state = old_state;
		inst_row_free(&row);
		return r;
	}
	old_state = row.state;
	row.state = (char *)"deleting";
	r = sched_tx_begin(s);
	if (r == 0)
		r = sched_inst_update(s, &row);
	if (r == 0)
		r = sched_accept(s, c, row.uuid,
			   json_pack("{s:s, s:s, s:s}", "uuid", row.uuid, "host", row.host, "state",
				     "deleting"));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0)
		r = sched_emit_state(c->out, c->rid, row.uuid, row.project, row.host, "deleting", NULL);
	if (r == 0)
		r = sched_emit_host_cmd(c->out, row.host, "instance.delete", c->rid, row.uuid,
				  json_pack("{s:s}", "uuid", row.uuid));
	row.state = old_state;
	inst_row_free(&row);
	return r;
}

/* stop / start / reboot / console: forwarded to the instance's host. */
struct power_op {
	const char *type;
	const char *needs; /* state it must be in, NULL = any placed */
};

static const struct power_op power_ops[] = {
	{ "instance.stop", "active" },
	{ "instance.start", "stopped" },
	{ "instance.reboot", "active" },
	{ "instance.console", NULL },
};

/*
 * A console is tenant data: the requester's result key travels sealed to the
 * host, which seals the lines it answers with it (docs/bus.md "Sealed
 * results"). In-process callers (no key) get the lines in the clear.
 */
static int seal_console_key(struct sched *s, const struct sched_call *c, const char *host,
			    json_t *cmd)
{
	const struct sched_host *h = sched_host_find(s, host);
	_cleanup_free_ char *b64 = NULL;

	if (!c->seal_key)
		return 0;
	if (!h || !h->has_box_key)
		return err_set(-ENOKEY, "host %s reported no box_key: its answer could not be "
					"sealed to you", host);
	b64 = base64_encode(c->seal_key, BUS_KEY_LEN);
	if (!b64 || json_object_set_new(cmd, "result_key", json_string(b64)) < 0)
		return err_set(-ENOMEM, "out of memory");
	return bus_seal_fields(cmd, bus_console_secret_fields, h->box_key, BUS_SEAL_CONSOLE);
}

/*
 * console --attach: a one-time token for this instance of this project
 * (32 random bytes, base64url). It travels sealed to the host, which holds
 * it for agent.console.token_ttl and answers the requester sealed (the
 * token never crosses the bus in the clear, hence no in-process callers).
 */
static int console_token(const struct sched_call *c, const struct inst_row *row, json_t *cmd)
{
	unsigned char raw[32];
	_cleanup_free_ char *b64 = NULL;
	size_t w = 0;

	if (!c->seal_key)
		return err_set(-EINVAL, "attach needs a sealed request (a result key)");
	if (crypto_random(raw, sizeof(raw)) < 0)
		return err_set(-EIO, "no random bytes for a console token");
	b64 = base64_encode(raw, sizeof(raw));
	explicit_bzero(raw, sizeof(raw));
	if (!b64)
		return err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; b64[i] && b64[i] != '='; i++)
		b64[w++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
	b64[w] = '\0';
	if (json_object_set_new(cmd, "attach", json_true()) < 0 ||
	    json_object_set_new(cmd, "project", json_string(row->project)) < 0 ||
	    json_object_set_new(cmd, "token", json_string(b64)) < 0)
		return err_set(-ENOMEM, "out of memory");
	explicit_bzero(b64, w);
	return 0;
}

int sched_on_power(struct sched *s, struct sched_call *c)
{
	struct inst_row row = { 0 };
	const struct power_op *op = NULL;
	json_t *hard;
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(power_ops); i++)
		if (strcmp(power_ops[i].type, c->type) == 0)
			op = &power_ops[i];
	if (!op)
		return sched_reject(s, c, "%s: not an instance command", c->type);
	hard = json_object_get(c->body, "hard");
	/* the bus schema refuses it on the wire; in-process callers too */
	if (hard && strcmp(c->type, "instance.reboot") == 0 && !json_is_boolean(hard))
		return sched_reject(s, c, "instance.reboot: hard: expected true or false");
	r = find_target(s, c, &row);
	if (r != 0)
		return r < 0 ? r : 0;
	if (!row.host)
		r = sched_reject(s, c, "instance %s is %s and has no host", row.name, row.state);
	else if (op->needs && strcmp(row.state, op->needs) != 0)
		r = sched_reject(s, c, "instance %s is %s: %s needs it %s", row.name, row.state,
			   c->type + strlen("instance."), op->needs);
	else {
		json_t *cmd = json_pack("{s:s}", "uuid", row.uuid);
		json_t *lines = json_object_get(c->body, "lines");

		if (cmd && lines && strcmp(c->type, "instance.console") == 0)
			json_object_set(cmd, "lines", lines);
		if (cmd && json_is_true(hard) && strcmp(c->type, "instance.reboot") == 0)
			json_object_set_new(cmd, "hard", json_true());
		if (cmd && strcmp(c->type, "instance.console") == 0 &&
		    json_is_true(json_object_get(c->body, "attach")) &&
		    (r = console_token(c, &row, cmd)) < 0) {
			json_decref(cmd);
			r = sched_reject(s, c, "instance %s: console: %s", row.name, err_msg());
			inst_row_free(&row); /* after the message that names it */
			return r;
		}
		if (cmd && strcmp(c->type, "instance.console") == 0 &&
		    (r = seal_console_key(s, c, row.host, cmd)) < 0) {
			json_decref(cmd);
			r = sched_reject(s, c, "instance %s: console: %s", row.name, err_msg());
			inst_row_free(&row); /* after the message that names it */
			return r;
		}
		r = sched_emit_host_cmd(c->out, row.host, c->type, c->rid, row.uuid, cmd);
		/* the agent answers a console request with the log itself */
		if (r == 0 && strcmp(c->type, "instance.console") != 0)
			r = sched_accept(s, c, row.uuid,
				   json_pack("{s:s, s:s, s:s}", "uuid", row.uuid, "host", row.host,
					     "state", row.state));
	}
	inst_row_free(&row);
	return r;
}

static json_t *inst_json(const struct inst_row *row, bool full)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "uuid", row->uuid, "name",
			      row->name, "project", row->project, "state", row->state, "flavor",
			      row->flavor, "image", row->image);

	if (!o)
		return NULL;
	json_object_set_new(o, "host", row->host ? json_string(row->host) : json_null());
	json_object_set_new(o, "created", json_string(row->created ? row->created : ""));
	if (!full)
		return o;
	json_object_set_new(o, "updated", json_string(row->updated ? row->updated : ""));
	json_object_set_new(o, "attempts", json_integer(row->attempts));
	json_object_set_new(o, "reason", row->reason ? json_string(row->reason) : json_null());
	json_object_set_new(o, "server_group",
			    row->server_group ? json_string(row->server_group) : json_null());
	json_object_set_new(o, "faults", row->faults ? json_loads(row->faults, 0, NULL)
						     : json_object());
	json_object_set_new(o, "alternates", row->alternates ? json_loads(row->alternates, 0, NULL)
							     : json_array());
	{
		json_t *spec = json_loads(row->spec, 0, NULL);
		json_t *meta = spec ? json_object_get(spec, "metadata") : NULL;

		json_object_set_new(o, "metadata", meta ? json_incref(meta) : json_object());
		json_decref(spec);
	}
	return o;
}

int sched_on_show(struct sched *s, struct sched_call *c)
{
	struct inst_row row = { 0 };
	int r = find_target(s, c, &row);

	if (r != 0)
		return r < 0 ? r : 0;
	r = sched_accept(s, c, row.uuid, inst_json(&row, true));
	inst_row_free(&row);
	return r;
}

int sched_on_list(struct sched *s, struct sched_call *c)
{
	const char *project = c->project;
	sqlite3_stmt *q = NULL;
	json_t *arr;
	int rc;

	if (!project)
		return sched_reject(s, c, "instance.list: project is required");
	if (sqlite3_prepare_v2(s->db,
			       "SELECT uuid FROM instances WHERE project = ?1 AND state != 'deleted' "
			       "ORDER BY name, created",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "listing instances: %s", sqlite3_errmsg(s->db));
	arr = json_array();
	sqlite3_bind_text(q, 1, project, -1, SQLITE_STATIC);
	while (arr && (rc = sqlite3_step(q)) == SQLITE_ROW) {
		struct inst_row row = { 0 };

		if (sched_inst_get(s, (const char *)sqlite3_column_text(q, 0), &row) == 0)
			json_array_append_new(arr, inst_json(&row, false));
		inst_row_free(&row);
	}
	sqlite3_finalize(q);
	return sched_accept(s, c, NULL, arr);
}

