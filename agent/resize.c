/*
 * instance.resize (issue 18), on the instance's own host: the guest gets
 * a new flavor (vCPUs, RAM, disk, pinning, huge pages), keeps everything
 * else (uuid, disk contents, address, MAC, seed, port filter).
 *
 *   active|stopped -> resizing -> verify_resize -> (confirm) active|stopped
 *                                              \-> (revert)  reverting -> active|stopped
 *
 * At the edge (agent_handle_resize) the new spec is made once (the stored
 * spec with the scheduler's flavor) and <uuid>.resize.json written before
 * anything changes: the old spec, its placement and the state before. The
 * worker's steps: claim (the new placement: pCPUs, NUMA node, huge pages,
 * re-checked on this host), stop, disk (grown to the flavor's disk_gb with
 * qemu-img resize; never shrunk), define (the vmm layer's define path with
 * the new spec), then started when it was running. A step that fails puts
 * the old spec, placement and domain back (the disk stays grown: qcow2
 * cannot be shrunk safely under a guest's file system) and reports the
 * state before with `rolled_back` and the step in the reason.
 *
 * Confirm drops resize.json. Revert and the reconcile of an agent killed
 * in the middle (row `resizing` or `reverting` at start) both go back to
 * the old flavor from resize.json, the same way as a failed step.
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent_priv.h"

/* ---- the record of the flavor before: <uuid>.resize.json ----------------- */

struct resize_rec {
	char *spec;      /* the spec before (text) */
	char *placement; /* its placement (text), NULL: none */
	bool was_running;
};

static void rec_free(struct resize_rec *r)
{
	free(r->spec);
	free(r->placement);
	memset(r, 0, sizeof(*r));
}

static int rec_write(struct agent *a, const struct store_instance *row)
{
	_cleanup_free_ char *path = agent_instance_path(a, row->uuid, ".resize.json");
	_cleanup_free_ char *text = NULL;
	json_t *o = json_pack("{s:s, s:s?, s:s}", "spec", row->spec_json, "placement",
			      row->placement_json, "state",
			      row->state == INST_ACTIVE ? "active" : "stopped");
	int r;

	text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!path || !text)
		return err_set(-ENOMEM, "out of memory");
	r = write_file_durable(path, text, strlen(text), 0600);
	return r < 0 ? err_prefix(r, "writing %s", path) : 0;
}

static int rec_read(struct agent *a, const char *uuid, struct resize_rec *out)
{
	_cleanup_free_ char *path = agent_instance_path(a, uuid, ".resize.json");
	_cleanup_free_ char *text = NULL;
	const char *st, *spec, *pl;
	size_t len;
	json_t *o;
	int r;

	if (!path)
		return err_set(-ENOMEM, "out of memory");
	r = read_file(path, 4 << 20, &text, &len);
	if (r < 0)
		return err_prefix(r, "instance %s: no record of its flavor before the resize", uuid);
	o = json_loads(text, 0, NULL);
	spec = json_string_value(json_object_get(o, "spec"));
	pl = json_string_value(json_object_get(o, "placement"));
	st = json_string_value(json_object_get(o, "state"));
	if (!spec || !st) {
		json_decref(o);
		return err_set(-EINVAL, "instance %s: %s does not parse", uuid, path);
	}
	out->spec = strdup(spec);
	out->placement = pl ? strdup(pl) : NULL;
	out->was_running = strcmp(st, "active") == 0;
	json_decref(o);
	if (!out->spec || (pl && !out->placement)) {
		rec_free(out);
		return err_set(-ENOMEM, "out of memory");
	}
	return 0;
}

static void rec_remove(struct agent *a, const char *uuid)
{
	char *p = agent_instance_path(a, uuid, ".resize.json");

	if (p)
		unlink(p);
	free(p);
}

/* ---- placements ---------------------------------------------------------- */

static int placement_parse(struct agent *a, const char *text, struct vmm_placement *out)
{
	json_t *pj = text ? json_loads(text, 0, NULL) : NULL;
	int r;

	if (!pj)
		return 1; /* none */
	r = vmm_placement_from_json(pj, a->topo, out);
	json_decref(pj);
	return r;
}

/* Give back the claim of placement TEXT (NULL: nothing). */
static void usage_release_text(struct agent *a, const char *text)
{
	struct vmm_placement p;

	if (placement_parse(a, text, &p) != 0)
		return;
	pthread_mutex_lock(&a->usage_lock);
	vmm_usage_release(&a->usage, &p);
	pthread_mutex_unlock(&a->usage_lock);
	vmm_placement_free(&p);
}

/* Claim placement TEXT again (after its release). */
static int usage_claim_text(struct agent *a, const char *text)
{
	struct vmm_placement p;
	int r = placement_parse(a, text, &p);

	if (r != 0)
		return r < 0 ? r : 0;
	pthread_mutex_lock(&a->usage_lock);
	r = vmm_usage_claim(&a->usage, a->topo, &p);
	pthread_mutex_unlock(&a->usage_lock);
	vmm_placement_free(&p);
	return r;
}

/*
 * Back to the flavor of REC: the domain destroyed, the current claim
 * (the row's placement) released and the old one claimed, the old spec
 * and placement in the row, the old domain defined on the (grown) disk and
 * started when it was running. The row is changed in memory.
 */
static int restore_old(struct agent *a, struct store_instance *row, const struct resize_rec *rec)
{
	struct instance_spec os;
	int r = model_spec_parse_text(rec->spec, &os);

	if (r < 0)
		return r;
	if (a->conn)
		vmm_destroy(a->conn, row->uuid); /* off already is fine */
	if (!row->placement_json || !rec->placement ||
	    strcmp(row->placement_json, rec->placement) != 0) {
		usage_release_text(a, row->placement_json);
		r = usage_claim_text(a, rec->placement);
		if (r < 0)
			r = err_prefix(r, "claiming the old placement again");
	}
	if (r == 0) {
		char *sp = strdup(rec->spec), *pl = rec->placement ? strdup(rec->placement) : NULL;

		if (!sp || (rec->placement && !pl)) {
			free(sp);
			free(pl);
			r = err_set(-ENOMEM, "out of memory");
		} else {
			free(row->spec_json);
			free(row->placement_json);
			row->spec_json = sp;
			row->placement_json = pl;
		}
	}
	if (r == 0)
		r = agent_define_domain(a, row, &os, rec->was_running);
	model_spec_free(&os);
	return r;
}

/* ---- the edge ------------------------------------------------------------ */

/* Refused at the edge: the request answered, and the state that is true
 * here said (the scheduler said resizing or reverting). */
static int refuse(struct agent *a, const struct bus_envelope *e, const struct store_instance *row,
		  const char *msg)
{
	agent_emit_result(a, e->request_id, false, msg, NULL);
	if (row)
		agent_emit_state(a, row->uuid, row->project, row->state, msg, e->request_id,
				 json_pack("{s:b}", "rolled_back", 1));
	return 0;
}

/* The stored spec with the command's flavor, parsed once. */
static int new_spec(const struct store_instance *row, const json_t *flavor,
		    struct instance_spec *out)
{
	json_t *j = row->spec_json ? json_loads(row->spec_json, 0, NULL) : NULL;
	int r;

	if (!j)
		return err_set(-EINVAL, "instance %s: its stored spec does not parse", row->uuid);
	json_object_set_new(j, "flavor", json_deep_copy(flavor));
	r = model_spec_parse(j, out);
	json_decref(j);
	return r;
}

int agent_handle_resize(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	struct store_instance row;
	struct instance_spec spec;
	char msg[1024];
	int r;

	if (store_instance_get(a->store, uuid, &row) < 0) {
		snprintf(msg, sizeof(msg), "instance %s is not on host %s", uuid, a->cfg->host);
		return refuse(a, e, NULL, msg);
	}
	if (row.state != INST_ACTIVE && row.state != INST_STOPPED) {
		snprintf(msg, sizeof(msg), "instance %s is %s: resize needs it active or stopped",
			 uuid, instance_state_names[row.state]);
		refuse(a, e, &row, msg);
		store_instance_free(&row);
		return 0;
	}
	r = new_spec(&row, json_object_get(e->body, "flavor"), &spec);
	if (r < 0) {
		snprintf(msg, sizeof(msg), "instance.resize refused by host %s: %s", a->cfg->host,
			 err_msg());
		refuse(a, e, &row, msg);
		store_instance_free(&row);
		return 0;
	}
	/* the flavor before is durable before anything changes: reconcile finds it */
	r = rec_write(a, &row);
	if (r == 0)
		r = agent_accept_row(a, e, &row, INST_RESIZING, "resize:accepted");
	if (r < 0) {
		model_spec_free(&spec);
		store_instance_free(&row);
		return r; /* not durable: the message comes again */
	}
	agent_fault_point("accept", e->type);
	agent_emit_state(a, uuid, row.project, INST_RESIZING, NULL, e->request_id, NULL);
	store_instance_free(&row);
	return agent_enqueue_spec(a, "instance.resize", e->request_id, &spec);
}

/* instance.resize.confirm and instance.resize.revert: queued behind the
 * instance's other jobs, refused unless a resize waits for its answer. */
int agent_handle_resize_answer(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	bool revert = strcmp(e->type, "instance.resize.revert") == 0;
	struct store_instance row;
	char msg[512];
	int r;

	if (store_instance_get(a->store, uuid, &row) < 0) {
		snprintf(msg, sizeof(msg), "instance %s is not on host %s", uuid, a->cfg->host);
		return refuse(a, e, NULL, msg);
	}
	if (row.state != INST_VERIFY_RESIZE) {
		snprintf(msg, sizeof(msg), "instance %s is %s: no resize to %s", uuid,
			 instance_state_names[row.state], revert ? "revert" : "confirm");
		agent_emit_result(a, e->request_id, false, msg, NULL);
		store_instance_free(&row);
		return 0;
	}
	r = 0;
	if (revert) {
		r = store_instance_set_state(a->store, uuid, INST_REVERTING, "revert:accepted", NULL);
		if (r == 0)
			agent_emit_state(a, uuid, row.project, INST_REVERTING, NULL, e->request_id, NULL);
	}
	if (r == 0)
		r = store_request_put(a->store, e->request_id, uuid, e->type, NULL);
	store_instance_free(&row);
	if (r < 0)
		return r;
	agent_fault_point("accept", e->type);
	return agent_enqueue(a, e->type, uuid, e->request_id, NULL);
}

/* ---- the worker ------------------------------------------------------------ */

struct resize {
	struct agent *a;
	struct job *j;
	struct store_instance row;
	struct resize_rec rec;
	bool claimed;   /* the new placement claimed (the old released) */
	bool changed;   /* the row or the domain no longer what rec says */
	uint64_t disk_bytes;
};

static int save(struct resize *rz, const char *step)
{
	int r;

	free(rz->row.step);
	rz->row.step = strdup(step);
	r = store_instance_put(rz->a->store, &rz->row);
	/* STRATUS_FAULT=resize:disk kills us right after step "resize:disk" */
	agent_fault_point("resize", strchr(step, ':') ? strchr(step, ':') + 1 : step);
	return r;
}

/* The new flavor's placement, on this host, in place of the old one. */
static int step_claim(struct resize *rz)
{
	struct agent *a = rz->a;
	struct vmm_placement np;
	bool placed = false;
	json_t *pj;
	int r;

	usage_release_text(a, rz->rec.placement);
	pthread_mutex_lock(&a->usage_lock);
	r = vmm_fit(a->topo, a->vmm_cfg, &a->usage, rz->j->spec, &np);
	placed = r == 0;
	if (r == 0)
		r = vmm_cpu_fit(a->topo, a->vmm_cfg, a->virt, rz->j->spec, &np);
	if (r == 0)
		r = vmm_usage_claim(&a->usage, a->topo, &np);
	pthread_mutex_unlock(&a->usage_lock);
	if (r < 0) {
		int r2 = usage_claim_text(a, rz->rec.placement);

		if (r2 < 0)
			log_error("resize: the old placement not claimed again instance=%s: %s",
				  rz->row.uuid, err_msg());
		if (placed)
			vmm_placement_free(&np);
		return err_prefix(r, "host %s cannot fit flavor %s", a->cfg->host,
				  rz->j->spec->flavor.name);
	}
	rz->claimed = true;
	pj = vmm_placement_to_json(&np, a->topo);
	vmm_placement_free(&np);
	free(rz->row.placement_json);
	rz->row.placement_json = pj ? json_dumps(pj, JSON_COMPACT) : NULL;
	json_decref(pj);
	rz->changed = true;
	return save(rz, "resize:claim");
}

static int step_stop(struct resize *rz)
{
	struct agent *a = rz->a;
	int r = 0;

	if (rz->rec.was_running) {
		bool forced = false;

		r = vmm_stop(a->conn, rz->row.uuid, a->vmm_cfg->shutdown_timeout_ms, &forced);
		if (r == 0 && forced)
			log_info("resize: guest did not shut down in time, destroyed instance=%s",
				 rz->row.uuid);
	}
	return r < 0 ? r : save(rz, "resize:stop");
}

static int step_disk(struct resize *rz)
{
	bool grown = false;
	int r;

	if (!rz->row.overlay_path)
		return err_set(-ENOENT, "instance %s has no disk", rz->row.uuid);
	r = img_overlay_grow(rz->a->images, rz->row.overlay_path,
			     (uint64_t)rz->j->spec->flavor.disk_gb, &grown);
	if (r == 0)
		r = img_overlay_size(rz->row.overlay_path, &rz->disk_bytes);
	if (r == 0 && grown)
		log_info("resize: disk grown instance=%s disk_gb=%ld", rz->row.uuid,
			 rz->j->spec->flavor.disk_gb);
	return r < 0 ? r : save(rz, "resize:disk");
}

static int step_define(struct resize *rz)
{
	int r = agent_row_set_spec(&rz->row, rz->j->spec);

	if (r == 0)
		r = save(rz, "resize:define");
	if (r == 0)
		r = agent_define_domain(rz->a, &rz->row, rz->j->spec, rz->rec.was_running);
	return r;
}

static const struct {
	const char *name;
	int (*run)(struct resize *rz);
} resize_steps[] = {
	{ "claim", step_claim },
	{ "stop", step_stop },
	{ "disk", step_disk },
	{ "define", step_define },
};

static const char *flavor_name_of(const char *spec_text, char *buf, size_t len)
{
	json_t *j = spec_text ? json_loads(spec_text, 0, NULL) : NULL;
	const char *n = json_string_value(json_object_get(json_object_get(j, "flavor"), "name"));

	snprintf(buf, len, "%s", n ? n : "?");
	json_decref(j);
	return buf;
}

/* Back to the flavor before; the state before, or error when that fails.
 * WHY: what failed (NULL: a revert asked for). */
static void roll_back(struct resize *rz, const char *why, const char *request_type)
{
	struct agent *a = rz->a;
	char msg[1600], old[256];
	int r;

	flavor_name_of(rz->rec.spec, old, sizeof(old));
	/* nothing changed yet (the claim refused): the guest runs as it did */
	r = rz->changed || !why ? restore_old(a, &rz->row, &rz->rec) : 0;
	free(rz->row.error);
	rz->row.error = NULL;
	if (r < 0) {
		snprintf(msg, sizeof(msg), "%s%s; restoring flavor %s failed: %s (the disk is kept)",
			 why ? "resize failed: " : "resize revert failed", why ? why : "", old,
			 err_msg());
		rz->row.state = INST_ERROR;
		rz->row.error = strdup(msg);
	} else {
		if (why)
			snprintf(msg, sizeof(msg), "resize failed: %s; back on flavor %s", why, old);
		else
			snprintf(msg, sizeof(msg), "resize reverted: back on flavor %s (the disk keeps "
				 "its grown size)", old);
		rz->row.state = rz->rec.was_running ? INST_ACTIVE : INST_STOPPED;
		rec_remove(a, rz->row.uuid);
	}
	if (save(rz, "done") < 0)
		log_error("resize: store instance=%s: %s", rz->row.uuid, err_msg());
	store_request_put(a->store, rz->row.request_id ? rz->row.request_id : rz->j->request_id,
			  rz->row.uuid, request_type, why || r < 0 ? "{\"ok\":false}" : "{\"ok\":true}");
	log_warn("resize rolled back instance=%s state=%s: %s", rz->row.uuid,
		 instance_state_names[rz->row.state], msg);
	agent_emit_state(a, rz->row.uuid, rz->row.project, rz->row.state, msg, rz->j->request_id,
			 json_pack("{s:b, s:s}", why ? "rolled_back" : "reverted", 1, "flavor", old));
}

static void resize_free(struct resize *rz)
{
	rec_free(&rz->rec);
	store_instance_free(&rz->row);
}

int agent_do_resize(struct agent *a, struct job *j)
{
	struct resize rz = { .a = a, .j = j };
	int r;

	if (store_instance_get(a->store, j->uuid, &rz.row) < 0)
		return 0; /* deleted while queued */
	if (rz.row.state != INST_RESIZING ||
	    strcmp(rz.row.step ? rz.row.step : "", "resize:accepted") != 0) {
		store_instance_free(&rz.row);
		return 0;
	}
	r = rec_read(a, j->uuid, &rz.rec);
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(resize_steps); i++) {
		r = resize_steps[i].run(&rz);
		if (r < 0)
			err_prefix(r, "resize step %s", resize_steps[i].name);
	}
	if (r < 0) {
		char why[1024];

		snprintf(why, sizeof(why), "%s", err_msg());
		log_warn("resize failed instance=%s: %s", j->uuid, why);
		if (rz.rec.spec) {
			roll_back(&rz, why, j->type);
		} else {
			/* no record of the flavor before: nothing was changed, nothing to restore */
			rz.row.state = INST_ERROR;
			free(rz.row.error);
			rz.row.error = strdup(why);
			save(&rz, "done");
			agent_emit_state(a, j->uuid, rz.row.project, INST_ERROR, why, j->request_id,
					 json_pack("{s:b}", "rolled_back", 1));
		}
		resize_free(&rz);
		return r;
	}
	rz.row.state = INST_VERIFY_RESIZE;
	r = save(&rz, "resize:verify");
	if (r == 0) {
		const struct spec_flavor *f = &j->spec->flavor;

		store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":true}");
		log_info("resized instance=%s flavor=%s vcpus=%ld ram_mb=%ld disk_bytes=%llu",
			 j->uuid, f->name, f->vcpus, f->ram_mb, (unsigned long long)rz.disk_bytes);
		agent_emit_state(a, j->uuid, rz.row.project, INST_VERIFY_RESIZE, NULL, j->request_id,
				 json_pack("{s:s, s:I, s:I, s:I}", "flavor", f->name, "vcpus",
					   (json_int_t)f->vcpus, "ram_mb", (json_int_t)f->ram_mb,
					   "disk_bytes", (json_int_t)rz.disk_bytes));
	}
	resize_free(&rz);
	return r;
}

/* instance.resize.confirm: the flavor before forgotten. */
static int do_confirm(struct resize *rz)
{
	struct agent *a = rz->a;
	enum vmm_power pw = VMM_POWER_NONE;
	int r;

	if (rz->row.state != INST_VERIFY_RESIZE)
		return 0; /* answered at the edge */
	if (a->conn)
		vmm_power_state(a->conn, rz->row.uuid, &pw);
	rec_remove(a, rz->row.uuid);
	rz->row.state = pw == VMM_POWER_RUNNING || pw == VMM_POWER_PAUSED ? INST_ACTIVE
									  : INST_STOPPED;
	r = save(rz, "done");
	if (r < 0)
		return r;
	store_request_put(a->store, rz->j->request_id, rz->row.uuid, rz->j->type,
			  "{\"ok\":true}");
	log_info("resize confirmed instance=%s", rz->row.uuid);
	agent_emit_state(a, rz->row.uuid, rz->row.project, rz->row.state, NULL, rz->j->request_id,
			 json_pack("{s:b}", "confirmed", 1));
	return 0;
}

int agent_do_resize_answer(struct agent *a, struct job *j)
{
	struct resize rz = { .a = a, .j = j };
	int r = 0;

	if (store_instance_get(a->store, j->uuid, &rz.row) < 0)
		return 0;
	if (strcmp(j->type, "instance.resize.confirm") == 0) {
		r = do_confirm(&rz);
	} else if (rz.row.state == INST_REVERTING) {
		r = rec_read(a, j->uuid, &rz.rec);
		if (r == 0)
			roll_back(&rz, NULL, j->type);
	}
	resize_free(&rz);
	return r;
}

/* ---- reconcile: interrupted by our death ------------------------------------ */

void agent_resize_reconcile(struct agent *a, const struct store_instance *orig)
{
	struct resize rz = { .a = a, .changed = true };
	struct job j = { 0 };
	bool reverting = orig->state == INST_REVERTING;

	snprintf(j.type, sizeof(j.type), "%s",
		 reverting ? "instance.resize.revert" : "instance.resize");
	snprintf(j.uuid, sizeof(j.uuid), "%s", orig->uuid);
	snprintf(j.request_id, sizeof(j.request_id), "%s", orig->request_id ? orig->request_id : "");
	rz.j = &j;
	if (store_instance_get(a->store, orig->uuid, &rz.row) < 0)
		return;
	log_warn("reconcile: resize interrupted at step %s, %s instance=%s",
		 rz.row.step ? rz.row.step : "?", reverting ? "finishing the revert" : "rolling back",
		 rz.row.uuid);
	if (rec_read(a, orig->uuid, &rz.rec) < 0) {
		char msg[1024];

		snprintf(msg, sizeof(msg), "resize interrupted by an agent restart: %s", err_msg());
		rz.row.state = INST_ERROR;
		free(rz.row.error);
		rz.row.error = strdup(msg);
		save(&rz, "done");
		agent_emit_state(a, rz.row.uuid, rz.row.project, INST_ERROR, msg, j.request_id,
				 json_pack("{s:b}", "rolled_back", 1));
	} else {
		roll_back(&rz, reverting ? NULL : "interrupted by an agent restart", j.type);
	}
	resize_free(&rz);
}
