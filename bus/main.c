/* stratus-bus: single-machine Kafka broker (librdkafka mock cluster) */
#define LOG_TAG "bus"
#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"
#include "core/core.h"

/* Every bind() of this program, librdkafka's included: the mock cluster's
 * listeners go to broker.listen (bus/broker.c explains); the rest unchanged. */
int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct sockaddr_in sin;
	long r;

	if (!bus_broker_bind_rewrite(fd, sa, len, &sin))
		return (int)syscall(SYS_bind, fd, sa, len);
	r = syscall(SYS_bind, fd, &sin, sizeof(sin));
	bus_broker_bind_result(r < 0 ? -errno : 0);
	return (int)r;
}

static struct log_config log_cfg;
static struct broker_config broker_cfg;
static struct bus_config bus_cfg; /* for bus.address_file, which clients read */

/* Write ADDR + "\n" to PATH atomically, making its directory. */
static int write_address(const char *path, const char *addr)
{
	_cleanup_free_ char *dir = strdup(path);
	_cleanup_free_ char *line = NULL;
	int r;

	if (!dir || asprintf(&line, "%s\n", addr) < 0)
		return err_set(-ENOMEM, "out of memory");
	r = mkdir_p(dirname(dir), 0755);
	if (r < 0)
		return r;
	return write_file_atomic(path, line, strlen(line), 0644);
}

/* Remove PATH only if it still holds our address (a newer stratus-bus may
 * have replaced it). */
static void remove_address(const char *path, const char *addr)
{
	_cleanup_free_ char *text = NULL;
	size_t n;

	if (read_file(path, 4096, &text, &n) < 0)
		return;
	text[strcspn(text, "\r\n")] = '\0';
	if (strcmp(text, addr) == 0 && unlink(path) < 0)
		log_warn("cannot remove the address file path=%s error=\"%s\"", path,
			 strerror(errno));
}

/* -n: broker.listen is checked with the rest */
static int validate(void *ud)
{
	struct sockaddr_in sa;
	int r = broker_listen_addr(ud, &sa);

	return r < 0 ? r : bus_metrics_check(ud);
}

int main(int argc, char **argv)
{
	const struct cfg_section sections[] = {
		{ .name = "log", .fields = log_config_fields, .dst = &log_cfg },
		{ .name = "broker", .fields = broker_config_fields, .dst = &broker_cfg },
		{ .name = "bus", .fields = bus_config_fields, .dst = &bus_cfg },
		{ 0 },
	};
	struct daemon_opts o = {
		.prog = "stratus-bus",
		.summary = "single-machine Kafka broker (librdkafka mock cluster on broker.listen, default loopback)",
		.usage_extra = "Prints the bootstrap address on stdout and writes it to the address\n"
			       "file (broker.address_file, else bus.address_file, else\n"
			       "$" BUS_ADDR_FILE_ENV ", else " BUS_DEFAULT_ADDR_FILE
			       "). SIGTERM or SIGINT stops it.\n",
		.default_config = "/etc/stratus/stratus.yaml",
		.sections = sections,
		.log = &log_cfg,
		.validate = validate,
		.validate_ud = &broker_cfg,
	};
	struct bus_broker *b = NULL;
	struct bus_metrics *metrics = NULL;
	_cleanup_free_ char *addr = NULL;
	_cleanup_free_ char *lock_path = NULL;
	const char *path;
	int lock_fd = -1;
	sigset_t set;
	int argi, r, sig = 0, rc = 1;

	r = daemon_setup(&o, argc, argv, &argi);
	if (r > 0) {
		rc = r - 1;
		goto out;
	}
	if (argi < argc) {
		fprintf(stderr, "%s: unexpected argument: %s\n", o.prog, argv[argi]);
		rc = 2;
		goto out;
	}
	/* block the stop signals before librdkafka starts its threads: they
	 * inherit the mask, and sigwait() below receives them */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	/* where the clients of the same config file look for it */
	path = bus_address_file(broker_cfg.address_file ? broker_cfg.address_file
							: bus_cfg.address_file);
	/* one broker per address file: a second one must not replace it */
	if (asprintf(&lock_path, "%s.pid", path) < 0) {
		lock_path = NULL;
		log_error("out of memory");
		goto out;
	}
	if (daemon_lock(o.prog, lock_path, &lock_fd) < 0) {
		fprintf(stderr, "%s\n", err_msg());
		goto out;
	}
	broker_cfg.max_message_bytes = bus_cfg.max_message_bytes;
	r = bus_broker_start(&broker_cfg, &b);
	if (r < 0) {
		log_error("%s", err_msg());
		goto out;
	}
	addr = strdup(bus_broker_bootstraps(b));
	if (!addr) {
		log_error("out of memory");
		goto out;
	}
	if (bus_metrics_start(&broker_cfg, addr, &metrics) < 0) {
		log_error("%s", err_msg());
		goto out;
	}
	r = write_address(path, addr);
	if (r < 0) {
		log_error("cannot write the address file: %s", err_msg());
		goto out;
	}
	printf("%s\n", addr);
	fflush(stdout);
	log_info("broker ready bootstrap=%s address_file=%s brokers=%ld partitions=%ld", addr,
		 path, broker_cfg.brokers, broker_cfg.partitions);
	if (sigwait(&set, &sig) != 0)
		sig = 0;
	log_info("stopping signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
	remove_address(path, addr);
	rc = 0;
out:
	bus_metrics_stop(metrics);
	bus_broker_stop(b);
	daemon_unlock(lock_path, lock_fd);
	cfg_free(log_config_fields, &log_cfg);
	broker_config_free(&broker_cfg);
	bus_config_free(&bus_cfg);
	return rc;
}
