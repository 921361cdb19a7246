/*
 * The connection close callback and reconnect with backoff, against a real
 * libvirtd: the client talks to it through a unix-socket proxy in this
 * test (test+unix:///default?socket=PROXY). Cutting the proxy is libvirtd
 * going away (the client sees EOF); bringing it back lets the reconnect
 * succeed. Run by test_reconnect.sh, which brings libvirtd up (shared with
 * other tests through tests/lib/libvirt.sh).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmm/vmm_priv.h"

#define DAEMON_SOCK "/run/libvirt/libvirt-sock"
#define MAX_PAIRS 16

static char proxy_path[108];
static atomic_bool proxy_up, proxy_quit;
static pthread_t proxy_thread;

static int unix_listen(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	unlink(path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 8) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int unix_connect(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Forward bytes between accepted clients and libvirtd while proxy_up;
 * when it drops, close everything (and the listener) until it rises. */
static void *proxy_main(void *arg)
{
	int lfd = -1, pairs[MAX_PAIRS][2];
	int np = 0;
	static char buf[16384];

	(void)arg;
	while (!atomic_load(&proxy_quit)) {
		struct pollfd pf[1 + 2 * MAX_PAIRS];
		int n = 0;

		if (!atomic_load(&proxy_up)) {
			for (int i = 0; i < np; i++) {
				close(pairs[i][0]);
				close(pairs[i][1]);
			}
			np = 0;
			if (lfd >= 0) {
				close(lfd);
				lfd = -1;
				unlink(proxy_path);
			}
			usleep(10000);
			continue;
		}
		if (lfd < 0 && (lfd = unix_listen(proxy_path)) < 0) {
			usleep(10000);
			continue;
		}
		pf[n++] = (struct pollfd){ .fd = lfd, .events = POLLIN };
		for (int i = 0; i < np; i++) {
			pf[n++] = (struct pollfd){ .fd = pairs[i][0], .events = POLLIN };
			pf[n++] = (struct pollfd){ .fd = pairs[i][1], .events = POLLIN };
		}
		int polled = np;

		if (poll(pf, (nfds_t)n, 20) <= 0)
			continue;
		if ((pf[0].revents & POLLIN) && np < MAX_PAIRS) {
			int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			int ufd = cfd >= 0 ? unix_connect(DAEMON_SOCK) : -1;

			if (cfd >= 0 && ufd >= 0) {
				pairs[np][0] = cfd;
				pairs[np][1] = ufd;
				np++;
			} else if (cfd >= 0) {
				close(cfd);
			}
		}
		for (int i = 0; i < polled; i++) {
			for (int side = 0; side < 2 && pairs[i][0] >= 0; side++) {
				struct pollfd *p = &pf[1 + 2 * i + side];
				ssize_t k;

				if (!(p->revents & (POLLIN | POLLHUP | POLLERR)))
					continue;
				k = read(p->fd, buf, sizeof(buf));
				if (k <= 0 || write(pairs[i][!side], buf, (size_t)k) != k) {
					close(pairs[i][0]);
					close(pairs[i][1]);
					pairs[i][0] = pairs[i][1] = -1;
				}
			}
		}
		for (int i = 0; i < np; i++)
			if (pairs[i][0] < 0) {
				pairs[i][0] = pairs[np - 1][0];
				pairs[i][1] = pairs[np - 1][1];
				np--;
				i--;
			}
	}
	for (int i = 0; i < np; i++) {
		close(pairs[i][0]);
		close(pairs[i][1]);
	}
	if (lfd >= 0)
		close(lfd);
	unlink(proxy_path);
	return NULL;
}

static atomic_int n_disconnected, n_reconnected;

static void on_event(enum vmm_event ev, const char *uuid, const char *detail, void *opaque)
{
	(void)uuid;
	(void)detail;
	(void)opaque;
	if (ev == VMM_EV_DISCONNECTED)
		atomic_fetch_add(&n_disconnected, 1);
	if (ev == VMM_EV_RECONNECTED)
		atomic_fetch_add(&n_reconnected, 1);
}

static bool wait_for(atomic_int *v, int want, int ms)
{
	for (int t = 0; t < ms / 10; t++) {
		if (atomic_load(v) >= want)
			return true;
		usleep(10000);
	}
	return false;
}

static int setup(void **state)
{
	(void)state;
	snprintf(proxy_path, sizeof(proxy_path), "/tmp/stratus-vmm-proxy-%d.sock", (int)getpid());
	atomic_store(&proxy_up, true);
	return pthread_create(&proxy_thread, NULL, proxy_main, NULL) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	atomic_store(&proxy_quit, true);
	pthread_join(proxy_thread, NULL);
	return 0;
}

static void test_reconnect(void **state)
{
	char uri[256];
	struct vmm_conn *c = NULL;
	struct vmm_domain_info *l = NULL;
	size_t n = 0;
	int64_t t0, took;

	(void)state;
	snprintf(uri, sizeof(uri), "test+unix:///default?socket=%s", proxy_path);
	for (int i = 0; i < 100 && access(proxy_path, F_OK) != 0; i++)
		usleep(10000);
	if (vmm_open(uri, on_event, NULL, &c) < 0)
		fail_msg("%s", err_msg());
	assert_int_equal(vmm_list_ours(c, &l, &n), 0);
	vmm_domain_list_free(l, n);

	/* libvirtd "goes away" for about a second */
	atomic_store(&proxy_up, false);
	assert_true(wait_for(&n_disconnected, 1, 3000));
	assert_false(vmm_connected(c));
	assert_int_equal(vmm_list_ours(c, &l, &n), -ENOTCONN);
	assert_non_null(strstr(err_msg(), "not connected"));
	usleep(1000 * 1000); /* several failed attempts: 100, 200, 400 ms... */
	assert_int_equal(atomic_load(&n_reconnected), 0);
	t0 = time_mono_ms();
	atomic_store(&proxy_up, true);
	assert_true(wait_for(&n_reconnected, 1, 5000));
	took = time_mono_ms() - t0;
	/* the backoff after ~1 s of failures is 800 ms: not hammering, not asleep */
	assert_true(took < 2000);
	assert_true(vmm_connected(c));
	assert_int_equal(vmm_reconnects(c), 1);
	assert_int_equal(vmm_list_ours(c, &l, &n), 0);
	vmm_domain_list_free(l, n);
	vmm_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reconnect),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
