/*
 * instance.boot (a table of steps over a boot context) and the builds
 * sent again: for a duplicate boot and at start (sched_resume).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

#define SCHED_MAX_COUNT 100 /* instances per boot request */

static char *flavor_names(const struct sched *s)
{
	struct strbuf sb = { .max = 16 * 1024 };

	for (size_t i = 0; i < s->n_flavors; i++)
		sb_printf(&sb, "%s%s", i ? ", " : "", s->flavors[i].name);
	if (!s->n_flavors)
		sb_printf(&sb, "none");
	return sb_steal(&sb);
}

static json_t *spec_new(const char *uuid, const char *name, const char *project, long index,
			const struct sched_flavor *f, const struct sched_image *im,
			const json_t *body)
{
	json_t *spec = json_pack("{s:s, s:s, s:s, s:I, s:o, s:o}", "uuid", uuid, "name", name,
				 "project", project, "launch_index", (json_int_t)index, "flavor",
				 sched_flavor_to_json(f), "image", sched_image_to_json(im));
	static const char *const copied[] = { "user_data", "ssh_keys", "metadata", "seed" };

	for (size_t i = 0; spec && i < ARRAY_SIZE(copied); i++) {
		json_t *v = json_object_get(body, copied[i]);

		if (v)
			json_object_set_new(spec, copied[i], json_deep_copy(v));
	}
	return spec;
}

struct placed {
	char uuid[UUID_STRLEN];
	char *name;
	struct sched_host *host;
	struct sched_fit fit;
	char *spec;
	json_t *spec_json;
};

static void undo_claims(struct placed *p, size_t n, const struct sched_req *req)
{
	const struct sched_flavor *fl = req->flavor;

	for (size_t i = 0; i < n; i++)
		if (p[i].host)
			sched_host_adjust(p[i].host, -1, fl->dedicated ? 0 : fl->vcpus,
					  fl->dedicated ? fl->vcpus : 0, fl->ram_mb, req->disk_gb,
					  &p[i].fit);
}

static int boot_check_user_data(const json_t *body)
{
	const char *ud = json_string_value(json_object_get(body, "user_data"));
	unsigned char *dec = NULL;
	size_t len = 0;
	int r;

	if (!json_object_get(body, "user_data"))
		return 0;
	if (!ud)
		return err_set(-EINVAL, "user_data: expected a base64 string");
	r = base64_decode(ud, SPEC_USER_DATA_MAX, &dec, &len);
	free(dec);
	if (r == -E2BIG)
		return err_set(r, "user_data: more than %d bytes decoded", SPEC_USER_DATA_MAX);
	if (r < 0)
		return err_set(r, "user_data: expected a base64 string");
	return 0;
}

/*
 * A boot is a table of steps over this context, run in order; a step
 * returns <0 (failed: not durable), 0 (next step) or BOOT_ANSWERED (the
 * request was refused, its answer is durable). One cleanup path,
 * boot_free(), undoes what is left: the open transaction and the claims
 * in memory.
 */
#define BOOT_ANSWERED 1

struct boot {
	struct sched *s;
	struct sched_call *c;
	const char *project, *name, *group, *gpol, *az;
	long count;
	const struct sched_flavor *f;
	const struct sched_image *im;
	struct sched_req req;
	struct sched_ctx ctx;
	struct quota_amounts one, total;
	struct sched_strvec ghosts;   /* hosts of the server group's members */
	struct placed *placed;        /* count */
	size_t n_placed;              /* claimed in memory, undone unless committed */
	size_t max_alt, *pick;        /* the host and its alternates */
	json_t *list;                 /* data.instances of the result */
	json_t *sgs;                  /* the security group names of every instance */
	bool in_tx;
	char ts[RFC3339_STRLEN];
	char vol_uuid[UUID_STRLEN];   /* boot --volume: the volume, "" = none */
	char *vol_host;               /* and its host */
};

/* Roll the transaction back and take the claims back. */
static void boot_rollback(struct boot *b)
{
	if (!b->in_tx)
		return;
	sched_tx_rollback(b->s);
	b->in_tx = false;
	undo_claims(b->placed, b->n_placed, &b->req);
	b->n_placed = 0;
}

/* A refusal's answer: BOOT_ANSWERED once it is durable. */
static int answered(int r)
{
	return r < 0 ? r : BOOT_ANSWERED;
}

/* Hosts not yet heard from since a start or a broker move: wait for them. */
static int step_wait(struct boot *b)
{
	if (!sched_warming(b->s, b->c->now_ms))
		return 0;
	return answered(sched_defer(b->s, b->c));
}

static int step_request(struct boot *b)
{
	const json_t *body = b->c->body;
	const json_t *jcount = json_object_get(body, "count");

	/* user data and keys the client sealed to us: opened here, once */
	if (sched_open_boot(b->s, b->c->body) < 0)
		return answered(sched_reject(b->s, b->c, "instance.boot: %s", err_msg()));
	b->project = b->c->project; /* the credential's (auth.c), never the body's */
	b->name = sched_jstr(body, "name");
	b->group = sched_jstr(body, "server_group");
	b->gpol = sched_jstr(body, "server_group_policy");
	b->az = sched_jstr(body, "availability_zone");
	b->count = jcount ? (long)json_integer_value(jcount) : 1;
	if (!b->project || !b->name || !sched_jstr(body, "flavor") || !sched_jstr(body, "image"))
		return answered(sched_reject(b->s, b->c, "instance.boot: project, name, flavor and "
					     "image are required"));
	if (jcount && (!json_is_integer(jcount) || b->count < 1 || b->count > SCHED_MAX_COUNT))
		return answered(sched_reject(b->s, b->c, "instance.boot: count: expected an integer "
					     "from 1 to %d", SCHED_MAX_COUNT));
	return 0;
}

static int step_catalog(struct boot *b)
{
	const char *fname = sched_jstr(b->c->body, "flavor"), *iname = sched_jstr(b->c->body, "image");
	const struct sched_flavor *f = sched_flavor_find(b->s, fname);
	/* another project's private image is "not found", as one that is not there */
	const struct sched_image *im = sched_image_lookup(b->s, iname, b->project, b->c->admin);

	if (!f) {
		_cleanup_free_ char *known = flavor_names(b->s);

		return answered(sched_reject(b->s, b->c, "flavor '%s' not found (known: %s)", fname,
					     known ? known : "?"));
	}
	if (!im) {
		_cleanup_free_ char *known = sched_image_names(b->s, b->project,
								      b->c->admin);

		return answered(sched_reject(b->s, b->c, "image '%s' not found (known: %s)", iname,
					     known ? known : "?"));
	}
	if (f->disk_gb > 0 && f->disk_gb < im->min_disk_gb)
		return answered(sched_reject(b->s, b->c, "flavor %s: disk %ld GB is smaller than "
					     "image %s min_disk %ld GB", f->name, f->disk_gb,
					     im->name, im->min_disk_gb));
	if (boot_check_user_data(b->c->body) < 0)
		return answered(sched_reject(b->s, b->c, "instance.boot: %s", err_msg()));
	if (b->gpol && strcmp(b->gpol, "affinity") != 0 && strcmp(b->gpol, "anti-affinity") != 0)
		return answered(sched_reject(b->s, b->c, "server_group_policy: expected affinity or "
					     "anti-affinity, got '%s'", b->gpol));
	b->f = f;
	b->im = im;
	b->req.flavor = f;
	b->req.image = im;
	b->req.az = b->az;
	/* the root (at least the image's min_disk), then the ephemeral and
	 * swap disks, as Nova's DISK_GB: swap_mb in whole GB, rounded up */
	b->req.disk_gb = (f->disk_gb > im->min_disk_gb ? f->disk_gb : im->min_disk_gb) +
			 f->ephemeral_gb + (f->swap_mb + 1023) / 1024;
	quota_amounts_for(&b->one, f->vcpus, f->ram_mb, f->dedicated,
			  f->page_kb != SCHED_PAGE_SMALL);
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
		b->total.v[i] = b->one.v[i] * b->count;
	return 0;
}

/* NAME, or NAME-1..NAME-N; each must be free in the project. */
static int step_names(struct boot *b)
{
	b->placed = calloc((size_t)b->count, sizeof(*b->placed));
	b->pick = calloc(b->max_alt, sizeof(*b->pick));
	b->list = json_array();
	if (!b->placed || !b->pick || !b->list)
		return err_set(-ENOMEM, "out of memory");
	for (long i = 0; i < b->count; i++) {
		struct placed *p = &b->placed[i];
		struct inst_row row = { 0 };
		int r;

		if (b->count == 1)
			p->name = strdup(b->name);
		else if (asprintf(&p->name, "%s-%ld", b->name, i + 1) < 0)
			p->name = NULL;
		if (!p->name)
			return err_set(-ENOMEM, "out of memory");
		r = sched_inst_find(b->s, b->project, p->name, &row);
		inst_row_free(&row);
		if (r == 0 || r == -EEXIST)
			return answered(sched_reject(b->s, b->c, "instance %s already exists in "
						     "project %s", p->name, b->project));
		if (r != -ENOENT)
			return r;
	}
	return 0;
}

static int step_begin(struct boot *b)
{
	int r = sched_tx_begin(b->s);

	b->in_tx = r == 0;
	return r;
}

static int step_group(struct boot *b)
{
	enum sched_group_policy pol;
	int r;

	if (!b->group)
		return 0;
	r = sched_group_policy(b->s, b->project, b->group, b->gpol, &pol);
	if (r == -EINVAL) {
		boot_rollback(b);
		return answered(sched_reject(b->s, b->c, "%s", err_msg()));
	}
	if (r < 0)
		return r;
	b->req.group_policy = pol;
	return sched_group_hosts(b->s, b->project, b->group, &b->ghosts);
}

/* The security groups: known in the project (default created on first use). */
static int step_secgroups(struct boot *b)
{
	int r = sched_sg_boot_groups(b->s, b->project, b->c->body, &b->sgs);

	if (r == 1) {
		_cleanup_free_ char *msg = strdup(err_msg());

		boot_rollback(b);
		return answered(sched_reject(b->s, b->c, "%s", msg ? msg : "security_groups"));
	}
	return r;
}

static int step_quota(struct boot *b)
{
	enum quota_resource over = QUOTA_RESOURCE_LAST;
	int r = quota_claim(b->s->quotas, b->project, &b->total, &over);

	if (r == -EDQUOT) {
		_cleanup_free_ char *msg = strdup(err_msg());

		sched_metrics_quota_refused(over);
		boot_rollback(b);
		b->s->stats.over_quota++;
		return answered(sched_reject(b->s, b->c, "%s", msg ? msg : "quota exceeded"));
	}
	return r;
}

/* The instances row of P, placed on its host with ALTS (JSON text). */
static int insert_instance(struct boot *b, const struct placed *p, const char *alts)
{
	sqlite3_stmt *q = b->s->st[SST_INST_INSERT];
	const struct sched_call *c = b->c;

	sqlite3_bind_text(q, 1, p->uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, b->project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, p->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, "scheduling", -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 5, p->host->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 6, b->f->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 7, b->im->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 8, b->group, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 9, c->rid ? c->rid : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 10, p->spec, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 11, alts, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 12, "{}", -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 13, 1);
	sqlite3_bind_null(q, 14);
	sqlite3_bind_text(q, 15, b->ts, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 16, b->ts, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 17, b->az, -1, SQLITE_STATIC);
	return sched_db_step_done(b->s, SST_INST_INSERT, "writing an instance");
}

/* Instance I: pick its host and alternates, claim, write its rows. */
static int place_one(struct boot *b, long i)
{
	struct sched *s = b->s;
	struct placed *p = &b->placed[i];
	size_t scanned = 0, n;
	_cleanup_free_ char *alts_text = NULL;
	json_t *alts, *spec;
	int r;

	b->req.group_hosts = (const char *const *)b->ghosts.v;
	b->req.n_group_hosts = b->ghosts.n;
	n = sched_select(&b->ctx, s->hosts, s->n_hosts, &b->req, &s->cursor, b->pick, b->max_alt,
			 &scanned);
	s->stats.hosts_scanned += scanned;
	if (n == 0) {
		_cleanup_free_ char *why =
			sched_no_host_reason(&b->ctx, s->hosts, s->n_hosts, &b->req, p->name);

		sched_metrics_no_valid_host(&b->ctx, s->hosts, s->n_hosts, &b->req);
		boot_rollback(b);
		s->stats.no_valid_host++;
		return answered(sched_reject(s, b->c, "%s", why ? why : "no valid host"));
	}
	uuid_generate_time_str(p->uuid); /* time-ordered: its rows append */
	p->host = s->hosts[b->pick[0]];
	if (!sched_numa_fit(p->host, &b->req, &p->fit))
		p->fit = (struct sched_fit){ .node = -1 };
	sched_host_claim(p->host, &b->req, &p->fit);
	b->n_placed++;
	if ((b->req.group_policy == SCHED_GROUP_ANTI_AFFINITY ||
	     (b->req.group_policy == SCHED_GROUP_AFFINITY && b->ghosts.n == 0)) &&
	    sched_strvec_add(&b->ghosts, p->host->name) < 0)
		return err_set(-ENOMEM, "out of memory");
	alts = json_array();
	for (size_t k = 1; alts && k < n; k++)
		json_array_append_new(alts, json_string(s->hosts[b->pick[k]]->name));
	alts_text = alts ? json_dumps(alts, JSON_COMPACT) : NULL;
	json_decref(alts);
	spec = spec_new(p->uuid, p->name, b->project, i, b->f, b->im, b->c->body);
	if (spec) /* the instance spec carries its groups */
		json_object_set(spec, "security_groups", b->sgs);
	p->spec = spec ? json_dumps(spec, JSON_COMPACT) : NULL;
	p->spec_json = spec;
	if (!alts_text || !p->spec)
		return err_set(-ENOMEM, "out of memory");
	r = insert_instance(b, p, alts_text);
	if (r == 0)
		r = sched_sg_add_members(s, b->project, p->uuid, b->sgs);
	if (r == 0)
		r = sched_alloc_insert(s, p->uuid, b->project, p->host->name, &b->one, b->req.disk_gb,
				       &p->fit);
	if (r < 0)
		return r;
	json_array_append_new(b->list, json_pack("{s:s, s:s, s:s, s:s}", "uuid", p->uuid, "name",
						 p->name, "host", p->host->name, "state",
						 "scheduling"));
	return 0;
}

static int step_place(struct boot *b)
{
	int r = 0;

	time_rfc3339_now(b->ts);
	for (long i = 0; r == 0 && i < b->count; i++)
		r = place_one(b, i);
	return r;
}

/* The outcome stored with the effect, committed, then answered. */
/* boot --volume: the volume's host only (resolved before placing) */
static int step_volume(struct boot *b)
{
	const char *ref = sched_jstr(b->c->body, "volume");
	int r;

	if (!ref)
		return 0;
	r = sched_volume_for_boot(b->s, b->c, ref, b->count, b->vol_uuid, &b->vol_host);
	if (r != 0)
		return r < 0 ? r : BOOT_ANSWERED;
	b->req.volume_host = b->vol_host;
	return 0;
}

/* ... and reserved for the instance in the boot's transaction */
static int step_reserve(struct boot *b)
{
	if (!b->vol_uuid[0])
		return 0;
	return sched_volume_reserve(b->s, b->vol_uuid, b->placed[0].uuid);
}

static int step_commit(struct boot *b)
{
	json_t *res = sched_result_new(true, NULL, json_pack("{s:O}", "instances", b->list));
	int r = res ? sched_store_result(b->s, b->c, res) : err_set(-ENOMEM, "out of memory");

	if (r < 0) {
		json_decref(res);
		return r; /* boot_free rolls back and undoes the claims */
	}
	r = sched_tx_commit(b->s);
	b->in_tx = false;
	if (r < 0) {
		undo_claims(b->placed, b->n_placed, &b->req);
		json_decref(res);
		return r;
	}
	b->n_placed = 0; /* committed: the claims stay */
	return sched_emit_result(b->c, b->count == 1 ? b->placed[0].uuid : NULL, res);
}

static int step_send(struct boot *b)
{
	int r = 0;

	for (long i = 0; r == 0 && i < b->count; i++) {
		struct placed *p = &b->placed[i];

		log_info("instance scheduled instance=%s name=%s project=%s host=%s request=%s",
			 p->uuid, p->name, b->project, p->host->name, b->c->rid);
		r = sched_emit_state(b->c->out, b->c->rid, p->uuid, b->project, p->host->name,
				     "scheduling", NULL);
		/* with the security groups of its host: filtered before it starts */
		if (r == 0)
			r = sched_sg_build_inputs(b->s, b->project, p->host->name, p->spec_json);
		if (r == 0)
			r = sched_send_build_json(b->s, b->c->out, p->host, json_incref(p->spec_json),
						  b->c->rid, 1, &p->fit);
	}
	b->s->stats.decisions += (uint64_t)b->count;
	return r;
}

static const struct boot_step {
	const char *name;
	int (*run)(struct boot *b);
} boot_steps[] = {
	{ "request", step_request },   /* required fields, count */
	{ "catalog", step_catalog },   /* flavor, image, user data, group policy */
	{ "volume", step_volume },     /* boot --volume: on the volume's host only */
	{ "wait", step_wait },         /* warm-up: stale hosts, the boot waits */
	{ "names", step_names },       /* NAME or NAME-1..N, free in the project */
	{ "begin", step_begin },       /* the transaction (a savepoint in a batch) */
	{ "group", step_group },       /* the server group: policy and members' hosts */
	{ "secgroups", step_secgroups }, /* the security groups, known in the project */
	{ "quota", step_quota },       /* the project's quota claim */
	{ "place", step_place },       /* per instance: host, claim, rows */
	{ "reserve", step_reserve },   /* the volume: attaching to the instance */
	{ "commit", step_commit },     /* outcome stored, commit, request.result */
	{ "send", step_send },         /* instance.state and instance.build */
};

static void boot_free(struct boot *b)
{
	boot_rollback(b);
	for (long i = 0; b->placed && i < b->count; i++) {
		free(b->placed[i].name);
		free(b->placed[i].spec);
		json_decref(b->placed[i].spec_json);
	}
	free(b->placed);
	free(b->pick);
	json_decref(b->list);
	json_decref(b->sgs);
	sched_strvec_free(&b->ghosts);
	free(b->vol_host);
}

int sched_on_boot(struct sched *s, struct sched_call *c)
{
	struct boot b = { .s = s, .c = c, .ctx = { .cfg = s->cfg, .now_ms = c->now_ms },
			  .max_alt = (size_t)s->cfg->max_attempts };
	int r = 0;

	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(boot_steps); i++)
		r = boot_steps[i].run(&b);
	boot_free(&b);
	return r == BOOT_ANSWERED ? 0 : r;
}

/* Send the builds of the instances in UUIDS that are still `scheduling`. */
int sched_resend_builds(struct sched *s, const struct sched_strvec *uuids, struct sched_out *out)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < uuids->n; i++) {
		struct inst_row row = { 0 };
		struct sched_alloc a = { 0 };
		struct sched_host *h;

		if (sched_inst_get(s, uuids->v[i], &row) == 0 &&
		    strcmp(row.state, "scheduling") == 0 && sched_alloc_get(s, row.uuid, &a) == 0 &&
		    (h = sched_host_find(s, a.host)) != NULL) {
			log_info("build sent again instance=%s host=%s attempt=%ld", row.uuid, h->name,
				 row.attempts);
			r = sched_sg_send_build(s, out, h, row.spec, row.project, row.request_id,
						row.attempts, &a.fit);
		}
		free(a.host);
		inst_row_free(&row);
	}
	return r;
}

int sched_resume(struct sched *s, struct sched_out *out)
{
	sqlite3_stmt *q = NULL;
	struct sched_strvec uuids = { 0 };
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT uuid FROM instances WHERE state = 'scheduling'", -1,
			       &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "resume: %s", sqlite3_errmsg(s->db));
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
		if (sched_strvec_add(&uuids, (const char *)sqlite3_column_text(q, 0)) < 0)
			r = err_set(-ENOMEM, "out of memory");
	sqlite3_finalize(q);
	if (r == 0)
		r = sched_resend_builds(s, &uuids, out);
	sched_strvec_free(&uuids);
	return r;
}

