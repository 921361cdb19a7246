/*
 * Live migration with libvirt (issue 15): peer to peer, the local disks
 * copied (NON_SHARED_INC: the destination has the overlay on the same
 * base), the destination's domain XML given (its pinning, its paths).
 *
 * Bounded downtime as Nova bounds it: the maximum downtime is reached in
 * steps (vmm_downtime_steps), a completion timeout ends a migration that
 * does not converge with an action (abort, pause, or post-copy), and
 * auto-converge throttles a guest that dirties memory faster than it moves.
 * A monitor thread polls the job while virDomainMigrateToURI3 blocks.
 */
#define LOG_TAG "vmm"
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vmm/vmm_priv.h"

const char *const vmm_migrate_action_names[] = {
	[VMM_MIG_ABORT] = "abort",
	[VMM_MIG_PAUSE] = "pause",
	[VMM_MIG_POSTCOPY] = "postcopy",
	[VMM_MIG_ACTION_LAST] = NULL,
};

static int mig_err(int code, const char *fmt, ...) PRINTF_LIKE(2, 3);

static int mig_err(int code, const char *fmt, ...)
{
	char what[512];
	const char *why = virGetLastErrorMessage();
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return err_set(code, "%s: %s", what, why ? why : "unknown libvirt error");
}

size_t vmm_downtime_steps(long max_ms, int steps, int64_t delay_ms, struct vmm_downtime_step *out,
			  size_t max_out)
{
	double base, offset;
	size_t n = 0;

	if (steps < 1)
		steps = 1;
	if (max_ms < 1)
		max_ms = 1;
	/* nova/virt/libvirt/migration.py downtime_steps */
	base = (double)max_ms / steps;
	offset = ((double)max_ms - base) / steps;
	for (int i = 0; i <= steps && n < max_out; i++, n++) {
		out[n].at_ms = delay_ms * i;
		out[n].downtime_ms = (long)(base + offset * i);
	}
	return n;
}

static uint64_t param_u64(const virTypedParameter *p, int n, const char *name)
{
	unsigned long long v = 0;

	if (virTypedParamsGetULLong((virTypedParameterPtr)(uintptr_t)p, n, name, &v) <= 0)
		return 0;
	return v;
}

static void progress_from(const virTypedParameter *p, int n, struct vmm_migrate_progress *out)
{
	out->elapsed_ms = (int64_t)param_u64(p, n, VIR_DOMAIN_JOB_TIME_ELAPSED);
	out->mem_processed = param_u64(p, n, VIR_DOMAIN_JOB_MEMORY_PROCESSED);
	out->mem_remaining = param_u64(p, n, VIR_DOMAIN_JOB_MEMORY_REMAINING);
	out->mem_total = param_u64(p, n, VIR_DOMAIN_JOB_MEMORY_TOTAL);
	out->disk_processed = param_u64(p, n, VIR_DOMAIN_JOB_DISK_PROCESSED);
	out->disk_remaining = param_u64(p, n, VIR_DOMAIN_JOB_DISK_REMAINING);
	out->disk_total = param_u64(p, n, VIR_DOMAIN_JOB_DISK_TOTAL);
}

struct monitor {
	virDomainPtr dom;
	const struct vmm_migrate_opts *o;
	atomic_bool done;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct vmm_downtime_step steps[VMM_MAX_DOWNTIME_STEPS];
	size_t n_steps, next_step;
	bool timed_out;
	enum vmm_migrate_action taken;
	long downtime_limit_ms;
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The completion timeout passed: what the options say to do. */
static void on_timeout(struct monitor *m, const char *uuid)
{
	const struct vmm_migrate_opts *o = m->o;

	m->timed_out = true;
	m->taken = o->timeout_action;
	switch (o->timeout_action) {
	case VMM_MIG_PAUSE:
		/* a paused guest dirties nothing: the rest moves, then it resumes there */
		if (virDomainSuspend(m->dom) < 0)
			mig_err(-EIO, "instance %s: pause after the completion timeout", uuid);
		log_warn("migration completion timeout: guest paused instance=%s", uuid);
		return;
	case VMM_MIG_POSTCOPY:
		if (virDomainMigrateStartPostCopy(m->dom, 0) == 0) {
			log_warn("migration completion timeout: switched to post-copy instance=%s",
				 uuid);
			return;
		}
		mig_err(-EIO, "instance %s: post-copy", uuid);
		log_warn("%s; aborting instead", err_msg());
		m->taken = VMM_MIG_ABORT;
		break;
	case VMM_MIG_ABORT:
	case VMM_MIG_ACTION_LAST:
		m->taken = VMM_MIG_ABORT;
		break;
	}
	log_warn("migration completion timeout: aborting instance=%s", uuid);
	if (virDomainAbortJob(m->dom) < 0)
		mig_err(-EIO, "instance %s: abort the migration job", uuid);
}

static void *monitor_main(void *arg)
{
	struct monitor *m = arg;
	const struct vmm_migrate_opts *o = m->o;
	char uuid[VIR_UUID_STRING_BUFLEN] = "";
	int64_t t0 = mono_ms();
	int64_t every = o->progress_interval_ms > 0 ? o->progress_interval_ms : 500;

	virDomainGetUUIDString(m->dom, uuid);
	while (!atomic_load(&m->done)) {
		int64_t now = mono_ms() - t0;
		virTypedParameterPtr p = NULL;
		int n = 0, type = 0;

		while (m->next_step < m->n_steps && m->steps[m->next_step].at_ms <= now) {
			long d = m->steps[m->next_step++].downtime_ms;

			if (virDomainMigrateSetMaxDowntime(m->dom, (unsigned long long)d, 0) == 0)
				m->downtime_limit_ms = d;
			else
				virResetLastError(); /* the job may not have started yet: next tick */
		}
		if (!m->timed_out && o->completion_timeout_ms > 0 && now > o->completion_timeout_ms)
			on_timeout(m, uuid);
		if (o->progress && virDomainGetJobStats(m->dom, &type, &p, &n, 0) == 0) {
			struct vmm_migrate_progress pr = { .downtime_limit_ms = m->downtime_limit_ms };

			if (type != VIR_DOMAIN_JOB_NONE) {
				progress_from(p, n, &pr);
				o->progress(&pr, o->opaque);
			}
			virTypedParamsFree(p, n);
		} else {
			virResetLastError();
		}
		pthread_mutex_lock(&m->lock);
		if (!atomic_load(&m->done)) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += (every % 1000) * 1000000;
			ts.tv_sec += every / 1000 + ts.tv_nsec / 1000000000;
			ts.tv_nsec %= 1000000000;
			pthread_cond_timedwait(&m->cv, &m->lock, &ts);
		}
		pthread_mutex_unlock(&m->lock);
	}
	return NULL;
}

/* The monitor thread of M on D (M's options and steps set): true when it
 * runs (monitor_stop joins it). */
static bool monitor_start(struct monitor *m, virDomainPtr d, pthread_t *th)
{
	m->dom = d;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cv, NULL);
	return pthread_create(th, NULL, monitor_main, m) == 0;
}

static void monitor_stop(struct monitor *m, bool started, pthread_t th)
{
	atomic_store(&m->done, true);
	pthread_mutex_lock(&m->lock);
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->lock);
	if (started)
		pthread_join(th, NULL);
	pthread_cond_destroy(&m->cv);
	pthread_mutex_destroy(&m->lock);
}

static unsigned long migrate_flags(const struct vmm_migrate_opts *o)
{
	unsigned long f = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST |
			  VIR_MIGRATE_ABORT_ON_ERROR;

	if (o->copy_storage)
		f |= VIR_MIGRATE_NON_SHARED_INC;
	if (o->auto_converge)
		f |= VIR_MIGRATE_AUTO_CONVERGE;
	if (o->timeout_action == VMM_MIG_POSTCOPY)
		f |= VIR_MIGRATE_POSTCOPY;
	return f;
}

/* The completed job's figures on the source (kept by libvirt after the
 * domain left). */
static void completed_stats(virDomainPtr d, struct vmm_migrate_result *out)
{
	virTypedParameterPtr p = NULL;
	int n = 0, type = 0;

	if (virDomainGetJobStats(d, &type, &p, &n, VIR_DOMAIN_JOB_STATS_COMPLETED) < 0) {
		virResetLastError();
		return;
	}
	out->total_ms = (int64_t)param_u64(p, n, VIR_DOMAIN_JOB_TIME_ELAPSED);
	out->downtime_ms = (int64_t)param_u64(p, n, VIR_DOMAIN_JOB_DOWNTIME);
	out->have_downtime = virTypedParamsGet(p, n, VIR_DOMAIN_JOB_DOWNTIME) != NULL;
	out->mem_bytes = param_u64(p, n, VIR_DOMAIN_JOB_MEMORY_PROCESSED);
	out->disk_bytes = param_u64(p, n, VIR_DOMAIN_JOB_DISK_PROCESSED);
	virTypedParamsFree(p, n);
}

int vmm_migrate(struct vmm_conn *c, const char *uuid, const struct vmm_migrate_opts *o,
		struct vmm_migrate_result *out)
{
	struct monitor m = { .o = o, .downtime_limit_ms = 0 };
	struct vmm_migrate_result res = { 0 };
	virTypedParameterPtr params = NULL;
	int np = 0, maxp = 0, r = 0;
	virConnectPtr conn = NULL;
	virDomainPtr d;
	pthread_t th;
	bool started = false;
	int64_t t0 = mono_ms();

	if (!o->dest_uri || !*o->dest_uri)
		return err_set(-EINVAL, "instance %s: no destination URI", uuid);
	d = vmm_conn_domain(c, uuid, &conn, &r);
	if (!d)
		goto out;
	if (o->dest_xml &&
	    virTypedParamsAddString(&params, &np, &maxp, VIR_MIGRATE_PARAM_DEST_XML, o->dest_xml) < 0) {
		r = mig_err(-ENOMEM, "instance %s: migration parameters", uuid);
		goto out;
	}
	m.n_steps = vmm_downtime_steps(o->downtime_ms, o->downtime_steps, o->downtime_delay_ms,
				       m.steps, VMM_MAX_DOWNTIME_STEPS);
	started = monitor_start(&m, d, &th);
	vmm_conn_intent(c, uuid); /* the source's "stopped (migrated)" is ours */
	if (virDomainMigrateToURI3(d, o->dest_uri, params, (unsigned)np, migrate_flags(o)) < 0)
		r = mig_err(-EIO, "instance %s: live migration to %s", uuid, o->dest_uri);
	monitor_stop(&m, started, th);
	if (r < 0 && m.timed_out)
		r = err_set(-ETIMEDOUT, "instance %s: live migration to %s did not complete within "
			    "%lld ms (action %s): %s", uuid, o->dest_uri,
			    (long long)o->completion_timeout_ms, vmm_migrate_action_names[m.taken],
			    err_msg());
	if (r == 0) {
		completed_stats(d, &res);
		if (!res.total_ms)
			res.total_ms = mono_ms() - t0;
		res.timed_out = m.timed_out;
		res.action = m.taken;
		res.downtime_limit_ms = m.downtime_limit_ms;
		*out = res;
	}
out:
	virTypedParamsFree(params, np);
	if (d)
		virDomainFree(d);
	if (conn)
		virConnectClose(conn);
	return r;
}

/* Cold: the destination's copy of uuid destroyed and undefined (after a
 * failed step). 0 when it is known not to run there (gone, or off), so the
 * source may run it again; <0 when that is not known (the destination not
 * reachable, or its copy still active): the source must stay off. */
static int dest_discard(virConnectPtr dconn, virDomainPtr dd, const char *uuid)
{
	virDomainPtr x = dd ? dd : dconn ? virDomainLookupByUUIDString(dconn, uuid) : NULL;
	int r = 0;

	if (!x) {
		if (!dconn)
			return err_set(-ENOTCONN, "instance %s: the destination cannot be reached to "
				       "discard its copy", uuid);
		virResetLastError(); /* no copy there */
		return 0;
	}
	if (virDomainIsActive(x) == 1 && virDomainDestroy(x) < 0)
		log_warn("cold migration: destroying the destination's copy failed instance=%s: %s",
			 uuid, virGetLastErrorMessage());
	if (virDomainIsActive(x) != 0)
		r = err_set(-EIO, "instance %s: the destination's copy may still run", uuid);
	else if (virDomainUndefineFlags(x, VIR_DOMAIN_UNDEFINE_NVRAM) < 0 &&
		 virDomainUndefine(x) < 0)
		log_warn("cold migration: undefining the destination's copy failed instance=%s: %s",
			 uuid, virGetLastErrorMessage());
	virResetLastError();
	if (x != dd)
		virDomainFree(x);
	return r;
}

/* Cold, failed at a step: the source as it was (off, or running again). */
static int source_restore(struct vmm_conn *c, virDomainPtr d, const char *uuid, bool was_running)
{
	int r = 0;

	if (virDomainIsActive(d) == 1) { /* the paused copy for the move */
		vmm_conn_intent(c, uuid);
		if (virDomainDestroy(d) < 0)
			r = mig_err(-EIO, "instance %s: destroying the paused source copy", uuid);
	}
	if (r == 0 && was_running && virDomainCreate(d) < 0)
		r = mig_err(-EIO, "instance %s: starting it again on the source", uuid);
	return r;
}

int vmm_migrate_cold(struct vmm_conn *c, const char *uuid, const struct vmm_migrate_opts *o,
		     struct vmm_migrate_result *out)
{
	struct vmm_migrate_opts co;
	struct monitor m = { .o = &co };
	struct vmm_migrate_result res = { .cold = true };
	virTypedParameterPtr params = NULL;
	int np = 0, maxp = 0, r = 0;
	virConnectPtr conn = NULL, dconn = NULL;
	virDomainPtr d, dd = NULL;
	const char *step = "stop";
	unsigned long flags = VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_NON_SHARED_INC |
			      VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_PAUSED | VIR_MIGRATE_ABORT_ON_ERROR;
	int64_t t0 = mono_ms(), t_down = 0;
	bool started, copied = false;
	pthread_t th;

	if (!o->dest_uri || !*o->dest_uri)
		return err_set(-EINVAL, "instance %s: no destination URI", uuid);
	co = *o;
	co.timeout_action = VMM_MIG_ABORT; /* nothing to pause or post-copy: it is off */
	d = vmm_conn_domain(c, uuid, &conn, &r);
	if (!d)
		goto out;
	if (o->dest_xml &&
	    virTypedParamsAddString(&params, &np, &maxp, VIR_MIGRATE_PARAM_DEST_XML, o->dest_xml) < 0) {
		r = mig_err(-ENOMEM, "instance %s: migration parameters", uuid);
		goto out;
	}
	res.was_running = virDomainIsActive(d) == 1;
	if (res.was_running) {
		t_down = mono_ms();
		r = vmm_stop(c, uuid, o->shutdown_timeout_ms, NULL);
		if (r < 0)
			goto fail;
	}
	step = "start-paused";
	if (virDomainCreateWithFlags(d, VIR_DOMAIN_START_PAUSED) < 0) {
		r = mig_err(-EIO, "instance %s: starting it paused for the copy", uuid);
		goto fail;
	}
	step = "copy";
	started = monitor_start(&m, d, &th);
	vmm_conn_intent(c, uuid); /* the source's "stopped (migrated)" is ours */
	if (virDomainMigrateToURI3(d, o->dest_uri, params, (unsigned)np, flags) < 0)
		r = mig_err(-EIO, "instance %s: migration (non-live, disks copied) to %s", uuid,
			    o->dest_uri);
	monitor_stop(&m, started, th);
	if (r < 0 && m.timed_out)
		r = err_set(-ETIMEDOUT, "instance %s: the copy to %s did not complete within %lld ms: "
			    "%s", uuid, o->dest_uri, (long long)o->completion_timeout_ms, err_msg());
	if (r < 0)
		goto fail;
	copied = true;
	completed_stats(d, &res); /* total_ms and downtime are the copy's: ours below */
	step = "boot";
	dconn = virConnectOpen(o->dest_uri);
	dd = dconn ? virDomainLookupByUUIDString(dconn, uuid) : NULL;
	if (!dd) {
		r = mig_err(-EIO, "instance %s: finding the copy on %s", uuid, o->dest_uri);
		goto fail;
	}
	/* the paused copy goes; the definition boots fresh (a clean boot) */
	if (virDomainIsActive(dd) == 1 && virDomainDestroy(dd) < 0) {
		r = mig_err(-EIO, "instance %s: destroying the paused copy on %s", uuid, o->dest_uri);
		goto fail;
	}
	if (res.was_running && virDomainCreate(dd) < 0) {
		r = mig_err(-EIO, "instance %s: booting it on %s", uuid, o->dest_uri);
		goto fail;
	}
	res.total_ms = mono_ms() - t0;
	res.have_downtime = res.was_running;
	res.downtime_ms = res.was_running ? mono_ms() - t_down : 0;
	res.timed_out = false;
	res.action = VMM_MIG_ABORT;
	res.downtime_limit_ms = 0;
	*out = res;
	goto out;
fail: {
		char why[1024];
		int rr;

		snprintf(why, sizeof(why), "%s", err_msg());
		/* a copy step that failed late may have left a copy there too */
		if ((copied || strcmp(step, "copy") == 0) && !dconn)
			dconn = virConnectOpen(o->dest_uri);
		if ((copied || strcmp(step, "copy") == 0) && dest_discard(dconn, dd, uuid) < 0)
			rr = -EIO; /* never two copies: the source stays off */
		else
			rr = source_restore(c, d, uuid, res.was_running);
		if (rr < 0)
			r = err_set(r, "cold migration failed at step %s: %s; and the guest could not "
				    "be restored on the source: %s", step, why, err_msg());
		else
			r = err_set(r, "cold migration failed at step %s: %s", step, why);
	}
out:
	virTypedParamsFree(params, np);
	if (dd)
		virDomainFree(dd);
	if (dconn)
		virConnectClose(dconn);
	if (d)
		virDomainFree(d);
	if (conn)
		virConnectClose(conn);
	return r;
}

int vmm_migrate_abort(struct vmm_conn *c, const char *uuid)
{
	virConnectPtr conn = NULL;
	int r = 0;
	virDomainPtr d = vmm_conn_domain(c, uuid, &conn, &r);

	if (d) {
		if (virDomainAbortJob(d) < 0) {
			virErrorPtr e = virGetLastError();

			/* no job: nothing to abort */
			if (e && e->code == VIR_ERR_OPERATION_INVALID)
				virResetLastError();
			else
				r = mig_err(-EIO, "instance %s: abort the migration", uuid);
		}
		virDomainFree(d);
	}
	if (conn)
		virConnectClose(conn);
	return r;
}

int vmm_remote_power(const char *uri, const char *uuid, enum vmm_power *out)
{
	virConnectPtr conn = virConnectOpen(uri);
	virDomainPtr d;
	int r = 0;

	if (!conn)
		return mig_err(-ENOTCONN, "libvirt %s", uri);
	d = virDomainLookupByUUIDString(conn, uuid);
	if (d) {
		if (vmm_power_of(d, out) < 0)
			r = mig_err(-EIO, "instance %s: state on %s", uuid, uri);
		virDomainFree(d);
	} else {
		virResetLastError();
		*out = VMM_POWER_NONE;
	}
	virConnectClose(conn);
	return r;
}

/* Both ends on one libvirtd (one URI): the "copy" is the source's domain. */
static bool same_libvirtd(virConnectPtr a, virConnectPtr b)
{
	char *ua = a ? virConnectGetURI(a) : NULL, *ub = b ? virConnectGetURI(b) : NULL;
	bool same = ua && ub && strcmp(ua, ub) == 0;

	free(ua);
	free(ub);
	virResetLastError();
	return same;
}

int vmm_migrate_cold_finish(struct vmm_conn *c, const char *dest_uri, const char *uuid, bool boot)
{
	virConnectPtr conn = NULL, dconn = virConnectOpen(dest_uri);
	virDomainPtr d = NULL, dd = NULL;
	int r = 0;

	if (!dconn)
		return mig_err(-ENOTCONN, "libvirt %s", dest_uri);
	dd = virDomainLookupByUUIDString(dconn, uuid);
	if (!dd) {
		r = mig_err(-ENOENT, "instance %s: no copy on %s to finish the cold move", uuid,
			    dest_uri);
		goto out;
	}
	/* the source's paused copy first: never two running */
	d = vmm_conn_domain(c, uuid, &conn, &r);
	if (same_libvirtd(conn, dconn)) {
		r = err_set(-EINVAL, "instance %s: the destination %s is this host's libvirtd",
			    uuid, dest_uri);
		goto out;
	}
	/* PERSIST_DEST defines the copy only when libvirt's finish succeeded:
	 * a transient one is an interrupted copy (a source that died mid-way
	 * is off too), rolled back, never finished */
	if (virDomainIsPersistent(dd) != 1) {
		r = err_set(-EAGAIN, "instance %s: the copy on %s is incomplete (not persistent)",
			    uuid, dest_uri);
		goto out;
	}
	if (d && virDomainIsActive(d) == 1) {
		vmm_conn_intent(c, uuid);
		if (virDomainDestroy(d) < 0) {
			r = mig_err(-EIO, "instance %s: destroying the paused source copy", uuid);
			goto out;
		}
	}
	r = 0;
	err_clear();
	if (virDomainIsActive(dd) == 1) {
		int state = 0, reason = 0;

		/* a copy that runs was booted there already: it stays */
		if (virDomainGetState(dd, &state, &reason, 0) == 0 && state == VIR_DOMAIN_RUNNING)
			goto out;
		if (virDomainDestroy(dd) < 0) {
			r = mig_err(-EIO, "instance %s: destroying the paused copy on %s", uuid,
				    dest_uri);
			goto out;
		}
	}
	if (boot && virDomainCreate(dd) < 0)
		r = mig_err(-EIO, "instance %s: booting it on %s", uuid, dest_uri);
out:
	if (dd)
		virDomainFree(dd);
	virConnectClose(dconn);
	if (d)
		virDomainFree(d);
	if (conn)
		virConnectClose(conn);
	return r;
}

int vmm_migrate_cold_rollback(struct vmm_conn *c, const char *dest_uri, const char *uuid,
			      bool was_running)
{
	virConnectPtr conn = NULL, dconn = dest_uri ? virConnectOpen(dest_uri) : NULL;
	virDomainPtr d;
	int r = 0;

	if (!dconn) {
		/* a source still paused for the copy: the copy never completed, so
		 * the destination never booted it: run it again here. Off here:
		 * it may have been booted there; left as it is. */
		r = mig_err(-ENOTCONN, "libvirt %s", dest_uri ? dest_uri : "(no destination URI)");
		d = vmm_conn_domain(c, uuid, &conn, &(int){ 0 });
		if (d && virDomainIsActive(d) == 1 && source_restore(c, d, uuid, was_running) == 0)
			log_info("cold migration: the destination unreachable; the paused source copy "
				 "restored instance=%s", uuid);
		goto out;
	}
	d = vmm_conn_domain(c, uuid, &conn, &r);
	if (same_libvirtd(conn, dconn)) {
		r = err_set(-EINVAL, "instance %s: the destination %s is this host's libvirtd",
			    uuid, dest_uri);
		virConnectClose(dconn);
		goto out;
	}
	if (dest_discard(dconn, NULL, uuid) < 0) { /* never two copies: the source stays off */
		r = -EIO;
		virConnectClose(dconn);
		goto out;
	}
	virConnectClose(dconn);
	if (r == -ENOENT) { /* nothing here to restore */
		err_clear();
		r = 0;
	}
	if (d) {
		if (virDomainIsActive(d) == 1) {
			int state = 0, reason = 0;

			/* a source that runs was never stopped (or was started again) */
			if (virDomainGetState(d, &state, &reason, 0) == 0 &&
			    state == VIR_DOMAIN_RUNNING)
				goto out;
		}
		r = source_restore(c, d, uuid, was_running);
	}
out:
	if (d)
		virDomainFree(d);
	if (conn)
		virConnectClose(conn);
	return r;
}
