/*
 * The message types of Stratus: ONE table of {type, topic class, schema,
 * extra check}, and the small schema walker the table's rows use.
 *
 * A schema is a table of fields {name, kind, required, sub-schema}. The
 * walker checks the required fields are there and every known field has
 * its kind; fields it does not know are allowed (later issues add fields
 * and old readers must not reject them).
 */
#define LOG_TAG "bus"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"
#include "model/model.h"

/* ---- topics ------------------------------------------------------------ */

static const char *const topic_class_names[BUS_TC_LAST] = {
	[BUS_TC_API] = BUS_TOPIC_API,
	[BUS_TC_HOST] = BUS_TOPIC_HOST_PREFIX "<host>",
	[BUS_TC_EVENTS] = BUS_TOPIC_EVENTS,
	[BUS_TC_METRICS] = BUS_TOPIC_METRICS,
};

const char *bus_topic_class_name(enum bus_topic_class tc)
{
	if ((int)tc < 0 || tc >= BUS_TC_LAST)
		return "(unknown topic class)";
	return topic_class_names[tc];
}

/* Kafka's legal topic characters. */
static bool topic_chars_ok(const char *s)
{
	for (; *s; s++) {
		char c = *s;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

#define HOST_NAME_MAX_LEN 200 /* Kafka topics are at most 249 characters */

int bus_topic_classify(const char *topic, enum bus_topic_class *out)
{
	size_t plen = strlen(BUS_TOPIC_HOST_PREFIX);

	if (!topic)
		return err_set(-EINVAL, "topic: missing");
	if (strcmp(topic, BUS_TOPIC_API) == 0)
		*out = BUS_TC_API;
	else if (strcmp(topic, BUS_TOPIC_EVENTS) == 0)
		*out = BUS_TC_EVENTS;
	else if (strcmp(topic, BUS_TOPIC_METRICS) == 0)
		*out = BUS_TC_METRICS;
	else if (strncmp(topic, BUS_TOPIC_HOST_PREFIX, plen) == 0 && topic[plen] &&
		 strlen(topic + plen) <= HOST_NAME_MAX_LEN && topic_chars_ok(topic + plen))
		*out = BUS_TC_HOST;
	else
		return err_set(-EINVAL,
			       "topic %s: not a Stratus topic (expected %s, %s, %s or %s<host>)",
			       topic, BUS_TOPIC_API, BUS_TOPIC_EVENTS, BUS_TOPIC_METRICS,
			       BUS_TOPIC_HOST_PREFIX);
	return 0;
}

char *bus_topic_host(const char *host)
{
	char *t = NULL;

	if (!host || !*host || strlen(host) > HOST_NAME_MAX_LEN || !topic_chars_ok(host)) {
		err_set(-EINVAL, "host '%s': not a valid host name for a topic (letters, digits, "
			"'.', '_', '-', at most %d characters)", host ? host : "", HOST_NAME_MAX_LEN);
		return NULL;
	}
	if (asprintf(&t, "%s%s", BUS_TOPIC_HOST_PREFIX, host) < 0) {
		err_set(-ENOMEM, "out of memory");
		return NULL;
	}
	return t;
}

/* ---- the schema walker ------------------------------------------------- */

enum fkind {
	FK_STRING,    /* any string */
	FK_NAME,      /* non-empty string */
	FK_UUID,
	FK_POSINT,    /* integer >= 1 */
	FK_NONNEG,    /* integer >= 0 */
	FK_BOOL,
	FK_OBJECT,    /* object checked against sub */
	FK_ARRAY,     /* array of objects checked against sub */
	FK_STRMAP,    /* object of string values */
	FK_INTMAP,    /* object of non-negative integers */
	FK_STRLIST,   /* array of strings */
	FK_USER_DATA, /* base64, at most BUS_MAX_USER_DATA decoded */
	FK_ENUM,      /* one of enums[] */
	FK_ANY,       /* any JSON value */
	FK_LAST
};

struct field {
	const char *name;
	enum fkind kind;
	bool req;
	const struct field *sub;   /* FK_OBJECT, FK_ARRAY; ends with name == NULL */
	const char *const *enums;  /* FK_ENUM; NULL-terminated */
};

#define REQ(n, k) { .name = (n), .kind = (k), .req = true }
#define OPT(n, k) { .name = (n), .kind = (k) }
#define REQ_SUB(n, k, s) { .name = (n), .kind = (k), .req = true, .sub = (s) }
#define OPT_SUB(n, k, s) { .name = (n), .kind = (k), .sub = (s) }
#define OPT_ENUM(n, e) { .name = (n), .kind = FK_ENUM, .enums = (e) }
#define REQ_ENUM(n, e) { .name = (n), .kind = FK_ENUM, .req = true, .enums = (e) }

/* decoded length of strict base64 (A-Z a-z 0-9 + /, '=' padding), or -1 */
static long base64_decoded_len(const char *s, size_t n)
{
	size_t pad = 0;

	if (n % 4)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '=') {
			if (i < n - 2 || (i == n - 2 && s[n - 1] != '='))
				return -1;
			pad++;
			continue;
		}
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/'))
			return -1;
	}
	return (long)(n / 4 * 3 - pad);
}

static bool is_posint(const json_t *v)
{
	return json_is_integer(v) && json_integer_value(v) >= 1;
}

static bool is_nonneg(const json_t *v)
{
	return json_is_integer(v) && json_integer_value(v) >= 0;
}

static int walk(const struct field *fields, const json_t *obj, const char *path);

/* "body.ssh_keys" + "[3]" or + ".name" -> malloc'd */
static char *path_join(const char *path, const char *name, long index)
{
	char *p = NULL;
	int r;

	if (index >= 0)
		r = asprintf(&p, "%s[%ld]", path, index);
	else if (*path)
		r = asprintf(&p, "%s.%s", path, name);
	else
		r = asprintf(&p, "%s", name);
	return r < 0 ? NULL : p;
}

static int enum_expected(const char *path, const char *const *enums)
{
	struct strbuf sb = { .max = 4096 };
	_cleanup_free_ char *list = NULL;

	for (size_t i = 0; enums[i]; i++)
		sb_printf(&sb, "%s%s", i ? (enums[i + 1] ? ", " : " or ") : "", enums[i]);
	list = sb_steal(&sb);
	return err_set(-EINVAL, "%s: expected one of %s", path, list ? list : "?");
}

static int check_value(const struct field *f, const json_t *v, const char *path)
{
	size_t i;
	const char *k;
	json_t *item;

	switch (f->kind) {
	case FK_STRING:
		if (!json_is_string(v))
			return err_set(-EINVAL, "%s: expected a string", path);
		return 0;
	case FK_NAME:
		if (!json_is_string(v) || json_string_length(v) == 0)
			return err_set(-EINVAL, "%s: expected a non-empty string", path);
		return 0;
	case FK_UUID:
		if (!json_is_string(v) || !uuid_valid(json_string_value(v)))
			return err_set(-EINVAL, "%s: expected a UUID", path);
		return 0;
	case FK_POSINT:
		if (!is_posint(v))
			return err_set(-EINVAL, "%s: expected a positive integer", path);
		return 0;
	case FK_NONNEG:
		if (!is_nonneg(v))
			return err_set(-EINVAL, "%s: expected a non-negative integer", path);
		return 0;
	case FK_BOOL:
		if (!json_is_boolean(v))
			return err_set(-EINVAL, "%s: expected true or false", path);
		return 0;
	case FK_OBJECT:
		if (!json_is_object(v))
			return err_set(-EINVAL, "%s: expected an object", path);
		return f->sub ? walk(f->sub, v, path) : 0;
	case FK_ARRAY:
		if (!json_is_array(v))
			return err_set(-EINVAL, "%s: expected an array", path);
		json_array_foreach(v, i, item) {
			_cleanup_free_ char *p = path_join(path, "", (long)i);
			int r;

			if (!p)
				return err_set(-ENOMEM, "out of memory");
			if (!json_is_object(item))
				return err_set(-EINVAL, "%s: expected an object", p);
			r = walk(f->sub, item, p);
			if (r < 0)
				return r;
		}
		return 0;
	case FK_STRLIST:
		if (!json_is_array(v))
			return err_set(-EINVAL, "%s: expected an array of strings", path);
		json_array_foreach(v, i, item)
			if (!json_is_string(item))
				return err_set(-EINVAL, "%s[%zu]: expected a string", path, i);
		return 0;
	case FK_STRMAP:
	case FK_INTMAP:
		if (!json_is_object(v))
			return err_set(-EINVAL, "%s: expected an object", path);
		json_t *obj = (json_t *)(uintptr_t)v; /* jansson's iterator is not const */

		json_object_foreach(obj, k, item) {
			if (f->kind == FK_STRMAP && !json_is_string(item))
				return err_set(-EINVAL, "%s.%s: expected a string", path, k);
			if (f->kind == FK_INTMAP && !is_nonneg(item))
				return err_set(-EINVAL, "%s.%s: expected a non-negative integer",
					       path, k);
		}
		return 0;
	case FK_USER_DATA: {
		long n;

		if (!json_is_string(v))
			return err_set(-EINVAL, "%s: expected a base64 string", path);
		n = base64_decoded_len(json_string_value(v), json_string_length(v));
		if (n < 0)
			return err_set(-EINVAL, "%s: expected a base64 string", path);
		if (n > BUS_MAX_USER_DATA)
			return err_set(-E2BIG, "%s: %ld bytes decoded, more than the limit of %d",
				       path, n, BUS_MAX_USER_DATA);
		return 0;
	}
	case FK_ENUM:
		if (!json_is_string(v))
			return enum_expected(path, f->enums);
		for (i = 0; f->enums[i]; i++)
			if (strcmp(f->enums[i], json_string_value(v)) == 0)
				return 0;
		return enum_expected(path, f->enums);
	case FK_ANY:
		return 0;
	case FK_LAST:
		break;
	}
	return err_set(-EINVAL, "%s: unknown schema kind", path);
}

static int walk(const struct field *fields, const json_t *obj, const char *path)
{
	for (const struct field *f = fields; f->name; f++) {
		const json_t *v = json_object_get(obj, f->name);
		_cleanup_free_ char *p = path_join(path, f->name, -1);
		int r;

		if (!p)
			return err_set(-ENOMEM, "out of memory");
		if (!v || json_is_null(v)) {
			if (f->req)
				return err_set(-EINVAL, "%s: required field is missing", p);
			continue;
		}
		r = check_value(f, v, p);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- schemas ----------------------------------------------------------- */

static const char *const seed_kinds[] = { "nocloud", "configdrive", "none", NULL };
static const char *const disk_formats[] = { "qcow2", "raw", NULL };
static const char *const image_visibilities[] = { "public", "private", NULL };

static const struct field ssh_key_fields[] = {
	REQ("name", FK_NAME),
	REQ("key", FK_NAME),
	{ 0 },
};

/* requests on stratus.api */
static const struct field boot_fields[] = {
	REQ("project", FK_NAME),
	REQ("name", FK_NAME),
	REQ("flavor", FK_NAME),
	REQ("image", FK_NAME),
	OPT("user_data", FK_USER_DATA),
	OPT_SUB("ssh_keys", FK_ARRAY, ssh_key_fields),
	OPT("metadata", FK_STRMAP),
	OPT("server_group", FK_NAME),
	OPT("count", FK_POSINT),
	OPT_ENUM("seed", seed_kinds),
	OPT("availability_zone", FK_NAME),
	OPT("sealed", FK_NAME), /* user_data, ssh_keys, metadata sealed to the scheduler */
	OPT("security_groups", FK_STRLIST), /* names; default ["default"] */
	OPT("volume", FK_NAME), /* attach this volume: placed on its host */
	{ 0 },
};

static const struct field instance_ref_fields[] = {
	REQ("project", FK_NAME),
	REQ("instance", FK_NAME), /* name or uuid */
	{ 0 },
};

static const struct field reboot_fields[] = {
	REQ("project", FK_NAME),
	REQ("instance", FK_NAME), /* name or uuid */
	OPT("hard", FK_BOOL),     /* true: reset, no soft step (default false) */
	{ 0 },
};

static const struct field rebuild_fields[] = {
	REQ("project", FK_NAME),
	REQ("instance", FK_NAME), /* name or uuid */
	OPT("image", FK_NAME),    /* default: the instance's */
	OPT("user_data", FK_USER_DATA), /* default: the instance's */
	OPT("sealed", FK_NAME),   /* user_data sealed to the scheduler */
	{ 0 },
};

/* resize (issue 18): the new flavor by name; the host gets its definition */
static const struct field resize_fields[] = {
	REQ("project", FK_NAME),
	REQ("instance", FK_NAME), /* name or uuid */
	REQ("flavor", FK_NAME),
	{ 0 },
};

static const struct field resize_flavor_fields[] = {
	REQ("name", FK_NAME),
	REQ("vcpus", FK_POSINT),
	REQ("ram_mb", FK_POSINT),
	REQ("disk_gb", FK_NONNEG),
	OPT("extra_specs", FK_STRMAP),
	{ 0 },
};

static const struct field resize_host_fields[] = {
	REQ("uuid", FK_UUID),
	{ .name = "flavor", .kind = FK_OBJECT, .req = true, .sub = resize_flavor_fields },
	{ 0 },
};

static const struct field console_fields[] = {
	REQ("project", FK_NAME),
	REQ("instance", FK_NAME),
	OPT("lines", FK_POSINT), /* the last lines of the console log */
	OPT("attach", FK_BOOL),  /* a one-time token for the console proxy instead */
	{ 0 },
};

static const struct field project_fields[] = {
	REQ("project", FK_NAME),
	{ 0 },
};

static const struct field quota_set_fields[] = {
	REQ("project", FK_NAME),
	REQ("limits", FK_INTMAP),
	{ 0 },
};

static const struct field no_fields[] = {
	{ 0 },
};

static const struct field name_fields[] = {
	REQ("name", FK_NAME),
	{ 0 },
};

static const struct field flavor_fields[] = {
	REQ("name", FK_NAME),
	REQ("vcpus", FK_POSINT),
	REQ("ram_mb", FK_POSINT),
	REQ("disk_gb", FK_NONNEG),
	OPT("ephemeral_gb", FK_NONNEG), /* bounds: scheduler/config.c flavor_nums */
	OPT("swap_mb", FK_NONNEG),
	OPT("extra_specs", FK_STRMAP),
	{ 0 },
};

static const char *const role_names[] = { "member", "admin", NULL };

static const struct field credential_create_fields[] = {
	REQ("project", FK_NAME),
	REQ_ENUM("role", role_names),
	{ 0 },
};

static const struct field host_name_fields[] = {
	REQ("host", FK_NAME),
	{ 0 },
};

static const struct field credential_id_fields[] = {
	REQ("id", FK_NAME),
	{ 0 },
};

static const struct field image_add_fields[] = {
	REQ("name", FK_NAME),
	REQ("url", FK_NAME),
	REQ("checksum", FK_NAME),
	REQ_ENUM("disk_format", disk_formats),
	OPT("min_disk_gb", FK_NONNEG),
	OPT("properties", FK_STRMAP), /* Glance names: hw_firmware_type ... (model) */
	OPT_ENUM("visibility", image_visibilities), /* private: of body.project */
	{ 0 },
};

/* security groups (scheduler/secgroup_requests.c; rules: model/secgroup.c) */
static const struct field secgroup_create_fields[] = {
	REQ("project", FK_NAME),
	REQ("name", FK_NAME),
	OPT("description", FK_STRING),
	{ 0 },
};

static const struct field secgroup_ref_fields[] = {
	REQ("project", FK_NAME),
	REQ("group", FK_NAME), /* name or id */
	{ 0 },
};

static const struct field secgroup_rule_add_fields[] = {
	REQ("project", FK_NAME),
	REQ("group", FK_NAME),
	REQ("direction", FK_NAME),
	OPT("ethertype", FK_NAME),
	OPT("protocol", FK_NAME),
	OPT("port_range_min", FK_NONNEG),
	OPT("port_range_max", FK_NONNEG),
	OPT("remote_ip_prefix", FK_NAME),
	OPT("remote_group", FK_NAME),
	{ 0 },
};

static const struct field secgroup_rule_delete_fields[] = {
	REQ("project", FK_NAME),
	REQ("id", FK_UUID),
	{ 0 },
};

static const struct field sg_port_fields[] = {
	REQ("uuid", FK_UUID),
	REQ("groups", FK_STRLIST),
	{ 0 },
};

static const struct field sg_group_fields[] = {
	REQ("id", FK_UUID),
	REQ("name", FK_NAME),
	REQ("rules", FK_ANY), /* each checked by model_sg_rule_parse at the agent */
	{ 0 },
};

static const struct field secgroup_apply_fields[] = {
	REQ("project", FK_NAME),
	REQ_SUB("ports", FK_ARRAY, sg_port_fields),
	REQ_SUB("groups", FK_ARRAY, sg_group_fields),
	REQ("members", FK_OBJECT),
	OPT("seq", FK_NONNEG), /* the scheduler's order of its views */
	{ 0 },
};

static const struct field image_share_fields[] = {
	REQ("name", FK_NAME),
	REQ("with", FK_NAME), /* the project it is (un)shared with */
	{ 0 },
};

static const struct field volume_create_fields[] = {
	REQ("project", FK_NAME),
	REQ("name", FK_NAME),
	REQ("size_gb", FK_POSINT),
	OPT("host", FK_NAME), /* admin only */
	{ 0 },
};

static const struct field volume_ref_fields[] = {
	REQ("project", FK_NAME),
	REQ("volume", FK_NAME), /* name or uuid */
	{ 0 },
};

static const struct field volume_attach_fields[] = {
	REQ("project", FK_NAME),
	REQ("volume", FK_NAME),
	REQ("instance", FK_NAME),
	{ 0 },
};

/* commands on stratus.host.<host> (instance.build: model/spec.c) */
static const struct field build_fields[] = {
	OPT("sealed", FK_NAME), /* user_data, ssh_keys, metadata sealed to the host */
	{ 0 },
};

static const struct field uuid_fields[] = {
	REQ("uuid", FK_UUID),
	{ 0 },
};

static const struct field reboot_host_fields[] = {
	REQ("uuid", FK_UUID),
	OPT("hard", FK_BOOL),
	{ 0 },
};

static const struct field console_host_fields[] = {
	REQ("uuid", FK_UUID),
	OPT("lines", FK_POSINT),
	OPT("attach", FK_BOOL),     /* remember the sealed token, answer how to use it */
	OPT("project", FK_NAME),    /* attach: the instance's project, bound to the token */
	OPT("sealed", FK_STRING),   /* result_key and token, sealed to the host */
	{ 0 },
};

/* live migration (issue 15) */
static const char *const migrate_phases[] = { "prepared", "failed", "progress", "completed",
					      "started", "done", "aborted", NULL };
static const char *const migrate_outcomes[] = { "commit", "abort", NULL };
static const char *const migrate_actions[] = { "abort", "pause", "postcopy", NULL };
static const struct field migrate_fields[] = {
	REQ("project", FK_NAME),
	REQ("instance", FK_NAME),
	OPT("host", FK_NAME), /* the destination; absent: the scheduler picks */
	OPT("cold", FK_BOOL), /* true: stop, copy, start (default false: live) */
	{ 0 },
};
static const struct field migrate_prepare_fields[] = {
	REQ("migration", FK_UUID),
	REQ("source_host", FK_NAME),
	OPT("sealed", FK_NAME),
	OPT("secgroups", FK_OBJECT), /* the destination's secgroup.apply inputs */
	{ 0 },
};
static const struct field migrate_limits_fields[] = {
	REQ("downtime_ms", FK_POSINT),
	REQ("downtime_steps", FK_POSINT),
	REQ("downtime_delay_ms", FK_NONNEG),
	REQ("completion_timeout_ms", FK_NONNEG),
	REQ_ENUM("timeout_action", migrate_actions),
	REQ("auto_converge", FK_BOOL),
	OPT("data_gb", FK_NONNEG),
	OPT("cold", FK_BOOL), /* a cold migration: stop, copy, start */
	{ 0 },
};
static const struct field migrate_perform_fields[] = {
	REQ("uuid", FK_UUID),
	REQ("migration", FK_UUID),
	REQ("dest_host", FK_NAME),
	REQ("dest_uri", FK_NAME),
	REQ("domain_xml", FK_NAME),
	REQ_SUB("limits", FK_OBJECT, migrate_limits_fields),
	{ 0 },
};
static const struct field migrate_finish_fields[] = {
	REQ("uuid", FK_UUID),
	REQ("migration", FK_UUID),
	REQ_ENUM("outcome", migrate_outcomes),
	OPT("stopped", FK_BOOL), /* commit of a cold move of a stopped instance */
	{ 0 },
};
static const struct field migration_fields[] = {
	REQ("uuid", FK_UUID),
	REQ("migration", FK_UUID),
	REQ_ENUM("phase", migrate_phases),
	OPT("host", FK_NAME),   /* the agent speaking (absent: the scheduler) */
	OPT("source", FK_NAME),
	OPT("dest", FK_NAME),
	OPT("step", FK_NAME),   /* failed / aborted: prepare or perform */
	OPT("error", FK_STRING),
	OPT("domain_xml", FK_STRING), /* prepared: the destination's domain */
	OPT("dest_uri", FK_STRING),   /* prepared: its libvirt URI */
	OPT("memory_processed", FK_NONNEG),
	OPT("memory_remaining", FK_NONNEG),
	OPT("memory_total", FK_NONNEG),
	OPT("disk_processed", FK_NONNEG),
	OPT("disk_remaining", FK_NONNEG),
	OPT("disk_total", FK_NONNEG),
	OPT("total_ms", FK_NONNEG),
	OPT("downtime_ms", FK_NONNEG),
	OPT("cold", FK_BOOL),    /* completed / done / aborted of a cold migration */
	OPT("stopped", FK_BOOL), /* cold: it was stopped and stays stopped */
	{ 0 },
};
static const struct field host_maint_fields[] = {
	REQ("host", FK_NAME),
	OPT("reason", FK_STRING),
	{ 0 },
};

static const struct field volume_host_create_fields[] = {
	REQ("uuid", FK_UUID),
	REQ("project", FK_NAME),
	REQ("name", FK_NAME),
	REQ("size_gb", FK_POSINT),
	{ 0 },
};

static const struct field volume_host_attach_fields[] = {
	REQ("uuid", FK_UUID),
	REQ("instance", FK_UUID),
	{ 0 },
};

/* snapshots (issue 18): stratusctl snapshot NAME IMAGE_NAME */
static const char *const snapshot_phases[] = { "started", "progress", "uploaded", "registered",
					       "failed", NULL };
static const struct field snapshot_fields[] = {
	REQ("project", FK_NAME),
	REQ("instance", FK_NAME), /* name or uuid */
	REQ("name", FK_NAME),     /* the new image's */
	{ 0 },
};
static const struct field snapshot_host_fields[] = {
	REQ("uuid", FK_UUID),
	REQ("snapshot", FK_UUID),
	REQ("name", FK_NAME),
	{ 0 },
};
static const struct field snapshot_event_fields[] = {
	REQ("uuid", FK_UUID),
	REQ("snapshot", FK_UUID),
	REQ("project", FK_NAME),
	REQ_ENUM("phase", snapshot_phases),
	OPT("name", FK_NAME),
	OPT("host", FK_NAME),
	OPT("step", FK_NAME),      /* failed: quiesce, copy, flatten, upload, register */
	OPT("error", FK_STRING),
	OPT("bytes", FK_NONNEG),   /* progress: uploaded so far */
	OPT("total", FK_NONNEG),
	OPT("url", FK_STRING),     /* uploaded: where the store serves it */
	OPT("checksum", FK_STRING),
	OPT("size", FK_NONNEG),
	OPT("quiesce", FK_STRING), /* "quiesced by guest agent" or "paused N ms" */
	OPT("pause_ms", FK_NONNEG),
	OPT("image", FK_OBJECT),   /* registered: the image record */
	{ 0 },
};

/* events on stratus.events */
static const struct field state_fields[] = {
	REQ("uuid", FK_UUID),
	REQ("project", FK_NAME),
	OPT("host", FK_STRING),
	REQ_ENUM("state", instance_state_names),
	OPT("reason", FK_STRING),
	{ 0 },
};

const char *const bus_volume_state_names[] = { "creating", "available", "attaching", "in-use",
					       "detaching", "deleting", "error", "deleted", NULL };

static const struct field volume_state_fields[] = {
	REQ("uuid", FK_UUID),
	REQ("project", FK_NAME),
	REQ("host", FK_NAME),
	REQ_ENUM("state", bus_volume_state_names),
	OPT("instance", FK_UUID),
	OPT("reason", FK_STRING),
	{ 0 },
};

static const struct field result_fields[] = {
	REQ("ok", FK_BOOL),
	OPT("error", FK_STRING),
	OPT("data", FK_ANY),
	OPT("sealed", FK_STRING), /* the data sealed to the requester (docs/bus.md) */
	{ 0 },
};

static const struct field reschedule_fields[] = {
	REQ("uuid", FK_UUID),
	OPT("project", FK_NAME),
	OPT("failed_host", FK_STRING),
	OPT("reason", FK_STRING),
	OPT("attempt", FK_NONNEG),
	{ 0 },
};

/* reports on stratus.metrics */
static const struct field host_report_fields[] = {
	REQ("host", FK_NAME),
	OPT("inventory", FK_OBJECT),
	OPT("usage", FK_OBJECT),
	OPT("reannounce", FK_OBJECT), /* after a broker change: {reason, instances} */
	OPT("box_key", FK_NAME), /* the host's X25519 public key, base64 */
	OPT("sign_key", FK_NAME), /* the host's Ed25519 public key, base64: signs its envelopes */
	{ 0 },
};

/* instance.build: the instance spec, validated by the one spec parser
 * (model/spec.c) that the agent uses too, so that the bus never accepts a
 * spec the agent would reject. */
static int spec_validator(const json_t *body)
{
	struct instance_spec spec;
	int r;

	/* model_spec_parse does not modify the object; it only lacks const */
	r = model_spec_parse((json_t *)(uintptr_t)body, &spec);
	if (r < 0)
		return r;
	model_spec_free(&spec);
	return 0;
}

int (*bus_instance_spec_validator)(const json_t *body) = spec_validator;

static int check_build(const json_t *body)
{
	_cleanup_free_ char *msg = NULL;
	int r;

	r = bus_instance_spec_validator(body);
	if (r >= 0)
		return 0;
	msg = strdup(err_msg());
	return err_set(r, "body.%s", msg ? msg : "invalid instance spec");
}

static int check_result(const json_t *body)
{
	if (json_is_false(json_object_get(body, "ok")) &&
	    !json_is_string(json_object_get(body, "error")))
		return err_set(-EINVAL, "body.error: required when ok is false");
	return 0;
}

/*
 * THE table. A type may travel on more than one topic class with a
 * different body (instance.delete is a tenant request on stratus.api and
 * a command to one agent on stratus.host.<host>): one row each.
 */
static const struct bus_type types[] = {
	/* requests: stratus.api, key = project */
	{ "instance.boot", BUS_TC_API, boot_fields, NULL },
	{ "instance.delete", BUS_TC_API, instance_ref_fields, NULL },
	{ "instance.stop", BUS_TC_API, instance_ref_fields, NULL },
	{ "instance.start", BUS_TC_API, instance_ref_fields, NULL },
	{ "instance.reboot", BUS_TC_API, reboot_fields, NULL },
	{ "instance.console", BUS_TC_API, console_fields, NULL },
	{ "instance.show", BUS_TC_API, instance_ref_fields, NULL },
	{ "instance.list", BUS_TC_API, project_fields, NULL },
	{ "quota.show", BUS_TC_API, project_fields, NULL },
	{ "quota.set", BUS_TC_API, quota_set_fields, NULL },
	{ "flavor.list", BUS_TC_API, no_fields, NULL },
	{ "flavor.add", BUS_TC_API, flavor_fields, NULL },
	{ "flavor.remove", BUS_TC_API, name_fields, NULL },
	{ "image.list", BUS_TC_API, no_fields, NULL },
	{ "image.add", BUS_TC_API, image_add_fields, NULL },
	{ "image.remove", BUS_TC_API, name_fields, NULL },
	{ "image.share", BUS_TC_API, image_share_fields, NULL },
	{ "instance.rebuild", BUS_TC_API, rebuild_fields, NULL },
	{ "image.unshare", BUS_TC_API, image_share_fields, NULL },
	{ "host.list", BUS_TC_API, no_fields, NULL },
	{ "host.forget", BUS_TC_API, host_name_fields, NULL },
	{ "credential.create", BUS_TC_API, credential_create_fields, NULL },
	{ "credential.list", BUS_TC_API, no_fields, NULL },
	{ "credential.revoke", BUS_TC_API, credential_id_fields, NULL },
	{ "scheduler.keys", BUS_TC_API, no_fields, NULL },
	{ "secgroup.create", BUS_TC_API, secgroup_create_fields, NULL },
	{ "secgroup.list", BUS_TC_API, project_fields, NULL },
	{ "secgroup.show", BUS_TC_API, secgroup_ref_fields, NULL },
	{ "secgroup.delete", BUS_TC_API, secgroup_ref_fields, NULL },
	{ "secgroup.rule.add", BUS_TC_API, secgroup_rule_add_fields, NULL },
	{ "secgroup.rule.delete", BUS_TC_API, secgroup_rule_delete_fields, NULL },
	{ "instance.migrate", BUS_TC_API, migrate_fields, NULL },
	{ "host.disable", BUS_TC_API, host_maint_fields, NULL },
	{ "host.enable", BUS_TC_API, host_maint_fields, NULL },
	{ "host.drain", BUS_TC_API, host_maint_fields, NULL },
	{ "host.evacuate", BUS_TC_API, host_maint_fields, NULL },
	{ "volume.create", BUS_TC_API, volume_create_fields, NULL },
	{ "volume.list", BUS_TC_API, project_fields, NULL },
	{ "volume.show", BUS_TC_API, volume_ref_fields, NULL },
	{ "volume.delete", BUS_TC_API, volume_ref_fields, NULL },
	{ "volume.attach", BUS_TC_API, volume_attach_fields, NULL },
	{ "volume.detach", BUS_TC_API, volume_ref_fields, NULL },
	{ "instance.resize", BUS_TC_API, resize_fields, NULL },
	{ "instance.resize.confirm", BUS_TC_API, instance_ref_fields, NULL },
	{ "instance.resize.revert", BUS_TC_API, instance_ref_fields, NULL },
	{ "instance.snapshot", BUS_TC_API, snapshot_fields, NULL },
	/* commands: stratus.host.<host>, key = instance uuid */
	{ "instance.build", BUS_TC_HOST, build_fields, check_build },
	{ "instance.rebuild", BUS_TC_HOST, build_fields, check_build }, /* the rebuilt spec */
	{ "instance.delete", BUS_TC_HOST, uuid_fields, NULL },
	{ "instance.stop", BUS_TC_HOST, uuid_fields, NULL },
	{ "instance.start", BUS_TC_HOST, uuid_fields, NULL },
	{ "instance.reboot", BUS_TC_HOST, reboot_host_fields, NULL },
	{ "instance.console", BUS_TC_HOST, console_host_fields, NULL },
	{ "secgroup.apply", BUS_TC_HOST, secgroup_apply_fields, NULL },
	{ "instance.migrate.prepare", BUS_TC_HOST, migrate_prepare_fields, check_build },
	{ "instance.migrate.perform", BUS_TC_HOST, migrate_perform_fields, NULL },
	{ "instance.migrate.finish", BUS_TC_HOST, migrate_finish_fields, NULL },
	{ "volume.create", BUS_TC_HOST, volume_host_create_fields, NULL },
	{ "volume.delete", BUS_TC_HOST, uuid_fields, NULL },
	{ "volume.attach", BUS_TC_HOST, volume_host_attach_fields, NULL },
	{ "volume.detach", BUS_TC_HOST, uuid_fields, NULL },
	{ "instance.resize", BUS_TC_HOST, resize_host_fields, NULL }, /* the new flavor */
	{ "instance.resize.confirm", BUS_TC_HOST, uuid_fields, NULL },
	{ "instance.resize.revert", BUS_TC_HOST, uuid_fields, NULL },
	{ "instance.snapshot", BUS_TC_HOST, snapshot_host_fields, NULL },
	/* events: stratus.events, key = instance uuid (request id when none) */
	{ "instance.state", BUS_TC_EVENTS, state_fields, NULL },
	{ "request.result", BUS_TC_EVENTS, result_fields, check_result },
	{ "instance.reschedule", BUS_TC_EVENTS, reschedule_fields, NULL },
	{ "instance.migration", BUS_TC_EVENTS, migration_fields, NULL },
	{ "volume.state", BUS_TC_EVENTS, volume_state_fields, NULL },
	{ "image.snapshot", BUS_TC_EVENTS, snapshot_event_fields, NULL },
	/* reports: stratus.metrics, key = host */
	{ "host.report", BUS_TC_METRICS, host_report_fields, NULL },
};

const struct bus_type *bus_type_table(size_t *n)
{
	*n = ARRAY_SIZE(types);
	return types;
}

const struct bus_type *bus_type_find(const char *name, enum bus_topic_class tc)
{
	for (size_t i = 0; i < ARRAY_SIZE(types); i++)
		if (strcmp(types[i].name, name) == 0 && (tc == BUS_TC_LAST || types[i].tc == tc))
			return &types[i];
	return NULL;
}

bool bus_type_known(const char *type)
{
	return type && bus_type_find(type, BUS_TC_LAST) != NULL;
}

int bus_type_topic_class(const char *type, enum bus_topic_class *out)
{
	const struct bus_type *t = type ? bus_type_find(type, BUS_TC_LAST) : NULL;

	if (!t)
		return err_set(-EINVAL, "unknown message type '%s'", type ? type : "");
	*out = t->tc;
	return 0;
}

/* Run one row's schema; errors get the "TYPE: " prefix. */
static int validate_row(const struct bus_type *t, const json_t *body)
{
	_cleanup_free_ char *msg = NULL;
	int r;

	if (!json_is_object(body))
		return err_set(-EINVAL, "%s: body: expected an object", t->name);
	r = walk(t->fields, body, "body");
	if (r >= 0 && t->check)
		r = t->check(body);
	if (r >= 0)
		return 0;
	msg = strdup(err_msg());
	return err_set(r, "%s: %s", t->name, msg ? msg : "invalid body");
}

int bus_type_validate(const char *type, enum bus_topic_class tc, const json_t *body,
		      const struct bus_type **row)
{
	const struct bus_type *first = NULL;
	_cleanup_free_ char *first_err = NULL;
	int first_r = 0;

	if (!type || !bus_type_known(type))
		return err_set(-EINVAL, "unknown message type '%s'", type ? type : "");
	for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
		const struct bus_type *t = &types[i];
		int r;

		if (strcmp(t->name, type) != 0 || (tc != BUS_TC_LAST && t->tc != tc))
			continue;
		r = validate_row(t, body);
		if (r >= 0) {
			if (row)
				*row = t;
			return 0;
		}
		if (!first) {
			first = t;
			first_r = r;
			first_err = strdup(err_msg());
		}
	}
	if (!first)
		return err_set(-EINVAL, "%s: does not travel on %s", type, bus_topic_class_name(tc));
	return err_set(first_r, "%s", first_err ? first_err : "invalid body");
}

int bus_validate(const char *type, enum bus_topic_class tc, const json_t *body)
{
	return bus_type_validate(type, tc, body, NULL);
}
