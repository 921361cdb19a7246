/*
 * The libvirt connection: lifecycle calls, the event loop thread, lifecycle
 * callbacks that tell a crash from a stop we asked for, and reconnect with
 * backoff when libvirtd goes away.
 *
 * Threads: callers use the connection from any thread; one event thread
 * per process (libvirt's loop is process-wide) runs virEventRunDefaultImpl(),
 * the callbacks and every connection's reconnect timer, for the life of the
 * process. c->lock guards c->conn (swapped on reconnect) and the stop
 * intents. Every registration (timer, domain events) holds
 * a reference on c that libvirt's free callback drops once no dispatch can
 * run it any more; vmm_close frees c only when none is left (a connection
 * closed beside another one's loop was freed under its timer's tick).
 */
#define LOG_TAG "vmm"
#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmm/vmm_priv.h"

#define MAX_INTENTS 256
#define MAX_REBOOT_WAITS 64 /* soft reboots in flight: one per agent worker, at most 64 */
#define INTENT_TTL_MS (10 * 60 * 1000)
#define TICK_MS 100
#define BACKOFF_MAX_MS 5000

const char *const vmm_event_names[] = {
	[VMM_EV_STARTED] = "started", [VMM_EV_STOPPED] = "stopped",
	[VMM_EV_SHUTDOWN] = "shutdown", [VMM_EV_CRASHED] = "crashed",
	[VMM_EV_REBOOTED] = "rebooted", [VMM_EV_DEFINED] = "defined",
	[VMM_EV_UNDEFINED] = "undefined", [VMM_EV_DISCONNECTED] = "disconnected",
	[VMM_EV_RECONNECTED] = "reconnected", [VMM_EV_LAST] = NULL,
};

const char *const vmm_power_names[] = {
	[VMM_POWER_NONE] = "none", [VMM_POWER_RUNNING] = "running", [VMM_POWER_PAUSED] = "paused",
	[VMM_POWER_SHUTOFF] = "shutoff", [VMM_POWER_CRASHED] = "crashed",
	[VMM_POWER_OTHER] = "other", [VMM_POWER_LAST] = NULL,
};

const char *const vmm_reboot_how_names[] = {
	[VMM_REBOOT_SOFT] = "soft", [VMM_REBOOT_HARD_TIMEOUT] = "hard_after_timeout",
	[VMM_REBOOT_HARD_REFUSED] = "hard_soft_refused",
	[VMM_REBOOT_HARD_POWEROFF] = "hard_after_poweroff", [VMM_REBOOT_HARD] = "hard",
	[VMM_REBOOT_LAST] = NULL,
};

struct intent {
	char uuid[UUID_STRLEN];
	int64_t until_ms;
};

/* A soft reboot waiting for the guest's reset: on_reboot sets seen. */
struct reboot_wait {
	char uuid[UUID_STRLEN]; /* "" = free */
	bool seen;
};

struct vmm_conn {
	char *uri;
	pthread_mutex_t lock;
	virConnectPtr conn;              /* NULL while disconnected */
	int lifecycle_id, reboot_id;
	vmm_event_fn cb;
	void *opaque;
	pthread_mutex_t refs_mu;         /* not c->lock: a free callback may run */
	pthread_cond_t refs_cv;          /* inside a deregistration made under it */
	int refs;                        /* registrations libvirt has not freed */
	atomic_bool stop;
	atomic_bool lost;                /* close callback fired */
	int timer;
	unsigned attempt;
	int64_t next_try_ms;
	atomic_uint reconnects;
	struct intent intents[MAX_INTENTS];
	struct reboot_wait waits[MAX_REBOOT_WAITS]; /* under lock */
};

/* ---- process-wide setup --------------------------------------------------- */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int once_result;
static pthread_t loop_thread;

static void quiet_errors(void *opaque, virErrorPtr e)
{
	(void)opaque;
	(void)e; /* errors are read with virGetLastError and reported by callers */
}

static void *event_thread(void *arg)
{
	(void)arg;
	for (;;)
		if (virEventRunDefaultImpl() < 0)
			usleep(10000); /* not expected; never spin */
	return NULL;
}

static void init_once(void)
{
	virSetErrorFunc(NULL, quiet_errors);
	once_result = virEventRegisterDefaultImpl();
	if (once_result == 0 && pthread_create(&loop_thread, NULL, event_thread, NULL) != 0)
		once_result = -1;
	else if (once_result == 0)
		pthread_detach(loop_thread);
}

/* A registration's reference on c: taken once registered, dropped by
 * libvirt's free callback. */
static void ref_take(struct vmm_conn *c)
{
	pthread_mutex_lock(&c->refs_mu);
	c->refs++;
	pthread_mutex_unlock(&c->refs_mu);
}

static void ref_drop(void *opaque)
{
	struct vmm_conn *c = opaque;

	pthread_mutex_lock(&c->refs_mu);
	c->refs--;
	pthread_cond_broadcast(&c->refs_cv);
	pthread_mutex_unlock(&c->refs_mu);
}

static int virt_err(int code, const char *fmt, ...) PRINTF_LIKE(2, 3);

/* err_set() with libvirt's last error appended. */
static int virt_err(int code, const char *fmt, ...)
{
	char what[512];
	const char *why = virGetLastErrorMessage();
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return err_set(code, "%s: %s", what, why ? why : "unknown libvirt error");
}

int64_t vmm_backoff_ms(unsigned attempt)
{
	int64_t ms = 100;

	for (unsigned i = 0; i < attempt && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

static void emit(struct vmm_conn *c, enum vmm_event ev, const char *uuid, const char *detail)
{
	log_debug("domain event event=%s instance=%s detail=%s", vmm_event_names[ev], uuid, detail);
	/* closing: the caller may free its opaque once vmm_close returns */
	if (c->cb && !atomic_load(&c->stop))
		c->cb(ev, uuid, detail, c->opaque);
}

/* ---- intents: stops we asked for ------------------------------------------ */
static void intent_add(struct vmm_conn *c, const char *uuid)
{
	int64_t now = time_mono_ms();
	struct intent *slot = NULL;

	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < MAX_INTENTS; i++) {
		struct intent *in = &c->intents[i];

		if (strcmp(in->uuid, uuid) == 0 || (!slot && (!in->uuid[0] || in->until_ms < now)))
			slot = in;
		if (strcmp(in->uuid, uuid) == 0)
			break;
	}
	if (slot) {
		snprintf(slot->uuid, sizeof(slot->uuid), "%s", uuid);
		slot->until_ms = now + INTENT_TTL_MS;
	}
	pthread_mutex_unlock(&c->lock);
}

/* Was this stop ours? Consumes the intent. */
static bool intent_take(struct vmm_conn *c, const char *uuid)
{
	bool ours = false;

	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < MAX_INTENTS; i++) {
		struct intent *in = &c->intents[i];

		if (strcmp(in->uuid, uuid) == 0) {
			ours = in->until_ms >= time_mono_ms();
			in->uuid[0] = '\0';
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return ours;
}

static void intent_drop(struct vmm_conn *c, const char *uuid)
{
	(void)intent_take(c, uuid);
}

/* ---- reboot waits ---------------------------------------------------------- */
/* A slot watching uuid's reboot events, or -EBUSY when all are taken. */
static int wait_arm(struct vmm_conn *c, const char *uuid)
{
	int slot = -EBUSY;

	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < MAX_REBOOT_WAITS; i++) {
		if (!c->waits[i].uuid[0]) {
			snprintf(c->waits[i].uuid, sizeof(c->waits[i].uuid), "%s", uuid);
			c->waits[i].seen = false;
			slot = i;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return slot;
}

static bool wait_seen(struct vmm_conn *c, int slot)
{
	bool seen;

	pthread_mutex_lock(&c->lock);
	seen = c->waits[slot].seen;
	pthread_mutex_unlock(&c->lock);
	return seen;
}

static void wait_disarm(struct vmm_conn *c, int slot)
{
	pthread_mutex_lock(&c->lock);
	c->waits[slot].uuid[0] = '\0';
	c->waits[slot].seen = false;
	pthread_mutex_unlock(&c->lock);
}

static void wait_mark(struct vmm_conn *c, const char *uuid)
{
	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < MAX_REBOOT_WAITS; i++)
		if (c->waits[i].uuid[0] && strcmp(c->waits[i].uuid, uuid) == 0)
			c->waits[i].seen = true;
	pthread_mutex_unlock(&c->lock);
}

/* ---- callbacks (event thread) ------------------------------------------------ */
static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
	struct vmm_conn *c = opaque;
	char uuid[VIR_UUID_STRING_BUFLEN];

	(void)conn;
	if (virDomainGetUUIDString(dom, uuid) < 0)
		return 0;
	switch ((virDomainEventType)event) {
	case VIR_DOMAIN_EVENT_STARTED:
	case VIR_DOMAIN_EVENT_RESUMED:
		emit(c, VMM_EV_STARTED, uuid, event == VIR_DOMAIN_EVENT_STARTED ? "booted" : "resumed");
		break;
	case VIR_DOMAIN_EVENT_STOPPED:
		if (intent_take(c, uuid))
			emit(c, VMM_EV_STOPPED, uuid, "stopped as asked");
		else if (detail == VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN)
			emit(c, VMM_EV_SHUTDOWN, uuid, "the guest powered off");
		else if (detail == VIR_DOMAIN_EVENT_STOPPED_CRASHED)
			emit(c, VMM_EV_CRASHED, uuid, "the guest crashed");
		else if (detail == VIR_DOMAIN_EVENT_STOPPED_FAILED)
			emit(c, VMM_EV_CRASHED, uuid, "QEMU failed");
		else if (detail == VIR_DOMAIN_EVENT_STOPPED_DESTROYED)
			emit(c, VMM_EV_CRASHED, uuid, "destroyed behind our back");
		else
			emit(c, VMM_EV_CRASHED, uuid, "stopped unexpectedly");
		break;
	case VIR_DOMAIN_EVENT_CRASHED:
		emit(c, VMM_EV_CRASHED, uuid, "the guest crashed");
		break;
	case VIR_DOMAIN_EVENT_DEFINED:
		emit(c, VMM_EV_DEFINED, uuid, "defined");
		break;
	case VIR_DOMAIN_EVENT_UNDEFINED:
		emit(c, VMM_EV_UNDEFINED, uuid, "undefined");
		break;
	case VIR_DOMAIN_EVENT_SUSPENDED:
	case VIR_DOMAIN_EVENT_SHUTDOWN:
	case VIR_DOMAIN_EVENT_PMSUSPENDED:
	case VIR_DOMAIN_EVENT_LAST:
		break;
	}
	return 0;
}

static void on_reboot(virConnectPtr conn, virDomainPtr dom, void *opaque)
{
	char uuid[VIR_UUID_STRING_BUFLEN];

	(void)conn;
	if (virDomainGetUUIDString(dom, uuid) < 0)
		return;
	wait_mark(opaque, uuid);
	emit(opaque, VMM_EV_REBOOTED, uuid, "rebooted");
}

static void on_close(virConnectPtr conn, int reason, void *opaque)
{
	struct vmm_conn *c = opaque;
	static const char *const why[] = { "error", "end of file", "keepalive timeout", "client" };

	(void)conn;
	if (atomic_exchange(&c->lost, true))
		return;
	log_warn("libvirt connection lost uri=%s reason=%s", c->uri,
		 reason >= 0 && reason < (int)ARRAY_SIZE(why) ? why[reason] : "?");
	emit(c, VMM_EV_DISCONNECTED, "", reason >= 0 && reason < (int)ARRAY_SIZE(why) ? why[reason] : "?");
}

/* Open and register; c->lock held by the caller or not yet shared. */
static int connect_locked(struct vmm_conn *c)
{
	virConnectPtr conn = virConnectOpen(c->uri);

	if (!conn)
		return virt_err(-ECONNREFUSED, "libvirt %s", c->uri);
	/* keepalive: a dead daemon is noticed within ~15 s even when idle */
	virConnectSetKeepAlive(conn, 5, 3);
	c->lifecycle_id = virConnectDomainEventRegisterAny(
		conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), c,
		ref_drop);
	if (c->lifecycle_id >= 0)
		ref_take(c);
	c->reboot_id = virConnectDomainEventRegisterAny(
		conn, NULL, VIR_DOMAIN_EVENT_ID_REBOOT, VIR_DOMAIN_EVENT_CALLBACK(on_reboot), c,
		ref_drop);
	if (c->reboot_id >= 0)
		ref_take(c);
	/* before the close callback: a close it reports must stay reported */
	atomic_store(&c->lost, false);
	/* no reference for this one: a driver without close callbacks (test)
	 * accepts it and never calls its free callback */
	if (virConnectRegisterCloseCallback(conn, on_close, c, NULL) < 0)
		virResetLastError();
	c->conn = conn;
	return 0;
}

static void disconnect_locked(struct vmm_conn *c)
{
	if (!c->conn)
		return;
	if (c->lifecycle_id >= 0)
		virConnectDomainEventDeregisterAny(c->conn, c->lifecycle_id);
	if (c->reboot_id >= 0)
		virConnectDomainEventDeregisterAny(c->conn, c->reboot_id);
	virConnectUnregisterCloseCallback(c->conn, on_close);
	virResetLastError();
	c->lifecycle_id = c->reboot_id = -1;
	virConnectClose(c->conn);
	c->conn = NULL;
}

/* The timer: reconnect with backoff once the close callback fired. */
static void on_tick(int timer, void *opaque)
{
	struct vmm_conn *c = opaque;
	int64_t now = time_mono_ms();
	bool back = false;

	(void)timer;
	if (atomic_load(&c->stop) || !atomic_load(&c->lost) || now < c->next_try_ms)
		return;
	pthread_mutex_lock(&c->lock);
	if (atomic_load(&c->stop)) { /* vmm_close disconnected it meanwhile */
		pthread_mutex_unlock(&c->lock);
		return;
	}
	disconnect_locked(c);
	if (connect_locked(c) == 0) {
		back = true;
		c->attempt = 0;
		atomic_fetch_add(&c->reconnects, 1);
	} else {
		atomic_store(&c->lost, true);
		c->next_try_ms = now + vmm_backoff_ms(c->attempt);
		log_debug("reconnect failed uri=%s attempt=%u next_ms=%lld err=%s", c->uri,
			  c->attempt, (long long)vmm_backoff_ms(c->attempt), err_msg());
		c->attempt++;
	}
	pthread_mutex_unlock(&c->lock);
	if (back) {
		log_info("libvirt connection re-established uri=%s", c->uri);
		emit(c, VMM_EV_RECONNECTED, "", "reconnected");
	}
}

int vmm_open(const char *uri, vmm_event_fn cb, void *opaque, struct vmm_conn **out)
{
	pthread_condattr_t ca;
	struct vmm_conn *c;
	int r;

	pthread_once(&once, init_once);
	if (once_result < 0)
		return virt_err(-EIO, "libvirt event loop");
	c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(-ENOMEM, "out of memory");
	c->uri = strdup(uri ? uri : "qemu:///system");
	c->cb = cb;
	c->opaque = opaque;
	c->lifecycle_id = c->reboot_id = -1;
	c->timer = -1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->refs_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the wait's bound: not the wall clock's */
	pthread_cond_init(&c->refs_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!c->uri) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	r = connect_locked(c);
	if (r < 0)
		goto fail;
	c->timer = virEventAddTimeout(TICK_MS, on_tick, c, ref_drop);
	if (c->timer < 0) {
		r = virt_err(-EIO, "libvirt timer");
		goto fail;
	}
	ref_take(c);
	*out = c;
	return 0;
fail:
	vmm_close(c);
	return r;
}

void vmm_close(struct vmm_conn *c)
{
	struct timespec until;
	int left;

	if (!c)
		return;
	atomic_store(&c->stop, true);
	if (c->timer >= 0)
		virEventRemoveTimeout(c->timer);
	pthread_mutex_lock(&c->lock);
	disconnect_locked(c);
	pthread_mutex_unlock(&c->lock);
	/* libvirt frees what was registered on the event thread, after any
	 * dispatch of it: wait for that before c goes (never on that thread) */
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&c->refs_mu);
	while (c->refs > 0 && !pthread_equal(pthread_self(), loop_thread) &&
	       pthread_cond_timedwait(&c->refs_cv, &c->refs_mu, &until) == 0)
		;
	left = c->refs;
	pthread_mutex_unlock(&c->refs_mu);
	if (left > 0) {
		/* kept, not freed: a callback may still reach it */
		log_warn("libvirt kept %d callback(s) of uri=%s: the connection's memory is kept",
			 left, c->uri);
		return;
	}
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->refs_mu);
	pthread_cond_destroy(&c->refs_cv);
	free(c->uri);
	free(c);
}

bool vmm_connected(struct vmm_conn *c)
{
	bool ok;

	pthread_mutex_lock(&c->lock);
	ok = c->conn && !atomic_load(&c->lost);
	pthread_mutex_unlock(&c->lock);
	return ok;
}

unsigned vmm_reconnects(struct vmm_conn *c)
{
	return atomic_load(&c->reconnects);
}

/* A reference to the current connection (virConnectClose() it), or NULL
 * with the error set. */
static virConnectPtr conn_get(struct vmm_conn *c)
{
	virConnectPtr conn = NULL;

	pthread_mutex_lock(&c->lock);
	if (c->conn && !atomic_load(&c->lost)) {
		conn = c->conn;
		virConnectRef(conn);
	}
	pthread_mutex_unlock(&c->lock);
	if (!conn)
		err_set(-ENOTCONN, "libvirt %s: not connected (reconnecting)", c->uri);
	return conn;
}

virConnectPtr vmm_conn_get(struct vmm_conn *c)
{
	return conn_get(c);
}

/* The domain of uuid, or NULL: *r = -ENOENT (not defined) or another error. */
static virDomainPtr dom_get(struct vmm_conn *c, const char *uuid, virConnectPtr *connp, int *r)
{
	virConnectPtr conn = conn_get(c);
	virDomainPtr d;

	*connp = conn;
	if (!conn) {
		*r = -ENOTCONN;
		return NULL;
	}
	d = virDomainLookupByUUIDString(conn, uuid);
	if (!d) {
		virErrorPtr e = virGetLastError();

		if (e && e->code == VIR_ERR_NO_DOMAIN) {
			*r = err_set(-ENOENT, "instance %s: no such domain", uuid);
			virResetLastError();
		} else {
			*r = virt_err(-EIO, "instance %s: lookup", uuid);
		}
	}
	return d;
}

virDomainPtr vmm_dom_lookup(struct vmm_conn *c, const char *uuid, virConnectPtr *connp, int *r)
{
	return dom_get(c, uuid, connp, r);
}

int vmm_define(struct vmm_conn *c, const char *xml)
{
	virConnectPtr conn = conn_get(c);
	virDomainPtr d;
	int r = 0;

	if (!conn)
		return -ENOTCONN;
	d = virDomainDefineXML(conn, xml);
	if (!d)
		r = virt_err(-EIO, "define domain"); /* before any other call resets the error */
	else
		virDomainFree(d);
	virConnectClose(conn);
	return r;
}

int vmm_start(struct vmm_conn *c, const char *uuid)
{
	virConnectPtr conn;
	int r = 0;
	virDomainPtr d = dom_get(c, uuid, &conn, &r);

	if (d) {
		if (virDomainIsActive(d) != 1 && virDomainCreate(d) < 0)
			r = virt_err(-EIO, "instance %s: start", uuid);
		virDomainFree(d);
	}
	if (conn)
		virConnectClose(conn);
	return r;
}

int vmm_power_of(virDomainPtr d, enum vmm_power *out)
{
	int state, reason;

	if (virDomainGetState(d, &state, &reason, 0) < 0)
		return -EIO;
	switch ((virDomainState)state) {
	case VIR_DOMAIN_RUNNING:
	case VIR_DOMAIN_BLOCKED:
		*out = VMM_POWER_RUNNING;
		break;
	case VIR_DOMAIN_PAUSED:
	case VIR_DOMAIN_PMSUSPENDED:
		*out = VMM_POWER_PAUSED;
		break;
	case VIR_DOMAIN_SHUTOFF:
		*out = VMM_POWER_SHUTOFF;
		break;
	case VIR_DOMAIN_CRASHED:
		*out = VMM_POWER_CRASHED;
		break;
	case VIR_DOMAIN_NOSTATE:
	case VIR_DOMAIN_SHUTDOWN:
	case VIR_DOMAIN_LAST:
	default:
		*out = VMM_POWER_OTHER;
		break;
	}
	return 0;
}

int vmm_power_state(struct vmm_conn *c, const char *uuid, enum vmm_power *out)
{
	virConnectPtr conn;
	int r = 0;
	virDomainPtr d = dom_get(c, uuid, &conn, &r);

	if (d) {
		if (vmm_power_of(d, out) < 0)
			r = virt_err(-EIO, "instance %s: state", uuid);
		virDomainFree(d);
	} else if (r == -ENOENT) {
		err_clear();
		*out = VMM_POWER_NONE;
		r = 0;
	}
	if (conn)
		virConnectClose(conn);
	return r;
}

static int destroy_dom(struct vmm_conn *c, virDomainPtr d, const char *uuid)
{
	if (virDomainIsActive(d) != 1)
		return 0;
	intent_add(c, uuid);
	if (virDomainDestroy(d) < 0) {
		intent_drop(c, uuid);
		if (virDomainIsActive(d) == 0) /* it went away by itself meanwhile */
			return 0;
		return virt_err(-EIO, "instance %s: destroy", uuid);
	}
	return 0;
}

int vmm_destroy(struct vmm_conn *c, const char *uuid)
{
	virConnectPtr conn;
	int r = 0;
	virDomainPtr d = dom_get(c, uuid, &conn, &r);

	if (d) {
		r = destroy_dom(c, d, uuid);
		virDomainFree(d);
	}
	if (conn)
		virConnectClose(conn);
	return r;
}

int vmm_stop(struct vmm_conn *c, const char *uuid, int64_t timeout_ms, bool *forced)
{
	virConnectPtr conn;
	int r = 0;
	virDomainPtr d = dom_get(c, uuid, &conn, &r);
	int64_t until = time_mono_ms() + timeout_ms;
	bool destroyed = false;

	if (!d)
		goto out;
	if (virDomainIsActive(d) != 1)
		goto out;
	intent_add(c, uuid);
	if (virDomainShutdownFlags(d, VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) < 0 &&
	    virDomainShutdown(d) < 0)
		virResetLastError(); /* no ACPI: the timeout and destroy handle it */
	while (virDomainIsActive(d) == 1 && time_mono_ms() < until) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };

		nanosleep(&ts, NULL);
	}
	if (virDomainIsActive(d) == 1) {
		log_info("graceful shutdown timed out, destroying instance=%s timeout_ms=%lld", uuid,
			 (long long)timeout_ms);
		r = destroy_dom(c, d, uuid);
		destroyed = r == 0;
	}
out:
	if (d)
		virDomainFree(d);
	if (conn)
		virConnectClose(conn);
	if (r == 0 && forced)
		*forced = destroyed;
	return r;
}

/* Reset, or power-cycle the persistent definition where the driver has no
 * reset (its disks and NVRAM are files of the definition: they stay). */
static int hard_reboot(struct vmm_conn *c, virDomainPtr d, const char *uuid)
{
	virErrorPtr e;
	int r;

	if (virDomainIsActive(d) == 1) {
		if (virDomainReset(d, 0) == 0)
			return 0;
		e = virGetLastError();
		if (!e || (e->code != VIR_ERR_NO_SUPPORT && e->code != VIR_ERR_OPERATION_UNSUPPORTED))
			return virt_err(-EIO, "instance %s: reset", uuid);
		virResetLastError();
		if ((r = destroy_dom(c, d, uuid)) < 0)
			return r;
	}
	/* off (the guest powered off instead of rebooting, or destroyed above) */
	if (virDomainCreate(d) < 0)
		return virt_err(-EIO, "instance %s: start for a hard reboot", uuid);
	return 0;
}

/* Ask the guest, wait for its reset event up to timeout_ms: VMM_REBOOT_SOFT
 * when it came, else the hard reboot's reason. */
static enum vmm_reboot_how soft_reboot(struct vmm_conn *c, virDomainPtr d, const char *uuid,
				       int64_t timeout_ms)
{
	int64_t until = time_mono_ms() + timeout_ms;
	int slot = wait_arm(c, uuid);
	enum vmm_reboot_how how = VMM_REBOOT_HARD_TIMEOUT;

	if (slot < 0) { /* more waits than workers: cannot see the event */
		log_warn("no reboot wait slot free: hard reboot instance=%s", uuid);
		return VMM_REBOOT_HARD_REFUSED;
	}
	if (virDomainReboot(d, 0) < 0) {
		log_info("soft reboot refused, resetting instance=%s: %s", uuid,
			 virGetLastErrorMessage());
		virResetLastError();
		how = VMM_REBOOT_HARD_REFUSED;
		goto out;
	}
	for (;;) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };

		if (wait_seen(c, slot)) {
			how = VMM_REBOOT_SOFT;
			break;
		}
		if (virDomainIsActive(d) != 1) {
			log_info("the guest powered off during its soft reboot, starting it "
				 "instance=%s", uuid);
			how = VMM_REBOOT_HARD_POWEROFF;
			break;
		}
		if (time_mono_ms() >= until) {
			log_info("no guest reboot within the timeout, resetting instance=%s "
				 "timeout_ms=%lld", uuid, (long long)timeout_ms);
			break;
		}
		nanosleep(&ts, NULL);
	}
out:
	wait_disarm(c, slot);
	return how;
}

int vmm_reboot(struct vmm_conn *c, const char *uuid, bool hard, int64_t timeout_ms,
	       enum vmm_reboot_how *how)
{
	virConnectPtr conn;
	int r = 0;
	virDomainPtr d = dom_get(c, uuid, &conn, &r);
	enum vmm_reboot_how done = VMM_REBOOT_HARD;

	if (!d)
		goto out;
	if (virDomainIsActive(d) != 1) {
		r = err_set(-EINVAL, "instance %s: not running: cannot reboot", uuid);
		goto out;
	}
	if (!hard && (done = soft_reboot(c, d, uuid, timeout_ms)) == VMM_REBOOT_SOFT)
		goto out;
	r = hard_reboot(c, d, uuid);
out:
	if (d)
		virDomainFree(d);
	if (conn)
		virConnectClose(conn);
	if (r == 0 && how)
		*how = done;
	return r;
}

int vmm_undefine(struct vmm_conn *c, const char *uuid)
{
	virConnectPtr conn;
	int r = 0;
	virDomainPtr d = dom_get(c, uuid, &conn, &r);

	if (!d) {
		if (r == -ENOENT) {
			err_clear();
			r = 0;
		}
		goto out;
	}
	r = destroy_dom(c, d, uuid);
	if (r < 0)
		goto out;
	if (virDomainUndefineFlags(d, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
				      VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
				      VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA |
				      VIR_DOMAIN_UNDEFINE_NVRAM) < 0) {
		/* drivers without some of these flags: plain undefine */
		virResetLastError();
		if (virDomainUndefine(d) < 0)
			r = virt_err(-EIO, "instance %s: undefine", uuid);
	}
out:
	if (d)
		virDomainFree(d);
	if (conn)
		virConnectClose(conn);
	return r;
}

/* ---- ours ---------------------------------------------------------------- */
static char *child_text(xmlNodePtr parent, const char *name, const char *attr_name)
{
	for (xmlNodePtr n = parent->children; n; n = n->next) {
		xmlChar *v;
		char *s;

		if (n->type != XML_ELEMENT_NODE || strcmp((const char *)n->name, name) != 0)
			continue;
		v = attr_name ? xmlGetProp(n, (const xmlChar *)attr_name) : xmlNodeGetContent(n);
		s = v ? strdup((const char *)v) : NULL;
		xmlFree(v);
		return s;
	}
	return NULL;
}

/* Our metadata element: 0 and the fields when present, -ENOENT when absent
 * (or unreadable: then the domain is not ours either). */
static int our_metadata(virDomainPtr d, struct vmm_domain_info *info)
{
	char *md = virDomainGetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, VMM_XMLNS, 0);
	xmlDocPtr doc;
	xmlNodePtr root;

	if (!md) {
		virResetLastError();
		return -ENOENT;
	}
	doc = xmlReadMemory(md, (int)strlen(md), "metadata.xml", NULL,
			    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	free(md);
	if (!doc)
		return -ENOENT;
	root = xmlDocGetRootElement(doc);
	if (root) {
		info->project = child_text(root, "project", NULL);
		info->flavor = child_text(root, "flavor", "name");
	}
	xmlFreeDoc(doc);
	return 0;
}

int vmm_list_ours(struct vmm_conn *c, struct vmm_domain_info **out, size_t *n)
{
	virConnectPtr conn = conn_get(c);
	virDomainPtr *doms = NULL;
	struct vmm_domain_info *l = NULL;
	size_t k = 0;
	int nd, r = 0;

	if (!conn)
		return -ENOTCONN;
	nd = virConnectListAllDomains(conn, &doms, 0);
	if (nd < 0) {
		r = virt_err(-EIO, "list domains");
		goto out;
	}
	l = calloc((size_t)nd + 1, sizeof(*l));
	if (!l) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < nd; i++) {
		struct vmm_domain_info *info = &l[k];
		const char *name;

		if (our_metadata(doms[i], info) < 0)
			continue; /* not a Stratus domain */
		name = virDomainGetName(doms[i]);
		info->name = strdup(name ? name : "");
		virDomainGetUUIDString(doms[i], info->uuid);
		if (vmm_power_of(doms[i], &info->power) < 0) {
			virResetLastError();
			info->power = VMM_POWER_OTHER;
		}
		k++;
	}
	*out = l;
	*n = k;
	l = NULL;
out:
	for (int i = 0; i < nd; i++)
		virDomainFree(doms[i]);
	free(doms);
	vmm_domain_list_free(l, k);
	virConnectClose(conn);
	return r;
}

void vmm_domain_list_free(struct vmm_domain_info *l, size_t n)
{
	if (!l)
		return;
	for (size_t i = 0; i < n; i++) {
		free(l[i].name);
		free(l[i].project);
		free(l[i].flavor);
	}
	free(l);
}

/* ---- stats -------------------------------------------------------------------- */
int vmm_stats_collect(struct vmm_conn *c, struct vmm_dom_stats **out, size_t *n)
{
	virConnectPtr conn = conn_get(c);
	virDomainStatsRecordPtr *recs = NULL;
	struct vmm_dom_stats *s = NULL;
	int nr, k = 0, r = 0;
	int64_t now = time_mono_ns();

	if (!conn)
		return -ENOTCONN;
	nr = virConnectGetAllDomainStats(conn, VMM_STATS_TYPES, &recs, 0);
	if (nr < 0) {
		r = virt_err(-EIO, "domain stats");
		goto out;
	}
	s = calloc((size_t)nr + 1, sizeof(*s));
	if (!s) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < nr; i++) {
		const char *name = virDomainGetName(recs[i]->dom);

		/* ours by name: one metadata round trip per domain would cost
		 * more than the stats themselves */
		if (!name || strncmp(name, VMM_DOMAIN_PREFIX, strlen(VMM_DOMAIN_PREFIX)) != 0)
			continue;
		virDomainGetUUIDString(recs[i]->dom, s[k].uuid);
		s[k].ts_ns = now;
		vmm_stats_from_params(recs[i]->params, recs[i]->nparams, &s[k]);
		if (s[k].n_vcpus == 0 || s[k].mem_actual_kib == 0) {
			/* no vcpu/balloon stats (a domain off, the test driver): its definition */
			virDomainInfo info;

			if (virDomainGetInfo(recs[i]->dom, &info) == 0) {
				if (s[k].n_vcpus == 0)
					s[k].n_vcpus = info.nrVirtCpu < VMM_MAX_VCPU_STATS
							       ? (int)info.nrVirtCpu : VMM_MAX_VCPU_STATS;
				if (s[k].mem_actual_kib == 0)
					s[k].mem_actual_kib = info.memory;
			}
		}
		k++;
	}
	*out = s;
	*n = (size_t)k;
	s = NULL;
out:
	if (recs)
		virDomainStatsRecordListFree(recs);
	free(s);
	virConnectClose(conn);
	return r;
}

virDomainPtr vmm_conn_domain(struct vmm_conn *c, const char *uuid, virConnectPtr *connp, int *r)
{
	return dom_get(c, uuid, connp, r);
}

void vmm_conn_intent(struct vmm_conn *c, const char *uuid)
{
	intent_add(c, uuid);
}
