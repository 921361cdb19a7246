/*
 * stratusctl migrate NAME [--host H] [--cold] (admin): instance.migrate,
 * then the migration followed on stratus.events until the scheduler says
 * done or aborted: a progress line from the source's instance.migration
 * progress events, and at the end the total time and libvirt's measured
 * downtime (cold: the source's stop -> the destination's boot).
 * docs/stratusctl.md, docs/scheduler.md "Migration".
 */
#define LOG_TAG "cli"
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_priv.h"
#include "core/core.h"

static const char migrate_usage[] =
	"migrate NAME|UUID [--host H] [--cold] [--project P] [--timeout S] [--no-wait]";

static long long jint(const json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static void show_progress(const struct cli_ctx *ctx, const json_t *ev, bool tty)
{
	long long mt = jint(ev, "memory_total"), mr = jint(ev, "memory_remaining");
	long long dt = jint(ev, "disk_total"), dr = jint(ev, "disk_remaining");
	long long done = (mt - mr) + (dt - dr), all = mt + dt;
	int pct = all > 0 ? (int)(done * 100 / all) : 0;
	char bar[21];

	if (ctx->json)
		return;
	for (int i = 0; i < 20; i++)
		bar[i] = i < pct / 5 ? '#' : '.';
	bar[20] = '\0';
	printf("%s[%s] %3d%%  memory %lld/%lld MiB  disk %lld/%lld MiB  %.1f s%s",
	       tty ? "\r" : "", bar, pct, (mt - mr) >> 20, mt >> 20, (dt - dr) >> 20, dt >> 20,
	       (double)jint(ev, "total_ms") / 1e3, tty ? "" : "\n");
	fflush(stdout);
}

/* Follow migration ID of UUID until the scheduler's done / aborted. */
static int follow(struct cli_session *ss, const char *uuid, const char *id, const char *name)
{
	bool tty = isatty(STDOUT_FILENO), shown = false;
	int rc = CLI_TIMEOUT;

	json_object_set_new(ss->w.uuids, uuid, json_true());
	while (rc == CLI_TIMEOUT && time_mono_ms() < ss->deadline_ms) {
		size_t k;
		json_t *ev;

		cli_session_poll(ss, 100);
		json_array_foreach(ss->w.migrations, k, ev) {
			const char *phase = jstr(ev, "phase"), *mid = jstr(ev, "migration");

			if (!phase || !mid || strcmp(mid, id) != 0 || strcmp(jstr(ev, "uuid"), uuid) != 0)
				continue;
			if (strcmp(phase, "progress") == 0) {
				show_progress(ss->ctx, ev, tty);
				shown = true;
			} else if (strcmp(phase, "done") == 0) {
				if (shown && tty)
					printf("\n");
				if (ss->ctx->json) {
					cli_print_json(ev);
				} else if (json_is_true(json_object_get(ev, "cold"))) {
					printf("%s: cold-migrated from %s to %s in %.2f s", name,
					       jstr(ev, "source"), jstr(ev, "dest"),
					       (double)jint(ev, "total_ms") / 1e3);
					if (json_is_true(json_object_get(ev, "stopped")))
						printf(" (stopped: it stays stopped)");
					else if (json_object_get(ev, "downtime_ms"))
						printf(", downtime %lld ms (stopped on %s to booted on "
						       "%s)", jint(ev, "downtime_ms"),
						       jstr(ev, "source"), jstr(ev, "dest"));
					printf("\n");
				} else {
					printf("%s: migrated from %s to %s in %.2f s", name,
					       jstr(ev, "source"), jstr(ev, "dest"),
					       (double)jint(ev, "total_ms") / 1e3);
					if (json_object_get(ev, "downtime_ms"))
						printf(", downtime %lld ms (libvirt)", jint(ev, "downtime_ms"));
					printf("\n");
				}
				rc = CLI_OK;
				break;
			} else if (strcmp(phase, "aborted") == 0) {
				if (shown && tty)
					printf("\n");
				if (ss->ctx->json)
					cli_print_json(ev);
				cli_error(ss->ctx, "%s: %s", name, jstr(ev, "error") ? jstr(ev, "error")
										    : "migration aborted");
				rc = CLI_ERROR;
				break;
			}
		}
		json_array_clear(ss->w.migrations);
	}
	if (rc == CLI_TIMEOUT)
		cli_error(ss->ctx, "%s: timed out waiting for migration %s (it may still finish: "
			  "stratusctl show %s)", name, id, name);
	return rc;
}

int cli_migrate(struct cli_ctx *ctx, int argc, char **argv)
{
	enum { M_HOST = 4000, M_COLD };
	static const struct option opts[] = {
		{ "host", required_argument, NULL, M_HOST },
		{ "cold", no_argument, NULL, M_COLD },
		{ "no-wait", no_argument, NULL, CLI_OPT_NO_WAIT },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	struct cli_common co = { .project = cli_default_project(), .timeout_s = 1800 };
	struct cli_session ss;
	const char *host = NULL;
	bool cold = false;
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
			printf("usage: %s %s\n", ctx->prog, migrate_usage);
			return CLI_OK;
		}
		if (c == M_HOST) {
			host = optarg;
			continue;
		}
		if (c == M_COLD) {
			cold = true;
			continue;
		}
		return cli_usage_error(ctx, migrate_usage, "unknown option %s", argv[optind - 1]);
	}
	if (argc - optind != 1)
		return cli_usage_error(ctx, migrate_usage, "migrate: one instance name or uuid is "
				       "required");
	body = json_pack("{s:s, s:s}", "project", co.project, "instance", argv[optind]);
	if (body && host)
		json_object_set_new(body, "host", json_string(host));
	if (body && cold)
		json_object_set_new(body, "cold", json_true());
	rc = cli_session_open(&ss, ctx, co.timeout_s);
	ss.w.want_migrations = true;
	if (rc == CLI_OK)
		rc = cli_request(&ss, "instance.migrate", body, &data);
	if (rc == CLI_OK) {
		const char *uuid = jstr(data, "uuid"), *id = jstr(data, "migration");

		if (!ctx->json)
			printf("%s: %s from %s to %s (migration %s)\n", argv[optind],
			       json_is_true(json_object_get(data, "cold"))
				       ? "cold-migrating (stop, copy, start)"
				       : "migrating",
			       jstr(data, "source"), jstr(data, "dest"), id ? id : "?");
		if (co.no_wait || !uuid || !id) {
			if (ctx->json)
				cli_print_json(data);
		} else {
			rc = follow(&ss, uuid, id, argv[optind]);
		}
	}
	cli_session_close(&ss);
	json_decref(data);
	json_decref(body);
	return rc;
}

/* host drain HOST: the scheduler disables it and migrates its instances
 * off, a few at once; each one's end is printed as it comes. */
int cli_host_drain(struct cli_ctx *ctx, const struct cli_common *co, const char *host)
{
	struct cli_session ss;
	json_t *body = json_pack("{s:s}", "host", host), *data = NULL, *list, *it;
	size_t left = 0, failed = 0, k;
	int rc = cli_session_open(&ss, ctx, co->timeout_s);

	ss.w.want_migrations = true;
	if (rc == CLI_OK)
		rc = cli_request(&ss, "host.drain", body, &data);
	json_decref(body);
	if (rc != CLI_OK)
		goto out;
	list = json_object_get(data, "instances");
	json_array_foreach(list, k, it) {
		json_object_set_new(ss.w.uuids, jstr(it, "uuid"), json_string(jstr(it, "name")));
		left++;
	}
	if (!ctx->json)
		printf("host %s: disabled; migrating %zu instance(s), %lld at once\n", host, left,
		       jint(data, "concurrency"));
	while (left > 0 && time_mono_ms() < ss.deadline_ms) {
		json_t *ev;

		cli_session_poll(&ss, 100);
		json_array_foreach(ss.w.migrations, k, ev) {
			const char *phase = jstr(ev, "phase"), *u = jstr(ev, "uuid");
			json_t *nm = u ? json_object_get(ss.w.uuids, u) : NULL;

			if (!nm || !json_is_string(nm) || !phase)
				continue;
			if (ctx->json && (strcmp(phase, "done") == 0 || strcmp(phase, "aborted") == 0)) {
				cli_print_json(ev);
			} else if (strcmp(phase, "started") == 0) {
				printf("%s: migrating to %s\n", json_string_value(nm), jstr(ev, "dest"));
			} else if (strcmp(phase, "done") == 0) {
				printf("%s: migrated to %s in %.2f s", json_string_value(nm),
				       jstr(ev, "dest"), (double)jint(ev, "total_ms") / 1e3);
				if (json_object_get(ev, "downtime_ms"))
					printf(", downtime %lld ms", jint(ev, "downtime_ms"));
				printf("\n");
			} else if (strcmp(phase, "aborted") == 0) {
				printf("%s: not migrated: %s\n", json_string_value(nm),
				       jstr(ev, "error") ? jstr(ev, "error") : "aborted");
			}
			if (strcmp(phase, "done") == 0 || strcmp(phase, "aborted") == 0) {
				if (strcmp(phase, "aborted") == 0)
					failed++;
				json_object_set_new(ss.w.uuids, u, json_true()); /* counted */
				left--;
			}
		}
		json_array_clear(ss.w.migrations);
	}
	if (left > 0) {
		cli_error(ctx, "host %s: %zu instance(s) still moving after the timeout", host, left);
		rc = CLI_TIMEOUT;
	} else if (failed) {
		cli_error(ctx, "host %s: %zu instance(s) could not be migrated; it stays disabled",
			  host, failed);
		rc = CLI_ERROR;
	} else if (!ctx->json) {
		printf("host %s: drained (disabled until stratusctl host enable %s)\n", host, host);
	}
out:
	cli_session_close(&ss);
	json_decref(data);
	return rc;
}

/* host evacuate HOST (a host that is down): the scheduler rebuilds its
 * instances elsewhere from their images; each one's start (or failure) on
 * its new host is printed as it comes. */
int cli_host_evacuate(struct cli_ctx *ctx, const struct cli_common *co, const char *host)
{
	struct cli_session ss;
	json_t *body = json_pack("{s:s}", "host", host), *data = NULL, *list, *it;
	json_t *names = json_object();
	size_t left = 0, failed = 0, k;
	int rc = cli_session_open(&ss, ctx, co->timeout_s);

	if (rc == CLI_OK)
		rc = cli_request(&ss, "host.evacuate", body, &data);
	json_decref(body);
	if (rc != CLI_OK)
		goto out;
	list = json_object_get(data, "instances");
	if (ctx->json)
		cli_print_json(data);
	else
		printf("host %s: evacuating %zu instance(s): %s\n", host, json_array_size(list),
		       jstr(data, "warning") ? jstr(data, "warning") : "");
	json_array_foreach(list, k, it) {
		json_object_set_new(ss.w.uuids, jstr(it, "uuid"), json_string(jstr(it, "dest")));
		json_object_set_new(names, jstr(it, "uuid"), json_string(jstr(it, "name")));
		left++;
		if (!ctx->json)
			printf("%s: rebuilding on %s from image %s%s%s\n", jstr(it, "name"),
			       jstr(it, "dest"), jstr(it, "image"),
			       jstr(it, "address") ? ", asking for address " : "",
			       jstr(it, "address") ? jstr(it, "address") : "");
	}
	json_array_foreach(json_object_get(data, "skipped"), k, it) {
		failed++;
		if (!ctx->json)
			printf("%s: not evacuated: %s\n", jstr(it, "name"), jstr(it, "reason"));
	}
	while (left > 0 && time_mono_ms() < ss.deadline_ms) {
		json_t *ev;

		cli_session_poll(&ss, 100);
		json_array_foreach(ss.w.states, k, ev) {
			const char *u = jstr(ev, "uuid"), *st = jstr(ev, "state");
			json_t *dest = u ? json_object_get(ss.w.uuids, u) : NULL;

			if (!json_is_string(dest) || !st || !jstr(ev, "host") ||
			    strcmp(jstr(ev, "host"), json_string_value(dest)) != 0 ||
			    (strcmp(st, "active") != 0 && strcmp(st, "error") != 0))
				continue;
			if (ctx->json)
				cli_print_json(ev);
			else if (strcmp(st, "active") == 0)
				printf("%s: active on %s\n", jstr(names, u), json_string_value(dest));
			else
				printf("%s: failed on %s: %s\n", jstr(names, u), json_string_value(dest),
				       jstr(ev, "reason") ? jstr(ev, "reason") : "error");
			failed += strcmp(st, "error") == 0;
			json_object_set_new(ss.w.uuids, u, json_true()); /* counted */
			left--;
		}
		json_array_clear(ss.w.states);
	}
	if (left > 0) {
		cli_error(ctx, "host %s: %zu instance(s) not active yet after the timeout (stratusctl "
			  "list shows them)", host, left);
		rc = CLI_TIMEOUT;
	} else if (failed) {
		cli_error(ctx, "host %s: %zu instance(s) not evacuated", host, failed);
		rc = CLI_ERROR;
	} else if (!ctx->json) {
		printf("host %s: evacuated; its agent destroys the stale copies when it comes back\n",
		       host);
	}
out:
	cli_session_close(&ss);
	json_decref(data);
	json_decref(names);
	return rc;
}
