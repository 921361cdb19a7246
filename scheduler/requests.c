/*
 * The request handlers: one table row per message type the scheduler
 * consumes (requests on stratus.api, agents' events on stratus.events,
 * host reports on stratus.metrics).
 *
 * Every request gets exactly one request.result event carrying its
 * request id (instance.console: the agent answers, see docs/scheduler.md).
 * The outcome of a request that changes something is stored in the same
 * transaction as its effect; a request id seen again is answered with the
 * stored outcome, and builds it started that are still `scheduling` are
 * sent again (agents ignore a build they already have).
 *
 * Requests from the bus come in through sched_handle_envelope, which
 * verifies the signature ONCE here at the edge (auth.c), before the table
 * dispatches: the handlers read the project and role from the call
 * (c->project, c->admin), never from the body.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

/* ---- the table --------------------------------------------------------- */

struct handler {
	const char *type;
	int (*fn)(struct sched *s, struct sched_call *c);
	bool stored; /* changes state: outcome kept for duplicates */
};

/* Types whose data is a tenant's: sealed to the credential that asked. */
static const char *const sealed_types[] = {
	"instance.show", "instance.list", "credential.create", "credential.list",
	"volume.show", "volume.list",
};

static bool sealed_type(const char *type)
{
	for (size_t i = 0; i < ARRAY_SIZE(sealed_types); i++)
		if (strcmp(sealed_types[i], type) == 0)
			return true;
	return false;
}

static const struct handler handlers[] = {
	/* requests on stratus.api */
	{ "instance.boot", sched_on_boot, true },
	{ "instance.delete", sched_on_delete, true },
	{ "instance.stop", sched_on_power, true },
	{ "instance.start", sched_on_power, true },
	{ "instance.reboot", sched_on_power, true },
	{ "instance.console", sched_on_power, false },
	{ "instance.show", sched_on_show, false },
	{ "instance.list", sched_on_list, false },
	{ "quota.show", sched_on_quota_show, false },
	{ "quota.set", sched_on_quota_set, true },
	{ "flavor.list", sched_on_flavor_list, false },
	{ "flavor.add", sched_on_flavor_add, true },
	{ "flavor.remove", sched_on_flavor_remove, true },
	{ "image.list", sched_on_image_list, false },
	{ "image.add", sched_on_image_add, true },
	{ "image.remove", sched_on_image_remove, true },
	{ "image.share", sched_on_image_share, true },
	{ "image.unshare", sched_on_image_unshare, true },
	{ "instance.rebuild", sched_on_rebuild, true },
	{ "host.list", sched_on_host_list, false },
	{ "host.forget", sched_on_host_forget, true },
	{ "credential.create", sched_on_credential_create, true },
	{ "credential.list", sched_on_credential_list, false },
	{ "credential.revoke", sched_on_credential_revoke, true },
	{ "scheduler.keys", sched_on_keys, false },
	{ "secgroup.create", sched_on_sg_create, true },
	{ "secgroup.list", sched_on_sg_list, false },
	{ "secgroup.show", sched_on_sg_show, false },
	{ "secgroup.delete", sched_on_sg_delete, true },
	{ "secgroup.rule.add", sched_on_sg_rule_add, true },
	{ "secgroup.rule.delete", sched_on_sg_rule_delete, true },
	{ "instance.migrate", sched_on_migrate, true },
	{ "host.disable", sched_on_host_disable, true },
	{ "host.enable", sched_on_host_disable, true },
	{ "host.drain", sched_on_host_drain, true },
	{ "host.evacuate", sched_on_host_evacuate, true },
	{ "volume.create", sched_on_volume_create, true },
	{ "volume.list", sched_on_volume_list, false },
	{ "volume.show", sched_on_volume_show, false },
	{ "volume.delete", sched_on_volume_delete, true },
	{ "volume.attach", sched_on_volume_attach, true },
	{ "volume.detach", sched_on_volume_detach, true },
	{ "instance.resize", sched_on_resize, true },
	{ "instance.resize.confirm", sched_on_resize_confirm, true },
	{ "instance.resize.revert", sched_on_resize_revert, true },
	{ "instance.snapshot", sched_on_snapshot, true },
	/* agents' events on stratus.events */
	{ "instance.state", sched_on_state, false },
	{ "instance.reschedule", sched_on_reschedule, false },
	{ "instance.migration", sched_on_migration, false },
	{ "volume.state", sched_on_volume_state, false },
	{ "image.snapshot", sched_on_snapshot_event, false },
	/* reports on stratus.metrics */
	{ "host.report", sched_on_report, false },
};

/* A request seen before: its stored outcome, and its builds again. */
static int answer_duplicate(struct sched *s, struct sched_call *c)
{
	sqlite3_stmt *q = s->st[SST_REQ_GET];
	json_t *res = NULL;
	int rc, r = 0;

	sqlite3_bind_text(q, 1, c->rid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		res = json_loads((const char *)sqlite3_column_text(q, 0), 0, NULL);
	else if (rc != SQLITE_DONE)
		r = err_set(-EIO, "reading a request outcome: %s", sqlite3_errmsg(s->db));
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	if (r < 0 || !res)
		return r;
	log_info("duplicate request answered type=%s request=%s", c->type, c->rid);
	if (strcmp(c->type, "instance.boot") == 0) {
		json_t *list = json_object_get(json_object_get(res, "data"), "instances");
		struct sched_strvec uuids = { 0 };
		json_t *it;
		size_t i;

		json_array_foreach(list, i, it) {
			const char *u = json_string_value(json_object_get(it, "uuid"));

			if (u && sched_strvec_add(&uuids, u) < 0)
				r = err_set(-ENOMEM, "out of memory");
		}
		if (r == 0)
			r = sched_resend_builds(s, &uuids, c->out);
		sched_strvec_free(&uuids);
	}
	if (r == 0)
		r = sched_emit_result(c, NULL, res);
	else
		json_decref(res);
	return r < 0 ? r : 1;
}

static const struct handler *handler_find(const char *type)
{
	for (size_t i = 0; i < ARRAY_SIZE(handlers); i++)
		if (strcmp(handlers[i].type, type) == 0)
			return &handlers[i];
	return NULL;
}

static int dispatch(struct sched *s, struct sched_call *c, const struct handler *h)
{
	int r;

	if (!json_is_object(c->body))
		return sched_reject(s, c, "%s: body: expected an object", c->type);
	if (c->stored && c->rid && *c->rid) {
		r = answer_duplicate(s, c);
		if (r != 0)
			return r < 0 ? r : 0;
	}
	return h->fn(s, c);
}

/* A refused request: its error answered, nothing stored (a forger must
 * not decide the outcome of a request id the owner may still send). */
static int refuse(struct sched_call *c, const char *why)
{
	json_t *res = sched_result_new(false, why, NULL);

	log_warn("request refused type=%s request=%s credential=%s error=\"%s\"", c->type, c->rid,
		 c->credential ? c->credential : "-", why);
	if (!res)
		return err_set(-ENOMEM, "out of memory");
	return sched_emit_result(c, NULL, res);
}

/* A request's verdict R (0 allowed, 1 refused with err_msg() set, <0 an
 * error): refused, or run. */
static int run_verified(struct sched *s, struct sched_call *c, const struct handler *h, int r)
{
	if (r < 0)
		return r;
	if (r > 0)
		return refuse(c, err_msg());
	return dispatch(s, c, h);
}

int sched_handle(struct sched *s, const char *type, const char *request_id, json_t *body,
		 int64_t now_ms, struct sched_out *out)
{
	struct sched_call c = { .type = type, .rid = request_id, .body = body, .now_ms = now_ms,
			  .out = out, .admin = true };
	const struct handler *h = handler_find(type);

	if (!h) {
		/* not ours (the commands we send, our own results): nothing to do */
		log_debug("message ignored type=%s request=%s", type, request_id ? request_id : "-");
		return 0;
	}
	c.stored = h->stored;
	c.project = sched_jstr(body, "project");
	return dispatch(s, &c, h);
}

int sched_handle_deferred(struct sched *s, const char *type, const char *request_id,
			  json_t *body, const char *credential, int64_t now_ms,
			  struct sched_out *out)
{
	struct sched_call c = { .type = type, .rid = request_id, .body = body, .now_ms = now_ms,
			  .out = out };
	const struct handler *h = handler_find(type);
	struct sched_cred cred;
	int r;

	if (!h)
		return 0;
	c.stored = h->stored;
	c.sealed = sealed_type(type);
	/* as the credential stands now: one revoked meanwhile asks nothing */
	r = sched_auth_rebind(s, credential, &c, &cred);
	if (r > 0)
		sched_metrics_auth_refused(true);
	return run_verified(s, &c, h, r);
}

int sched_handle_envelope(struct sched *s, const struct bus_envelope *e, const char *origin,
			  int64_t now_ms, struct sched_out *out)
{
	const char *rid = e->request_id[0] ? e->request_id : e->id;
	struct sched_call c = { .type = e->type, .rid = rid, .body = e->body, .now_ms = now_ms,
			  .out = out };
	const struct handler *h = handler_find(e->type);
	struct sched_cred cred;
	int r;

	if (h && e->tc != BUS_TC_API) {
		/* a host's report or event: signed by its pinned key (pins.c) */
		r = sched_pins_check(s, e, now_ms);
		if (r != 0)
			return r < 0 ? r : 0;
	}
	if (!h || e->tc != BUS_TC_API)
		return sched_handle(s, e->type, e->request_id[0] ? e->request_id : NULL, e->body,
				    now_ms, out);
	c.stored = h->stored;
	c.sealed = sealed_type(e->type);
	r = sched_auth_verify(s, e, origin, now_ms, &cred);
	if (r > 0)
		sched_metrics_auth_refused(false);
	if (r == 0) {
		c.credential = cred.id;
		r = sched_auth_bind(&c, &cred);
		if (r > 0)
			sched_metrics_auth_refused(true);
	}
	return run_verified(s, &c, h, r);
}
