/* The option and config frame every Stratus daemon shares. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"

static void usage(const struct daemon_opts *o, FILE *f)
{
	fprintf(f,
		"usage: %s [-c FILE] [-n] [-d] [--help] [--version]%s\n"
		"%s\n\n"
		"  -c, --config FILE  configuration file (default: $STRATUS_CONFIG, then %s)\n"
		"  -n, --check        check the configuration, print the verdict, exit 0 or 1\n"
		"  -d, --debug        log at debug level\n"
		"  -h, --help         this help\n"
		"  -V, --version      print the version\n",
		o->prog, o->usage_extra ? " ..." : "", o->summary,
		o->default_config ? o->default_config : "none");
	if (o->usage_extra)
		fprintf(f, "\n%s", o->usage_extra);
}

int daemon_setup(struct daemon_opts *o, int argc, char **argv, int *argi)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'n' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	bool debug = false;
	int c;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+c:ndhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'n':
			o->check_only = true;
			break;
		case 'd':
			debug = true;
			break;
		case 'h':
			usage(o, stdout);
			return 1;
		case 'V':
			printf("%s %s\n", o->prog, STRATUS_VERSION);
			return 1;
		default:
			if (optopt)
				fprintf(stderr, "%s: unknown option or missing argument: -%c\n", o->prog,
					optopt);
			else
				fprintf(stderr, "%s: unknown option: %s\n", o->prog, argv[optind - 1]);
			usage(o, stderr);
			return 3; /* exit 2 */
		}
	}
	*argi = optind;

	if (!path)
		path = getenv("STRATUS_CONFIG");
	if (!path && o->default_config && access(o->default_config, F_OK) == 0)
		path = o->default_config;

	int r;

	if (path) {
		r = cfg_load_file(path, o->sections);
	} else {
		/* no file: the defaults of every section */
		r = cfg_load_string("(defaults)", "", 0, o->sections);
	}
	if (r >= 0 && o->validate) {
		r = o->validate(o->validate_ud);
	}
	if (r < 0) {
		fprintf(stderr, "%s\n", err_msg());
		return 2; /* exit 1 */
	}
	o->config_path = path;
	if (o->check_only) {
		printf("%s: configuration OK\n", path ? path : "(defaults)");
		return 1;
	}
	if (o->log)
		log_init(o->prog, o->log->syslog,
			 debug ? LOG_LVL_DEBUG : o->log->level);
	else
		log_init(o->prog, false, debug ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	return 0;
}
