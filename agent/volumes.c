/*
 * Volumes on this host (issue 19): the commands volume.create / delete /
 * attach / detach from the scheduler, what an instance's deletion leaves
 * (its volumes become available), and the reconcile of the store's volume
 * rows against the files in the volume directory and the domains.
 *
 * A volume is a sparse raw file <volume_dir>/<uuid>.img. It is attached as
 * a virtio disk whose serial is the volume's uuid cut to VMM_SERIAL_MAX
 * characters, so the guest sees /dev/disk/by-id/virtio-<serial>; the disk
 * is in the domain's persistent definition (it survives the guest's and the
 * host's reboots) and, when the guest runs, hot-plugged into it.
 *
 * The store's row is the truth for this host; every change is one
 * volume.state event (signed like every agent event), which the scheduler
 * mirrors. The handlers run in the consumer thread, reconcile in the
 * daemon's: vol_lock orders them (taken before the store's lock, never
 * after). The instance hook runs in a worker or in reconcile, unlocked.
 */
#define LOG_TAG "agent"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "agent/agent_priv.h"

#define VOL_SUFFIX ".img"
#define VOL_FORMAT "raw"

static pthread_mutex_t vol_lock = PTHREAD_MUTEX_INITIALIZER;

/* The serial of a volume's disk: its uuid cut to what virtio-blk keeps. */
static void vol_serial(const char *uuid, char out[VMM_SERIAL_MAX + 1])
{
	size_t n = strnlen(uuid, VMM_SERIAL_MAX);

	memcpy(out, uuid, n);
	out[n] = '\0';
}

/* Set V's state, instance and reason, store it, say it. */
static int vol_set(struct agent *a, struct store_volume *v, const char *state,
		   const char *instance, const char *reason, const char *rid)
{
	char *st = strdup(state), *in = instance ? strdup(instance) : NULL;
	char *re = reason ? strdup(reason) : NULL;
	int r;

	if (!st || (instance && !in) || (reason && !re)) {
		free(st);
		free(in);
		free(re);
		return err_set(-ENOMEM, "out of memory");
	}
	free(v->state);
	free(v->instance);
	free(v->reason);
	v->state = st;
	v->instance = in;
	v->reason = re;
	r = store_volume_put(a->store, v);
	if (r < 0)
		log_error("volume %s: %s", v->uuid, err_msg());
	agent_emit_volume(a, v, rid);
	return r;
}

static bool state_is(const struct store_volume *v, const char *s)
{
	return strcmp(v->state, s) == 0;
}

/* ---- the commands -------------------------------------------------------- */

/* A sparse raw file of GB, made exclusively (0600; libvirt gives it to
 * qemu on attach). Refused when the file system has less free. */
static int make_file(struct agent *a, const struct store_volume *v)
{
	struct statvfs fs;
	off_t bytes = (off_t)v->size_gb << 30;
	int fd, r = mkdir_p(a->volume_dir, 0755);

	if (r < 0)
		return r;
	if (statvfs(a->volume_dir, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < (uint64_t)bytes)
		return err_set(-ENOSPC, "volume %s: %ld GB do not fit in %s: %llu GB free", v->name,
			       v->size_gb, a->volume_dir,
			       (unsigned long long)((uint64_t)fs.f_bavail * fs.f_frsize >> 30));
	fd = open(v->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(-errno, "volume %s: creating %s: %s", v->name, v->path,
			       strerror(errno));
	if (ftruncate(fd, bytes) < 0) {
		r = err_set(-errno, "volume %s: sizing %s to %ld GB: %s", v->name, v->path,
			    v->size_gb, strerror(errno));
		unlink(v->path);
	}
	close(fd);
	return r;
}

static int do_create(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	const json_t *b = e->body;
	struct store_volume v = { 0 };
	int r;

	if (store_volume_get(a->store, uuid, &v) == 0) {
		agent_emit_volume(a, &v, e->request_id); /* redelivered: say where it is */
		store_volume_free(&v);
		return 0;
	}
	snprintf(v.uuid, sizeof(v.uuid), "%s", uuid);
	v.project = strdup(json_string_value(json_object_get(b, "project")));
	v.name = strdup(json_string_value(json_object_get(b, "name")));
	v.size_gb = (long)json_integer_value(json_object_get(b, "size_gb"));
	v.state = strdup("creating");
	if (asprintf(&v.path, "%s/%s" VOL_SUFFIX, a->volume_dir, uuid) < 0)
		v.path = NULL;
	if (!v.project || !v.name || !v.state || !v.path) {
		store_volume_free(&v);
		return err_set(-ENOMEM, "out of memory");
	}
	r = store_volume_put(a->store, &v); /* the intent, durable */
	if (r < 0) {
		store_volume_free(&v);
		return r; /* the message comes again */
	}
	agent_emit_volume(a, &v, e->request_id);
	r = make_file(a, &v);
	if (r < 0) {
		log_warn("volume create failed volume=%s: %s", uuid, err_msg());
		vol_set(a, &v, "error", NULL, err_msg(), e->request_id);
	} else {
		log_info("volume created volume=%s path=%s size_gb=%ld", uuid, v.path, v.size_gb);
		vol_set(a, &v, "available", NULL, NULL, e->request_id);
	}
	store_volume_free(&v);
	return 0;
}

static int do_delete(struct agent *a, struct store_volume *v, const char *rid)
{
	if (state_is(v, "in-use") || state_is(v, "attaching") || state_is(v, "detaching")) {
		char why[512];

		snprintf(why, sizeof(why), "volume %s is %s (instance %s): detach it first", v->name,
			 v->state, v->instance ? v->instance : "?");
		agent_emit_result(a, rid, false, why, NULL);
		agent_emit_volume(a, v, rid);
		return 0;
	}
	vol_set(a, v, "deleting", NULL, NULL, rid);
	if (unlink(v->path) < 0 && errno != ENOENT) {
		char why[768];

		snprintf(why, sizeof(why), "volume %s: removing %s: %s", v->name, v->path,
			 strerror(errno));
		return vol_set(a, v, "error", NULL, why, rid);
	}
	store_volume_delete(a->store, v->uuid);
	free(v->state);
	v->state = strdup("deleted");
	if (v->state)
		agent_emit_volume(a, v, rid);
	log_info("volume deleted volume=%s path=%s", v->uuid, v->path);
	return 0;
}

/* noinline, as do_detach: their buffers would add up in the caller's frame */
static __attribute__((noinline)) int do_attach(struct agent *a, struct store_volume *v,
					       const char *instance, const char *rid)
{
	char serial[VMM_SERIAL_MAX + 1], why[1024];
	struct store_instance row;
	bool live = false;
	int r;

	if (state_is(v, "in-use") && v->instance && strcmp(v->instance, instance) == 0) {
		agent_emit_volume(a, v, rid); /* redelivered */
		return 0;
	}
	if (!state_is(v, "available")) {
		snprintf(why, sizeof(why), "volume %s is %s: attach needs it available", v->name,
			 v->state);
		agent_emit_result(a, rid, false, why, NULL);
		agent_emit_volume(a, v, rid);
		return 0;
	}
	r = store_instance_get(a->store, instance, &row);
	if (r < 0) {
		snprintf(why, sizeof(why), "volume %s: instance %s is not on host %s", v->name,
			 instance, a->cfg->host);
		return vol_set(a, v, "available", NULL, why, rid);
	}
	if (row.state != INST_ACTIVE && row.state != INST_STOPPED) {
		snprintf(why, sizeof(why), "volume %s: instance %s is %s: attach needs it active or "
			 "stopped", v->name, row.name ? row.name : instance,
			 instance_state_names[row.state]);
		store_instance_free(&row);
		return vol_set(a, v, "available", NULL, why, rid);
	}
	store_instance_free(&row);
	if (access(v->path, F_OK) < 0) {
		snprintf(why, sizeof(why), "volume %s: its file %s is missing", v->name, v->path);
		return vol_set(a, v, "error", NULL, why, rid);
	}
	vol_set(a, v, "attaching", instance, NULL, rid);
	vol_serial(v->uuid, serial);
	r = vmm_disk_attach(a->conn, instance, v->path, VOL_FORMAT, serial, &live);
	if (r < 0) {
		snprintf(why, sizeof(why), "volume %s: %s", v->name, err_msg());
		log_warn("volume attach failed volume=%s instance=%s: %s", v->uuid, instance, why);
		return vol_set(a, v, "available", NULL, why, rid);
	}
	log_info("volume attached volume=%s instance=%s serial=%s live=%s", v->uuid, instance,
		 serial, live ? "yes" : "no");
	return vol_set(a, v, "in-use", instance, NULL, rid);
}

static __attribute__((noinline)) int do_detach(struct agent *a, struct store_volume *v,
					       const char *rid)
{
	char serial[VMM_SERIAL_MAX + 1], why[1024];
	char *instance;
	int r;

	if (state_is(v, "available")) {
		agent_emit_volume(a, v, rid); /* redelivered */
		return 0;
	}
	if (!state_is(v, "in-use") || !v->instance) {
		snprintf(why, sizeof(why), "volume %s is %s: detach needs it in-use", v->name,
			 v->state);
		agent_emit_result(a, rid, false, why, NULL);
		agent_emit_volume(a, v, rid);
		return 0;
	}
	instance = strdup(v->instance);
	if (!instance)
		return err_set(-ENOMEM, "out of memory");
	vol_set(a, v, "detaching", instance, NULL, rid);
	vol_serial(v->uuid, serial);
	r = vmm_disk_detach(a->conn, instance, serial);
	if (r < 0 && r != -ENOENT) {
		snprintf(why, sizeof(why), "volume %s: %s", v->name, err_msg());
		log_warn("volume detach failed volume=%s instance=%s: %s", v->uuid, instance, why);
		r = vol_set(a, v, "in-use", instance, why, rid);
	} else {
		log_info("volume detached volume=%s instance=%s", v->uuid, instance);
		r = vol_set(a, v, "available", NULL, NULL, rid);
	}
	free(instance);
	return r;
}

int agent_volume_handle(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	struct store_volume v = { 0 };
	int r;

	pthread_mutex_lock(&vol_lock);
	if (strcmp(e->type, "volume.create") == 0) {
		r = do_create(a, e, uuid);
		goto out;
	}
	r = store_volume_get(a->store, uuid, &v);
	if (r == -ENOENT) {
		if (strcmp(e->type, "volume.delete") == 0) {
			/* gone already: say so again (idempotent) */
			struct store_volume gone = { .state = (char *)(uintptr_t) "deleted",
						     .project = (char *)(uintptr_t) "unknown" };

			snprintf(gone.uuid, sizeof(gone.uuid), "%s", uuid);
			agent_emit_volume(a, &gone, e->request_id);
		} else {
			agent_emit_result(a, e->request_id, false, err_msg(), NULL);
		}
		r = 0;
		goto out;
	}
	if (r < 0)
		goto out;
	if (strcmp(e->type, "volume.delete") == 0)
		r = do_delete(a, &v, e->request_id);
	else if (strcmp(e->type, "volume.attach") == 0)
		r = do_attach(a, &v, json_string_value(json_object_get(e->body, "instance")),
			      e->request_id);
	else if (strcmp(e->type, "volume.detach") == 0)
		r = do_detach(a, &v, e->request_id);
	else
		agent_emit_result(a, e->request_id, false, "this agent does not handle that type",
				  NULL);
	store_volume_free(&v);
out:
	pthread_mutex_unlock(&vol_lock);
	return r;
}

/* ---- an instance gone ---------------------------------------------------- */

struct gone_ctx {
	struct agent *a;
	const char *instance;
};

static int gone_cb(const struct store_volume *v, void *ud)
{
	struct gone_ctx *c = ud;
	struct store_volume w = *v;

	if (!v->instance || strcmp(v->instance, c->instance) != 0)
		return 0;
	/* the domain went with the instance; the file stays */
	w.project = strdup(v->project);
	w.name = strdup(v->name);
	w.path = strdup(v->path);
	w.state = strdup(v->state);
	w.instance = w.reason = NULL;
	if (w.project && w.name && w.path && w.state) {
		log_info("volume released by a deleted instance volume=%s instance=%s", v->uuid,
			 c->instance);
		vol_set(c->a, &w, "available", NULL, NULL, NULL);
	}
	store_volume_free(&w);
	return 0;
}

/* Without vol_lock: reconcile calls this inside store_instance_foreach (the
 * store's lock held), and the handlers take vol_lock before the store's; a
 * command racing on the same volume ends in `available` too (the domain is
 * gone: detach finds nothing, attach needs the instance). */
void agent_volumes_instance_gone(struct agent *a, const char *instance)
{
	struct gone_ctx c = { .a = a, .instance = instance };

	if (store_volume_foreach(a->store, gone_cb, &c) < 0)
		log_error("volumes of instance %s: %s", instance, err_msg());
}

/* ---- reconcile ------------------------------------------------------------ */

struct vrec_ctx {
	struct agent *a;
	bool startup;
	struct agent_volume_report *rep;
};

/* An attached volume: its disk in the definition (and the running guest). */
static void reconcile_attached(struct vrec_ctx *c, struct store_volume *v)
{
	struct agent *a = c->a;
	char serial[VMM_SERIAL_MAX + 1], why[1024];
	struct store_instance row;
	bool cfg = false, live = false;
	enum vmm_power pw = VMM_POWER_NONE;
	int r;

	if (store_instance_get(a->store, v->instance, &row) < 0) {
		log_warn("reconcile: volume of an instance this host does not hold volume=%s "
			 "instance=%s: available", v->uuid, v->instance);
		vol_set(a, v, "available", NULL, NULL, NULL);
		c->rep->fixed++;
		return;
	}
	store_instance_free(&row);
	vol_serial(v->uuid, serial);
	r = vmm_disk_find(a->conn, v->instance, serial, &cfg, &live);
	if (r < 0)
		return; /* no domain (yet): the instance's own reconcile first */
	vmm_power_state(a->conn, v->instance, &pw);
	if (state_is(v, "attaching") || state_is(v, "detaching")) {
		/* interrupted by our death: what the definition says wins */
		vol_set(a, v, cfg ? "in-use" : "available", cfg ? v->instance : NULL, NULL, NULL);
		c->rep->fixed++;
		return;
	}
	if (cfg && (live || pw != VMM_POWER_RUNNING))
		return;
	/* redefined (or attached outside Stratus and removed): attach again */
	r = vmm_disk_attach(a->conn, v->instance, v->path, VOL_FORMAT, serial, &live);
	if (r < 0) {
		snprintf(why, sizeof(why), "volume %s: re-attaching: %s", v->name, err_msg());
		log_warn("reconcile: %s", why);
		vol_set(a, v, "in-use", v->instance, why, NULL);
	} else {
		log_warn("reconcile: volume re-attached volume=%s instance=%s", v->uuid,
			 v->instance);
	}
	c->rep->reattached++;
}

static int vrec_cb(const struct store_volume *cv, void *ud)
{
	struct vrec_ctx *c = ud;
	struct store_volume v = *cv;
	bool present = access(cv->path, F_OK) == 0;
	char why[768];

	/* our own copy: vol_set replaces its strings */
	v.project = strdup(cv->project);
	v.name = strdup(cv->name);
	v.path = strdup(cv->path);
	v.state = strdup(cv->state);
	v.instance = cv->instance ? strdup(cv->instance) : NULL;
	v.reason = cv->reason ? strdup(cv->reason) : NULL;
	if (!v.project || !v.name || !v.path || !v.state) {
		store_volume_free(&v);
		return err_set(-ENOMEM, "out of memory");
	}
	c->rep->records++;
	if (state_is(&v, "deleting")) {
		if (c->startup) {
			unlink(v.path);
			store_volume_delete(c->a->store, v.uuid);
			free(v.state);
			v.state = strdup("deleted");
			if (v.state)
				agent_emit_volume(c->a, &v, NULL);
			c->rep->fixed++;
		}
	} else if (state_is(&v, "creating")) {
		if (c->startup) {
			snprintf(why, sizeof(why), "volume %s: creation interrupted by an agent restart",
				 v.name);
			if (present)
				unlink(v.path); /* its size may be short: made again by no one */
			vol_set(c->a, &v, "error", NULL, why, NULL);
			c->rep->fixed++;
		}
	} else if (!present) {
		if (!state_is(&v, "error") || !v.reason || !strstr(v.reason, "is missing")) {
			snprintf(why, sizeof(why), "volume %s: its file %s is missing", v.name, v.path);
			log_error("reconcile: %s", why);
			vol_set(c->a, &v, "error", NULL, why, NULL);
		}
		c->rep->missing++;
	} else if (v.instance && (state_is(&v, "in-use") || state_is(&v, "attaching") ||
				  state_is(&v, "detaching"))) {
		reconcile_attached(c, &v);
	}
	store_volume_free(&v);
	return 0;
}

/* Files in the volume directory that no row names. */
static void scan_orphans(struct vrec_ctx *c)
{
	DIR *d = opendir(c->a->volume_dir);
	struct dirent *de;

	if (!d)
		return; /* no volume made yet */
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name), sl = strlen(VOL_SUFFIX);
		char uuid[UUID_STRLEN];
		struct store_volume v;

		if (de->d_name[0] == '.')
			continue;
		if (n == UUID_STRLEN - 1 + sl && strcmp(de->d_name + n - sl, VOL_SUFFIX) == 0) {
			snprintf(uuid, sizeof(uuid), "%.*s", (int)(n - sl), de->d_name);
			if (store_volume_get(c->a->store, uuid, &v) == 0) {
				store_volume_free(&v);
				continue;
			}
		}
		log_warn("reconcile: volume file without a record path=%s/%s (not removed)",
			 c->a->volume_dir, de->d_name);
		c->rep->orphans++;
	}
	closedir(d);
}

int agent_volumes_reconcile(struct agent *a, bool startup, struct agent_volume_report *rep)
{
	struct agent_volume_report local = { 0 };
	struct vrec_ctx c = { .a = a, .startup = startup, .rep = rep ? rep : &local };
	int r;

	memset(c.rep, 0, sizeof(*c.rep));
	pthread_mutex_lock(&vol_lock);
	r = store_volume_foreach(a->store, vrec_cb, &c);
	scan_orphans(&c);
	pthread_mutex_unlock(&vol_lock);
	if (c.rep->orphans || c.rep->missing || c.rep->fixed || c.rep->reattached)
		log_info("reconcile: volumes records=%u missing=%u orphans=%u fixed=%u "
			 "reattached=%u", c.rep->records, c.rep->missing, c.rep->orphans,
			 c.rep->fixed, c.rep->reattached);
	return r;
}
