/*
 * stratusctl snapshot NAME IMAGE_NAME (issue 18): instance.snapshot, then
 * the snapshot followed on stratus.events (image.snapshot): a progress line
 * of the host's upload, how the guest was held, and at the end the image
 * the scheduler registered (private to the instance's project); --json
 * prints that image record. docs/stratusctl.md, docs/images.md.
 */
#define LOG_TAG "cli"
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_priv.h"
#include "core/core.h"

static const char snapshot_usage[] =
	"snapshot NAME|UUID IMAGE_NAME [--project P] [--timeout S] [--no-wait]";

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static long long jint(const json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

static void show_progress(const struct cli_ctx *ctx, const json_t *ev, bool tty)
{
	long long done = jint(ev, "bytes"), all = jint(ev, "total");
	int pct = all > 0 ? (int)(done * 100 / all) : 0;
	char bar[21];

	if (ctx->json)
		return;
	for (int i = 0; i < 20; i++)
		bar[i] = i < pct / 5 ? '#' : '.';
	bar[20] = '\0';
	printf("%supload [%s] %3d%%  %.1f/%.1f MiB%s", tty ? "\r" : "", bar, pct,
	       (double)done / 1048576, (double)all / 1048576, tty ? "" : "\n");
	fflush(stdout);
}

/* One event of our snapshot: 1 done, -1 failed, 0 on. */
static int on_snapshot_event(struct cli_session *ss, const json_t *ev, const char *inst,
			     bool tty, bool *shown)
{
	const char *phase = jstr(ev, "phase"), *name = jstr(ev, "name");
	const json_t *im = json_object_get(ev, "image");

	if (strcmp(phase, "progress") == 0) {
		show_progress(ss->ctx, ev, tty);
		*shown = true;
		return 0;
	}
	if (*shown && tty && !ss->ctx->json)
		printf("\n");
	*shown = false;
	if (strcmp(phase, "started") == 0) {
		if (!ss->ctx->json)
			printf("%s: snapshot %s started on %s\n", inst, name, jstr(ev, "host"));
	} else if (strcmp(phase, "uploaded") == 0) {
		if (!ss->ctx->json)
			printf("%s: %s, uploaded %.1f MiB, %s\n", inst, jstr(ev, "quiesce"),
			       (double)jint(ev, "size") / 1048576, jstr(ev, "checksum"));
	} else if (strcmp(phase, "registered") == 0) {
		if (ss->ctx->json)
			cli_print_json(im);
		else
			printf("image %s registered (private to %s): %s\n", jstr(im, "name"),
			       jstr(im, "owner"), jstr(im, "url"));
		return 1;
	} else if (strcmp(phase, "failed") == 0) {
		cli_error(ss->ctx, "snapshot %s of %s failed at %s: %s", name ? name : "?", inst,
			  jstr(ev, "step") ? jstr(ev, "step") : "?",
			  jstr(ev, "error") ? jstr(ev, "error") : "unknown error");
		return -1;
	}
	return 0;
}

static int follow(struct cli_session *ss, const char *id, const char *inst)
{
	bool tty = isatty(STDOUT_FILENO), shown = false;
	int rc = CLI_TIMEOUT;

	while (rc == CLI_TIMEOUT && time_mono_ms() < ss->deadline_ms) {
		size_t k;
		json_t *ev;

		cli_session_poll(ss, 100);
		json_array_foreach(ss->w.snapshots, k, ev) {
			const char *sid = jstr(ev, "snapshot"), *phase = jstr(ev, "phase");
			int r;

			if (!sid || !phase || strcmp(sid, id) != 0)
				continue;
			r = on_snapshot_event(ss, ev, inst, tty, &shown);
			if (r != 0) {
				rc = r > 0 ? CLI_OK : CLI_ERROR;
				break;
			}
		}
		json_array_clear(ss->w.snapshots);
	}
	if (rc == CLI_TIMEOUT)
		cli_error(ss->ctx, "%s: timed out waiting for snapshot %s (it may still finish: "
			  "stratusctl image list)", inst, id);
	return rc;
}

int cli_snapshot(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "no-wait", no_argument, NULL, CLI_OPT_NO_WAIT },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	struct cli_common co = { .project = cli_default_project(), .timeout_s = 1800 };
	struct cli_session ss;
	json_t *body, *data = NULL;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = cli_common_opt(ctx, c, &co);

		if (r < 0)
			return CLI_USAGE;
		if (r == 0)
			continue;
		if (c == CLI_OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, snapshot_usage);
			return CLI_OK;
		}
		return cli_usage_error(ctx, snapshot_usage, "unknown option %s", argv[optind - 1]);
	}
	if (argc - optind != 2)
		return cli_usage_error(ctx, snapshot_usage, "snapshot: an instance and the new "
				       "image's name are required");
	body = json_pack("{s:s, s:s, s:s}", "project", co.project, "instance", argv[optind],
			 "name", argv[optind + 1]);
	rc = cli_session_open(&ss, ctx, co.timeout_s);
	ss.w.snapshots = json_array();
	if (rc == CLI_OK && !ss.w.snapshots) {
		cli_error(ctx, "out of memory");
		rc = CLI_ERROR;
	}
	if (rc == CLI_OK)
		rc = cli_request(&ss, "instance.snapshot", body, &data);
	if (rc == CLI_OK) {
		const char *id = jstr(data, "snapshot");

		if (co.no_wait || !id) {
			if (ctx->json)
				cli_print_json(data);
			else
				printf("%s: snapshot %s requested (snapshot %s)\n", argv[optind],
				       argv[optind + 1], id ? id : "?");
		} else {
			rc = follow(&ss, id, argv[optind]);
		}
	}
	json_decref(ss.w.snapshots);
	ss.w.snapshots = NULL;
	cli_session_close(&ss);
	json_decref(data);
	json_decref(body);
	return rc;
}
