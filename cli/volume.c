/*
 * stratusctl volume: create, list, show, delete, attach, detach (issue 19).
 *
 * create, delete, attach and detach wait (unless --no-wait) until the
 * volume leaves its transitional state, by asking volume.list again: the
 * agent's outcome (available, in-use, error with its reason, gone) is what
 * the command reports and what its exit code says.
 */
#define LOG_TAG "cli"
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli_priv.h"
#include "core/core.h"

static const char volume_usage[] =
	"volume create NAME --size GB [--host H] | volume list | volume show NAME | "
	"volume delete NAME | volume attach NAME INSTANCE | volume detach NAME "
	"[--project P] [--timeout S] [--no-wait]";

#define POLL_MS 300

static const char *const cols[] = { "name", "state", "size_gb", "host", "instance", "uuid", NULL };
static const char *const heads[] = { "NAME", "STATE", "SIZE_GB", "HOST", "INSTANCE", "UUID" };

static void print_volume(const struct cli_ctx *ctx, const json_t *v)
{
	static const char *const keys[] = { "name", "uuid", "project", "state", "size_gb", "host",
					    "instance", "reason", "created", "updated" };
	char buf[32];

	if (ctx->json) {
		cli_print_json(v);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		printf("%-10s %s\n", keys[i], cli_field_text(v, keys[i], buf, sizeof(buf)));
}

/* The volume UUID in the project's list (new reference), NULL when gone. */
static int volume_now(struct cli_session *ss, const char *project, const char *uuid, json_t **out)
{
	json_t *body = json_pack("{s:s}", "project", project), *list = NULL, *v;
	size_t i;
	int rc = cli_request(ss, "volume.list", body, &list);

	json_decref(body);
	*out = NULL;
	if (rc != CLI_OK)
		return rc;
	json_array_foreach(list, i, v) {
		if (strcmp(json_string_value(json_object_get(v, "uuid")) ?: "", uuid) == 0)
			*out = json_incref(v);
	}
	json_decref(list);
	return CLI_OK;
}

/* Wait while the volume is in TRANSIT; then the final volume (or NULL:
 * deleted) in *out. */
static int wait_volume(struct cli_session *ss, const char *project, const char *uuid,
		       const char *transit, json_t **out)
{
	for (;;) {
		json_t *v = NULL;
		int rc = volume_now(ss, project, uuid, &v);
		const char *st;

		if (rc != CLI_OK)
			return rc;
		st = json_string_value(json_object_get(v, "state"));
		if (!v || !st || strcmp(st, transit) != 0) {
			*out = v;
			return CLI_OK;
		}
		json_decref(v);
		if (time_mono_ms() + POLL_MS >= ss->deadline_ms) {
			cli_error(ss->ctx, "volume %s: still %s when the time ran out", uuid, transit);
			return CLI_TIMEOUT;
		}
		cli_session_poll(ss, POLL_MS);
	}
}

struct vol_op {
	const char *sub, *type;
	int operands;       /* after the sub-command */
	const char *transit; /* state it waits out; NULL: no wait */
	const char *want;    /* the state that is success; NULL: gone */
};

static const struct vol_op ops[] = {
	{ "create", "volume.create", 1, "creating", "available" },
	{ "list", "volume.list", 0, NULL, NULL },
	{ "show", "volume.show", 1, NULL, NULL },
	{ "delete", "volume.delete", 1, "deleting", NULL },
	{ "attach", "volume.attach", 2, "attaching", "in-use" },
	{ "detach", "volume.detach", 1, "detaching", "available" },
};

/* Send OP, wait for its outcome, print it. */
static int run_op(struct cli_ctx *ctx, const struct cli_common *co, const struct vol_op *op,
		  json_t *body)
{
	struct cli_session ss;
	json_t *data = NULL, *fin = NULL;
	const char *uuid, *st, *reason;
	int rc = cli_session_open(&ss, ctx, co->timeout_s);

	if (rc == CLI_OK)
		rc = cli_request(&ss, op->type, body, &data);
	if (rc != CLI_OK)
		goto out;
	if (!op->transit) {
		if (json_is_array(data) && ctx->json)
			cli_print_json(data);
		else if (json_is_array(data))
			cli_print_table(data, cols, heads);
		else
			print_volume(ctx, data);
		goto out;
	}
	uuid = json_string_value(json_object_get(data, "uuid"));
	if (co->no_wait || !uuid) {
		print_volume(ctx, data);
		goto out;
	}
	rc = wait_volume(&ss, co->project, uuid, op->transit, &fin);
	if (rc != CLI_OK)
		goto out;
	st = json_string_value(json_object_get(fin, "state"));
	reason = json_string_value(json_object_get(fin, "reason"));
	if (!op->want && !fin) {
		if (ctx->json)
			cli_print_json(json_object_get(data, "uuid"));
		else
			printf("volume %s deleted\n", json_string_value(json_object_get(data, "name")));
	} else if (op->want && st && strcmp(st, op->want) == 0) {
		print_volume(ctx, fin);
	} else {
		cli_error(ctx, "volume %s: %s failed: now %s%s%s",
			  json_string_value(json_object_get(data, "name")), op->sub,
			  st ? st : "gone", reason ? ": " : "", reason ? reason : "");
		rc = CLI_ERROR;
	}
out:
	cli_session_close(&ss);
	json_decref(data);
	json_decref(fin);
	json_decref(body);
	return rc;
}

int cli_volume(struct cli_ctx *ctx, int argc, char **argv)
{
	enum { V_SIZE = 5000, V_HOST };
	static const struct option opts[] = {
		{ "size", required_argument, NULL, V_SIZE },
		{ "host", required_argument, NULL, V_HOST },
		{ "no-wait", no_argument, NULL, CLI_OPT_NO_WAIT },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	struct cli_common co = { .project = cli_default_project(), .timeout_s = 120 };
	const struct vol_op *op = NULL;
	const char *host = NULL;
	long size = 0;
	json_t *body;
	int c, n;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = cli_common_opt(ctx, c, &co);

		if (r < 0)
			return cli_usage_only(ctx, volume_usage);
		if (r == 0)
			continue;
		if (c == CLI_OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, volume_usage);
			return CLI_OK;
		}
		if (c == V_SIZE && parse_long(optarg, 1, 65536, &size) < 0)
			return cli_usage_error(ctx, volume_usage, "volume: --size: expected GB from 1 "
					       "to 65536, got '%s'", optarg);
		else if (c == V_HOST)
			host = optarg;
		else if (c != V_SIZE)
			return cli_usage_only(ctx, volume_usage);
	}
	n = argc - optind;
	for (size_t i = 0; n >= 1 && i < ARRAY_SIZE(ops); i++)
		if (strcmp(ops[i].sub, argv[optind]) == 0)
			op = &ops[i];
	if (!op)
		return cli_usage_error(ctx, volume_usage, "%s", "volume: expected create, list, show, "
				       "delete, attach or detach");
	if (n - 1 != op->operands)
		return cli_usage_error(ctx, volume_usage, "volume %s: expected %d operand%s", op->sub,
				       op->operands, op->operands == 1 ? "" : "s");
	if ((size || host) && strcmp(op->sub, "create") != 0)
		return cli_usage_error(ctx, volume_usage, "%s", "volume: --size and --host go with "
				       "create");
	if (strcmp(op->sub, "create") == 0 && !size)
		return cli_usage_error(ctx, volume_usage, "%s", "volume create: --size GB is required");
	if (strcmp(op->sub, "list") == 0)
		body = json_pack("{s:s}", "project", co.project);
	else if (strcmp(op->sub, "create") == 0)
		body = json_pack("{s:s, s:s, s:I}", "project", co.project, "name", argv[optind + 1],
				 "size_gb", (json_int_t)size);
	else
		body = json_pack("{s:s, s:s}", "project", co.project, "volume", argv[optind + 1]);
	if (body && host)
		json_object_set_new(body, "host", json_string(host));
	if (body && op->operands == 2)
		json_object_set_new(body, "instance", json_string(argv[optind + 2]));
	if (!body) {
		cli_error(ctx, "out of memory");
		return CLI_ERROR;
	}
	return run_op(ctx, &co, op, body);
}
