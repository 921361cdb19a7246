/*
 * stratus-metadata: the per-host metadata service for cloud-init.
 *
 *   stratus-metadata [-c FILE] [-n] [-d] [--instances FILE | --store DB] [--listen ADDR:PORT]
 *
 * Serves the EC2 and OpenStack metadata APIs (metadata/service.c) over
 * HTTP (metadata/http.c) for the instances of a source: the JSON file of
 * instance specs given with --instances (or metadata.instances), reloaded
 * on SIGHUP, or the agent's SQLite store read-only (--store or
 * metadata.store). SIGINT/SIGTERM stop it.
 */
#define LOG_TAG "metadata"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "core/core.h"
#include "metadata/metadata.h"

static struct log_config log_cfg;
static struct bus_config bus_cfg;
static struct md_config md_cfg;

static const char usage_extra[] =
	"service options (before or after the common ones):\n"
	"  --instances FILE     JSON array of instance specs (default: metadata.instances);\n"
	"                       re-read on SIGHUP\n"
	"  --store DB           the agent's SQLite store, read-only (default: metadata.store)\n"
	"  --listen ADDR:PORT   listen address (default: metadata.listen)\n"
	"  --port-mark N        answer only connections with this mark, 0: any\n"
	"                       (default: metadata.port_mark, 21332 = 0x5354)\n";

/*
 * Marks reach an accepted socket only with net.ipv4.tcp_fwmark_accept=1:
 * without it every request would be refused, so set it or say why not.
 */
static int fwmark_accept_on(void)
{
	static const char path[] = "/proc/sys/net/ipv4/tcp_fwmark_accept";
	char buf[8] = "";
	FILE *f = fopen(path, "r");
	bool on = f && fgets(buf, sizeof(buf), f) && buf[0] == '1';

	if (f)
		fclose(f);
	if (on)
		return 0;
	f = fopen(path, "w");
	if (!f || fputs("1\n", f) < 0 || fclose(f) != 0) {
		int r = err_sys(-errno, "metadata.port_mark: needs net.ipv4.tcp_fwmark_accept=1 "
					"(cannot set it; or set metadata.port_mark: 0 where no port "
					"filters mark guest traffic)");

		if (f)
			fclose(f);
		return r;
	}
	return 0;
}

/*
 * Take our own options out of argv (daemon_setup knows only the common
 * ones). Returns 0, or -EINVAL for a missing value.
 */
static int take_opts(int *argc, char **argv, const char **instances, const char **store,
		     const char **listen, const char **mark)
{
	static const struct {
		const char *name;
		size_t len;
	} opts[] = { { "--instances", 11 }, { "--store", 7 }, { "--listen", 8 },
		     { "--port-mark", 11 } };
	const char **dsts[] = { instances, store, listen, mark };
	int o = 1;

	for (int i = 1; i < *argc; i++) {
		const char **dst = NULL;
		const char *val = NULL;

		for (size_t k = 0; k < ARRAY_SIZE(opts); k++) {
			if (strncmp(argv[i], opts[k].name, opts[k].len) != 0)
				continue;
			if (argv[i][opts[k].len] == '=')
				val = argv[i] + opts[k].len + 1;
			else if (argv[i][opts[k].len] != '\0')
				continue;
			dst = dsts[k];
			break;
		}
		if (!dst) {
			argv[o++] = argv[i];
			continue;
		}
		if (!val) {
			if (i + 1 >= *argc) {
				fprintf(stderr, "stratus-metadata: %s needs a value\n", argv[i]);
				return -EINVAL;
			}
			val = argv[++i];
		}
		*dst = val;
	}
	argv[o] = NULL;
	*argc = o;
	return 0;
}

static int validate(void *ud)
{
	return md_config_check(ud);
}

int main(int argc, char **argv)
{
	const struct cfg_section sections[] = {
		{ .name = "log", .fields = log_config_fields, .dst = &log_cfg },
		{ .name = "bus", .fields = bus_config_fields, .dst = &bus_cfg },
		{ .name = "metadata", .fields = md_config_fields, .dst = &md_cfg },
		{ 0 },
	};
	struct daemon_opts o = {
		.prog = "stratus-metadata",
		.summary = "the per-host metadata service for cloud-init",
		.usage_extra = usage_extra,
		.default_config = "/etc/stratus/stratus.yaml",
		.sections = sections,
		.log = &log_cfg,
		.validate = validate,
		.validate_ud = &md_cfg,
	};
	const char *instances = NULL, *store = NULL, *listen = NULL, *mark = NULL;
	struct md_source *src = NULL;
	struct md_service *svc = NULL;
	struct md_http *http = NULL;
	struct prom_server *metrics = NULL;
	sigset_t sigs;
	_cleanup_free_ char *lock_path = NULL;
	const char *rundir;
	int argi, r, code = 1, lock_fd = -1;

	if (take_opts(&argc, argv, &instances, &store, &listen, &mark) < 0)
		return 2;
	r = daemon_setup(&o, argc, argv, &argi);
	if (r > 0) {
		code = r - 1;
		goto out;
	}
	if (argi < argc) {
		fprintf(stderr, "%s: unexpected argument '%s' (try --help)\n", o.prog, argv[argi]);
		code = 2;
		goto out;
	}
	if (!instances && !store) {
		instances = md_cfg.instances;
		store = md_cfg.store;
	}
	if (!listen)
		listen = md_cfg.listen;
	if (mark && parse_long(mark, 0, 0x7fffffff, &md_cfg.port_mark) < 0) {
		fprintf(stderr, "%s: --port-mark: expected 0 to 2147483647, got '%s'\n", o.prog,
			mark);
		code = 2;
		goto out;
	}
	if (instances && store) {
		fprintf(stderr, "%s: give --instances or --store, not both\n", o.prog);
		code = 2;
		goto out;
	}
	if (!instances && !store) {
		fprintf(stderr, "%s: no instance source: give --instances FILE or --store DB "
				"(or metadata.instances / metadata.store)\n", o.prog);
		goto out;
	}
	/* one metadata service per instance source; under systemd the lock is
	 * in the unit's RuntimeDirectory= (the store's directory is read-only
	 * to us there: ReadOnlyPaths=, the agent's) */
	rundir = getenv("RUNTIME_DIRECTORY");
	if (rundir && *rundir && !strchr(rundir, ':'))
		r = asprintf(&lock_path, "%s/metadata.pid", rundir);
	else
		r = asprintf(&lock_path, "%s.metadata.pid", instances ? instances : store);
	if (r < 0) {
		lock_path = NULL;
		goto out;
	}
	if (daemon_lock(o.prog, lock_path, &lock_fd) < 0) {
		fprintf(stderr, "%s\n", err_msg());
		goto out;
	}
	r = instances ? md_source_json_open(instances, &src) : md_source_store_open(store, &src);
	if (r < 0 || md_service_new(&md_cfg, src, &svc) < 0) {
		fprintf(stderr, "%s: %s\n", o.prog, err_msg());
		goto out;
	}

	/* signals are taken synchronously by this thread; the HTTP threads
	 * started below inherit the blocked mask */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((md_cfg.port_mark && !md_cfg.proxy && fwmark_accept_on() < 0) ||
	    md_http_start(svc, listen, &md_cfg, &http) < 0) {
		fprintf(stderr, "%s: %s\n", o.prog, err_msg());
		goto out;
	}
	if (md_metrics_start(&md_cfg, &metrics) < 0) {
		fprintf(stderr, "%s: %s\n", o.prog, err_msg());
		goto out;
	}
	log_info("listening listen=%s port=%d source=%s tokens=%s proxy=%s threads=%ld "
		 "port_mark=%#lx header_timeout_ms=%lld per_source_limit=%ld",
		 listen, md_http_port(http), instances ? instances : store,
		 md_cfg.tokens == MD_TOKENS_REQUIRED ? "required" : "optional",
		 md_cfg.proxy ? "on" : "off", md_cfg.threads, md_cfg.port_mark,
		 (long long)md_cfg.header_timeout_ms, md_cfg.per_source_limit);
	for (;;) {
		int sig = 0;

		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			if (md_source_reload(src) < 0)
				log_error("reload failed, keeping the previous instances: %s",
					  err_msg());
			else
				log_info("reloaded source=%s", instances ? instances : store);
			continue;
		}
		log_info("stopping signal=%d", sig);
		break;
	}
	code = 0;
out:
	md_metrics_stop(metrics);
	md_http_stop(http);
	daemon_unlock(lock_path, lock_fd);
	md_service_free(svc);
	md_source_close(src);
	cfg_free(md_config_fields, &md_cfg);
	cfg_free(log_config_fields, &log_cfg);
	bus_config_free(&bus_cfg);
	return code;
}
