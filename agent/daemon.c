/* The agent daemon: wiring, the command handler, reconcile, the run loop. */
#define LOG_TAG "agent"
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent_priv.h"

/* ---- lifecycle events from libvirt --------------------------------------- */

static void on_vmm_event(enum vmm_event ev, const char *uuid, const char *detail, void *opaque)
{
	struct agent *a = opaque;

	switch (ev) {
	case VMM_EV_DISCONNECTED:
		a->degraded = true;
		log_warn("libvirtd connection lost: host degraded until it is back detail=\"%s\"",
			 detail ? detail : "");
		return;
	case VMM_EV_RECONNECTED:
		a->degraded = false;
		log_info("libvirtd connection back");
		return;
	case VMM_EV_CRASHED:
	case VMM_EV_SHUTDOWN:
	case VMM_EV_STARTED:
	case VMM_EV_UNDEFINED: {
		/* something happened that we may not have asked for: let a worker
		 * compare store and libvirt, in order with the instance's commands */
		const char *reason = ev == VMM_EV_CRASHED    ? "guest crashed"
				     : ev == VMM_EV_SHUTDOWN ? "guest shut itself down"
				     : ev == VMM_EV_STARTED  ? "guest started outside Stratus"
							     : "domain undefined outside Stratus";

		if (uuid && *uuid)
			agent_enqueue(a, "instance.sync", uuid, NULL, reason);
		return;
	}
	case VMM_EV_STOPPED:
	case VMM_EV_REBOOTED:
	case VMM_EV_DEFINED:
	case VMM_EV_LAST:
		return;
	}
}

/* ---- commands from stratus.host.<host> ----------------------------------- */

static const char *body_uuid(const struct bus_envelope *e)
{
	return json_string_value(json_object_get(e->body, "uuid"));
}

/* A request seen before: say what is true now, change nothing. */
static void announce(struct agent *a, const char *uuid, const char *request_id,
		     const char *outcome)
{
	struct store_instance row;

	if (store_instance_get(a->store, uuid, &row) == 0) {
		agent_emit_state(a, uuid, row.project, row.state, "duplicate request", request_id,
				 NULL);
		store_instance_free(&row);
	} else {
		json_t *o = outcome ? json_loads(outcome, 0, NULL) : NULL;

		agent_emit_result(a, request_id, json_is_true(json_object_get(o, "ok")),
				  "duplicate request: already processed; the instance is not on this host",
				  NULL);
		json_decref(o);
	}
}

/* Refused at the edge (not from the scheduler, or a seal that does not
 * open): said so on stratus.events, nothing else done. */
static int refuse(struct agent *a, const struct bus_envelope *e, const char *why)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s refused by host %s: %s", e->type, a->cfg->host, why);
	log_warn("command refused type=%s request=%s source=\"%s\" reason=\"%s\"", e->type,
		 e->request_id, e->source ? e->source : "", why);
	pthread_mutex_lock(&a->m_lock);
	a->m.refused++;
	pthread_mutex_unlock(&a->m_lock);
	agent_emit_result(a, e->request_id, false, msg, NULL);
	return 0;
}

/* instance.build: the body is parsed here, once; the job carries the
 * struct and the store the JSON serialized from it. */
static int handle_build(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	struct instance_spec spec;
	struct store_instance row = { .state = INST_BUILDING };
	json_t *body;
	int r;

	if (store_instance_get(a->store, uuid, &row) == 0) {
		/* redelivered, or the same instance sent twice */
		agent_emit_state(a, uuid, row.project, row.state, "already on this host",
				 e->request_id, NULL);
		store_instance_free(&row);
		return 0;
	}
	/* the secrets were sealed to this host: opened here, then parsed once */
	body = json_deep_copy(e->body);
	if (!body)
		return err_set(-ENOMEM, "out of memory");
	r = agent_trust_open_build(a, body);
	if (r < 0) {
		char why[768];

		snprintf(why, sizeof(why), "%s", err_msg());
		json_decref(body);
		refuse(a, e, why); /* nothing will ever open it here */
		/* signed: the scheduler sent it (sealed to a key this host no longer
		 * has?): another host may build it */
		agent_emit_reschedule(a, uuid, json_string_value(json_object_get(e->body, "project")),
				      why, e->request_id);
		return 0;
	}
	r = model_spec_parse(body, &spec);
	/* the project's groups on this host with this port: kept for the
	 * build's filter step (applied before the guest starts) */
	if (r == 0 && json_is_object(json_object_get(body, "secgroups")) &&
	    agent_sg_update(a, json_object_get(body, "secgroups"), false) < 0) {
		r = err_prefix(-EINVAL, "instance %s: secgroups", uuid);
		model_spec_free(&spec); /* parsed: ours to free */
	}
	json_decref(body);
	if (r < 0) {
		char msg[1024];

		snprintf(msg, sizeof(msg), "%s", err_msg());
		agent_emit_result(a, e->request_id, false, msg, NULL);
		return 0; /* nothing will ever make this message valid */
	}
	memset(&row, 0, sizeof(row));
	snprintf(row.uuid, sizeof(row.uuid), "%s", uuid);
	row.state = INST_BUILDING;
	row.name = spec.name;
	row.project = spec.project;
	row.step = (char *)(uintptr_t) "accepted";
	row.request_id = (char *)(uintptr_t)e->request_id;
	r = agent_row_set_spec(&row, &spec);
	if (r == 0)
		r = store_instance_put(a->store, &row);
	free(row.spec_json);
	if (r < 0) {
		model_spec_free(&spec);
		return r; /* not durable: the message comes again */
	}
	agent_emit_state(a, uuid, spec.project, INST_BUILDING, NULL, e->request_id, NULL);
	/* the intent is durable: a lost job is found again by reconcile */
	agent_enqueue_build(a, e->request_id, &spec);
	return 0;
}

/* secgroup.apply: the project's groups on this host, applied now; the
 * outcome goes back as request.result (docs/bus.md). */
static int handle_secgroup(struct agent *a, const struct bus_envelope *e)
{
	int r = agent_sg_update(a, e->body, true);

	if (r < 0) {
		log_warn("security groups refused request=%s: %s", e->request_id, err_msg());
		agent_emit_result(a, e->request_id, false, err_msg(), NULL);
		return 0;
	}
	agent_emit_result(a, e->request_id, true, NULL, NULL);
	return 0;
}

/* The lines go back sealed to the requester when the scheduler sent its
 * result key (sealed to this host); in the clear only without one. */
static int handle_console(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	json_int_t lines = json_integer_value(json_object_get(e->body, "lines"));
	json_t *body = json_deep_copy(e->body), *tail;
	unsigned char *key = NULL;
	const char *k64;
	size_t klen = 0;

	if (!body || bus_open_sealed(body, bus_console_secret_fields, a->box_priv,
				     BUS_SEAL_CONSOLE) < 0) {
		agent_emit_result(a, e->request_id, false, body ? err_msg() : "out of memory", NULL);
		json_decref(body);
		return 0;
	}
	k64 = json_string_value(json_object_get(body, "result_key"));
	if (k64 && (base64_decode(k64, BUS_KEY_LEN, &key, &klen) < 0 || klen != BUS_KEY_LEN)) {
		agent_emit_result(a, e->request_id, false,
				  "instance.console: result_key: expected 32 bytes in base64", NULL);
		goto out;
	}
	if (json_is_true(json_object_get(body, "attach"))) {
		/* a token only travels sealed both ways */
		if (!key) {
			agent_emit_result(a, e->request_id, false, "instance.console: attach: "
					  "the token can only be answered sealed (no result_key)", NULL);
			goto out;
		}
		tail = agent_console_grant(a, uuid, body);
		if (!tail) {
			agent_emit_result(a, e->request_id, false, err_msg(), NULL);
			goto out;
		}
	} else {
		tail = agent_console_tail(a, uuid, lines > 0 && lines < 10000 ? (long)lines
									 : AGENT_CONSOLE_DEFAULT_LINES);
	}
	if (key)
		agent_emit_result_body(a, e->request_id, bus_result_sealed(key, e->request_id, tail));
	else
		agent_emit_result(a, e->request_id, true, NULL, tail);
out:
	if (key)
		explicit_bzero(key, klen);
	free(key);
	json_decref(body);
	return 0;
}

/* Durable intent: the request row without an outcome is pending. */
static int accept_request(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	int r = store_request_put(a->store, e->request_id, uuid, e->type, NULL);

	if (r < 0)
		return r;
	agent_fault_point("accept", e->type);
	return 0;
}

static int handle_delete(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	struct store_instance row;
	int r;

	store_instance_set_state(a->store, uuid, INST_DELETING, NULL, NULL);
	r = accept_request(a, e, uuid);
	if (r < 0)
		return r;
	if (store_instance_get(a->store, uuid, &row) == 0) {
		agent_emit_state(a, uuid, row.project, INST_DELETING, NULL, e->request_id, NULL);
		store_instance_free(&row);
	}
	return agent_enqueue(a, e->type, uuid, e->request_id, NULL);
}

/* instance.stop, instance.start, instance.reboot (its "hard": a boolean,
 * checked by the schema) */
static int handle_power(struct agent *a, const struct bus_envelope *e, const char *uuid)
{
	bool hard = json_is_true(json_object_get(e->body, "hard"));
	int r;

	if (strcmp(e->type, "instance.reboot") != 0) {
		if ((r = accept_request(a, e, uuid)) < 0)
			return r;
		return agent_enqueue(a, e->type, uuid, e->request_id, NULL);
	}
	r = store_request_put(a->store, e->request_id, uuid,
			      hard ? AGENT_PENDING_REBOOT_HARD : e->type, NULL);
	if (r < 0)
		return r;
	agent_fault_point("accept", e->type);
	return agent_enqueue_reboot(a, uuid, e->request_id, hard);
}

static const struct {
	const char *type;
	int (*handle)(struct agent *a, const struct bus_envelope *e, const char *uuid);
} handlers[] = {
	{ "instance.build", handle_build },
	{ "instance.rebuild", agent_handle_rebuild },
	{ "instance.console", handle_console },
	{ "instance.delete", handle_delete },
	{ "instance.stop", handle_power },
	{ "instance.start", handle_power },
	{ "instance.reboot", handle_power },
	{ "instance.migrate.prepare", agent_on_migrate_prepare },
	{ "instance.migrate.perform", agent_on_migrate_perform },
	{ "instance.migrate.finish", agent_on_migrate_finish },
	{ "instance.resize", agent_handle_resize },
	{ "instance.resize.confirm", agent_handle_resize_answer },
	{ "instance.resize.revert", agent_handle_resize_answer },
	{ "volume.create", agent_volume_handle },
	{ "volume.delete", agent_volume_handle },
	{ "volume.attach", agent_volume_handle },
	{ "volume.detach", agent_volume_handle },
	{ "instance.snapshot", agent_handle_snapshot },
};

int agent_handle_message(void *opaque, const struct bus_message *m)
{
	struct agent *a = opaque;
	const struct bus_envelope *e = m->env;
	const char *uuid;
	char *outcome = NULL;
	int r;

	if (!e)
		return 0;
	pthread_mutex_lock(&a->m_lock);
	a->m.commands++;
	pthread_mutex_unlock(&a->m_lock);
	/* the edge, once: signed by a trusted scheduler key, not stale */
	if (agent_trust_check(a, e, time_wall_ms()) < 0) {
		char why[768];

		snprintf(why, sizeof(why), "%s", err_msg());
		return refuse(a, e, why);
	}
	if (strcmp(e->type, "secgroup.apply") == 0) /* a project's, not one instance's */
		return handle_secgroup(a, e);
	uuid = body_uuid(e);
	if (!uuid || !uuid_valid(uuid)) {
		agent_emit_result(a, e->request_id, false, "body.uuid: missing or not a UUID", NULL);
		return 0;
	}
	/* processed already: answer with the state, change nothing */
	r = store_request_get(a->store, e->request_id, &outcome);
	if (r == 0) {
		announce(a, uuid, e->request_id, outcome);
		free(outcome);
		return 0;
	}
	if (r != -ENOENT)
		return r;

	for (size_t i = 0; i < ARRAY_SIZE(handlers); i++)
		if (strcmp(e->type, handlers[i].type) == 0)
			return handlers[i].handle(a, e, uuid);
	agent_emit_result(a, e->request_id, false, "this agent does not handle that type", NULL);
	return 0;
}

/* ---- reconcile ------------------------------------------------------------ */

struct reconcile_ctx {
	struct agent *a;
	bool startup; /* no worker has run a job of this process yet */
	struct vmm_domain_info *doms;
	size_t n_doms;
	unsigned cleaned, queued, drifted;
};

static enum vmm_power power_of(const struct reconcile_ctx *c, const char *uuid)
{
	for (size_t i = 0; i < c->n_doms; i++)
		if (strcmp(c->doms[i].uuid, uuid) == 0)
			return c->doms[i].power;
	return VMM_POWER_NONE;
}

/* A build accepted before a restart: its spec comes back from the row's
 * spec_json (another input than the bus message, so parsed here). */
static int requeue_build(struct agent *a, const struct store_instance *row)
{
	json_t *sj = json_loads(row->spec_json, 0, NULL);
	struct instance_spec spec;
	int r;

	if (!sj)
		return -EINVAL;
	r = model_spec_parse(sj, &spec);
	json_decref(sj);
	if (r < 0) {
		store_instance_delete(a->store, row->uuid);
		agent_emit_state(a, row->uuid, row->project, INST_ERROR, err_msg(),
				 row->request_id, NULL);
		return r;
	}
	return agent_enqueue_build(a, row->request_id ? row->request_id : "", &spec);
}

static int reconcile_row(const struct store_instance *row, void *ud)
{
	struct reconcile_ctx *c = ud;
	struct agent *a = c->a;
	enum vmm_power pw = power_of(c, row->uuid);

	switch (row->state) {
	case INST_BUILDING:
		/* only at start: later, a building row is a worker's business */
		if (!c->startup)
			break;
		if (row->step && strcmp(row->step, "accepted") == 0) {
			/* accepted but never started: build it now */
			if (requeue_build(a, row) == 0)
				c->queued++;
			break;
		}
		/* interrupted by our death: undo it all, let the scheduler retry */
		log_warn("reconcile: build interrupted at step %s, cleaning up instance=%s",
			 row->step ? row->step : "?", row->uuid);
		agent_cleanup_instance(a, row);
		if (row->request_id) /* a redelivered copy must not build it again */
			store_request_put(a->store, row->request_id, row->uuid, "instance.build",
						"{\"ok\":false,\"rescheduled\":true}");
		agent_emit_reschedule(a, row->uuid, row->project,
				      "build interrupted by an agent restart", row->request_id);
		c->cleaned++;
		break;
	case INST_DELETING:
		if (!c->startup)
			break; /* a queued delete finishes it */
		agent_cleanup_instance(a, row);
		agent_emit_state(a, row->uuid, row->project, INST_DELETED, NULL, NULL, NULL);
		c->cleaned++;
		break;
	case INST_ACTIVE:
	case INST_STOPPED:
	case INST_REBOOTING: {
		if (c->startup) /* a snapshot a kill -9 interrupted (snapshot.c) */
			agent_snapshot_reconcile(a, row);
		bool drift = (row->state == INST_STOPPED) != (pw != VMM_POWER_RUNNING &&
							      pw != VMM_POWER_PAUSED) ||
			     pw == VMM_POWER_NONE;

		if (row->state == INST_REBOOTING && !c->startup)
			break;
		if (drift || row->state == INST_REBOOTING) {
			/* a worker compares again and corrects, in order with the
			 * instance's commands */
			agent_enqueue(a, "instance.sync", row->uuid, NULL,
				      pw == VMM_POWER_NONE ? "domain vanished from libvirt"
							   : "power state changed outside Stratus");
			c->drifted++;
		}
		break;
	}
	case INST_REBUILDING:
		/* a worker owns it; at start, interrupted by our death: roll back */
		if (c->startup) {
			agent_rebuild_reconcile(a, row);
			c->cleaned++;
		}
		break;
	case INST_MIGRATING:
		/* at start only: later, the migration's jobs own it */
		if (c->startup)
			agent_migrate_reconcile(a, row, pw);
		break;
	case INST_RESIZING:
	case INST_REVERTING:
		/* a worker owns it; at start, interrupted by our death: back to
		 * the flavor before */
		if (c->startup) {
			agent_resize_reconcile(a, row);
			c->cleaned++;
		}
		break;
	case INST_VERIFY_RESIZE:
		/* waits for confirm or revert; its power is not corrected meanwhile */
		break;
	case INST_SCHEDULING:
	case INST_DELETED:
	case INST_ERROR:
	case INST_STATE_LAST:
		break;
	}
	return 0;
}

static int reconcile(struct agent *a, bool startup)
{
	struct reconcile_ctx c = { .a = a, .startup = startup };
	int r;

	if (!vmm_connected(a->conn)) {
		a->degraded = true;
		agent_dhcp_reconcile(a); /* the store against a directory: no libvirt needed */
		if (agent_filter_reconcile(a) < 0) /* nor for the port filters */
			log_error("%s", err_msg());
		return err_set(-ENOTCONN, "reconcile skipped: libvirtd is not reachable");
	}
	r = vmm_list_ours(a->conn, &c.doms, &c.n_doms);
	if (r < 0)
		return r;
	r = store_instance_foreach(a->store, reconcile_row, &c);
	if (r == 0)
		r = agent_volumes_reconcile(a, startup, NULL);
	/* domains of ours that the store does not know (a build writes its row
	 * before it defines, so a domain being built is never one of these) */
	for (size_t i = 0; i < c.n_doms; i++) {
		struct store_instance row;

		if (store_instance_get(a->store, c.doms[i].uuid, &row) == 0) {
			store_instance_free(&row);
			continue;
		}
		if (a->cfg->reap_orphans) {
			log_warn("reconcile: reaping orphan domain instance=%s project=%s",
				 c.doms[i].uuid, c.doms[i].project ? c.doms[i].project : "");
			vmm_undefine(a->conn, c.doms[i].uuid);
			img_overlay_delete(a->images, c.doms[i].uuid);
		} else {
			log_warn("reconcile: orphan domain not in the store instance=%s project=%s "
				 "(set agent.reap_orphans to remove it)",
				 c.doms[i].uuid, c.doms[i].project ? c.doms[i].project : "");
		}
	}
	vmm_domain_list_free(c.doms, c.n_doms);
	/* after the rows: entries of builds cleaned up above go too */
	agent_dhcp_reconcile(a);
	if (agent_filter_reconcile(a) < 0)
		log_error("%s", err_msg());
	if (c.cleaned || c.queued || c.drifted)
		log_info("reconcile done startup=%d cleaned=%u queued=%u drifted=%u", startup,
			 c.cleaned, c.queued, c.drifted);
	if (r == 0 && startup)
		a->reconciled = true;
	return r;
}

int agent_reconcile(struct agent *a)
{
	return reconcile(a, !a->reconciled);
}

/* Claims of the instances the store holds, so fits see what is in use. */
static int claim_from_store_cb(const struct store_instance *row, void *ud)
{
	struct agent *a = ud;
	json_t *pj;
	struct vmm_placement p;

	if (!row->placement_json)
		return 0;
	pj = json_loads(row->placement_json, 0, NULL);
	if (pj && vmm_placement_from_json(pj, a->topo, &p) == 0) {
		if (vmm_usage_claim(&a->usage, a->topo, &p) < 0)
			log_warn("store claim conflicts instance=%s: %s", row->uuid, err_msg());
		vmm_placement_free(&p);
	}
	json_decref(pj);
	return 0;
}

/* Pending stop/start/reboot/delete requests (accepted, no outcome yet):
 * the offset was stored, so only we remember them. */
static int requeue_cb(const char *request_id, const char *uuid, const char *type, void *ud)
{
	struct agent *a = ud;

	if (!uuid || !type)
		return 0;
	log_info("resuming pending request type=%s instance=%s request=%s", type, uuid, request_id);
	if (strcmp(type, "instance.reboot") == 0 || strcmp(type, AGENT_PENDING_REBOOT_HARD) == 0)
		agent_enqueue_reboot(a, uuid, request_id, strcmp(type, AGENT_PENDING_REBOOT_HARD) == 0);
	else
		agent_enqueue(a, type, uuid, request_id, NULL);
	return 0;
}

static int requeue_pending(struct agent *a)
{
	return store_request_foreach_pending(a->store, requeue_cb, a);
}

int agent_new(const struct agent_config *cfg, const struct bus_config *bus,
	      const struct vmm_config *vmm, const struct img_config *img, struct agent **out)
{
	struct agent *a = calloc(1, sizeof(*a));
	struct bus_consumer_opts co = { 0 };
	const char *topics[2] = { NULL, NULL };
	int r;

	if (!a)
		return err_set(-ENOMEM, "out of memory");
	a->cfg = cfg;
	a->bus_cfg = bus;
	a->vmm_cfg = vmm;
	a->img_cfg = img;
	pthread_mutex_init(&a->usage_lock, NULL);
	pthread_mutex_init(&a->q_lock, NULL);
	pthread_mutex_init(&a->m_lock, NULL);
	pthread_mutex_init(&a->filter_lock, NULL);
	pthread_cond_init(&a->q_cond, NULL);
	pthread_cond_init(&a->q_idle, NULL);

	a->topic = bus_topic_host(cfg->host);
	if (!a->topic) {
		r = -EINVAL;
		goto fail;
	}
	if (asprintf(&a->source, "agent/%s", cfg->host) < 0 ||
	    asprintf(&a->store_path, "%s/agent.db", cfg->state_dir) < 0 ||
	    !(a->volume_dir = strdup(cfg->volume_dir))) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	if ((r = mkdir_p(cfg->state_dir, 0750)) < 0 || (r = mkdir_p(vmm->instances_dir, 0755)) < 0 ||
	    (r = mkdir_p(vmm->console_log_dir, 0750)) < 0 ||
	    (r = agent_dhcp_dir_check(cfg->network.dhcp_hosts_dir)) < 0 ||
	    (r = agent_trust_open(a)) < 0 ||
	    (r = store_open(a->store_path, false, &a->store)) < 0 ||
	    (r = vmm_topology_load(vmm->sysfs_root, &a->topo)) < 0 ||
	    (r = vmm_pci_scan(vmm->sysfs_root, vmm, a->topo)) < 0 ||
	    (r = vmm_usage_init(&a->usage, a->topo)) < 0 ||
	    (r = img_cache_open(img, &a->images)) < 0 || (r = agent_filter_init(a)) < 0 ||
	    (r = agent_sg_init(a)) < 0)
		goto fail;
	a->virt = vmm_accel_resolve(vmm->accel);
	a->console = agent_console_tokens_new(cfg->console.token_ttl_ms);
	if (!a->console) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	store_instance_foreach(a->store, claim_from_store_cb, a);
	if ((r = vmm_open(vmm->uri, on_vmm_event, a, &a->conn)) < 0) {
		err_prefix(r, "libvirt %s", vmm->uri ? vmm->uri : "qemu:///system");
		goto fail;
	}
	if ((r = bus_producer_new(bus, &a->prod)) < 0)
		goto fail;
	topics[0] = a->topic;
	co.topics = topics;
	co.group_id = a->topic; /* one agent per host: its own group */
	co.source = a->source;
	co.errors = a->prod;
	if ((r = bus_consumer_new(bus, &co, &a->cons)) < 0)
		goto fail;
	/* before any worker runs: interrupted builds and deletes are ours to
	 * finish now (libvirtd down: retried by agent_run until it works) */
	if (agent_reconcile(a) < 0)
		log_warn("%s", err_msg());
	requeue_pending(a);
	if ((r = agent_workers_start(a)) < 0)
		goto fail;
	*out = a;
	return 0;
fail:
	agent_free(a);
	return r;
}

void agent_stop(struct agent *a)
{
	a->stopping = 1;
}

int agent_run(struct agent *a)
{
	int64_t next_report = 0, next_reconcile = 0;
	int r;

	next_reconcile = time_mono_ms() + a->cfg->reconcile_interval_ms;
	if (agent_http_start(a) < 0 || agent_console_start(a) < 0) {
		log_error("%s", err_msg());
		return -1;
	}
	log_info("agent running host=%s topic=%s virt=%s workers=%d", a->cfg->host, a->topic,
		 vmm_virt_names[a->virt], a->n_workers);
	while (!a->stopping) {
		int64_t now = time_mono_ms();
		uint64_t moves = bus_producer_reconnects(a->prod) + bus_consumer_reconnects(a->cons);

		if (moves != a->bus_moves) {
			/* the new broker has none of what the old one held */
			a->bus_moves = moves;
			if (agent_reannounce(a) < 0)
				log_warn("re-announce: %s", err_msg());
			next_report = now + a->cfg->report_interval_ms;
		}
		if (now >= next_report) {
			if (agent_report(a) < 0)
				log_warn("report: %s", err_msg());
			next_report = now + a->cfg->report_interval_ms;
		}
		if (now >= next_reconcile || (!a->reconciled && vmm_connected(a->conn))) {
			if (agent_reconcile(a) < 0)
				log_warn("%s", err_msg());
			next_reconcile = now + a->cfg->reconcile_interval_ms;
		}
		r = bus_consumer_poll(a->cons, 200, agent_handle_message, a);
		if (r < 0)
			log_warn("bus: %s", err_msg());
		bus_producer_poll(a->prod, 0);
	}
	log_info("agent stopping: finishing work in flight");
	return 0;
}

void agent_free(struct agent *a)
{
	if (!a)
		return;
	/* no new work, finish what is in flight, then say so */
	bus_consumer_free(a->cons);
	agent_workers_stop(a);
	agent_http_stop(a);
	agent_console_free(a->console); /* before the libvirt connection goes */
	bus_producer_free(a->prod); /* flushes */
	vmm_close(a->conn);          /* running guests are left alone */
	img_cache_close(a->images);
	vmm_usage_free(&a->usage);
	vmm_topology_free(a->topo);
	store_close(a->store);
	agent_trust_close(a);
	free(a->samples);
	free(a->topic);
	free(a->source);
	free(a->store_path);
	free(a->volume_dir);
	pthread_mutex_destroy(&a->usage_lock);
	pthread_mutex_destroy(&a->q_lock);
	pthread_mutex_destroy(&a->m_lock);
	agent_sg_free(a);
	pthread_mutex_destroy(&a->filter_lock);
	pthread_cond_destroy(&a->q_cond);
	pthread_cond_destroy(&a->q_idle);
	free(a);
}
