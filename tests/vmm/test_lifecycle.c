/*
 * Lifecycle against libvirt's test driver (test:///default, in process):
 * define, start, graceful stop, reboot, a destroy behind our back seen as
 * a crash, undefine, listing ours by the metadata element, bulk stats;
 * the end of an interrupted cold move (finish or roll back) by both states.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmm/vmm_priv.h"

#define MAX_EV 64

static struct {
	pthread_mutex_t lock;
	int n;
	enum vmm_event ev[MAX_EV];
	char uuid[MAX_EV][UUID_STRLEN];
	char detail[MAX_EV][64];
} evs = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void on_event(enum vmm_event ev, const char *uuid, const char *detail, void *opaque)
{
	(void)opaque;
	pthread_mutex_lock(&evs.lock);
	if (evs.n < MAX_EV) {
		evs.ev[evs.n] = ev;
		snprintf(evs.uuid[evs.n], UUID_STRLEN, "%s", uuid);
		snprintf(evs.detail[evs.n], 64, "%s", detail);
		evs.n++;
	}
	pthread_mutex_unlock(&evs.lock);
}

/* Wait up to 3 s for event ev of uuid; returns its detail ("" if none came). */
static const char *wait_event(enum vmm_event ev, const char *uuid)
{
	static char found[64];

	for (int tries = 0; tries < 300; tries++) {
		pthread_mutex_lock(&evs.lock);
		for (int i = 0; i < evs.n; i++) {
			if (evs.ev[i] == ev && strcmp(evs.uuid[i], uuid) == 0) {
				snprintf(found, sizeof(found), "%s", evs.detail[i]);
				/* consume it */
				evs.ev[i] = VMM_EV_LAST;
				pthread_mutex_unlock(&evs.lock);
				return found;
			}
		}
		pthread_mutex_unlock(&evs.lock);
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
	return "";
}

static char *render(struct instance_spec *s, const char *uuid)
{
	struct vmm_topology *t = NULL;
	struct vmm_placement p = { 0 };
	struct vmm_domain_params pp = { .virt = VMM_VIRT_QEMU,
					.disk_path = "/var/lib/stratus/instances/x/disk.qcow2",
					.seed_path = "/var/lib/stratus/instances/x/seed.iso",
					.seed_format = VMM_SEED_ISO,
					.console_log = "/tmp/x.log" };
	char *xml = NULL;

	assert_int_equal(model_spec_parse_file("tests/data/spec-basic.json", s), 0);
	snprintf(s->uuid, sizeof(s->uuid), "%s", uuid);
	assert_int_equal(vmm_topology_load("tests/vmm/sysfs/1node", &t), 0);
	assert_int_equal(vmm_fit(t, NULL, NULL, s, &p), 0);
	assert_int_equal(vmm_domain_xml(s, &p, &pp, &xml), 0);
	vmm_placement_free(&p);
	vmm_topology_free(t);
	return xml;
}

/* Another client powers the domain off 100 ms into a soft reboot's wait:
 * as a guest that shuts down when asked to reboot. */
static void *power_off_later(void *uuid)
{
	struct timespec ts = { 0, 100 * 1000 * 1000 };
	virConnectPtr other = virConnectOpen("test:///default");
	virDomainPtr d = other ? virDomainLookupByUUIDString(other, uuid) : NULL;

	nanosleep(&ts, NULL);
	if (d) {
		virDomainDestroy(d);
		virDomainFree(d);
	}
	if (other)
		virConnectClose(other);
	return NULL;
}

static void test_lifecycle(void **state)
{
#define UUID_LC "6a1f7f3c-1111-4222-8333-444455556666"
	const char *uuid = UUID_LC;
	struct instance_spec s;
	enum vmm_reboot_how how = VMM_REBOOT_LAST;
	int64_t t0;
	struct vmm_conn *c = NULL;
	struct vmm_domain_info *l = NULL;
	enum vmm_power pw;
	size_t n = 0;
	bool forced = true;
	char *xml = render(&s, uuid);
	virConnectPtr other;
	virDomainPtr d;

	(void)state;
	assert_int_equal(vmm_open("test:///default", on_event, NULL, &c), 0);
	assert_true(vmm_connected(c));

	/* not defined yet */
	assert_int_equal(vmm_power_state(c, uuid, &pw), 0);
	assert_int_equal(pw, VMM_POWER_NONE);
	assert_int_equal(vmm_start(c, uuid), -ENOENT);

	assert_int_equal(vmm_define(c, xml), 0);
	assert_string_equal(wait_event(VMM_EV_DEFINED, uuid), "defined");
	assert_int_equal(vmm_define(c, xml), 0); /* redefine: idempotent */
	assert_int_equal(vmm_start(c, uuid), 0);
	assert_string_equal(wait_event(VMM_EV_STARTED, uuid), "booted");
	assert_int_equal(vmm_start(c, uuid), 0); /* already running: fine */
	assert_int_equal(vmm_power_state(c, uuid, &pw), 0);
	assert_int_equal(pw, VMM_POWER_RUNNING);

	/* ours: the test driver's own "test" domain is not */
	assert_int_equal(vmm_list_ours(c, &l, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(l[0].uuid, uuid);
	assert_string_equal(l[0].name, "stratus-6a1f7f3c-1111-4222-8333-444455556666");
	assert_string_equal(l[0].project, "acme");
	assert_string_equal(l[0].flavor, "m1.pinned");
	assert_int_equal(l[0].power, VMM_POWER_RUNNING);
	vmm_domain_list_free(l, n);

	/* stats */
	{
		struct vmm_dom_stats *st = NULL;
		size_t ns = 0;

		assert_int_equal(vmm_stats_collect(c, &st, &ns), 0);
		assert_int_equal(ns, 1);
		assert_string_equal(st[0].uuid, uuid);
		assert_true(st[0].running);
		/* the test driver reports state only; the real guest test
		 * (test_real_guest.sh) checks cpu, vcpu delay, memory, block */
		free(st);
	}

	/* graceful stop: the test driver shuts down at once */
	assert_int_equal(vmm_stop(c, uuid, 2000, &forced), 0);
	assert_false(forced);
	assert_string_equal(wait_event(VMM_EV_STOPPED, uuid), "stopped as asked");
	assert_int_equal(vmm_power_state(c, uuid, &pw), 0);
	assert_int_equal(pw, VMM_POWER_SHUTOFF);
	assert_int_equal(vmm_stop(c, uuid, 2000, &forced), 0); /* already off */

	/* reboot of a stopped domain: refused, nothing started */
	assert_int_equal(vmm_reboot(c, uuid, false, 300, &how), -EINVAL);
	assert_string_equal(err_msg(), "instance " UUID_LC ": not running: cannot reboot");
	assert_int_equal(vmm_power_state(c, uuid, &pw), 0);
	assert_int_equal(pw, VMM_POWER_SHUTOFF);

	assert_int_equal(vmm_start(c, uuid), 0);
	/* soft: the test driver's virDomainReboot succeeds but sends no reboot
	 * event, as a guest that ignores ACPI: the timeout passes, then a reset */
	how = VMM_REBOOT_LAST;
	t0 = time_mono_ms();
	assert_int_equal(vmm_reboot(c, uuid, false, 300, &how), 0);
	assert_int_equal(how, VMM_REBOOT_HARD_TIMEOUT);
	assert_true(time_mono_ms() - t0 >= 300);
	assert_int_equal(vmm_power_state(c, uuid, &pw), 0);
	assert_int_equal(pw, VMM_POWER_RUNNING);
	/* the guest powers off instead of rebooting: seen at once (not after
	 * the timeout), started again, and said so */
	{
		static char target[] = UUID_LC;
		pthread_t th;

		how = VMM_REBOOT_LAST;
		t0 = time_mono_ms();
		assert_int_equal(pthread_create(&th, NULL, power_off_later, target), 0);
		assert_int_equal(vmm_reboot(c, uuid, false, 10000, &how), 0);
		pthread_join(th, NULL);
		assert_int_equal(how, VMM_REBOOT_HARD_POWEROFF);
		assert_string_equal(vmm_reboot_how_names[how], "hard_after_poweroff");
		assert_true(time_mono_ms() - t0 < 5000);
		assert_int_equal(vmm_power_state(c, uuid, &pw), 0);
		assert_int_equal(pw, VMM_POWER_RUNNING);
	}
	/* hard: no soft step, no wait */
	how = VMM_REBOOT_LAST;
	t0 = time_mono_ms();
	assert_int_equal(vmm_reboot(c, uuid, true, 5000, &how), 0);
	assert_int_equal(how, VMM_REBOOT_HARD);
	assert_true(time_mono_ms() - t0 < 2000);
	assert_int_equal(vmm_power_state(c, uuid, &pw), 0);
	assert_int_equal(pw, VMM_POWER_RUNNING);

	/* destroyed behind our back (another client): a crash, not a stop */
	other = virConnectOpen("test:///default");
	assert_non_null(other);
	d = virDomainLookupByUUIDString(other, uuid);
	assert_non_null(d);
	assert_int_equal(virDomainDestroy(d), 0);
	virDomainFree(d);
	virConnectClose(other);
	assert_string_equal(wait_event(VMM_EV_CRASHED, uuid), "destroyed behind our back");

	/* undefine a running domain: destroyed (as asked) then gone */
	assert_int_equal(vmm_start(c, uuid), 0);
	assert_int_equal(vmm_undefine(c, uuid), 0);
	assert_string_equal(wait_event(VMM_EV_STOPPED, uuid), "stopped as asked");
	assert_string_equal(wait_event(VMM_EV_UNDEFINED, uuid), "undefined");
	assert_int_equal(vmm_power_state(c, uuid, &pw), 0);
	assert_int_equal(pw, VMM_POWER_NONE);
	assert_int_equal(vmm_undefine(c, uuid), 0); /* gone already: fine */
	assert_int_equal(vmm_list_ours(c, &l, &n), 0);
	assert_int_equal(n, 0);
	vmm_domain_list_free(l, n);

	vmm_close(c);
	free(xml);
	model_spec_free(&s);
}

/* Stop with a zero timeout still ends with the domain off (the test
 * driver's shutdown is immediate; the real guest test waits for ACPI). */
static void test_stop_timeout(void **state)
{
	const char *uuid = "6a1f7f3c-1111-4222-8333-444455556667";
	struct instance_spec s;
	struct vmm_conn *c = NULL;
	bool forced = false;
	char *xml = render(&s, uuid);

	(void)state;
	assert_int_equal(vmm_open("test:///default", NULL, NULL, &c), 0);
	assert_int_equal(vmm_define(c, xml), 0);
	assert_int_equal(vmm_start(c, uuid), 0);
	assert_int_equal(vmm_stop(c, uuid, 0, &forced), 0);
	{
		enum vmm_power pw;

		assert_int_equal(vmm_power_state(c, uuid, &pw), 0);
		assert_int_equal(pw, VMM_POWER_SHUTOFF);
	}
	assert_int_equal(vmm_undefine(c, uuid), 0);
	vmm_close(c);
	free(xml);
	model_spec_free(&s);
}

static void test_bad_uri(void **state)
{
	struct vmm_conn *c = NULL;

	(void)state;
	assert_true(vmm_open("nosuchdriver:///x", NULL, NULL, &c) < 0);
	assert_null(c);
	assert_non_null(strstr(err_msg(), "libvirt nosuchdriver:///x"));
}

/* ---- an interrupted cold move's end (vmm_migrate_cold_finish/_rollback) ----
 * The source: a private test driver from a node file (its domain paused, the
 * copy's, or shut off: test:runstate); the destination: test:///default,
 * held open here so its state lasts across the helpers' connections. */
#define COLD_UUID "6c1d2e3f-4a5b-4c6d-8e7f-901234567890"
#define DEFAULT_TEST_UUID "6695eb01-f6a4-8304-79aa-97f2502e193f" /* test:///default's "test" */

static char *cold_src_uri(char *path, size_t n, int runstate)
{
	static char uri[300];
	FILE *f;
	int fd;

	snprintf(path, n, "/tmp/stratus-coldsrc-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fprintf(f, "<node><domain type='test' "
		   "xmlns:test='http://libvirt.org/schemas/domain/test/1.0'><name>cold</name>"
		   "<uuid>%s</uuid><memory>262144</memory><vcpu>1</vcpu><os><type>hvm</type>"
		   "</os><test:runstate>%d</test:runstate></domain></node>\n", COLD_UUID, runstate);
	fclose(f);
	snprintf(uri, sizeof(uri), "test://%s", path);
	return uri;
}

/* The destination's copy: defined, started, then paused (state 3) or left
 * running (1) or shut off (5), as the copy and the boot leave it. */
static void cold_dest(virConnectPtr d, int state)
{
	char xml[512];
	virDomainPtr dom;

	snprintf(xml, sizeof(xml), "<domain type='test'><name>cold</name><uuid>%s</uuid>"
		 "<memory>262144</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>",
		 COLD_UUID);
	dom = virDomainDefineXML(d, xml);
	assert_non_null(dom);
	if (state != 5)
		assert_int_equal(virDomainCreate(dom), 0);
	if (state == 3)
		assert_int_equal(virDomainSuspend(dom), 0);
	virDomainFree(dom);
}

static void cold_dest_gone(virConnectPtr d)
{
	virDomainPtr dom = virDomainLookupByUUIDString(d, COLD_UUID);

	if (!dom) {
		virResetLastError();
		return;
	}
	if (virDomainIsActive(dom) == 1)
		virDomainDestroy(dom);
	virDomainUndefine(dom);
	virDomainFree(dom);
}

static void test_cold_settle(void **state)
{
	static const struct {
		const char *what;
		int src, dst;	     /* test:runstate here; there: 0 absent, 1, 3, 5 */
		bool finish, arg;    /* finish(boot = arg) or rollback(was_running = arg) */
		enum vmm_power want_src, want_dst; /* VMM_POWER_NONE there: undefined */
	} cases[] = {
		{ "paused copy arrived, ran: booted there", 5, 3, true, true, VMM_POWER_SHUTOFF,
		  VMM_POWER_RUNNING },
		{ "paused copy arrived, was stopped: off there", 5, 3, true, false,
		  VMM_POWER_SHUTOFF, VMM_POWER_SHUTOFF },
		{ "copy destroyed, boot pending", 5, 5, true, true, VMM_POWER_SHUTOFF,
		  VMM_POWER_RUNNING },
		{ "booted there already: left running", 5, 1, true, true, VMM_POWER_SHUTOFF,
		  VMM_POWER_RUNNING },
		{ "source paused, copy there too: finish destroys the source's", 3, 3, true, true,
		  VMM_POWER_SHUTOFF, VMM_POWER_RUNNING },
		{ "source paused mid-copy, ran: running here again", 3, 3, false, true,
		  VMM_POWER_RUNNING, VMM_POWER_NONE },
		{ "source paused, was stopped: off here", 3, 0, false, false, VMM_POWER_SHUTOFF,
		  VMM_POWER_NONE },
		{ "source off, nothing there, ran: started here", 5, 0, false, true,
		  VMM_POWER_RUNNING, VMM_POWER_NONE },
		{ "source running (never stopped): left running", 1, 3, false, true,
		  VMM_POWER_RUNNING, VMM_POWER_NONE },
	};
	virConnectPtr dest = virConnectOpen("test:///default");

	(void)state;
	assert_non_null(dest);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[64];
		const char *uri = cold_src_uri(path, sizeof(path), cases[i].src);
		struct vmm_conn *c = NULL;
		enum vmm_power pw = VMM_POWER_LAST;

		print_message("cold settle: %s\n", cases[i].what);
		assert_int_equal(vmm_open(uri, NULL, NULL, &c), 0);
		if (cases[i].dst)
			cold_dest(dest, cases[i].dst);
		if (cases[i].finish)
			assert_int_equal(vmm_migrate_cold_finish(c, "test:///default", COLD_UUID,
								 cases[i].arg), 0);
		else
			assert_int_equal(vmm_migrate_cold_rollback(c, "test:///default", COLD_UUID,
								   cases[i].arg), 0);
		assert_int_equal(vmm_power_state(c, COLD_UUID, &pw), 0);
		assert_int_equal(pw, cases[i].want_src);
		assert_int_equal(vmm_remote_power("test:///default", COLD_UUID, &pw), 0);
		assert_int_equal(pw, cases[i].want_dst);
		cold_dest_gone(dest);
		vmm_close(c);
		unlink(path);
	}
	virConnectClose(dest);
}

/* Refused: nothing to finish there; one libvirtd at both ends; unreachable. */
static void test_cold_settle_refused(void **state)
{
	char path[64];
	const char *uri = cold_src_uri(path, sizeof(path), 3);
	struct vmm_conn *c = NULL, *same = NULL;
	enum vmm_power pw = VMM_POWER_LAST;

	(void)state;
	assert_int_equal(vmm_open(uri, NULL, NULL, &c), 0);
	assert_int_equal(vmm_migrate_cold_finish(c, "test:///default", COLD_UUID, true), -ENOENT);
	assert_non_null(strstr(err_msg(), "no copy on test:///default to finish the cold move"));
	assert_int_equal(vmm_power_state(c, COLD_UUID, &pw), 0);
	assert_int_equal(pw, VMM_POWER_PAUSED); /* untouched */
	/* an interrupted copy: the incoming domain there is transient (libvirt
	 * defines it only when its finish succeeded): not finished, nothing
	 * destroyed on either side */
	{
		char xml[512];
		virConnectPtr dest = virConnectOpen("test:///default");
		virDomainPtr dom;

		assert_non_null(dest);
		snprintf(xml, sizeof(xml), "<domain type='test'><name>cold</name><uuid>%s</uuid>"
			 "<memory>262144</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>",
			 COLD_UUID);
		dom = virDomainCreateXML(dest, xml, 0); /* transient, then paused */
		assert_non_null(dom);
		assert_int_equal(virDomainSuspend(dom), 0);
		assert_int_equal(vmm_migrate_cold_finish(c, "test:///default", COLD_UUID, true),
				 -EAGAIN);
		assert_non_null(strstr(err_msg(), "is incomplete (not persistent)"));
		assert_int_equal(vmm_power_state(c, COLD_UUID, &pw), 0);
		assert_int_equal(pw, VMM_POWER_PAUSED);
		assert_int_equal(vmm_remote_power("test:///default", COLD_UUID, &pw), 0);
		assert_int_equal(pw, VMM_POWER_PAUSED);
		virDomainDestroy(dom);
		virDomainFree(dom);
		virConnectClose(dest);
	}
	assert_int_equal(vmm_open("test:///default", NULL, NULL, &same), 0);
	assert_int_equal(vmm_migrate_cold_rollback(same, "test:///default", COLD_UUID, true),
			 -EINVAL);
	assert_non_null(strstr(err_msg(), "the destination test:///default is this host's libvirtd"));
	/* the default domain "test": both ends are it */
	assert_int_equal(vmm_migrate_cold_finish(same, "test:///default", DEFAULT_TEST_UUID, true),
			 -EINVAL);
	assert_true(vmm_remote_power("nosuchdriver:///x", COLD_UUID, &pw) < 0);
	assert_non_null(strstr(err_msg(), "libvirt nosuchdriver:///x"));
	/* the destination unreachable: still refused, but a source still paused
	 * for the copy never completed it, so it runs again here (it was
	 * running) instead of staying frozen while reported active */
	assert_true(vmm_migrate_cold_rollback(c, "nosuchdriver:///x", COLD_UUID, true) < 0);
	assert_non_null(strstr(err_msg(), "libvirt nosuchdriver:///x"));
	assert_int_equal(vmm_power_state(c, COLD_UUID, &pw), 0);
	assert_int_equal(pw, VMM_POWER_RUNNING);
	vmm_close(same);
	vmm_close(c);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_stop_timeout),
		cmocka_unit_test(test_bad_uri),
		cmocka_unit_test(test_cold_settle),
		cmocka_unit_test(test_cold_settle_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
