/*
 * stratusctl resize NAME --flavor F, resize-confirm NAME, resize-revert NAME
 * (issue 18): the request, then the instance's states as they arrive
 * (resizing, verify_resize; after confirm or revert active or stopped).
 * With --json, the instance's record at the end (instance.show).
 */
#define LOG_TAG "cli"
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli_priv.h"
#include "cli/tenant.h"

enum { O_FLAVOR = 2100 };

static const char resize_usage[] =
	"resize NAME|UUID --flavor F [--project P] [--timeout S] [--no-wait]";
static const char confirm_usage[] = "resize-confirm NAME|UUID [--project P] [--timeout S] [--no-wait]";
static const char revert_usage[] = "resize-revert NAME|UUID [--project P] [--timeout S] [--no-wait]";

#define RECORD_WAIT_MS 10000

/* The instance's record (instance.show), printed as JSON, once the
 * scheduler has the state WANT ("a|b") the host announced (it may read
 * the host's event a moment after us). */
static int print_record(struct cli_session *ss, const char *project, const char *uuid,
			const char *want)
{
	json_t *body = json_pack("{s:s, s:s}", "project", project, "instance", uuid), *data = NULL;
	int64_t until = time_mono_ms() + RECORD_WAIT_MS;
	int rc = body ? CLI_OK : CLI_ERROR;

	while (rc == CLI_OK) {
		const char *st;

		json_decref(data);
		data = NULL;
		rc = cli_request(ss, "instance.show", body, &data);
		st = json_string_value(json_object_get(data, "state"));
		if (rc != CLI_OK || !st || time_mono_ms() >= until)
			break;
		if (cli_state_wanted(st, want))
			break;
		cli_session_poll(ss, 100);
	}
	if (rc == CLI_OK)
		cli_print_json(data);
	json_decref(data);
	json_decref(body);
	return rc;
}

/* Send TYPE for NAME (BODY taken), follow it to WANT. */
static int run(struct cli_ctx *ctx, const struct cli_common *co, const char *type,
	       const char *name, json_t *body, const char *want)
{
	struct cli_session ss;
	json_t *data = NULL;
	char uuid[UUID_STRLEN] = "";
	int rc;

	if (!body) {
		cli_error(ctx, "%s: out of memory", type);
		return CLI_ERROR;
	}
	rc = cli_session_open(&ss, ctx, co->timeout_s);
	if (rc == CLI_OK)
		rc = cli_request(&ss, type, body, &data);
	if (rc == CLI_OK) {
		const char *u = json_string_value(json_object_get(data, "uuid"));

		snprintf(uuid, sizeof(uuid), "%s", u ? u : "");
		if (co->no_wait) {
			if (ctx->json)
				cli_print_json(data);
			else
				printf("%s: %s requested\n", name, type);
		} else {
			rc = cli_follow(&ss, co->project, uuid, name,
					json_string_value(json_object_get(data, "state")),
					json_string_value(json_object_get(data, "host")), want);
			if (rc == CLI_OK && ctx->json)
				rc = print_record(&ss, co->project, uuid, want);
		}
	}
	cli_session_close(&ss);
	json_decref(data);
	json_decref(body);
	return rc;
}

/* The options: operand index, or <0 (the exit code negated; -CLI_OK - 100
 * after --help). *flavor: --flavor's value (only when FLAVOR is not NULL). */
static int parse(struct cli_ctx *ctx, int argc, char **argv, const char *usage,
		 struct cli_common *co, const char **flavor)
{
	static const struct option opts[] = {
		{ "flavor", required_argument, NULL, O_FLAVOR },
		{ "no-wait", no_argument, NULL, CLI_OPT_NO_WAIT },
		CLI_COMMON_OPTS,
		{ 0 },
	};
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
		if (c != O_FLAVOR || !flavor)
			return -cli_usage_error(ctx, usage, "unknown option %s", argv[optind - 1]);
		*flavor = optarg;
	}
	if (argc - optind != 1)
		return -cli_usage_error(ctx, usage, "%s: one instance name or uuid is required",
					argv[0]);
	if (flavor && !*flavor)
		return -cli_usage_error(ctx, usage, "%s: --flavor is required", argv[0]);
	return optind;
}

int cli_resize(struct cli_ctx *ctx, int argc, char **argv)
{
	struct cli_common co = { .project = cli_default_project(), .timeout_s = 600 };
	const char *flavor = NULL;
	int i = parse(ctx, argc, argv, resize_usage, &co, &flavor);

	if (i == -CLI_OK - 100)
		return CLI_OK;
	if (i < 0)
		return -i;
	return run(ctx, &co, "instance.resize", argv[i],
		   json_pack("{s:s, s:s, s:s}", "project", co.project, "instance", argv[i],
			     "flavor", flavor),
		   "verify_resize");
}

static int answer(struct cli_ctx *ctx, int argc, char **argv, bool revert)
{
	struct cli_common co = { .project = cli_default_project(), .timeout_s = 600 };
	int i = parse(ctx, argc, argv, revert ? revert_usage : confirm_usage, &co, NULL);

	if (i == -CLI_OK - 100)
		return CLI_OK;
	if (i < 0)
		return -i;
	return run(ctx, &co, revert ? "instance.resize.revert" : "instance.resize.confirm",
		   argv[i], json_pack("{s:s, s:s}", "project", co.project, "instance", argv[i]),
		   "active|stopped");
}

int cli_resize_confirm(struct cli_ctx *ctx, int argc, char **argv)
{
	return answer(ctx, argc, argv, false);
}

int cli_resize_revert(struct cli_ctx *ctx, int argc, char **argv)
{
	return answer(ctx, argc, argv, true);
}
