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
 * This file: the session (request, outcome, resend), output and the
 * option helpers that cli/instance.c and cli/catalog.c share through
 * cli/cli_priv.h.
 *
 * Exit status: 0 done; 1 the request failed (its error on stderr) or the
 * instance ended in error; 2 usage; 3 no outcome in time.
 */
#define LOG_TAG "cli"
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli_priv.h"
#include "core/core.h"

#define RESEND_MS 3000

const char *cli_default_project(void)
{
	static struct cli_credential cred;
	const char *p = getenv("STRATUS_PROJECT");

	if (p && *p)
		return p;
	/* a member acts on its own project: no --project needed */
	if (cred.id[0] || cli_credential_load(&cred) == 0)
		return cred.project;
	return "default";
}

/* A result sealed to our credential: its data in the clear, or an error. */
static void open_sealed(struct cli_watch *w)
{
	const char *sealed = json_string_value(json_object_get(w->result, "sealed"));
	json_t *data = NULL;

	if (!sealed)
		return;
	if (cli_credential_open(w->cred, w->rid, sealed, &data) == 0) {
		json_object_set_new(w->result, "data", data);
	} else {
		json_object_set_new(w->result, "ok", json_false());
		json_object_set_new(w->result, "error", json_string(err_msg()));
	}
}

static int on_event(void *opaque, const struct bus_message *m)
{
	struct cli_watch *w = opaque;
	const struct bus_envelope *e = m->env;

	if (!e)
		return 0;
	if (w->rid && strcmp(e->type, "request.result") == 0 && strcmp(e->request_id, w->rid) == 0 &&
	    !w->result) {
		w->result = json_incref(e->body);
		open_sealed(w);
	} else if (!w->rid && strcmp(e->type, "request.result") == 0 &&
		   strcmp(e->request_id, w->last_rid) == 0 &&
		   json_is_false(json_object_get(e->body, "ok")) && !w->late_error) {
		/* the agent refused what the scheduler forwarded */
		w->late_error = json_incref(e->body);
	} else if (strcmp(e->type, "instance.state") == 0 && w->uuids) {
		const char *u = json_string_value(json_object_get(e->body, "uuid"));

		json_t *st;

		if (u && json_object_get(w->uuids, u) && (st = json_copy(e->body))) {
			/* whose request it answers: reboot follows its own */
			json_object_set_new(st, "request_id", json_string(e->request_id));
			json_array_append_new(w->states, st);
		}
	} else if (strcmp(e->type, "instance.migration") == 0 && w->want_migrations) {
		/* also those that come with the answer, before the caller knows
		 * the uuids to follow */
		json_array_append(w->migrations, e->body);
	} else if (strcmp(e->type, "image.snapshot") == 0 && w->snapshots) {
		json_array_append(w->snapshots, e->body); /* cli/snapshot.c filters */
	}
	return 0;
}

void cli_session_poll(struct cli_session *ss, int timeout_ms)
{
	bus_consumer_poll(ss->obs, timeout_ms, on_event, &ss->w);
}

int cli_session_open(struct cli_session *ss, struct cli_ctx *ctx, long timeout_s)
{
	static const char *const topics[] = { BUS_TOPIC_EVENTS, NULL };
	struct bus_consumer_opts o = { .observe = true, .from_end = true, .topics = topics };

	memset(ss, 0, sizeof(*ss));
	ss->ctx = ctx;
	ss->w.cred = &ss->cred;
	if (cli_credential_load(&ss->cred) < 0) {
		cli_error(ctx, "%s", err_msg());
		return CLI_ERROR;
	}
	ss->deadline_ms = time_mono_ms() + timeout_s * 1000;
	ss->w.states = json_array();
	ss->w.uuids = json_object();
	ss->w.migrations = json_array();
	/* the observer starts at the end of stratus.events as it is now (before
	 * we ask), and stratus.api is known before the request is queued */
	if (bus_producer_new(&ctx->bus, &ss->prod) < 0 ||
	    bus_producer_prepare(ss->prod, BUS_TOPIC_API) < 0 ||
	    bus_consumer_new(&ctx->bus, &o, &ss->obs) < 0) {
		cli_error(ctx, "%s", err_msg());
		return CLI_ERROR;
	}
	return CLI_OK;
}

void cli_session_close(struct cli_session *ss)
{
	bus_consumer_free(ss->obs);
	bus_producer_free(ss->prod);
	json_decref(ss->w.result);
	json_decref(ss->w.late_error);
	json_decref(ss->w.states);
	json_decref(ss->w.uuids);
	json_decref(ss->w.migrations);
}

static int send_request(struct cli_session *ss, const char *type, const char *rid, json_t *body)
{
	struct bus_envelope *e = NULL;
	int r;

	r = bus_envelope_new(type, BUS_TC_API, "stratusctl", rid, json_incref(body), &e);
	if (r == 0)
		r = cli_credential_sign(&ss->cred, e);
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
int cli_request(struct cli_session *ss, const char *type, json_t *body, json_t **data)
{
	char rid[UUID_STRLEN];
	int64_t resend = 0;
	int rc;

	uuid_generate_time_str(rid); /* time-ordered: the requests table appends */
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
		cli_session_poll(ss, 100);
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

void cli_print_json(const json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	if (s)
		printf("%s\n", s);
	free(s);
}

const char *cli_field_text(const json_t *o, const char *key, char *buf, size_t len)
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
void cli_print_table(const json_t *rows, const char *const *cols, const char *const *heads)
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
			size_t l = strlen(cli_field_text(row, cols[c], buf, sizeof(buf)));

			width[c] = l > width[c] ? l : width[c];
		}
	for (size_t c = 0; c < nc; c++)
		printf("%-*s%s", c + 1 < nc ? (int)width[c] : 0, heads[c], c + 1 < nc ? "  " : "\n");
	json_array_foreach(rows, i, row)
		for (size_t c = 0; c < nc; c++)
			printf("%-*s%s", c + 1 < nc ? (int)width[c] : 0,
			       cli_field_text(row, cols[c], buf, sizeof(buf)), c + 1 < nc ? "  " : "\n");
}

/* ---- option parsing shared by the commands ----------------------------- */

/* 0 handled, 1 not a common option, <0 bad value */
int cli_common_opt(struct cli_ctx *ctx, int c, struct cli_common *co)
{
	switch (c) {
	case CLI_OPT_PROJECT:
		co->project = optarg;
		return 0;
	case CLI_OPT_TIMEOUT:
		if (parse_long(optarg, 1, 86400, &co->timeout_s) < 0) {
			cli_error(ctx, "--timeout: expected seconds from 1 to 86400, got '%s'", optarg);
			return -1;
		}
		return 0;
	case CLI_OPT_NO_WAIT:
		co->no_wait = true;
		return 0;
	default:
		return 1;
	}
}

int cli_usage_only(struct cli_ctx *ctx, const char *usage)
{
	fprintf(stderr, "usage: %s %s\n", ctx->prog, usage);
	return CLI_USAGE;
}

int cli_usage_error(struct cli_ctx *ctx, const char *usage, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", ctx->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return cli_usage_only(ctx, usage);
}

/* ---- one request, its data printed ------------------------------------- */

/* Send TYPE with BODY and print the data: a table (cols/heads) or JSON. */
int cli_request_print(struct cli_ctx *ctx, const struct cli_common *co, const char *type,
		      json_t *body, const char *const *cols, const char *const *heads)
{
	struct cli_session ss;
	json_t *data = NULL;
	int rc = cli_session_open(&ss, ctx, co->timeout_s);

	if (rc == CLI_OK)
		rc = cli_request(&ss, type, body, &data);
	if (rc == CLI_OK) {
		if (ctx->json)
			cli_print_json(data ? data : json_null());
		else if (cols && json_is_array(data))
			cli_print_table(data, cols, heads);
		else if (cols) {
			json_t *one = json_array();

			json_array_append(one, data);
			cli_print_table(one, cols, heads);
			json_decref(one);
		}
	}
	cli_session_close(&ss);
	json_decref(data);
	json_decref(body);
	return rc;
}

/* Parse the common options only; returns the index of the first operand,
 * or <0 (the exit code negated). */
int cli_common_only(struct cli_ctx *ctx, int argc, char **argv, const char *usage,
		    struct cli_common *co)
{
	static const struct option opts[] = { CLI_COMMON_OPTS, { 0 } };
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = cli_common_opt(ctx, c, co);

		if (r < 0)
			return -CLI_USAGE;
		if (r == 0)
			continue;
		if (c == CLI_OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, usage);
			return -CLI_OK - 100;
		}
		return -cli_usage_error(ctx, usage, "unknown option %s", argv[optind - 1]);
	}
	return optind;
}
