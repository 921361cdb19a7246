/*
 * instance.build: a table of steps, each with its undo. After every step
 * the store row records how far the build got, so a build interrupted by
 * the agent's death is cleaned up by reconcile, and a failed build undoes
 * every step it made before asking for a reschedule.
 */
#define LOG_TAG "agent"
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent_priv.h"

struct build_ctx {
	struct agent *a;
	struct job *j;
	struct instance_spec *spec; /* the job's, parsed at the agent's edge */
	struct store_instance row;
	struct vmm_placement place;
	bool placed, claimed, addr_allocated, dhcp_written, overlay_made, seed_made, defined;
	bool filtered;
	bool incoming; /* a migration's destination: the address comes with the spec */
	char *kernel_path, *initrd_path; /* cached, for direct kernel boot */
	int64_t step_ms[9];
};

int agent_row_set_spec(struct store_instance *row, const struct instance_spec *spec)
{
	json_t *sj = model_spec_to_json(spec);
	char *text = sj ? json_dumps(sj, JSON_COMPACT) : NULL;

	json_decref(sj);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	free(row->spec_json);
	row->spec_json = text;
	return 0;
}

void agent_fault_point(const char *kind, const char *what)
{
	const char *f = getenv("STRATUS_FAULT");
	size_t n = strlen(kind);

	if (f && strncmp(f, kind, n) == 0 && f[n] == ':' && strcmp(f + n + 1, what) == 0) {
		log_warn("fault injection: killing the agent at %s:%s", kind, what);
		raise(SIGKILL);
	}
}

static int save_row(struct build_ctx *b, const char *step)
{
	free(b->row.step);
	b->row.step = strdup(step);
	return store_instance_put(b->a->store, &b->row);
}

/* ---- claim: the NUMA/pCPU/hugepage fit, re-checked on this host ---------- */

static int step_claim(struct build_ctx *b)
{
	struct agent *a = b->a;
	json_t *pj;
	int r;

	pthread_mutex_lock(&a->usage_lock);
	r = vmm_fit(a->topo, a->vmm_cfg, &a->usage, b->spec, &b->place);
	if (r == 0) {
		b->placed = true;
		r = vmm_cpu_fit(a->topo, a->vmm_cfg, a->virt, b->spec, &b->place);
	}
	if (r == 0) {
		r = vmm_usage_claim(&a->usage, a->topo, &b->place);
		if (r == 0)
			b->claimed = true;
	}
	pthread_mutex_unlock(&a->usage_lock);
	if (r < 0) {
		pthread_mutex_lock(&a->m_lock);
		a->m.rejected_fits++;
		pthread_mutex_unlock(&a->m_lock);
		return err_prefix(r, "host %s cannot fit flavor %s", a->cfg->host,
				  b->spec->flavor.name);
	}
	pj = vmm_placement_to_json(&b->place, a->topo);
	free(b->row.placement_json);
	b->row.placement_json = pj ? json_dumps(pj, JSON_COMPACT) : NULL;
	json_decref(pj);
	return 0;
}

static void undo_claim(struct build_ctx *b)
{
	if (b->claimed) {
		pthread_mutex_lock(&b->a->usage_lock);
		vmm_usage_release(&b->a->usage, &b->place);
		pthread_mutex_unlock(&b->a->usage_lock);
		b->claimed = false;
	}
}

/* ---- network: an address from the host's range, a MAC derived from it,
 * and the DHCP host entry that hands the one to the other ---------------- */

static void network_forget(struct spec_network *sn)
{
	free(sn->mac);
	free(sn->address);
	free(sn->gateway);
	for (size_t i = 0; sn->dns && i < sn->n_dns; i++)
		free(sn->dns[i]);
	free(sn->dns);
	memset(sn, 0, sizeof(*sn));
}

/*
 * A build that asks for an address (an evacuated instance keeps the one it
 * had, issue 15): taken, with its MAC, when it lies in this host's range
 * with this host's prefix and is free; else forgotten, and the instance
 * gets the lowest free one (the scheduler tells the user it changed).
 */
static int take_asked_address(struct build_ctx *b)
{
	const struct agent_net_config *n = &b->a->cfg->network;
	struct spec_network *sn = &b->spec->network;
	char addr[32];
	const char *why = NULL;
	struct in_addr in;
	char *slash;
	long plen = -1;
	uint32_t want = 0;
	int r;

	snprintf(addr, sizeof(addr), "%s", sn->address ? sn->address : "");
	slash = strchr(addr, '/');
	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, addr, &in) != 1 || !slash || parse_long(slash + 1, 1, 32, &plen) < 0)
		why = "not an IPv4 address with a prefix";
	else if ((want = ntohl(in.s_addr)) < n->first || want > n->last || plen != n->prefix)
		why = "not in this host's range";
	if (!why) {
		r = store_address_allocate(b->a->store, b->spec->uuid, want, want, (int)plen, sn->mac,
					   addr, sizeof(addr));
		if (r == 0) {
			b->addr_allocated = true;
			/* this host's gateway and name servers */
			free(sn->gateway);
			sn->gateway = n->gateway ? strdup(n->gateway) : NULL;
			for (size_t i = 0; sn->dns && i < sn->n_dns; i++)
				free(sn->dns[i]);
			free(sn->dns);
			sn->n_dns = 0;
			sn->dns = calloc(n->dns.n + 1, sizeof(char *));
			if (!sn->dns || (n->gateway && !sn->gateway))
				return err_set(-ENOMEM, "out of memory");
			for (size_t i = 0; i < n->dns.n; i++) {
				sn->dns[i] = strdup(n->dns.v[i]);
				sn->n_dns = i + 1;
			}
			return 0;
		}
		why = "taken";
	}
	log_warn("build: asked-for address not taken instance=%s address=%s reason=\"%s\": a new "
		 "one from the range", b->spec->uuid, sn->address ? sn->address : "", why);
	network_forget(sn);
	return 0;
}

static int step_network(struct build_ctx *b)
{
	struct agent *a = b->a;
	const struct agent_net_config *n = &a->cfg->network;
	struct spec_network *sn = &b->spec->network;
	char addr[32], mac[18];
	struct in_addr in;
	uint32_t ip;
	int r;

	if (sn->present && !b->incoming && !b->addr_allocated && (r = take_asked_address(b)) < 0)
		return r;
	if (sn->present && b->incoming) {
		/* the address the instance has on its source: taken here too */
		char *slash;
		uint32_t want;
		long plen;

		snprintf(addr, sizeof(addr), "%s", sn->address);
		slash = strchr(addr, '/');
		if (slash)
			*slash = '\0';
		if (inet_pton(AF_INET, addr, &in) != 1)
			return err_set(-EINVAL, "network.address '%s': not an IPv4 address", sn->address);
		want = ntohl(in.s_addr);
		if (!slash || parse_long(slash + 1, 1, 32, &plen) < 0)
			plen = n->prefix;
		r = store_address_allocate(a->store, b->spec->uuid, want, want, (int)plen, sn->mac,
					   addr, sizeof(addr));
		if (r < 0)
			return err_prefix(r, "host %s: address %s", a->cfg->host, sn->address);
		b->addr_allocated = true;
	} else if (!sn->present) {
		r = store_address_allocate(a->store, b->spec->uuid, n->first, n->last, n->prefix,
						 NULL, addr, sizeof(addr));
		if (r < 0)
			return err_prefix(r, "host %s", a->cfg->host);
		b->addr_allocated = true;
		*strchr(addr, '/') = '\0';
		inet_pton(AF_INET, addr, &in);
		ip = ntohl(in.s_addr);
		store_mac_for_ip(ip, mac);
		sn->present = true;
		sn->mac = strdup(mac);
		if (asprintf(&sn->address, "%s/%d", addr, n->prefix) < 0)
			sn->address = NULL;
		sn->gateway = n->gateway ? strdup(n->gateway) : NULL;
		sn->dns = calloc(n->dns.n + 1, sizeof(char *));
		if (!sn->mac || !sn->address || !sn->dns)
			return err_set(-ENOMEM, "out of memory");
		for (size_t i = 0; i < n->dns.n; i++) {
			sn->dns[i] = strdup(n->dns.v[i]);
			sn->n_dns = i + 1;
		}
	}
	free(b->row.address);
	free(b->row.mac);
	b->row.address = strdup(sn->address);
	b->row.mac = strdup(sn->mac);
	/* the stored spec carries the network so the metadata service sees it */
	r = agent_row_set_spec(&b->row, b->spec);
	if (r < 0)
		return r;
	b->dhcp_written = true; /* undo removes even a half-written entry */
	return agent_dhcp_host_write(a, b->spec->uuid, sn->mac, sn->address, b->spec->hostname);
}

static void undo_network(struct build_ctx *b)
{
	if (b->dhcp_written) {
		agent_dhcp_host_remove(b->a, b->spec->uuid);
		b->dhcp_written = false;
	}
	if (b->addr_allocated) {
		store_address_release(b->a->store, b->spec->uuid);
		b->addr_allocated = false;
	}
}

/* ---- filter: the port's anti-spoofing rules, before the guest can send ---- */

static int step_filter(struct build_ctx *b)
{
	const struct spec_network *sn = &b->spec->network;

	int r;

	b->filtered = true; /* undo removes even a half-applied filter */
	r = agent_filter_apply(b->a, b->spec->uuid, sn->mac, sn->address);
	if (r == 0)
		r = agent_sg_apply(b->a); /* the port's security groups, before it starts */
	return r;
}

static void undo_filter(struct build_ctx *b)
{
	if (b->filtered)
		agent_filter_remove(b->a, b->spec->uuid);
	b->filtered = false;
}

/* ---- image: cached base + per-instance overlay ---------------------------- */

static int step_image(struct build_ctx *b)
{
	struct agent *a = b->a;
	struct img_ref ref = {
		.name = b->spec->image.name,
		.url = b->spec->image.url,
		.checksum = b->spec->image.checksum,
	};
	long disk_gb = b->spec->flavor.disk_gb;
	char *overlay = NULL;
	int r;

	if (img_format_parse(b->spec->image.disk_format, &ref.format) < 0)
		return err_set(-EINVAL, "image.disk_format '%s' is not supported",
			       b->spec->image.disk_format);
	if (b->spec->image.min_disk_gb > disk_gb && disk_gb > 0)
		return err_set(-EINVAL, "flavor %s has %ld GB of disk, image %s needs %ld GB",
			       b->spec->flavor.name, disk_gb,
			       b->spec->image.name ? b->spec->image.name : b->spec->image.url,
			       b->spec->image.min_disk_gb);
	r = img_overlay_create(a->images, &ref, b->spec->uuid, (uint64_t)disk_gb,
			       a->vmm_cfg->instances_dir, &overlay);
	if (r < 0)
		return r;
	/* kernel and initrd for direct kernel boot: cached and verified like
	 * images, pinned only while the domain is defined */
	const struct spec_blob *blobs[2] = { &b->spec->image.kernel, &b->spec->image.initrd };
	char **paths[2] = { &b->kernel_path, &b->initrd_path };

	for (int k = 0; k < 2 && r == 0; k++) {
		struct img_ref br = { .name = k ? "initrd" : "kernel", .url = blobs[k]->url,
				      .checksum = blobs[k]->checksum, .format = IMG_FMT_RAW };

		if (blobs[k]->url)
			r = img_acquire(a->images, &br, NULL, NULL, paths[k]);
	}
	b->overlay_made = true;
	free(b->row.overlay_path);
	b->row.overlay_path = overlay;
	if (r == 0) /* the flavor's ephemeral and swap disks (undo_image removes them) */
		r = agent_local_disks_create(a, b->spec, false);
	return r;
}

static void release_blobs(struct build_ctx *b)
{
	if (b->kernel_path)
		img_release(b->a->images, b->spec->image.kernel.checksum);
	if (b->initrd_path)
		img_release(b->a->images, b->spec->image.initrd.checksum);
	free(b->kernel_path);
	free(b->initrd_path);
	b->kernel_path = b->initrd_path = NULL;
}

static void undo_image(struct build_ctx *b)
{
	if (b->overlay_made || b->row.overlay_path) {
		if (img_overlay_delete(b->a->images, b->spec->uuid) < 0)
			log_warn("overlay not removed instance=%s: %s", b->spec->uuid, err_msg());
		b->overlay_made = false;
	}
	agent_local_disks_remove(b->a, b->spec->uuid);
}

/* ---- seed: the cloud-init seed disk from the one renderer ---------------- */

static int step_seed(struct build_ctx *b)
{
	enum md_seed_format fmt;
	char *path;
	int r;

	if (md_seed_format_of_spec(b->spec, &fmt) < 0)
		return 0; /* seed none: cloud-init asks the metadata service */
	path = agent_instance_path(b->a, b->spec->uuid, ".seed.iso");
	if (!path)
		return err_set(-ENOMEM, "out of memory");
	r = md_seed_write(b->spec, fmt, path);
	if (r < 0) {
		free(path);
		return r;
	}
	b->seed_made = true;
	free(b->row.seed_path);
	b->row.seed_path = path;
	return 0;
}

static void undo_seed(struct build_ctx *b)
{
	if (b->row.seed_path) {
		unlink(b->row.seed_path);
		b->seed_made = false;
	}
}

/* ---- define and start ------------------------------------------------------ */

/* The domain XML of this host for the build (its placement, its paths). */
static int render_xml(struct build_ctx *b, char **xml)
{
	struct agent *a = b->a;
	char *console = agent_instance_path(a, b->spec->uuid, ".log");
	const struct agent_domain_files f = {
		.disk = b->row.overlay_path,
		.seed = b->row.seed_path,
		.console_log = console,
		.kernel = b->kernel_path,
		.initrd = b->initrd_path,
	};
	int r;

	if (!console)
		return err_set(-ENOMEM, "out of memory");
	r = agent_domain_xml(b->spec, &b->place, a->vmm_cfg, a->virt, &f, xml);
	free(console);
	return r;
}

static int step_define(struct build_ctx *b)
{
	char *xml = NULL;
	int r = render_xml(b, &xml);

	if (r < 0)
		return r;
	r = vmm_define(b->a->conn, xml);
	free(xml);
	if (r < 0)
		return r;
	b->defined = true;
	return 0;
}

static void undo_define(struct build_ctx *b)
{
	if (b->defined && vmm_undefine(b->a->conn, b->spec->uuid) < 0)
		log_warn("domain not undefined instance=%s: %s", b->spec->uuid, err_msg());
	b->defined = false;
}

static int step_start(struct build_ctx *b)
{
	return vmm_start(b->a->conn, b->spec->uuid);
}

static void undo_start(struct build_ctx *b)
{
	(void)b; /* undefine destroys a running domain */
}

static const struct build_step {
	const char *name;
	int (*run)(struct build_ctx *b);
	void (*undo)(struct build_ctx *b);
} steps[] = {
	{ "claim", step_claim, undo_claim },
	{ "network", step_network, undo_network },
	{ "filter", step_filter, undo_filter },
	{ "image", step_image, undo_image },
	{ "seed", step_seed, undo_seed },
	{ "define", step_define, undo_define },
	{ "start", step_start, undo_start },
};

int agent_do_build(struct agent *a, struct job *j)
{
	struct build_ctx b = { .a = a, .j = j, .spec = j->spec };
	int64_t t0 = time_mono_ns(), t;
	size_t i;
	int r;

	r = store_instance_get(a->store, j->uuid, &b.row);
	if (r < 0)
		return r; /* deleted while queued */
	if (b.row.state != INST_BUILDING || strcmp(b.row.step ? b.row.step : "", "accepted") != 0) {
		store_instance_free(&b.row);
		return 0; /* already built (or being deleted): nothing to do */
	}

	for (i = 0; i < ARRAY_SIZE(steps); i++) {
		t = time_mono_ns();
		r = steps[i].run(&b);
		b.step_ms[i] = (time_mono_ns() - t) / 1000000;
		if (r < 0) {
			err_prefix(r, "build step %s", steps[i].name);
			break;
		}
		/* durable before the next step: reconcile knows what to undo */
		r = save_row(&b, steps[i].name);
		if (r < 0)
			break;
		agent_fault_point("build", steps[i].name);
	}
	if (r < 0) {
		char reason[1024];

		snprintf(reason, sizeof(reason), "%s", err_msg());
		for (size_t k = i < ARRAY_SIZE(steps) ? i + 1 : i; k-- > 0;)
			steps[k].undo(&b);
		store_instance_delete(a->store, j->uuid);
		store_request_put(a->store, j->request_id, j->uuid, j->type,
					"{\"ok\":false}");
		agent_observe_build(a, (double)(time_mono_ns() - t0) / 1e9, false);
		agent_emit_reschedule(a, j->uuid, b.spec->project, reason, j->request_id);
		r = err_set(r, "%s", reason);
		goto out;
	}

	json_t *timings = json_object();

	for (i = 0; i < ARRAY_SIZE(steps); i++)
		json_object_set_new(timings, steps[i].name, json_integer(b.step_ms[i]));
	json_object_set_new(timings, "queued", json_integer((t0 - j->queued_ns) / 1000000));
	free(b.row.step);
	b.row.step = strdup("done");
	b.row.state = INST_ACTIVE;
	r = store_instance_put(a->store, &b.row);
	if (r < 0) {
		json_decref(timings);
		goto out;
	}
	store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":true}");
	agent_observe_build(a, (double)(time_mono_ns() - t0) / 1e9, true);
	agent_emit_state(a, j->uuid, b.spec->project, INST_ACTIVE, NULL, j->request_id,
			 json_pack("{s:o, s:s, s:s}", "timings_ms", timings, "address",
				   b.row.address ? b.row.address : "", "mac",
				   b.row.mac ? b.row.mac : ""));
out:
	release_blobs(&b);
	if (b.placed)
		vmm_placement_free(&b.place);
	store_instance_free(&b.row);
	return r;
}

/*
 * A migration's destination (issue 15): the build's steps up to the seed
 * (claim on this host's topology, the source's address, filter, image and
 * overlay at the same path, seed), durable after each like a build, then
 * this host's domain XML instead of define and start: libvirt defines the
 * domain here when the guest arrives. On failure every step is undone and
 * the row deleted.
 */
int agent_build_incoming(struct agent *a, struct job *j, char **xml)
{
	struct build_ctx b = { .a = a, .j = j, .spec = j->spec, .incoming = true };
	size_t i, n = 0;
	int r;

	while (n < ARRAY_SIZE(steps) && steps[n].run != step_define)
		n++;
	r = store_instance_get(a->store, j->uuid, &b.row);
	if (r < 0)
		return r;
	if (b.row.state != INST_MIGRATING || strcmp(b.row.step ? b.row.step : "", "accepted") != 0) {
		store_instance_free(&b.row);
		return err_set(-EALREADY, "instance %s: already prepared", j->uuid);
	}
	for (i = 0; i < n; i++) {
		r = steps[i].run(&b);
		if (r < 0) {
			err_prefix(r, "step %s", steps[i].name);
			break;
		}
		r = save_row(&b, steps[i].name);
		if (r < 0)
			break;
		agent_fault_point("incoming", steps[i].name);
	}
	if (r == 0)
		r = render_xml(&b, xml);
	if (r == 0)
		r = save_row(&b, "prepared");
	if (r < 0) {
		char reason[1024];

		snprintf(reason, sizeof(reason), "%s", err_msg());
		for (size_t k = i < n ? i + 1 : i; k-- > 0;)
			steps[k].undo(&b);
		store_instance_delete(a->store, j->uuid);
		r = err_set(r, "%s", reason);
	}
	release_blobs(&b);
	if (b.placed)
		vmm_placement_free(&b.place);
	store_instance_free(&b.row);
	return r;
}
