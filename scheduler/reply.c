/*
 * Answers and messages out: the request.result of each request (stored
 * with its effect when the request changes something), instance.state
 * events, and the commands to a host (instance.build, ...).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

const char *sched_jstr(const json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v && *v ? v : NULL;
}

static char *host_topic(const char *host)
{
	char *t = NULL;

	if (asprintf(&t, "%s%s", BUS_TOPIC_HOST_PREFIX, host) < 0)
		return NULL;
	return t;
}

/* ---- outcomes ---------------------------------------------------------- */


int sched_store_result(struct sched *s, const struct sched_call *c, const json_t *res)
{
	sqlite3_stmt *q = s->st[SST_REQ_PUT];
	_cleanup_free_ char *text = NULL;
	char ts[RFC3339_STRLEN];

	if (!c->stored || !c->rid || !*c->rid)
		return 0;
	text = json_dumps(res, JSON_COMPACT);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	time_rfc3339_now(ts);
	sqlite3_bind_text(q, 1, c->rid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, c->type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, text, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, ts, -1, SQLITE_TRANSIENT);
	return sched_db_step_done(s, SST_REQ_PUT, "storing a request outcome");
}

json_t *sched_result_new(bool ok, const char *error, json_t *data)
{
	json_t *res = json_pack("{s:b}", "ok", ok);

	if (!res) {
		json_decref(data);
		return NULL;
	}
	if (error)
		json_object_set_new(res, "error", json_string(error));
	if (data)
		json_object_set_new(res, "data", data);
	return res;
}

int sched_emit_result(struct sched_call *c, const char *key, json_t *res)
{
	sched_metrics_result(c->type, res);
	return sched_out_add(c->out, BUS_TOPIC_EVENTS, key ? key : c->rid, "request.result",
			     c->rid, res);
}

int sched_reject(struct sched *s, struct sched_call *c, const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL;
	json_t *res;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (r < 0)
		return err_set(-ENOMEM, "out of memory");
	log_info("request rejected type=%s request=%s error=\"%s\"", c->type, c->rid, msg);
	res = sched_result_new(false, msg, NULL);
	if (!res)
		return err_set(-ENOMEM, "out of memory");
	r = sched_store_result(s, c, res);
	if (r < 0) {
		json_decref(res);
		return r;
	}
	return sched_emit_result(c, NULL, res);
}

/* Answer ok with DATA (taken); stored when the type is. */
int sched_accept(struct sched *s, struct sched_call *c, const char *key, json_t *data)
{
	/* tenant data goes sealed to the credential that asked (auth.c) */
	json_t *res = c->sealed && c->seal_key ? sched_result_sealed(c, data)
					       : sched_result_new(true, NULL, data);
	int r;

	if (!res)
		return err_set(-ENOMEM, "out of memory");
	r = sched_store_result(s, c, res);
	if (r < 0) {
		json_decref(res);
		return r;
	}
	return sched_emit_result(c, key, res);
}

int sched_emit_state(struct sched_out *out, const char *rid, const char *uuid,
		      const char *project, const char *host, const char *state, const char *reason)
{
	json_t *b = json_pack("{s:s, s:s, s:s}", "uuid", uuid, "project", project, "state", state);

	if (b && host)
		json_object_set_new(b, "host", json_string(host));
	if (b && reason)
		json_object_set_new(b, "reason", json_string(reason));
	return sched_out_add(out, BUS_TOPIC_EVENTS, uuid, "instance.state", rid, b);
}

int sched_emit_host_cmd(struct sched_out *out, const char *host, const char *type,
			 const char *rid, const char *uuid, json_t *body)
{
	_cleanup_free_ char *topic = host_topic(host);

	if (!topic) {
		json_decref(body);
		return err_set(-ENOMEM, "out of memory");
	}
	/* signed with the rest: a command for one host does not replay on another */
	if (body)
		json_object_set_new(body, "host", json_string(host));
	return sched_out_add(out, topic, uuid, type, rid, body);
}

/* instance.build: the spec (reference taken) + where it goes + request fields. */
int sched_send_build_json(struct sched *s, struct sched_out *out, const struct sched_host *h,
			  json_t *b, const char *rid, long attempt, const struct sched_fit *fit)
{
	const char *uuid;

	if (!b)
		return err_set(-EIO, "instance spec in the state database does not parse");
	/* the spec is ours to change: the stored text or our own copy */
	if (sched_seal_build(s, h, b) < 0) {
		/* placement keeps such hosts out; a stored build to one stays
		 * `scheduling` rather than travel in clear */
		log_error("build not sent instance=%s: %s",
			  json_string_value(json_object_get(b, "uuid")), err_msg());
		json_decref(b);
		return 0;
	}
	uuid = json_string_value(json_object_get(b, "uuid"));
	json_object_set_new(b, "availability_zone", json_string(h->az ? h->az : "nova"));
	json_object_set_new(b, "attempt", json_integer(attempt));
	json_object_set_new(b, "request_id", json_string(rid));
	json_object_set_new(b, "claim", json_pack("{s:i, s:I, s:I}", "numa_node", fit->node,
						  "page_kb", (json_int_t)fit->page_kb, "pages",
						  (json_int_t)fit->pages));
	return sched_emit_host_cmd(out, h->name, "instance.build", rid, uuid ? uuid : "", b);
}

int sched_send_build(struct sched *s, struct sched_out *out, const struct sched_host *h,
		     const char *spec_text, const char *rid, long attempt,
		     const struct sched_fit *fit)
{
	return sched_send_build_json(s, out, h, json_loads(spec_text, 0, NULL), rid, attempt, fit);
}

/* ---- messages out ------------------------------------------------------ */

int sched_out_add(struct sched_out *o, const char *topic, const char *key, const char *type,
		  const char *request_id, json_t *body)
{
	struct sched_msg *m;

	if (!body)
		return err_set(-ENOMEM, "out of memory");
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 8;
		struct sched_msg *v = realloc(o->v, cap * sizeof(*v));

		if (!v) {
			json_decref(body);
			return err_set(-ENOMEM, "out of memory");
		}
		o->v = v;
		o->cap = cap;
	}
	m = &o->v[o->n];
	memset(m, 0, sizeof(*m));
	m->topic = strdup(topic);
	m->key = key ? strdup(key) : NULL;
	m->type = strdup(type);
	snprintf(m->request_id, sizeof(m->request_id), "%s", request_id ? request_id : "");
	m->body = body;
	if (!m->topic || !m->type || (key && !m->key)) {
		free(m->topic);
		free(m->key);
		free(m->type);
		json_decref(body);
		return err_set(-ENOMEM, "out of memory");
	}
	o->n++;
	return 0;
}

void sched_out_clear(struct sched_out *o)
{
	if (!o)
		return;
	for (size_t i = 0; i < o->n; i++) {
		free(o->v[i].topic);
		free(o->v[i].key);
		free(o->v[i].type);
		json_decref(o->v[i].body);
	}
	o->n = 0;
}
