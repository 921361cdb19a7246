/* The option and config frame every Stratus daemon shares. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
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

/* The pid in a lock file held by someone else, or 0. */
static long lock_holder(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	long pid = 0;

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (parse_long(buf, 1, 1L << 30, &pid) < 0)
		return 0;
	return pid;
}

int daemon_lock(const char *prog, const char *path, int *fd_out)
{
	_cleanup_free_ char *dir = strdup(path);
	char pid[32];
	int fd = -1, r, n;

	if (!dir)
		return err_set(-ENOMEM, "out of memory");
	r = mkdir_p(dirname(dir), 0755);
	if (r < 0)
		return err_prefix(r, "%s: lock %s", prog, path);
	/* a holder that exits unlinks the file: lock what is at PATH now, not
	 * an inode that was removed between our open() and flock() */
	for (int tries = 0; tries < 10; tries++) {
		struct stat a, b;

		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0)
			return err_sys(-errno, "%s: lock %s", prog, path);
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			int e = errno;
			long holder = e == EWOULDBLOCK ? lock_holder(fd) : 0;

			close(fd);
			if (e != EWOULDBLOCK)
				return err_set(-e, "%s: lock %s: %s", prog, path, strerror(e));
			if (holder)
				return err_set(-EWOULDBLOCK, "%s: already running as pid %ld (lock %s)",
					       prog, holder, path);
			return err_set(-EWOULDBLOCK, "%s: already running (lock %s)", prog, path);
		}
		if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino &&
		    a.st_dev == b.st_dev)
			break;
		close(fd); /* removed meanwhile: again */
		fd = -1;
	}
	if (fd < 0)
		return err_set(-EAGAIN, "%s: lock %s: the file keeps being replaced", prog, path);
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		r = err_sys(-errno, "%s: write pid to %s", prog, path);
		close(fd);
		return r;
	}
	*fd_out = fd;
	return 0;
}

void daemon_unlock(const char *path, int fd)
{
	if (fd < 0)
		return;
	/* still holding the lock: nobody else can have taken the file over */
	if (path)
		(void)unlink(path);
	close(fd);
}
