/* What the agent says on stratus.events. */
#define LOG_TAG "agent"
#include <string.h>

#include "agent/agent_priv.h"

static void emit(struct agent *a, const char *type, const char *request_id, json_t *body)
{
	struct bus_envelope *e = NULL;

	if (!body) {
		log_error("event %s: out of memory", type);
		return;
	}
	if (bus_envelope_new(type, BUS_TC_EVENTS, a->source,
			     request_id && *request_id ? request_id : NULL, body, &e) < 0) {
		log_error("event %s not sent: %s", type, err_msg());
		return;
	}
	if (agent_trust_sign(a, e) < 0)
		log_error("event %s not signed, not sent: %s", type, err_msg());
	else if (bus_produce(a->prod, BUS_TOPIC_EVENTS, NULL, e) < 0)
		log_error("event %s not queued: %s", type, err_msg());
	bus_envelope_free(e);
}

void agent_emit_event(struct agent *a, const char *type, const char *request_id, json_t *body)
{
	emit(a, type, request_id, body);
}

void agent_emit_state(struct agent *a, const char *uuid, const char *project,
		      enum instance_state st, const char *reason, const char *request_id,
		      json_t *extra)
{
	json_t *b = json_pack("{s:s, s:s, s:s, s:s}", "uuid", uuid, "project",
			      project ? project : "unknown", "host", a->cfg->host, "state",
			      instance_state_names[st]);

	if (b && reason)
		json_object_set_new(b, "reason", json_string(reason));
	if (b && extra)
		json_object_update(b, extra);
	json_decref(extra);
	log_info("instance state instance=%s state=%s%s%s", uuid, instance_state_names[st],
		 reason ? " reason=" : "", reason ? reason : "");
	emit(a, "instance.state", request_id, b);
}

void agent_emit_result(struct agent *a, const char *request_id, bool ok, const char *error,
		       json_t *data)
{
	json_t *b = json_pack("{s:b}", "ok", ok);

	if (b && error)
		json_object_set_new(b, "error", json_string(error));
	if (b && data)
		json_object_set(b, "data", data);
	json_decref(data);
	emit(a, "request.result", request_id, b);
}

void agent_emit_result_body(struct agent *a, const char *request_id, json_t *body)
{
	if (!body) {
		agent_emit_result(a, request_id, false, "cannot seal the answer", NULL);
		return;
	}
	emit(a, "request.result", request_id, body);
}

void agent_emit_reschedule(struct agent *a, const char *uuid, const char *project,
			   const char *reason, const char *request_id)
{
	json_t *b = json_pack("{s:s, s:s, s:s, s:s}", "uuid", uuid, "project",
			      project ? project : "unknown", "failed_host", a->cfg->host, "reason",
			      reason ? reason : "build failed");

	log_warn("reschedule requested instance=%s reason=\"%s\"", uuid, reason ? reason : "");
	emit(a, "instance.reschedule", request_id, b);
}

void agent_emit_volume(struct agent *a, const struct store_volume *v, const char *request_id)
{
	json_t *b = json_pack("{s:s, s:s, s:s, s:s}", "uuid", v->uuid, "project",
			      v->project ? v->project : "unknown", "host", a->cfg->host, "state",
			      v->state);

	if (b && v->instance)
		json_object_set_new(b, "instance", json_string(v->instance));
	if (b && v->reason)
		json_object_set_new(b, "reason", json_string(v->reason));
	log_info("volume state volume=%s state=%s%s%s", v->uuid, v->state,
		 v->reason ? " reason=" : "", v->reason ? v->reason : "");
	emit(a, "volume.state", request_id, b);
}
