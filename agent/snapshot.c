/*
 * instance.snapshot (issue 18): the instance's disk, flattened into a new
 * standalone qcow2, uploaded to the image store (images.store_url) and
 * reported `uploaded` to the scheduler, which registers it as a private
 * image of the instance's project (scheduler/snapshot.c).
 *
 * The steps, durable in <uuid>.snapshot.json (0600, atomic) so that a
 * restart finds what a kill -9 left:
 *   1. quiesce a running guest: its filesystems frozen through the QEMU
 *      guest agent when the image has hw_qemu_guest_agent=yes (falling
 *      back to a pause when the agent does not answer), else its vCPUs
 *      paused (QEMU flushes the block layer when it stops);
 *   2. copy the overlay (<uuid>.qcow2, the guest's writes only; the base
 *      image in the cache never changes) to <uuid>.snap.qcow2, in the
 *      kernel (copy_file_range: a reflink where the filesystem can);
 *   3. thaw / resume: the guest was held for the copy of its own writes,
 *      not for the flatten or the upload (the result says how long);
 *   4. flatten: qemu-img convert of the copy and its base into
 *      <uuid>.snap-flat.qcow2 while the guest runs;
 *   5. upload by HTTP PUT, hashed while it streams, progress events on
 *      stratus.events, verified after (HEAD size, GET sha256); restarted
 *      from the first byte on failure, images.retries times at most;
 *   6. `uploaded` with url, checksum, size, and how it was quiesced.
 * Any failure: the guest thawed / resumed, temporary files removed, the
 * store's copy deleted, `failed` naming the step. At start, an intent file
 * left by a killed agent: the guest resumed / thawed (never left paused),
 * temporary files removed, `failed` (interrupted), so nothing half-made is
 * ever registered and the name is free again.
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent_priv.h"

static const char *const temp_files[] = { ".snap.qcow2", ".snap-flat.qcow2" };

struct snap {
	struct agent *a;
	char uuid[UUID_STRLEN];
	char id[UUID_STRLEN];
	char *name, *project, *request_id;
	char *intent, *overlay, *copy, *flat, *url;
	enum vmm_power power;
	bool uploaded;          /* the store holds our copy (deleted on failure) */
	int64_t last_progress_ms;
};

static void snap_free(struct snap *s)
{
	free(s->name);
	free(s->project);
	free(s->request_id);
	free(s->intent);
	free(s->overlay);
	free(s->copy);
	free(s->flat);
	free(s->url);
}

static int save_intent(struct snap *s, const char *phase)
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "snapshot", s->id, "name", s->name,
			      "project", s->project, "request_id", s->request_id, "phase", phase);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	int r;

	json_decref(j);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	r = write_file_durable(s->intent, text, strlen(text), 0600);
	free(text);
	return r;
}

/* S from the intent file of UUID (phase malloc'd into *phase when given). */
static int load_intent(struct agent *a, const char *uuid, struct snap *s, char **phase)
{
	_cleanup_free_ char *text = NULL;
	json_t *j;
	size_t len;
	int r;

	*s = (struct snap){ .a = a };
	snprintf(s->uuid, sizeof(s->uuid), "%s", uuid);
	s->intent = agent_instance_path(a, uuid, ".snapshot.json");
	s->overlay = agent_instance_path(a, uuid, ".qcow2");
	s->copy = agent_instance_path(a, uuid, temp_files[0]);
	s->flat = agent_instance_path(a, uuid, temp_files[1]);
	if (!s->intent || !s->overlay || !s->copy || !s->flat)
		return err_set(-ENOMEM, "out of memory");
	r = read_file(s->intent, 64 * 1024, &text, &len);
	if (r < 0)
		return r;
	j = json_loads(text, 0, NULL);
	if (!j)
		return err_set(-EINVAL, "%s does not parse", s->intent);
	snprintf(s->id, sizeof(s->id), "%s", json_string_value(json_object_get(j, "snapshot")) ?: "");
	s->name = strdup(json_string_value(json_object_get(j, "name")) ?: "");
	s->project = strdup(json_string_value(json_object_get(j, "project")) ?: "");
	s->request_id = strdup(json_string_value(json_object_get(j, "request_id")) ?: "");
	if (phase)
		*phase = strdup(json_string_value(json_object_get(j, "phase")) ?: "");
	json_decref(j);
	if (!s->name || !s->project || !s->request_id || (phase && !*phase))
		return err_set(-ENOMEM, "out of memory");
	return 0;
}

static json_t *event(const struct snap *s, const char *phase)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "uuid", s->uuid, "snapshot", s->id,
			 "project", s->project, "name", s->name, "phase", phase, "host",
			 s->a->cfg->host);
}

static void emit_failed(struct snap *s, const char *step, const char *why)
{
	json_t *b = event(s, "failed");

	log_warn("snapshot failed instance=%s snapshot=%s step=%s error=\"%s\"", s->uuid, s->id,
		 step, why);
	if (b)
		json_object_update_new(b, json_pack("{s:s, s:s}", "step", step, "error", why));
	agent_emit_event(s->a, "image.snapshot", s->request_id, b);
}

/* Temporary files and the intent gone; the request settled. */
static void finish(struct snap *s, bool ok)
{
	for (size_t i = 0; i < ARRAY_SIZE(temp_files); i++) {
		const char *p = i == 0 ? s->copy : s->flat;

		if (p && unlink(p) < 0 && errno != ENOENT)
			log_warn("snapshot: cannot remove %s: %s", p, strerror(errno));
	}
	if (s->uploaded && !ok && img_store_delete(s->a->img_cfg, s->url) < 0)
		log_warn("snapshot: the store's copy stays: %s", err_msg());
	if (s->request_id && *s->request_id)
		store_request_put(s->a->store, s->request_id, s->uuid, "instance.snapshot",
				  ok ? "{\"ok\":true}" : "{\"ok\":false}");
	if (s->intent)
		unlink(s->intent);
}

/* <images.store_url>/<snapshot id>.qcow2 (malloc'd; NULL: out of memory) */
static char *store_url(struct agent *a, const char *id)
{
	const char *base = a->img_cfg->store_url ? a->img_cfg->store_url : "";
	size_t n = strlen(base);
	char *url = NULL;

	if (asprintf(&url, "%s%s%s.qcow2", base, n && base[n - 1] == '/' ? "" : "/", id) < 0)
		return NULL;
	return url;
}

/* ---- the edge --------------------------------------------------------------- */

int agent_handle_snapshot(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	struct snap s = { .a = a };
	struct store_instance row;
	const char *why = NULL;
	char buf[512];
	int r;

	snprintf(s.uuid, sizeof(s.uuid), "%s", uuid);
	snprintf(s.id, sizeof(s.id), "%s", json_string_value(json_object_get(e->body, "snapshot")));
	s.name = strdup(json_string_value(json_object_get(e->body, "name")));
	s.request_id = strdup(e->request_id);
	s.intent = agent_instance_path(a, uuid, ".snapshot.json");
	if (!s.name || !s.request_id || !s.intent) {
		snap_free(&s);
		return err_set(-ENOMEM, "out of memory");
	}
	r = store_instance_get(a->store, uuid, &row);
	s.project = strdup(r == 0 ? row.project : "unknown");
	if (r < 0)
		why = "the instance is not on this host";
	else if (row.state != INST_ACTIVE && row.state != INST_STOPPED)
		why = (snprintf(buf, sizeof(buf), "the instance is %s here: a snapshot needs it "
				"active or stopped", instance_state_names[row.state]), buf);
	else if (access(s.intent, F_OK) == 0)
		why = "another snapshot of the instance is in progress";
	else if (!a->img_cfg->store_url || !*a->img_cfg->store_url)
		why = (snprintf(buf, sizeof(buf), "host %s has no image store (images.store_url "
				"is not set)", a->cfg->host), buf);
	if (r == 0)
		store_instance_free(&row);
	if (!s.project) {
		snap_free(&s);
		return err_set(-ENOMEM, "out of memory");
	}
	if (why) {
		emit_failed(&s, "accept", why);
		store_request_put(a->store, e->request_id, uuid, e->type, "{\"ok\":false}");
		snap_free(&s);
		return 0;
	}
	r = save_intent(&s, "accepted");
	if (r == 0)
		r = store_request_put(a->store, e->request_id, uuid, e->type, NULL);
	if (r < 0) {
		unlink(s.intent);
		snap_free(&s);
		return r; /* not durable: the message comes again */
	}
	agent_fault_point("accept", e->type);
	agent_emit_event(a, "image.snapshot", e->request_id, event(&s, "started"));
	snap_free(&s);
	return agent_enqueue(a, e->type, uuid, e->request_id, NULL);
}

/* ---- the job ---------------------------------------------------------------- */

static bool has_guest_agent(struct agent *a, const char *uuid)
{
	struct store_instance row;
	struct model_image_props props = { 0 };
	struct instance_spec spec;
	json_t *j = NULL;
	bool yes = false;

	if (store_instance_get(a->store, uuid, &row) < 0)
		return false;
	j = json_loads(row.spec_json, 0, NULL);
	if (j && model_spec_parse(j, &spec) == 0) {
		yes = model_image_props_parse(spec.image.name, spec.image.properties,
					      spec.image.n_properties, &props) == 0 &&
		      props.guest_agent;
		model_spec_free(&spec);
	}
	json_decref(j);
	store_instance_free(&row);
	return yes;
}

/* Steps 1-3: the overlay copied while the guest is held; *how says how. */
static int copy_quiesced(struct snap *s, char *how, size_t howlen, int64_t *pause_ms)
{
	struct agent *a = s->a;
	enum vmm_quiesce_op hold = VMM_PAUSE, release = VMM_RESUME;
	int64_t t0;
	int r;

	*pause_ms = 0;
	if (vmm_power_state(a->conn, s->uuid, &s->power) < 0)
		return -EIO;
	if (s->power != VMM_POWER_RUNNING) {
		snprintf(how, howlen, "not running (%s): copied as it is",
			 vmm_power_names[s->power]);
		return img_snapshot_copy(s->overlay, s->copy);
	}
	if (has_guest_agent(a, s->uuid)) {
		if ((r = save_intent(s, "freezing")) < 0)
			return r;
		if (vmm_quiesce(a->conn, s->uuid, VMM_FS_FREEZE) == 0) {
			hold = VMM_FS_FREEZE;
			release = VMM_FS_THAW;
		} else {
			log_warn("snapshot: the guest agent did not freeze instance=%s, pausing "
				 "instead: %s", s->uuid, err_msg());
		}
	}
	if (hold == VMM_PAUSE) {
		if ((r = save_intent(s, "pausing")) < 0)
			return r;
	}
	t0 = time_mono_ms();
	if (hold == VMM_PAUSE && vmm_quiesce(a->conn, s->uuid, VMM_PAUSE) < 0)
		return -EIO;
	agent_fault_point("snapshot", "quiesced");
	r = img_snapshot_copy(s->overlay, s->copy);
	if (vmm_quiesce(a->conn, s->uuid, release) < 0) {
		/* the guest must not stay held: say so loudly, keep the error */
		log_error("snapshot: cannot release instance=%s: %s", s->uuid, err_msg());
		return -EIO;
	}
	*pause_ms = time_mono_ms() - t0;
	if (hold == VMM_FS_FREEZE)
		snprintf(how, howlen, "quiesced by guest agent (%lld ms)", (long long)*pause_ms);
	else
		snprintf(how, howlen, "paused %lld ms", (long long)*pause_ms);
	if (r == 0)
		r = save_intent(s, "copied");
	return r;
}

static int on_progress(const struct img_progress *p, void *ud)
{
	struct snap *s = ud;
	json_t *b;

	if (s->a->stopping)
		return 1;
	b = event(s, "progress");
	if (b)
		json_object_update_new(b, json_pack("{s:I, s:I}", "bytes", (json_int_t)p->bytes,
						    "total", (json_int_t)p->total));
	agent_emit_event(s->a, "image.snapshot", s->request_id, b);
	return 0;
}

int agent_do_snapshot(struct agent *a, struct job *j)
{
	struct img_uploaded up = { 0 };
	struct img_upload u = { 0 };
	struct snap s;
	char how[128], why[768];
	const char *step = "copy";
	int64_t pause_ms = 0;
	json_t *b;
	int r;

	r = load_intent(a, j->uuid, &s, NULL);
	if (r < 0) {
		/* settled already (a reconcile at start) or never ours */
		log_info("snapshot job without intent instance=%s: %s", j->uuid, err_msg());
		snap_free(&s);
		return 0;
	}
	log_info("snapshot started instance=%s snapshot=%s name=%s", s.uuid, s.id, s.name);
	r = copy_quiesced(&s, how, sizeof(how), &pause_ms);
	if (r == 0) {
		step = "flatten";
		r = img_flatten(a->img_cfg, s.copy, s.flat);
		unlink(s.copy);
	}
	if (r == 0) {
		step = "upload";
		s.url = store_url(a, s.id);
		if (!s.url)
			r = err_set(-ENOMEM, "out of memory");
	}
	if (r == 0) {
		u = (struct img_upload){ .name = s.name, .path = s.flat, .url = s.url,
					 .progress = on_progress, .ud = &s };
		s.uploaded = true; /* from the first byte on: deleted if we fail */
		r = save_intent(&s, "uploading");
		if (r == 0)
			r = img_upload(a->img_cfg, &u, &up);
	}
	if (r < 0) {
		snprintf(why, sizeof(why), "%s", err_msg());
		emit_failed(&s, step, why);
		finish(&s, false);
		snap_free(&s);
		return 0;
	}
	log_info("snapshot uploaded instance=%s snapshot=%s url=%s size=%llu attempts=%u %s", s.uuid,
		 s.id, s.url, (unsigned long long)up.size, up.attempts, how);
	b = event(&s, "uploaded");
	if (b)
		json_object_update_new(b, json_pack("{s:s, s:s, s:I, s:s, s:I}", "url", s.url,
						    "checksum", up.checksum, "size",
						    (json_int_t)up.size, "quiesce", how, "pause_ms",
						    (json_int_t)pause_ms));
	agent_emit_event(a, "image.snapshot", s.request_id, b);
	finish(&s, true);
	snap_free(&s);
	return 0;
}

/* ---- reconcile at start ------------------------------------------------------ */

void agent_snapshot_reconcile(struct agent *a, const struct store_instance *row)
{
	_cleanup_free_ char *phase = NULL;
	struct snap s;
	enum vmm_power pw = VMM_POWER_NONE;

	if (load_intent(a, row->uuid, &s, &phase) < 0) {
		snap_free(&s);
		return;
	}
	log_warn("snapshot interrupted by an agent restart instance=%s snapshot=%s phase=%s",
		 row->uuid, s.id, phase);
	/* the guest is never left held: thaw what we may have frozen, resume
	 * what we may have paused */
	if (strcmp(phase, "freezing") == 0 && vmm_quiesce(a->conn, row->uuid, VMM_FS_THAW) < 0)
		log_info("snapshot: thaw instance=%s: %s", row->uuid, err_msg());
	if ((strcmp(phase, "pausing") == 0 || strcmp(phase, "freezing") == 0) &&
	    vmm_power_state(a->conn, row->uuid, &pw) == 0 && pw == VMM_POWER_PAUSED) {
		if (vmm_quiesce(a->conn, row->uuid, VMM_RESUME) < 0)
			log_error("snapshot: cannot resume instance=%s: %s", row->uuid, err_msg());
		else
			log_warn("snapshot: resumed instance=%s (paused by the interrupted "
				 "snapshot)", row->uuid);
	}
	if (strcmp(phase, "uploading") == 0 && (s.url = store_url(a, s.id)))
		s.uploaded = true;
	emit_failed(&s, "interrupted", "interrupted by an agent restart");
	finish(&s, false);
	snap_free(&s);
}
