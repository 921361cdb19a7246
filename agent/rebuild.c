/*
 * instance.rebuild (issue 18): the instance keeps its uuid, name, address,
 * MAC, host, port filter and metadata; its root disk is replaced by a fresh
 * overlay of the (new) image and its seed re-rendered from the new spec,
 * whose `generation` is one more than before, so the instance-id every
 * datasource reports is new (model_instance_id) and cloud-init runs again.
 *
 * States: active|stopped -> rebuilding -> active. The old disk is never lost:
 *   1. <uuid>.rebuild.json: the old spec and state (0600, atomic)
 *   2. the domain destroyed; the old image pinned in the cache
 *   3. <uuid>.qcow2 renamed to <uuid>.qcow2.prev (the old disk, kept)
 *   4. a new overlay of the new image; the seed; the row's spec; define; start
 *   5. done: row active, then .prev and .rebuild.json removed
 * A step that fails puts the old disk, spec, seed and domain back and leaves
 * the instance in `error` saying why (the operator deletes or starts it
 * again). An agent killed in the middle finds the row `rebuilding` at start
 * and rolls back the same way, to the state it had before (started again
 * when it was active), answering the request with an error.
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent_priv.h"

/* ---- helpers --------------------------------------------------------------- */

static char *inst_path(struct agent *a, const char *uuid, const char *file)
{
	char *p = agent_instance_path(a, uuid, file);

	if (!p)
		err_set(-ENOMEM, "out of memory");
	return p;
}

static bool exists(const char *path)
{
	struct stat st;

	return path && stat(path, &st) == 0;
}

/* The seed of SPEC at the instance's seed path (none: removed). */
static int write_seed(struct agent *a, struct store_instance *row, const struct instance_spec *spec)
{
	enum md_seed_format fmt;
	char *path;
	int r;

	path = inst_path(a, spec->uuid, ".seed.iso");
	if (!path)
		return -ENOMEM;
	if (md_seed_format_of_spec(spec, &fmt) < 0) {
		unlink(path);
		free(path);
		free(row->seed_path);
		row->seed_path = NULL;
		return 0;
	}
	r = md_seed_write(spec, fmt, path);
	if (r < 0) {
		free(path);
		return r;
	}
	free(row->seed_path);
	row->seed_path = path;
	return 0;
}

/* Define the domain of SPEC on the row's disk, seed and placement (the
 * kernel and initrd of direct kernel boot acquired for it), and start it
 * when START. */
int agent_define_domain(struct agent *a, const struct store_instance *row,
			const struct instance_spec *spec, bool start)
{
	const struct spec_blob *blobs[2] = { &spec->image.kernel, &spec->image.initrd };
	char *paths[2] = { NULL, NULL }, *console = NULL, *xml = NULL;
	json_t *pj = row->placement_json ? json_loads(row->placement_json, 0, NULL) : NULL;
	struct vmm_placement pl = { 0 };
	bool placed = false;
	int r = 0;

	if (pj) {
		r = vmm_placement_from_json(pj, a->topo, &pl);
		placed = r == 0;
	}
	json_decref(pj);
	for (int k = 0; k < 2 && r == 0; k++) {
		struct img_ref br = { .name = k ? "initrd" : "kernel", .url = blobs[k]->url,
				      .checksum = blobs[k]->checksum, .format = IMG_FMT_RAW };

		if (blobs[k]->url)
			r = img_acquire(a->images, &br, NULL, NULL, &paths[k]);
	}
	console = r == 0 ? inst_path(a, spec->uuid, ".log") : NULL;
	if (r == 0 && !console)
		r = -ENOMEM;
	if (r == 0) {
		const struct agent_domain_files f = {
			.disk = row->overlay_path, .seed = row->seed_path, .console_log = console,
			.kernel = paths[0], .initrd = paths[1],
		};

		r = agent_domain_xml(spec, &pl, a->vmm_cfg, a->virt, &f, &xml);
	}
	if (r == 0)
		r = vmm_define(a->conn, xml);
	if (r == 0 && start)
		r = vmm_start(a->conn, spec->uuid);
	for (int k = 0; k < 2; k++)
		if (paths[k])
			img_release(a->images, blobs[k]->checksum);
	free(paths[0]);
	free(paths[1]);
	free(console);
	free(xml);
	if (placed)
		vmm_placement_free(&pl);
	return r;
}

static int img_ref_of(const struct instance_spec *s, struct img_ref *ref)
{
	*ref = (struct img_ref){ .name = s->image.name, .url = s->image.url,
				 .checksum = s->image.checksum };
	if (img_format_parse(s->image.disk_format, &ref->format) < 0)
		return err_set(-EINVAL, "image.disk_format '%s' is not supported",
			       s->image.disk_format);
	return 0;
}

/*
 * Put the old disk, seed, spec and domain back (the row's overlay is the
 * kept disk again). OLD_TEXT: the old spec. START: start the guest. The
 * row is updated in memory (the caller stores it).
 */
static int restore_old(struct agent *a, struct store_instance *row, const char *old_text,
		       bool start)
{
	_cleanup_free_ char *prev = inst_path(a, row->uuid, ".qcow2.prev");
	struct instance_spec os;
	struct img_ref ref;
	char *disk = NULL;
	int r;

	if (!prev)
		return -ENOMEM;
	r = model_spec_parse_text(old_text, &os);
	if (r < 0)
		return err_prefix(r, "restoring the old disk of %s", row->uuid);
	if (a->conn)
		vmm_destroy(a->conn, row->uuid); /* off already is fine */
	r = img_ref_of(&os, &ref);
	if (r == 0 && exists(prev)) {
		/* the new overlay and its reference go; the old image is the
		 * instance's again (a fresh overlay file, replaced by the kept one) */
		img_overlay_delete(a->images, row->uuid);
		r = img_overlay_create(a->images, &ref, row->uuid, (uint64_t)os.flavor.disk_gb,
				       a->vmm_cfg->instances_dir, &disk);
		if (r == 0 && rename(prev, disk) < 0)
			r = err_set(-errno, "renaming %s to %s: %s", prev, disk, strerror(errno));
		if (r == 0) {
			free(row->overlay_path);
			row->overlay_path = disk;
			disk = NULL;
		}
	}
	free(disk);
	if (r == 0) /* the old flavor's local disks: there again (blank when the rebuild made new ones) */
		r = agent_local_disks_create(a, &os, false);
	if (r == 0)
		r = write_seed(a, row, &os);
	if (r == 0) {
		free(row->spec_json);
		row->spec_json = strdup(old_text);
		if (!row->spec_json)
			r = err_set(-ENOMEM, "out of memory");
	}
	if (r == 0)
		r = agent_define_domain(a, row, &os, start);
	model_spec_free(&os);
	return r;
}

static void remove_kept(struct agent *a, const char *uuid)
{
	static const char *const files[] = { ".qcow2.prev", ".rebuild.json" };

	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char *p = agent_instance_path(a, uuid, files[i]);

		if (p)
			unlink(p);
		free(p);
	}
}

/* ---- the edge ----------------------------------------------------------------- */

int agent_handle_rebuild(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	struct store_instance row;
	struct instance_spec spec;
	json_t *body;
	char msg[1024];
	int r;

	r = store_instance_get(a->store, uuid, &row);
	if (r < 0) {
		snprintf(msg, sizeof(msg), "instance %s is not on host %s", uuid, a->cfg->host);
		agent_emit_result(a, e->request_id, false, msg, NULL);
		return 0;
	}
	if (row.state != INST_ACTIVE && row.state != INST_STOPPED) {
		snprintf(msg, sizeof(msg), "instance %s is %s: rebuild needs it active or stopped",
			 uuid, instance_state_names[row.state]);
		agent_emit_result(a, e->request_id, false, msg, NULL);
		/* the scheduler said rebuilding: what is true here */
		agent_emit_state(a, uuid, row.project, row.state, msg, e->request_id,
				 json_pack("{s:b}", "rolled_back", 1));
		store_instance_free(&row);
		return 0;
	}
	body = json_deep_copy(e->body);
	r = body ? agent_trust_open_build(a, body) : err_set(-ENOMEM, "out of memory");
	if (r == 0)
		r = model_spec_parse(body, &spec);
	json_decref(body);
	if (r < 0) {
		snprintf(msg, sizeof(msg), "instance.rebuild refused by host %s: %s", a->cfg->host,
			 err_msg());
		agent_emit_result(a, e->request_id, false, msg, NULL);
		agent_emit_state(a, uuid, row.project, row.state, msg, e->request_id,
				 json_pack("{s:b}", "rolled_back", 1));
		store_instance_free(&row);
		return 0;
	}
	/* the intent is durable before anything changes: reconcile finds it */
	r = agent_accept_row(a, e, &row, INST_REBUILDING, "rebuild:accepted");
	if (r < 0) {
		model_spec_free(&spec);
		store_instance_free(&row);
		return r; /* not durable: the message comes again */
	}
	agent_fault_point("accept", e->type);
	agent_emit_state(a, uuid, row.project, INST_REBUILDING, NULL, e->request_id, NULL);
	store_instance_free(&row);
	return agent_enqueue_rebuild(a, e->request_id, &spec);
}

/* ---- the worker ------------------------------------------------------------- */

struct rebuild {
	struct agent *a;
	struct job *j;
	struct store_instance row;
	char *old_text;             /* the spec before */
	struct instance_spec ns;    /* the spec after: the job's + the old network */
	bool have_ns, pinned, kept;
	struct img_ref old_ref;
	struct instance_spec os;
	bool have_os;
	bool was_running;
};

static int save(struct rebuild *rb, const char *step)
{
	free(rb->row.step);
	rb->row.step = strdup(step);
	return store_instance_put(rb->a->store, &rb->row);
}

/* The new spec: the scheduler's, with this host's network (address, MAC)
 * and a generation above the old one. */
static int new_spec(struct rebuild *rb)
{
	json_t *nj = model_spec_to_json(rb->j->spec), *oj = json_loads(rb->old_text, 0, NULL);
	int r;

	if (!nj || !oj) {
		json_decref(nj);
		json_decref(oj);
		return err_set(-ENOMEM, "out of memory");
	}
	if (json_object_get(oj, "network"))
		json_object_set(nj, "network", json_object_get(oj, "network"));
	if (rb->j->spec->generation <= rb->os.generation)
		json_object_set_new(nj, "generation", json_integer(rb->os.generation + 1));
	r = model_spec_parse(nj, &rb->ns);
	rb->have_ns = r == 0;
	json_decref(nj);
	json_decref(oj);
	return r;
}

static int keep_old(struct rebuild *rb)
{
	struct agent *a = rb->a;
	_cleanup_free_ char *saved = inst_path(a, rb->row.uuid, ".rebuild.json");
	_cleanup_free_ char *prev = inst_path(a, rb->row.uuid, ".qcow2.prev");
	_cleanup_free_ char *text = NULL;
	enum vmm_power pw = VMM_POWER_NONE;
	char *path;
	int r;

	if (!saved || !prev)
		return -ENOMEM;
	r = vmm_power_state(a->conn, rb->row.uuid, &pw);
	if (r < 0)
		return r;
	rb->was_running = pw == VMM_POWER_RUNNING || pw == VMM_POWER_PAUSED;
	json_t *o = json_pack("{s:s, s:s}", "state", rb->was_running ? "active" : "stopped",
			      "spec", rb->old_text);

	text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	r = write_file_durable(saved, text, strlen(text), 0600);
	if (r < 0)
		return err_prefix(r, "writing %s", saved);
	if (rb->was_running && (r = vmm_destroy(a->conn, rb->row.uuid)) < 0)
		return r;
	/* the old base stays in the cache while its overlay is kept aside */
	if (img_acquire(a->images, &rb->old_ref, NULL, NULL, &path) == 0) {
		rb->pinned = true;
		free(path);
	}
	path = rb->row.overlay_path;
	if (!path)
		return err_set(-ENOENT, "instance %s has no disk to rebuild", rb->row.uuid);
	if (rename(path, prev) < 0)
		return err_set(-errno, "keeping the old disk %s as %s: %s", path, prev,
			       strerror(errno));
	rb->kept = true;
	return save(rb, "rebuild:kept");
}

static int new_disk(struct rebuild *rb)
{
	struct agent *a = rb->a;
	struct img_ref ref;
	char *disk = NULL;
	int r = img_ref_of(&rb->ns, &ref);

	if (r < 0)
		return r;
	img_overlay_delete(a->images, rb->row.uuid); /* the old reference (its file is kept) */
	r = img_overlay_create(a->images, &ref, rb->row.uuid, (uint64_t)rb->ns.flavor.disk_gb,
			       a->vmm_cfg->instances_dir, &disk);
	if (r < 0)
		return r;
	free(rb->row.overlay_path);
	rb->row.overlay_path = disk;
	/* new, blank ephemeral and swap disks, as Nova's rebuild gives */
	r = agent_local_disks_create(a, &rb->ns, true);
	if (r < 0)
		return r;
	r = save(rb, "rebuild:image");
	agent_fault_point("rebuild", "image");
	return r;
}

static int boot_new(struct rebuild *rb)
{
	int r = write_seed(rb->a, &rb->row, &rb->ns);

	if (r == 0)
		r = agent_row_set_spec(&rb->row, &rb->ns); /* the metadata service's too */
	if (r == 0)
		r = save(rb, "rebuild:seed");
	if (r == 0)
		r = agent_define_domain(rb->a, &rb->row, &rb->ns, true);
	return r;
}

static const struct {
	const char *name;
	int (*run)(struct rebuild *rb);
} rebuild_steps[] = {
	{ "keep", keep_old },
	{ "image", new_disk },
	{ "boot", boot_new },
};

static void rebuild_failed(struct rebuild *rb, const char *why)
{
	struct agent *a = rb->a;
	char msg[1400];

	if (rb->kept && restore_old(a, &rb->row, rb->old_text, false) < 0) {
		log_error("rebuild: the old disk not restored instance=%s: %s (kept as %s.qcow2.prev)",
			  rb->row.uuid, err_msg(), rb->row.uuid);
		snprintf(msg, sizeof(msg), "rebuild failed: %s; restoring the old disk failed: %s "
			 "(it is kept beside the instance's files)", why, err_msg());
	} else {
		if (rb->kept)
			remove_kept(a, rb->row.uuid);
		else if (rb->was_running)
			vmm_start(a->conn, rb->row.uuid); /* nothing changed but the power */
		snprintf(msg, sizeof(msg), "rebuild failed: %s; the old disk is kept", why);
	}
	rb->row.state = INST_ERROR;
	free(rb->row.error);
	rb->row.error = strdup(msg);
	save(rb, "rebuild:failed");
	store_request_put(a->store, rb->j->request_id, rb->row.uuid, rb->j->type, "{\"ok\":false}");
	agent_emit_state(a, rb->row.uuid, rb->row.project, INST_ERROR, msg, rb->j->request_id,
			 NULL);
}

int agent_do_rebuild(struct agent *a, struct job *j)
{
	struct rebuild rb = { .a = a, .j = j };
	int r;

	r = store_instance_get(a->store, j->uuid, &rb.row);
	if (r < 0)
		return 0; /* deleted while queued */
	if (rb.row.state != INST_REBUILDING ||
	    strcmp(rb.row.step ? rb.row.step : "", "rebuild:accepted") != 0) {
		store_instance_free(&rb.row);
		return 0;
	}
	rb.old_text = rb.row.spec_json ? strdup(rb.row.spec_json) : NULL;
	r = model_spec_parse_text(rb.old_text, &rb.os);
	rb.have_os = r == 0;
	if (r == 0)
		r = img_ref_of(&rb.os, &rb.old_ref);
	if (r == 0)
		r = new_spec(&rb);
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(rebuild_steps); i++) {
		r = rebuild_steps[i].run(&rb);
		if (r < 0)
			err_prefix(r, "rebuild step %s", rebuild_steps[i].name);
	}
	if (r < 0) {
		char why[1024];

		snprintf(why, sizeof(why), "%s", err_msg());
		log_warn("rebuild failed instance=%s: %s", j->uuid, why);
		rebuild_failed(&rb, why);
	} else {
		rb.row.state = INST_ACTIVE;
		free(rb.row.error);
		rb.row.error = NULL;
		r = save(&rb, "done");
		if (r == 0) {
			remove_kept(a, j->uuid);
			store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":true}");
			agent_emit_state(a, j->uuid, rb.row.project, INST_ACTIVE, NULL, j->request_id,
					 json_pack("{s:s, s:s, s:s, s:I}", "address",
						   rb.row.address ? rb.row.address : "", "mac",
						   rb.row.mac ? rb.row.mac : "", "image",
						   rb.ns.image.name ? rb.ns.image.name : "",
						   "generation", (json_int_t)rb.ns.generation));
		}
	}
	if (rb.pinned)
		img_release(a->images, rb.old_ref.checksum);
	if (rb.have_ns)
		model_spec_free(&rb.ns);
	if (rb.have_os)
		model_spec_free(&rb.os);
	free(rb.old_text);
	store_instance_free(&rb.row);
	return r;
}

/* ---- reconcile: interrupted by our death ------------------------------------ */

void agent_rebuild_reconcile(struct agent *a, const struct store_instance *orig)
{
	_cleanup_free_ char *saved = agent_instance_path(a, orig->uuid, ".rebuild.json");
	_cleanup_free_ char *text = NULL;
	struct store_instance row;
	json_t *o = NULL;
	const char *old_text = NULL;
	bool start = true;
	size_t len;
	int r;

	if (store_instance_get(a->store, orig->uuid, &row) < 0)
		return;
	if (saved && read_file(saved, 4 << 20, &text, &len) == 0)
		o = json_loads(text, 0, NULL);
	old_text = json_string_value(json_object_get(o, "spec"));
	if (old_text)
		start = json_string_value(json_object_get(o, "state")) &&
			strcmp(json_string_value(json_object_get(o, "state")), "active") == 0;
	else
		old_text = row.spec_json; /* nothing was changed yet */
	log_warn("reconcile: rebuild interrupted at step %s, rolling back instance=%s",
		 row.step ? row.step : "?", row.uuid);
	r = old_text ? restore_old(a, &row, old_text, start) : err_set(-EINVAL, "no spec");
	free(row.error);
	row.error = NULL;
	if (r < 0) {
		char msg[1024];

		snprintf(msg, sizeof(msg), "rebuild interrupted by an agent restart; rolling back "
			 "failed: %s", err_msg());
		row.error = strdup(msg);
		row.state = INST_ERROR;
	} else {
		row.state = start ? INST_ACTIVE : INST_STOPPED;
		remove_kept(a, row.uuid);
	}
	free(row.step);
	row.step = strdup("done");
	store_instance_put(a->store, &row);
	if (row.request_id) {
		store_request_put(a->store, row.request_id, row.uuid, "instance.rebuild",
				  "{\"ok\":false}");
		agent_emit_result(a, row.request_id, false,
				  "rebuild interrupted by an agent restart: rolled back", NULL);
	}
	agent_emit_state(a, row.uuid, row.project, row.state,
			 r < 0 ? row.error : "rebuild interrupted by an agent restart: rolled back",
			 row.request_id, json_pack("{s:b}", "rolled_back", 1));
	json_decref(o);
	store_instance_free(&row);
}
