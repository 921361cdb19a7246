/*
 * stratusctl tenant and operator commands over the bus: a request goes to
 * stratus.api, its outcome (the request.result with the same request id)
 * comes back on stratus.events, read by an observer that joins no group.
 * No outcome within a few seconds: the same request (same request id) is
 * sent again; the scheduler answers a repeated request with its first
 * outcome, so this is safe. `boot` (and delete, stop, start) then follow
 * the instance's state events until the state asked for, checking with
 * instance.show when the events are quiet.
 *
 * Exit status: 0 done; 1 the request failed (its error on stderr) or the
 * instance ended in error; 2 usage; 3 no outcome in time.
 */
#define LOG_TAG "cli"
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/tenant.h"
#include "core/core.h"

#define RESEND_MS 3000
#define SHOW_EVERY_MS 2000

struct watch {
	char last_rid[UUID_STRLEN]; /* the last request sent: a later error for it counts */
	json_t *late_error;    /* a request.result ok=false for last_rid after the first */
	const char *rid;
	json_t *result;        /* the request.result body, once seen */
	json_t *states;        /* instance.state bodies of watched uuids */
	json_t *uuids;         /* object: uuid -> true */
};

struct session {
	struct cli_ctx *ctx;
	struct bus_producer *prod;
	struct bus_consumer *obs;
	struct watch w;
	int64_t deadline_ms;
};

static const char *default_project(void)
{
	const char *p = getenv("STRATUS_PROJECT");

	return p && *p ? p : "default";
}

static int on_event(void *opaque, const struct bus_message *m)
{
	struct watch *w = opaque;
	const struct bus_envelope *e = m->env;

	if (!e)
		return 0;
	if (w->rid && strcmp(e->type, "request.result") == 0 && strcmp(e->request_id, w->rid) == 0 &&
	    !w->result) {
		w->result = json_incref(e->body);
	} else if (!w->rid && strcmp(e->type, "request.result") == 0 &&
		   strcmp(e->request_id, w->last_rid) == 0 &&
		   json_is_false(json_object_get(e->body, "ok")) && !w->late_error) {
		/* the agent refused what the scheduler forwarded */
		w->late_error = json_incref(e->body);
	} else if (strcmp(e->type, "instance.state") == 0 && w->uuids) {
		const char *u = json_string_value(json_object_get(e->body, "uuid"));

		if (u && json_object_get(w->uuids, u))
			json_array_append(w->states, e->body);
	}
	return 0;
}

static int session_open(struct session *ss, struct cli_ctx *ctx, long timeout_s)
{
	static const char *const topics[] = { BUS_TOPIC_EVENTS, NULL };
	struct bus_consumer_opts o = { .observe = true, .from_end = true, .topics = topics };
	int64_t warm;

	memset(ss, 0, sizeof(*ss));
	ss->ctx = ctx;
	ss->deadline_ms = time_mono_ms() + timeout_s * 1000;
	ss->w.states = json_array();
	ss->w.uuids = json_object();
	if (bus_producer_new(&ctx->bus, &ss->prod) < 0 ||
	    bus_consumer_new(&ctx->bus, &o, &ss->obs) < 0) {
		cli_error(ctx, "%s", err_msg());
		return CLI_ERROR;
	}
	/* let the observer find the end of stratus.events before we ask */
	warm = time_mono_ms() + 300;
	while (time_mono_ms() < warm)
		bus_consumer_poll(ss->obs, 50, on_event, &ss->w);
	return CLI_OK;
}

static void session_close(struct session *ss)
{
	bus_consumer_free(ss->obs);
	bus_producer_free(ss->prod);
	json_decref(ss->w.result);
	json_decref(ss->w.late_error);
	json_decref(ss->w.states);
	json_decref(ss->w.uuids);
}

static int send_request(struct session *ss, const char *type, const char *rid, json_t *body)
{
	struct bus_envelope *e = NULL;
	int r;

	r = bus_envelope_new(type, BUS_TC_API, "stratusctl", rid, json_incref(body), &e);
	if (r < 0) {
		cli_error(ss->ctx, "%s", err_msg());
		return CLI_ERROR;
	}
	r = bus_produce(ss->prod, NULL, NULL, e);
	bus_envelope_free(e);
	if (r == 0)
		r = bus_producer_flush(ss->prod, 15000);
	if (r < 0) {
		cli_error(ss->ctx, "%s", err_msg());
		return CLI_ERROR;
	}
	return CLI_OK;
}

/*
 * Send TYPE with BODY (a reference is kept by the caller) and wait for its
 * outcome. CLI_OK with *data (new reference, may be NULL) when ok; the
 * error printed and CLI_ERROR when not; CLI_TIMEOUT.
 */
static int request(struct session *ss, const char *type, json_t *body, json_t **data)
{
	char rid[UUID_STRLEN];
	int64_t resend = 0;
	int rc;

	uuid_generate_str(rid);
	ss->w.rid = rid;
	snprintf(ss->w.last_rid, sizeof(ss->w.last_rid), "%s", rid);
	json_decref(ss->w.result);
	ss->w.result = NULL;
	while (!ss->w.result) {
		int64_t now = time_mono_ms();

		if (now >= ss->deadline_ms) {
			cli_error(ss->ctx, "%s: no answer from the scheduler in time (request %s)",
				  type, rid);
			ss->w.rid = NULL;
			return CLI_TIMEOUT;
		}
		if (now >= resend) {
			rc = send_request(ss, type, rid, body);
			if (rc != CLI_OK)
				return rc;
			resend = now + RESEND_MS;
		}
		bus_consumer_poll(ss->obs, 100, on_event, &ss->w);
	}
	ss->w.rid = NULL;
	if (!json_is_true(json_object_get(ss->w.result, "ok"))) {
		const char *err = json_string_value(json_object_get(ss->w.result, "error"));

		cli_error(ss->ctx, "%s", err ? err : "request failed");
		return CLI_ERROR;
	}
	if (data)
		*data = json_incref(json_object_get(ss->w.result, "data"));
	return CLI_OK;
}

/* ---- output ------------------------------------------------------------ */

static void print_json(const json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	if (s)
		printf("%s\n", s);
	free(s);
}

static const char *field_text(const json_t *o, const char *key, char *buf, size_t len)
{
	const json_t *v = json_object_get(o, key);

	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(buf, len, "%lld", (long long)json_integer_value(v));
		return buf;
	}
	if (json_is_real(v)) {
		snprintf(buf, len, "%.1f", json_real_value(v));
		return buf;
	}
	if (json_is_boolean(v))
		return json_is_true(v) ? "true" : "false";
	if (json_is_object(v) && json_object_get(v, "used")) {
		snprintf(buf, len, "%lld/%lld", (long long)json_integer_value(json_object_get(v, "used")),
			 (long long)json_integer_value(json_object_get(v, "total")));
		return buf;
	}
	return "-";
}

/* A table of ROWS (objects) with the given columns: header, then rows. */
static void print_table(const json_t *rows, const char *const *cols, const char *const *heads)
{
	size_t nc = 0, width[16] = { 0 };
	size_t i;
	json_t *row;
	char buf[64];

	while (cols[nc] && nc < ARRAY_SIZE(width))
		nc++;
	for (size_t c = 0; c < nc; c++)
		width[c] = strlen(heads[c]);
	json_array_foreach(rows, i, row)
		for (size_t c = 0; c < nc; c++) {
			size_t l = strlen(field_text(row, cols[c], buf, sizeof(buf)));

			width[c] = l > width[c] ? l : width[c];
		}
	for (size_t c = 0; c < nc; c++)
		printf("%-*s%s", c + 1 < nc ? (int)width[c] : 0, heads[c], c + 1 < nc ? "  " : "\n");
	json_array_foreach(rows, i, row)
		for (size_t c = 0; c < nc; c++)
			printf("%-*s%s", c + 1 < nc ? (int)width[c] : 0,
			       field_text(row, cols[c], buf, sizeof(buf)), c + 1 < nc ? "  " : "\n");
}

/* ---- option parsing shared by the commands ----------------------------- */

struct common {
	const char *project;
	long timeout_s;
	bool no_wait;
};

enum { OPT_PROJECT = 1000, OPT_TIMEOUT, OPT_NO_WAIT, OPT_HELP, OPT_LINES };

#define COMMON_OPTS                                                  \
	{ "project", required_argument, NULL, OPT_PROJECT },         \
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },         \
	{ "help", no_argument, NULL, OPT_HELP }

/* 0 handled, 1 not a common option, <0 bad value */
static int common_opt(struct cli_ctx *ctx, int c, struct common *co)
{
	switch (c) {
	case OPT_PROJECT:
		co->project = optarg;
		return 0;
	case OPT_TIMEOUT:
		if (parse_long(optarg, 1, 86400, &co->timeout_s) < 0) {
			cli_error(ctx, "--timeout: expected seconds from 1 to 86400, got '%s'", optarg);
			return -1;
		}
		return 0;
	case OPT_NO_WAIT:
		co->no_wait = true;
		return 0;
	default:
		return 1;
	}
}

static int usage_only(struct cli_ctx *ctx, const char *usage)
{
	fprintf(stderr, "usage: %s %s\n", ctx->prog, usage);
	return CLI_USAGE;
}

static int usage_error(struct cli_ctx *ctx, const char *usage, const char *fmt, ...)
	PRINTF_LIKE(3, 4);

static int usage_error(struct cli_ctx *ctx, const char *usage, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", ctx->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return usage_only(ctx, usage);
}

/* ---- waiting for states ------------------------------------------------ */

struct target {
	char uuid[UUID_STRLEN];
	char *name;
	char *state;
	char *host;
	bool done;
};

static void target_set(char **dst, const char *v)
{
	if (v && (!*dst || strcmp(*dst, v) != 0)) {
		free(*dst);
		*dst = strdup(v);
	}
}

/* One state seen for T: print progress, return 1 done ok, -1 error, 0 on. */
static int target_update(struct cli_ctx *ctx, struct target *t, const char *state,
			 const char *host, const char *reason, const char *want)
{
	bool changed = !t->state || strcmp(t->state, state) != 0 ||
		       (host && (!t->host || strcmp(t->host, host) != 0));

	if (!changed)
		return 0;
	target_set(&t->state, state);
	target_set(&t->host, host);
	if (!ctx->json) {
		if (t->host && strcmp(state, "deleted") != 0)
			printf("%s: %s on %s\n", t->name, state, t->host);
		else
			printf("%s: %s\n", t->name, state);
		fflush(stdout);
	}
	if (strcmp(state, want) == 0) {
		t->done = true;
		return 1;
	}
	if (strcmp(state, "error") == 0) {
		cli_error(ctx, "%s: %s", t->name, reason ? reason : "error");
		t->done = true;
		return -1;
	}
	return 0;
}

/* Follow TARGETS (n) until each reaches WANT. */
static int wait_states(struct session *ss, const char *project, struct target *tg, size_t n,
		       const char *want)
{
	int64_t last_show = time_mono_ms();
	size_t left = n;
	int rc = CLI_OK;

	for (size_t i = 0; i < n; i++)
		json_object_set_new(ss->w.uuids, tg[i].uuid, json_true());
	while (left > 0) {
		size_t k;
		json_t *st;

		if (time_mono_ms() >= ss->deadline_ms) {
			cli_error(ss->ctx, "timed out waiting for %s", want);
			return CLI_TIMEOUT;
		}
		bus_consumer_poll(ss->obs, 100, on_event, &ss->w);
		if (ss->w.late_error) {
			const char *err = json_string_value(json_object_get(ss->w.late_error, "error"));

			cli_error(ss->ctx, "%s", err ? err : "refused by the host");
			return CLI_ERROR;
		}
		json_array_foreach(ss->w.states, k, st) {
			const char *u = json_string_value(json_object_get(st, "uuid"));

			for (size_t i = 0; i < n; i++) {
				int r;

				if (tg[i].done || strcmp(tg[i].uuid, u) != 0)
					continue;
				r = target_update(ss->ctx, &tg[i],
						  json_string_value(json_object_get(st, "state")),
						  json_string_value(json_object_get(st, "host")),
						  json_string_value(json_object_get(st, "reason")), want);
				if (r != 0)
					left--;
				if (r < 0)
					rc = CLI_ERROR;
			}
		}
		json_array_clear(ss->w.states);
		if (left > 0 && time_mono_ms() - last_show >= SHOW_EVERY_MS) {
			/* quiet: ask for the state itself */
			for (size_t i = 0; i < n; i++) {
				json_t *body, *data = NULL;
				int r;

				if (tg[i].done)
					continue;
				body = json_pack("{s:s, s:s}", "project", project, "instance", tg[i].uuid);
				r = request(ss, "instance.show", body, &data);
				json_decref(body);
				if (r == CLI_ERROR && strcmp(want, "deleted") == 0) {
					/* gone from the list: deleted */
					target_update(ss->ctx, &tg[i], "deleted", NULL, NULL, want);
					left--;
					continue;
				}
				if (r != CLI_OK) {
					json_decref(data);
					return r;
				}
				r = target_update(ss->ctx, &tg[i],
						  json_string_value(json_object_get(data, "state")),
						  json_string_value(json_object_get(data, "host")),
						  json_string_value(json_object_get(data, "reason")), want);
				if (r != 0)
					left--;
				if (r < 0)
					rc = CLI_ERROR;
				json_decref(data);
			}
			last_show = time_mono_ms();
		}
	}
	return rc;
}

static void targets_free(struct target *tg, size_t n)
{
	for (size_t i = 0; tg && i < n; i++) {
		free(tg[i].name);
		free(tg[i].state);
		free(tg[i].host);
	}
	free(tg);
}

/* ---- boot -------------------------------------------------------------- */

static const char boot_usage[] =
	"boot NAME --flavor F --image I [--user-data FILE] [--key FILE]... [--meta K=V]...\n"
	"       [--count N] [--group G [--group-policy affinity|anti-affinity]] [--az Z]\n"
	"       [--seed nocloud|configdrive|none] [--no-wait] [--project P] [--timeout S]";

static int read_key(struct cli_ctx *ctx, const char *path, json_t *keys)
{
	_cleanup_free_ char *text = NULL, *copy = NULL;
	size_t len;

	if (read_file(path, 16 * 1024, &text, &len) < 0) {
		cli_error(ctx, "--key %s: %s", path, err_msg());
		return -1;
	}
	text[strcspn(text, "\r\n")] = '\0';
	copy = strdup(path);
	if (!copy || !*text) {
		cli_error(ctx, "--key %s: no key in the file", path);
		return -1;
	}
	json_array_append_new(keys, json_pack("{s:s, s:s}", "name", basename(copy), "key", text));
	return 0;
}

int cli_boot(struct cli_ctx *ctx, int argc, char **argv)
{
	enum { O_FLAVOR = 2000, O_IMAGE, O_UD, O_KEY, O_META, O_COUNT, O_GROUP, O_GPOL, O_AZ, O_SEED };
	static const struct option opts[] = {
		{ "flavor", required_argument, NULL, O_FLAVOR },
		{ "image", required_argument, NULL, O_IMAGE },
		{ "user-data", required_argument, NULL, O_UD },
		{ "key", required_argument, NULL, O_KEY },
		{ "meta", required_argument, NULL, O_META },
		{ "count", required_argument, NULL, O_COUNT },
		{ "group", required_argument, NULL, O_GROUP },
		{ "group-policy", required_argument, NULL, O_GPOL },
		{ "az", required_argument, NULL, O_AZ },
		{ "seed", required_argument, NULL, O_SEED },
		{ "no-wait", no_argument, NULL, OPT_NO_WAIT },
		COMMON_OPTS,
		{ 0 },
	};
	struct common co = { .project = default_project(), .timeout_s = 600 };
	json_t *body = json_object(), *keys = json_array(), *meta = json_object(), *data = NULL;
	struct session ss;
	struct target *tg = NULL;
	size_t n = 0;
	long count = 1;
	int c, rc = CLI_USAGE;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = common_opt(ctx, c, &co);

		if (r < 0)
			goto out;
		if (r == 0)
			continue;
		switch (c) {
		case O_FLAVOR: json_object_set_new(body, "flavor", json_string(optarg)); break;
		case O_IMAGE: json_object_set_new(body, "image", json_string(optarg)); break;
		case O_GROUP: json_object_set_new(body, "server_group", json_string(optarg)); break;
		case O_GPOL: json_object_set_new(body, "server_group_policy", json_string(optarg)); break;
		case O_AZ: json_object_set_new(body, "availability_zone", json_string(optarg)); break;
		case O_SEED: json_object_set_new(body, "seed", json_string(optarg)); break;
		case O_COUNT:
			if (parse_long(optarg, 1, 100, &count) < 0) {
				rc = usage_error(ctx, boot_usage, "--count: expected 1 to 100, got '%s'",
						 optarg);
				goto out;
			}
			json_object_set_new(body, "count", json_integer(count));
			break;
		case O_UD: {
			_cleanup_free_ char *ud = NULL, *b64 = NULL;
			size_t len;

			if (read_file(optarg, 64 * 1024, &ud, &len) < 0) {
				cli_error(ctx, "--user-data %s: %s", optarg, err_msg());
				rc = CLI_ERROR;
				goto out;
			}
			b64 = base64_encode((unsigned char *)ud, len);
			json_object_set_new(body, "user_data", json_string(b64 ? b64 : ""));
			break;
		}
		case O_KEY:
			if (read_key(ctx, optarg, keys) < 0) {
				rc = CLI_ERROR;
				goto out;
			}
			break;
		case O_META: {
			char *eq = strchr(optarg, '=');

			if (!eq || eq == optarg) {
				rc = usage_error(ctx, boot_usage, "--meta: expected KEY=VALUE, got '%s'",
						 optarg);
				goto out;
			}
			*eq = '\0';
			json_object_set_new(meta, optarg, json_string(eq + 1));
			break;
		}
		case OPT_HELP:
			printf("usage: %s %s\n", ctx->prog, boot_usage);
			rc = CLI_OK;
			goto out;
		default:
			rc = usage_error(ctx, boot_usage, "boot: unknown option %s", argv[optind - 1]);
			goto out;
		}
	}
	if (argc - optind != 1 || !json_object_get(body, "flavor") || !json_object_get(body, "image")) {
		rc = usage_error(ctx, boot_usage, "%s", "boot: NAME, --flavor and --image are required");
		goto out;
	}
	json_object_set_new(body, "project", json_string(co.project));
	json_object_set_new(body, "name", json_string(argv[optind]));
	if (json_array_size(keys))
		json_object_set(body, "ssh_keys", keys);
	if (json_object_size(meta))
		json_object_set(body, "metadata", meta);

	rc = session_open(&ss, ctx, co.timeout_s);
	if (rc == CLI_OK)
		rc = request(&ss, "instance.boot", body, &data);
	if (rc == CLI_OK) {
		json_t *list = json_object_get(data, "instances"), *it;
		size_t i;

		n = json_array_size(list);
		tg = calloc(n ? n : 1, sizeof(*tg));
		json_array_foreach(list, i, it) {
			snprintf(tg[i].uuid, sizeof(tg[i].uuid), "%s",
				 json_string_value(json_object_get(it, "uuid")));
			tg[i].name = strdup(json_string_value(json_object_get(it, "name")));
			if (!co.no_wait)
				target_update(ctx, &tg[i], "scheduling",
					      json_string_value(json_object_get(it, "host")), NULL,
					      "active");
			else if (!ctx->json)
				printf("%s %s\n", tg[i].uuid, tg[i].name);
		}
		if (!co.no_wait)
			rc = wait_states(&ss, co.project, tg, n, "active");
		if (ctx->json)
			print_json(list);
	}
	session_close(&ss);
out:
	targets_free(tg, n);
	json_decref(data);
	json_decref(body);
	json_decref(keys);
	json_decref(meta);
	return rc;
}

/* ---- commands on one instance ------------------------------------------ */

struct instance_op {
	const char *cmd;
	const char *type;
	const char *want;  /* state to wait for, NULL = no wait */
};

static const struct instance_op instance_ops[] = {
	{ "delete", "instance.delete", "deleted" },
	{ "stop", "instance.stop", "stopped" },
	{ "start", "instance.start", "active" },
	{ "reboot", "instance.reboot", NULL },
	{ "console", "instance.console", NULL },
	{ "show", "instance.show", NULL },
};

static int instance_cmd(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "no-wait", no_argument, NULL, OPT_NO_WAIT },
		{ "lines", required_argument, NULL, OPT_LINES },
		COMMON_OPTS,
		{ 0 },
	};
	const struct instance_op *op = NULL;
	struct common co = { .project = default_project(), .timeout_s = 300 };
	struct session ss;
	json_t *body = NULL, *data = NULL;
	char usage[160];
	long nlines = 0;
	int c, rc;

	for (size_t i = 0; i < ARRAY_SIZE(instance_ops); i++)
		if (strcmp(instance_ops[i].cmd, argv[0]) == 0)
			op = &instance_ops[i];
	if (!op)
		return CLI_USAGE;
	snprintf(usage, sizeof(usage), "%s NAME|UUID [--project P] [--timeout S]%s", op->cmd,
		 op->want ? " [--no-wait]" :
		 strcmp(op->cmd, "console") == 0 ? " [--lines N]" : "");
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = common_opt(ctx, c, &co);

		if (r < 0)
			return CLI_USAGE;
		if (r == 0)
			continue;
		if (c == OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, usage);
			return CLI_OK;
		}
		if (c == OPT_LINES && strcmp(op->cmd, "console") == 0) {
			if (parse_long(optarg, 1, 9999, &nlines) < 0)
				return usage_error(ctx, usage,
						   "--lines: expected a count from 1 to 9999, got '%s'",
						   optarg);
			continue;
		}
		return usage_error(ctx, usage, "unknown option %s", argv[optind - 1]);
	}
	if (argc - optind != 1)
		return usage_error(ctx, usage, "%s: one instance name or uuid is required", op->cmd);
	body = json_pack("{s:s, s:s}", "project", co.project, "instance", argv[optind]);
	if (body && nlines > 0)
		json_object_set_new(body, "lines", json_integer(nlines));
	rc = session_open(&ss, ctx, co.timeout_s);
	if (rc == CLI_OK)
		rc = request(&ss, op->type, body, &data);
	if (rc == CLI_OK && strcmp(op->cmd, "show") == 0) {
		if (ctx->json) {
			print_json(data);
		} else {
			static const char *const keys[] = { "name", "uuid", "project", "state", "host",
							    "flavor", "image", "server_group",
							    "attempts", "reason", "created",
							    "updated" };
			char buf[64];

			for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
				printf("%-13s %s\n", keys[i], field_text(data, keys[i], buf, sizeof(buf)));
			if (json_object_size(json_object_get(data, "faults"))) {
				const char *k;
				json_t *v;

				json_object_foreach(json_object_get(data, "faults"), k, v)
					printf("fault         %s: %s\n", k, json_string_value(v));
			}
		}
	} else if (rc == CLI_OK && strcmp(op->cmd, "console") == 0) {
		/* the agent's answer: {"lines": ["...", ...]} */
		json_t *lines = json_object_get(data, "lines"), *ln;
		size_t k;

		if (ctx->json)
			print_json(data);
		else
			json_array_foreach(lines, k, ln)
				printf("%s\n", json_string_value(ln) ? json_string_value(ln) : "");
	} else if (rc == CLI_OK) {
		struct target t = { 0 };

		snprintf(t.uuid, sizeof(t.uuid), "%s", json_string_value(json_object_get(data, "uuid")));
		t.name = strdup(argv[optind]);
		if (op->want && !co.no_wait && t.name) {
			rc = wait_states(&ss, co.project, &t, 1, op->want);
		} else if (!ctx->json) {
			printf("%s: %s requested\n", argv[optind], op->cmd);
		}
		if (ctx->json)
			print_json(data);
		free(t.name);
		free(t.state);
		free(t.host);
	}
	session_close(&ss);
	json_decref(data);
	json_decref(body);
	return rc;
}

int cli_delete(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }
int cli_stop(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }
int cli_start(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }
int cli_reboot(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }
int cli_console(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }
int cli_show(struct cli_ctx *ctx, int argc, char **argv) { return instance_cmd(ctx, argc, argv); }

/* ---- lists and the rest ------------------------------------------------ */

/* Send TYPE with BODY and print the data: a table (cols/heads) or JSON. */
static int simple(struct cli_ctx *ctx, const struct common *co, const char *type, json_t *body,
		  const char *const *cols, const char *const *heads)
{
	struct session ss;
	json_t *data = NULL;
	int rc = session_open(&ss, ctx, co->timeout_s);

	if (rc == CLI_OK)
		rc = request(&ss, type, body, &data);
	if (rc == CLI_OK) {
		if (ctx->json)
			print_json(data ? data : json_null());
		else if (cols && json_is_array(data))
			print_table(data, cols, heads);
		else if (cols) {
			json_t *one = json_array();

			json_array_append(one, data);
			print_table(one, cols, heads);
			json_decref(one);
		}
	}
	session_close(&ss);
	json_decref(data);
	json_decref(body);
	return rc;
}

/* Parse the common options only; returns the index of the first operand,
 * or <0 (the exit code negated). */
static int common_only(struct cli_ctx *ctx, int argc, char **argv, const char *usage,
		       struct common *co)
{
	static const struct option opts[] = { COMMON_OPTS, { 0 } };
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = common_opt(ctx, c, co);

		if (r < 0)
			return -CLI_USAGE;
		if (r == 0)
			continue;
		if (c == OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, usage);
			return -CLI_OK - 100;
		}
		return -usage_error(ctx, usage, "unknown option %s", argv[optind - 1]);
	}
	return optind;
}

int cli_list(struct cli_ctx *ctx, int argc, char **argv)
{
	static const char *const cols[] = { "name", "state", "host", "flavor", "image", "uuid", NULL };
	static const char *const heads[] = { "NAME", "STATE", "HOST", "FLAVOR", "IMAGE", "UUID" };
	struct common co = { .project = default_project(), .timeout_s = 30 };
	int i = common_only(ctx, argc, argv, "list [--project P]", &co);

	if (i == -CLI_OK - 100)
		return CLI_OK;
	if (i < 0)
		return -i;
	if (i != argc)
		return usage_error(ctx, "list [--project P]", "%s", "list: no operands");
	return simple(ctx, &co, "instance.list", json_pack("{s:s}", "project", co.project), cols,
		      heads);
}

int cli_host(struct cli_ctx *ctx, int argc, char **argv)
{
	static const char *const cols[] = { "name", "state", "availability_zone", "instances",
					    "vcpus", "pcpus", "ram_mb", "disk_gb", "steal_pct",
					    "recent_failures", NULL };
	static const char *const heads[] = { "HOST", "STATE", "AZ", "INSTANCES", "VCPUS", "PCPUS",
					     "RAM_MB", "DISK_GB", "STEAL%", "FAILURES" };
	struct common co = { .timeout_s = 30 };
	int i = common_only(ctx, argc, argv, "host list", &co);

	if (i == -CLI_OK - 100)
		return CLI_OK;
	if (i < 0)
		return -i;
	if (argc - i != 1 || strcmp(argv[i], "list") != 0)
		return usage_error(ctx, "host list", "%s", "host: expected 'list'");
	return simple(ctx, &co, "host.list", json_object(), cols, heads);
}

static const char quota_usage[] =
	"quota show [P] | quota set P [--instances N] [--cores N] [--ram-mb N] [--pcpus N] "
	"[--hugepages-mb N]";

int cli_quota(struct cli_ctx *ctx, int argc, char **argv)
{
	enum { Q_INST = 3000, Q_CORES, Q_RAM, Q_PCPUS, Q_HP };
	static const struct option opts[] = {
		{ "instances", required_argument, NULL, Q_INST },
		{ "cores", required_argument, NULL, Q_CORES },
		{ "ram-mb", required_argument, NULL, Q_RAM },
		{ "pcpus", required_argument, NULL, Q_PCPUS },
		{ "hugepages-mb", required_argument, NULL, Q_HP },
		COMMON_OPTS,
		{ 0 },
	};
	static const char *const res[] = { "instances", "cores", "ram_mb", "pcpus", "hugepages_mb" };
	struct common co = { .project = default_project(), .timeout_s = 30 };
	json_t *limits = json_object();
	const char *sub, *project;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		long v;
		int r = common_opt(ctx, c, &co);

		if (r < 0)
			goto usage;
		if (r == 0)
			continue;
		if (c == OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, quota_usage);
			json_decref(limits);
			return CLI_OK;
		}
		if (c < Q_INST || c > Q_HP || parse_long(optarg, 0, 1L << 40, &v) < 0) {
			cli_error(ctx, "quota: bad option or value %s", argv[optind - 1]);
			goto usage;
		}
		json_object_set_new(limits, res[c - Q_INST], json_integer(v));
	}
	if (argc - optind < 1 || argc - optind > 2)
		goto usage;
	sub = argv[optind];
	project = argc - optind == 2 ? argv[optind + 1] : co.project;
	if (strcmp(sub, "show") == 0 && json_object_size(limits) == 0) {
		struct session ss;
		json_t *data = NULL;
		int rc = session_open(&ss, ctx, co.timeout_s);
		json_t *body = json_pack("{s:s}", "project", project);

		if (rc == CLI_OK)
			rc = request(&ss, "quota.show", body, &data);
		if (rc == CLI_OK && ctx->json) {
			print_json(data);
		} else if (rc == CLI_OK) {
			printf("%-14s %10s %10s\n", "RESOURCE", "USED", "LIMIT");
			for (size_t i = 0; i < ARRAY_SIZE(res); i++) {
				long lim = (long)json_integer_value(
					json_object_get(json_object_get(data, "limits"), res[i]));
				char l[32];

				snprintf(l, sizeof(l), "%ld", lim);
				printf("%-14s %10lld %10s\n", res[i],
				       (long long)json_integer_value(json_object_get(
					       json_object_get(data, "usage"), res[i])),
				       lim < 0 ? "unlimited" : l);
			}
		}
		session_close(&ss);
		json_decref(data);
		json_decref(body);
		json_decref(limits);
		return rc;
	}
	if (strcmp(sub, "set") == 0 && argc - optind == 2 && json_object_size(limits) > 0) {
		json_t *body = json_pack("{s:s, s:o}", "project", project, "limits", limits);

		int rc = simple(ctx, &co, "quota.set", body, NULL, NULL);

		if (rc == CLI_OK && !ctx->json)
			printf("quota of %s set\n", project);
		return rc;
	}
usage:
	json_decref(limits);
	return usage_only(ctx, quota_usage);
}

static const char flavor_usage[] =
	"flavor list | flavor add NAME --vcpus N --ram-mb N [--disk-gb N] [--spec K=V]... | "
	"flavor remove NAME";
static const char image_usage[] =
	"image list | image add NAME --url URL --checksum sha256:HEX [--format qcow2|raw] "
	"[--min-disk-gb N] | image remove NAME";

/* flavor and image: list, add, remove. */
static int catalog_cmd(struct cli_ctx *ctx, int argc, char **argv, bool flavor)
{
	enum { C_VCPUS = 4000, C_RAM, C_DISK, C_SPEC, C_URL, C_SUM, C_FMT, C_MIN };
	static const struct option opts[] = {
		{ "vcpus", required_argument, NULL, C_VCPUS },
		{ "ram-mb", required_argument, NULL, C_RAM },
		{ "disk-gb", required_argument, NULL, C_DISK },
		{ "spec", required_argument, NULL, C_SPEC },
		{ "url", required_argument, NULL, C_URL },
		{ "checksum", required_argument, NULL, C_SUM },
		{ "format", required_argument, NULL, C_FMT },
		{ "min-disk-gb", required_argument, NULL, C_MIN },
		COMMON_OPTS,
		{ 0 },
	};
	static const char *const fcols[] = { "name", "vcpus", "ram_mb", "disk_gb", NULL };
	static const char *const fheads[] = { "NAME", "VCPUS", "RAM_MB", "DISK_GB" };
	static const char *const icols[] = { "name", "disk_format", "min_disk_gb", "url", NULL };
	static const char *const iheads[] = { "NAME", "FORMAT", "MIN_DISK_GB", "URL" };
	const char *usage = flavor ? flavor_usage : image_usage;
	const char *kind = flavor ? "flavor" : "image";
	struct common co = { .timeout_s = 30 };
	json_t *body = json_object(), *specs = json_object();
	char type[32];
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		long v = 0;
		int r = common_opt(ctx, c, &co);
		static const char *const keys[] = { "vcpus", "ram_mb", "disk_gb", NULL, "url",
						    "checksum", "disk_format", "min_disk_gb" };

		if (r < 0)
			goto usage;
		if (r == 0)
			continue;
		if (c == OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, usage);
			json_decref(body);
			json_decref(specs);
			return CLI_OK;
		}
		if (c == C_SPEC) {
			char *eq = strchr(optarg, '=');

			if (!eq || eq == optarg)
				goto usage;
			*eq = '\0';
			json_object_set_new(specs, optarg, json_string(eq + 1));
		} else if (c == C_VCPUS || c == C_RAM || c == C_DISK || c == C_MIN) {
			if (parse_long(optarg, 0, 1L << 30, &v) < 0) {
				cli_error(ctx, "%s: expected a number, got '%s'", argv[optind - 1], optarg);
				goto usage;
			}
			json_object_set_new(body, keys[c - C_VCPUS], json_integer(v));
		} else if (c >= C_URL && c <= C_FMT) {
			json_object_set_new(body, keys[c - C_VCPUS], json_string(optarg));
		} else {
			goto usage;
		}
	}
	if (argc - optind == 1 && strcmp(argv[optind], "list") == 0) {
		json_decref(body);
		json_decref(specs);
		snprintf(type, sizeof(type), "%s.list", kind);
		return simple(ctx, &co, type, json_object(), flavor ? fcols : icols,
			      flavor ? fheads : iheads);
	}
	if (argc - optind == 2 && (strcmp(argv[optind], "add") == 0 ||
				   strcmp(argv[optind], "remove") == 0)) {
		bool add = strcmp(argv[optind], "add") == 0;

		json_object_set_new(body, "name", json_string(argv[optind + 1]));
		if (add && flavor && json_object_size(specs))
			json_object_set(body, "extra_specs", specs);
		if (add && !flavor && !json_object_get(body, "disk_format"))
			json_object_set_new(body, "disk_format", json_string("qcow2"));
		if (add && flavor && !json_object_get(body, "disk_gb"))
			json_object_set_new(body, "disk_gb", json_integer(0));
		if (!add) {
			json_decref(body);
			body = json_pack("{s:s}", "name", argv[optind + 1]);
		}
		snprintf(type, sizeof(type), "%s.%s", kind, argv[optind]);
		json_decref(specs);
		return simple(ctx, &co, type, body, add ? (flavor ? fcols : icols) : NULL,
			      flavor ? fheads : iheads);
	}
usage:
	json_decref(body);
	json_decref(specs);
	return usage_only(ctx, usage);
}

int cli_flavor(struct cli_ctx *ctx, int argc, char **argv)
{
	return catalog_cmd(ctx, argc, argv, true);
}

int cli_image(struct cli_ctx *ctx, int argc, char **argv)
{
	return catalog_cmd(ctx, argc, argv, false);
}
