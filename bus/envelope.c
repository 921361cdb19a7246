/* The Stratus envelope: build, parse, validate, serialize. */
#define LOG_TAG "bus"
#include <errno.h>
#include <string.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"

void bus_envelope_free(struct bus_envelope *e)
{
	if (!e)
		return;
	free(e->source);
	json_decref(e->body);
	json_decref(e->auth);
	free(e);
}

int bus_envelope_new(const char *type, enum bus_topic_class tc, const char *source,
		     const char *request_id, json_t *body, struct bus_envelope **out)
{
	const struct bus_type *row = NULL;
	struct bus_envelope *e = NULL;
	int r;

	if (!type || strlen(type) >= BUS_TYPE_MAX) {
		r = err_set(-EINVAL, "envelope: type: expected a message type name");
		goto fail;
	}
	if (!source || !*source) {
		r = err_set(-EINVAL, "envelope: source: expected a non-empty string");
		goto fail;
	}
	if (request_id && !uuid_valid(request_id)) {
		r = err_set(-EINVAL, "envelope: request_id: expected a UUID, got '%s'", request_id);
		goto fail;
	}
	if (!body) {
		r = err_set(-ENOMEM, "%s: body: out of memory", type);
		goto fail;
	}
	r = bus_type_validate(type, tc, body, &row);
	if (r < 0)
		goto fail;
	e = calloc(1, sizeof(*e));
	if (!e || !(e->source = strdup(source))) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	e->v = BUS_ENVELOPE_VERSION;
	uuid_generate_time_str(e->id); /* time-ordered: api_seen appends */
	snprintf(e->type, sizeof(e->type), "%s", type);
	time_rfc3339_now(e->ts);
	if (request_id)
		snprintf(e->request_id, sizeof(e->request_id), "%s", request_id);
	else
		uuid_generate_time_str(e->request_id);
	e->body = body;
	e->tc = row->tc;
	*out = e;
	return 0;
fail:
	json_decref(body);
	bus_envelope_free(e);
	return r;
}

/* auth: an object of at most a few strings, BUS_AUTH_MAX bytes in all */
static int auth_check(json_t *auth)
{
	const char *k;
	json_t *v;
	size_t n = 2;

	if (!json_is_object(auth))
		return err_set(-EINVAL, "envelope: auth: expected an object");
	json_object_foreach(auth, k, v) {
		if (!json_is_string(v))
			return err_set(-EINVAL, "envelope: auth.%s: expected a string", k);
		n += strlen(k) + json_string_length(v) + 6;
	}
	if (n > BUS_AUTH_MAX)
		return err_set(-EINVAL, "envelope: auth: more than %d bytes", BUS_AUTH_MAX);
	return 0;
}

int bus_envelope_set_auth(struct bus_envelope *e, json_t *auth)
{
	int r = auth ? auth_check(auth) : 0;

	if (r < 0) {
		json_decref(auth);
		return r;
	}
	json_decref(e->auth);
	e->auth = auth;
	return 0;
}

/* envelope field STR of at most cap-1 bytes that passes ok() */
static int get_str(const json_t *root, const char *key, bool (*ok)(const char *),
		   const char *expected, const char **out)
{
	const json_t *v = json_object_get(root, key);

	if (!v)
		return err_set(-EINVAL, "envelope: %s: required field is missing", key);
	if (!json_is_string(v) || !json_string_length(v) || (ok && !ok(json_string_value(v))))
		return err_set(-EINVAL, "envelope: %s: expected %s", key, expected);
	*out = json_string_value(v);
	return 0;
}

int bus_envelope_parse(const void *data, size_t len, const char *topic,
		       struct bus_envelope **out)
{
	enum bus_topic_class tc = BUS_TC_LAST;
	const struct bus_type *row = NULL;
	struct bus_envelope *e = NULL;
	json_t *root = NULL, *v;
	json_error_t jerr;
	const char *type, *id, *ts, *source, *rid;
	int r;

	if (len > BUS_MAX_MESSAGE) {
		r = err_set(-E2BIG, "envelope: %zu bytes, more than the limit of %d", len,
			    BUS_MAX_MESSAGE);
		goto fail;
	}
	if (topic) {
		r = bus_topic_classify(topic, &tc);
		if (r < 0)
			goto fail;
	}
	root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		r = err_set(-EINVAL, "envelope: not valid JSON (line %d column %d: %s)", jerr.line,
			    jerr.column, jerr.text);
		goto fail;
	}
	if (!json_is_object(root)) {
		r = err_set(-EINVAL, "envelope: expected a JSON object");
		goto fail;
	}
	/* the version first: another version may have another shape */
	v = json_object_get(root, "v");
	if (!v) {
		r = err_set(-EINVAL, "envelope: v: required field is missing");
		goto fail;
	}
	if (!json_is_integer(v)) {
		r = err_set(-EINVAL, "envelope: v: expected the integer %d", BUS_ENVELOPE_VERSION);
		goto fail;
	}
	if (json_integer_value(v) != BUS_ENVELOPE_VERSION) {
		r = err_set(-EPROTONOSUPPORT,
			    "envelope: v: unsupported version %" JSON_INTEGER_FORMAT
			    " (this build speaks %d)",
			    json_integer_value(v), BUS_ENVELOPE_VERSION);
		goto fail;
	}
	if ((r = get_str(root, "type", NULL, "a message type name", &type)) < 0)
		goto fail;
	if (!bus_type_known(type) || strlen(type) >= BUS_TYPE_MAX) {
		r = err_set(-EPROTONOSUPPORT, "envelope: type: unknown message type '%s'", type);
		goto fail;
	}
	if ((r = get_str(root, "id", uuid_valid, "a UUID", &id)) < 0 ||
	    (r = get_str(root, "ts", time_rfc3339_valid, "an RFC 3339 time", &ts)) < 0 ||
	    (r = get_str(root, "source", NULL, "a non-empty string", &source)) < 0 ||
	    (r = get_str(root, "request_id", uuid_valid, "a UUID", &rid)) < 0)
		goto fail;
	if (strlen(ts) >= RFC3339_STRLEN) {
		r = err_set(-EINVAL, "envelope: ts: expected an RFC 3339 time");
		goto fail;
	}
	v = json_object_get(root, "body");
	if (!v) {
		r = err_set(-EINVAL, "%s: body: required field is missing", type);
		goto fail;
	}
	if (tc != BUS_TC_LAST && !bus_type_find(type, tc)) {
		r = err_set(-EINVAL, "%s: does not travel on %s", type, topic);
		goto fail;
	}
	r = bus_type_validate(type, tc, v, &row);
	if (r < 0)
		goto fail;
	if (json_object_get(root, "auth") && (r = auth_check(json_object_get(root, "auth"))) < 0)
		goto fail;

	e = calloc(1, sizeof(*e));
	if (!e || !(e->source = strdup(source))) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	e->v = BUS_ENVELOPE_VERSION;
	snprintf(e->id, sizeof(e->id), "%s", id);
	snprintf(e->type, sizeof(e->type), "%s", type);
	snprintf(e->ts, sizeof(e->ts), "%s", ts);
	snprintf(e->request_id, sizeof(e->request_id), "%s", rid);
	e->body = json_incref(v);
	e->auth = json_incref(json_object_get(root, "auth"));
	e->tc = row->tc;
	json_decref(root);
	*out = e;
	return 0;
fail:
	json_decref(root);
	bus_envelope_free(e);
	return r;
}

int bus_envelope_serialize(const struct bus_envelope *e, char **out, size_t *len)
{
	json_t *root;
	char *s = NULL;
	size_t n;

	root = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:O}", "v", e->v, "id", e->id, "type",
			 e->type, "ts", e->ts, "source", e->source, "request_id", e->request_id,
			 "body", e->body);
	if (!root || (e->auth && json_object_set(root, "auth", e->auth) < 0)) {
		json_decref(root);
		return err_set(-ENOMEM, "envelope %s: cannot build the JSON", e->id);
	}
	s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!s)
		return err_set(-ENOMEM, "envelope %s: cannot serialize", e->id);
	n = strlen(s);
	if (n > BUS_MAX_MESSAGE) {
		free(s);
		return err_set(-E2BIG, "envelope %s (%s): %zu bytes, more than the limit of %d",
			       e->id, e->type, n, BUS_MAX_MESSAGE);
	}
	*out = s;
	if (len)
		*len = n;
	return 0;
}

const char *bus_envelope_default_key(const struct bus_envelope *e)
{
	static const char *const key_field[BUS_TC_LAST] = {
		[BUS_TC_API] = "project",
		[BUS_TC_HOST] = "uuid",
		[BUS_TC_EVENTS] = "uuid",
		[BUS_TC_METRICS] = "host",
	};
	const char *k;

	if (!e || (int)e->tc < 0 || e->tc >= BUS_TC_LAST)
		return NULL;
	k = json_string_value(json_object_get(e->body, key_field[e->tc]));
	if (!k && e->tc == BUS_TC_EVENTS)
		k = e->request_id; /* results without an instance */
	return k;
}
