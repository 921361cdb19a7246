/*
 * The request handlers: one table row per message type the scheduler
 * consumes (requests on stratus.api, agents' events on stratus.events,
 * host reports on stratus.metrics).
 *
 * Every request gets exactly one request.result event carrying its
 * request id (instance.console: the agent answers, see docs/scheduler.md).
 * The outcome of a request that changes something is stored in the same
 * transaction as its effect; a request id seen again is answered with the
 * stored outcome, and builds it started that are still `scheduling` are
 * sent again (agents ignore a build they already have).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

#define SCHED_MAX_COUNT 100 /* instances per boot request */

struct call {
	const char *type;
	const char *rid;
	json_t *body;
	int64_t now_ms;
	struct sched_out *out;
	bool stored; /* the outcome is kept for duplicates */
};

static const char *jstr(const json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v && *v ? v : NULL;
}

static char *host_topic(const char *host)
{
	char *t = NULL;

	if (asprintf(&t, "%s%s", SCHED_TOPIC_HOST_PREFIX, host) < 0)
		return NULL;
	return t;
}

/* ---- outcomes ---------------------------------------------------------- */

static int store_result(struct sched *s, const struct call *c, const json_t *res)
{
	sqlite3_stmt *q = s->st[SST_REQ_PUT];
	_cleanup_free_ char *text = NULL;
	char ts[RFC3339_STRLEN];

	if (!c->stored || !c->rid || !*c->rid)
		return 0;
	text = json_dumps(res, JSON_COMPACT);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	time_rfc3339_now(ts);
	sqlite3_bind_text(q, 1, c->rid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, c->type, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, text, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 4, ts, -1, SQLITE_TRANSIENT);
	return sched_db_step_done(s, SST_REQ_PUT, "storing a request outcome");
}

static json_t *result_new(bool ok, const char *error, json_t *data)
{
	json_t *res = json_pack("{s:b}", "ok", ok);

	if (!res) {
		json_decref(data);
		return NULL;
	}
	if (error)
		json_object_set_new(res, "error", json_string(error));
	if (data)
		json_object_set_new(res, "data", data);
	return res;
}

static int emit_result(struct call *c, const char *key, json_t *res)
{
	return sched_out_add(c->out, SCHED_TOPIC_EVENTS, key ? key : c->rid, "request.result",
			     c->rid, res);
}

/* Answer with an error: stored (when the type is), sent, and durable. */
static int reject(struct sched *s, struct call *c, const char *fmt, ...) PRINTF_LIKE(3, 4);

static int reject(struct sched *s, struct call *c, const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL;
	json_t *res;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (r < 0)
		return err_set(-ENOMEM, "out of memory");
	log_info("request rejected type=%s request=%s error=\"%s\"", c->type, c->rid, msg);
	res = result_new(false, msg, NULL);
	if (!res)
		return err_set(-ENOMEM, "out of memory");
	r = store_result(s, c, res);
	if (r < 0) {
		json_decref(res);
		return r;
	}
	return emit_result(c, NULL, res);
}

/* Answer ok with DATA (taken); stored when the type is. */
static int accept(struct sched *s, struct call *c, const char *key, json_t *data)
{
	json_t *res = result_new(true, NULL, data);
	int r;

	if (!res)
		return err_set(-ENOMEM, "out of memory");
	r = store_result(s, c, res);
	if (r < 0) {
		json_decref(res);
		return r;
	}
	return emit_result(c, key, res);
}

static int emit_state(struct sched_out *out, const char *rid, const char *uuid,
		      const char *project, const char *host, const char *state, const char *reason)
{
	json_t *b = json_pack("{s:s, s:s, s:s}", "uuid", uuid, "project", project, "state", state);

	if (b && host)
		json_object_set_new(b, "host", json_string(host));
	if (b && reason)
		json_object_set_new(b, "reason", json_string(reason));
	return sched_out_add(out, SCHED_TOPIC_EVENTS, uuid, "instance.state", rid, b);
}

static int emit_host_cmd(struct sched_out *out, const char *host, const char *type,
			 const char *rid, const char *uuid, json_t *body)
{
	_cleanup_free_ char *topic = host_topic(host);

	if (!topic) {
		json_decref(body);
		return err_set(-ENOMEM, "out of memory");
	}
	return sched_out_add(out, topic, uuid, type, rid, body);
}

/* instance.build: the spec (reference taken) + where it goes + request fields. */
static int send_build_json(struct sched_out *out, const struct sched_host *h, json_t *b,
			   const char *rid, long attempt, const struct sched_fit *fit)
{
	const char *uuid;

	if (!b)
		return err_set(-EIO, "instance spec in the state database does not parse");
	uuid = json_string_value(json_object_get(b, "uuid"));
	json_object_set_new(b, "availability_zone", json_string(h->az ? h->az : "nova"));
	json_object_set_new(b, "attempt", json_integer(attempt));
	json_object_set_new(b, "request_id", json_string(rid));
	json_object_set_new(b, "claim", json_pack("{s:i, s:I, s:I}", "numa_node", fit->node,
						  "page_kb", (json_int_t)fit->page_kb, "pages",
						  (json_int_t)fit->pages));
	return emit_host_cmd(out, h->name, "instance.build", rid, uuid ? uuid : "", b);
}

static int send_build(struct sched_out *out, const struct sched_host *h, const char *spec_text,
		      const char *rid, long attempt, const struct sched_fit *fit)
{
	return send_build_json(out, h, json_loads(spec_text, 0, NULL), rid, attempt, fit);
}

/* ---- allocations ------------------------------------------------------- */

struct alloc_row {
	char *host;
	struct quota_amounts amt;
	long disk_gb;
	struct sched_fit fit;
};

static int alloc_get(struct sched *s, const char *uuid, struct alloc_row *out)
{
	sqlite3_stmt *q = s->st[SST_ALLOC_GET];
	int rc, ret = 0;

	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const unsigned char *h = sqlite3_column_text(q, 1);

		out->host = h ? strdup((const char *)h) : NULL;
		for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
			out->amt.v[i] = (long)sqlite3_column_int64(q, 2 + i);
		out->disk_gb = (long)sqlite3_column_int64(q, 7);
		out->fit.node = sqlite3_column_int(q, 8);
		out->fit.page_kb = (long)sqlite3_column_int64(q, 9);
		out->fit.pages = (long)sqlite3_column_int64(q, 10);
		ret = 1;
	} else if (rc != SQLITE_DONE) {
		ret = err_set(-EIO, "reading an allocation: %s", sqlite3_errmsg(s->db));
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return ret;
}

static void alloc_release_mem(struct sched *s, const struct alloc_row *a)
{
	struct sched_host *h = a->host ? sched_host_find(s, a->host) : NULL;

	if (h)
		sched_host_adjust(h, -1, a->amt.v[QUOTA_CORES] - a->amt.v[QUOTA_PCPUS],
				  a->amt.v[QUOTA_PCPUS], a->amt.v[QUOTA_RAM_MB], a->disk_gb, &a->fit);
}

static int alloc_insert(struct sched *s, const char *uuid, const char *project, const char *host,
			const struct quota_amounts *amt, long disk_gb, const struct sched_fit *fit)
{
	sqlite3_stmt *q = s->st[SST_ALLOC_INSERT];

	sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, host, -1, SQLITE_STATIC);
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
		sqlite3_bind_int64(q, 4 + i, amt->v[i]);
	sqlite3_bind_int64(q, 9, disk_gb);
	sqlite3_bind_int(q, 10, fit->node);
	sqlite3_bind_int64(q, 11, fit->page_kb);
	sqlite3_bind_int64(q, 12, fit->pages);
	return sched_db_step_done(s, SST_ALLOC_INSERT, "writing an allocation");
}

/* ---- server groups ----------------------------------------------------- */

struct strvec {
	char **v;
	size_t n, cap;
};

static int strvec_add(struct strvec *sv, const char *s)
{
	if (sv->n == sv->cap) {
		size_t cap = sv->cap ? sv->cap * 2 : 8;
		char **v = realloc(sv->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		sv->v = v;
		sv->cap = cap;
	}
	if (!(sv->v[sv->n] = strdup(s)))
		return -ENOMEM;
	sv->n++;
	return 0;
}

static void strvec_free(struct strvec *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	memset(sv, 0, sizeof(*sv));
}

/* The group's policy (created with WANT on first use). -EINVAL when WANT
 * differs from the stored one. */
static int group_policy(struct sched *s, const char *project, const char *group, const char *want,
			enum sched_group_policy *out)
{
	sqlite3_stmt *q = NULL;
	_cleanup_free_ char *have = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db,
			       "SELECT policy FROM server_groups WHERE project = ?1 AND name = ?2", -1,
			       &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "server groups: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, group, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW)
		have = strdup((const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	if (have && want && strcmp(have, want) != 0)
		return err_set(-EINVAL, "server group %s has policy %s, not %s", group, have, want);
	if (!have) {
		have = strdup(want ? want : "anti-affinity");
		if (!have)
			return err_set(-ENOMEM, "out of memory");
		if (sqlite3_prepare_v2(s->db,
				       "INSERT INTO server_groups(project, name, policy) "
				       "VALUES (?1, ?2, ?3)",
				       -1, &q, NULL) != SQLITE_OK)
			return err_set(-EIO, "server groups: %s", sqlite3_errmsg(s->db));
		sqlite3_bind_text(q, 1, project, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, group, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, have, -1, SQLITE_STATIC);
		if (sqlite3_step(q) != SQLITE_DONE)
			r = err_set(-EIO, "server groups: %s", sqlite3_errmsg(s->db));
		sqlite3_finalize(q);
		if (r < 0)
			return r;
	}
	for (int i = SCHED_GROUP_AFFINITY; i < SCHED_GROUP_POLICY_LAST; i++) {
		if (strcmp(have, sched_group_policy_names[i]) == 0) {
			*out = (enum sched_group_policy)i;
			return 0;
		}
	}
	return err_set(-EINVAL, "server group %s: policy must be affinity or anti-affinity, got %s",
		       group, have);
}

static int group_hosts(struct sched *s, const char *project, const char *group, struct strvec *sv)
{
	sqlite3_stmt *q = s->st[SST_GROUP_HOSTS];
	int rc, r = 0;

	sqlite3_bind_text(q, 1, project, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, group, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW)
		if (strvec_add(sv, (const char *)sqlite3_column_text(q, 0)) < 0)
			r = err_set(-ENOMEM, "out of memory");
	if (rc != SQLITE_DONE && r == 0)
		r = err_set(-EIO, "server group hosts: %s", sqlite3_errmsg(s->db));
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return r;
}

/* ---- instance.boot ----------------------------------------------------- */

static char *catalog_names(const struct sched *s, bool flavors)
{
	struct strbuf sb = { .max = 16 * 1024 };
	size_t n = flavors ? s->n_flavors : s->n_images;

	for (size_t i = 0; i < n; i++)
		sb_printf(&sb, "%s%s", i ? ", " : "",
			  flavors ? s->flavors[i].name : s->images[i].name);
	if (!n)
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
	r = base64_decode(ud, 64 * 1024, &dec, &len);
	free(dec);
	if (r == -E2BIG)
		return err_set(r, "user_data: more than 65536 bytes decoded");
	if (r < 0)
		return err_set(r, "user_data: expected a base64 string");
	return 0;
}

static int h_boot(struct sched *s, struct call *c)
{
	const json_t *b = c->body;
	const char *project = jstr(b, "project"), *name = jstr(b, "name");
	const char *fname = jstr(b, "flavor"), *iname = jstr(b, "image");
	const char *group = jstr(b, "server_group"), *gpol = jstr(b, "server_group_policy");
	const char *az = jstr(b, "availability_zone");
	const json_t *jcount = json_object_get(b, "count");
	long count = jcount ? (long)json_integer_value(jcount) : 1;
	const struct sched_flavor *f;
	const struct sched_image *im;
	struct sched_req req = { 0 };
	struct strvec ghosts = { 0 };
	struct placed *placed = NULL;
	struct quota_amounts one, total;
	struct sched_ctx ctx = { .cfg = s->cfg, .now_ms = c->now_ms };
	size_t max_alt = (size_t)s->cfg->max_attempts, n_placed = 0;
	size_t *pick = NULL;
	json_t *list = NULL;
	bool in_tx = false;
	char ts[RFC3339_STRLEN];
	int r = 0;

	if (!project || !name || !fname || !iname)
		return reject(s, c, "instance.boot: project, name, flavor and image are required");
	if (jcount && (!json_is_integer(jcount) || count < 1 || count > SCHED_MAX_COUNT))
		return reject(s, c, "instance.boot: count: expected an integer from 1 to %d",
			      SCHED_MAX_COUNT);
	f = sched_flavor_find(s, fname);
	if (!f) {
		_cleanup_free_ char *known = catalog_names(s, true);

		return reject(s, c, "flavor '%s' not found (known: %s)", fname, known ? known : "?");
	}
	im = sched_image_find(s, iname);
	if (!im) {
		_cleanup_free_ char *known = catalog_names(s, false);

		return reject(s, c, "image '%s' not found (known: %s)", iname, known ? known : "?");
	}
	if (f->disk_gb > 0 && f->disk_gb < im->min_disk_gb)
		return reject(s, c, "flavor %s: disk %ld GB is smaller than image %s min_disk %ld GB",
			      f->name, f->disk_gb, im->name, im->min_disk_gb);
	if (boot_check_user_data(b) < 0)
		return reject(s, c, "instance.boot: %s", err_msg());
	if (gpol && strcmp(gpol, "affinity") != 0 && strcmp(gpol, "anti-affinity") != 0)
		return reject(s, c, "server_group_policy: expected affinity or anti-affinity, got '%s'",
			      gpol);

	req.flavor = f;
	req.image = im;
	req.az = az;
	req.disk_gb = f->disk_gb > im->min_disk_gb ? f->disk_gb : im->min_disk_gb;
	quota_amounts_for(&one, f->vcpus, f->ram_mb, f->dedicated, f->page_kb != SCHED_PAGE_SMALL);
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
		total.v[i] = one.v[i] * count;

	placed = calloc((size_t)count, sizeof(*placed));
	pick = calloc(max_alt, sizeof(*pick));
	list = json_array();
	if (!placed || !pick || !list) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	for (long i = 0; i < count; i++) {
		struct inst_row row = { 0 };

		if (count == 1)
			placed[i].name = strdup(name);
		else if (asprintf(&placed[i].name, "%s-%ld", name, i + 1) < 0)
			placed[i].name = NULL;
		if (!placed[i].name) {
			r = err_set(-ENOMEM, "out of memory");
			goto out;
		}
		r = sched_inst_find(s, project, placed[i].name, &row);
		inst_row_free(&row);
		if (r < 0 && r != -EEXIST)
			goto out;
		if (r != 0) {
			r = reject(s, c, "instance %s already exists in project %s", placed[i].name,
				   project);
			goto out;
		}
	}

	r = sched_tx_begin(s);
	if (r < 0)
		goto out;
	in_tx = true;
	if (group) {
		enum sched_group_policy pol;

		r = group_policy(s, project, group, gpol, &pol);
		if (r == -EINVAL) {
			sched_tx_rollback(s);
			in_tx = false;
			r = reject(s, c, "%s", err_msg());
			goto out;
		}
		if (r < 0)
			goto out;
		req.group_policy = pol;
		r = group_hosts(s, project, group, &ghosts);
		if (r < 0)
			goto out;
	}
	r = quota_claim(s->quotas, project, &total, NULL);
	if (r == -EDQUOT) {
		_cleanup_free_ char *msg = strdup(err_msg());

		sched_tx_rollback(s);
		in_tx = false;
		s->stats.over_quota++;
		r = reject(s, c, "%s", msg ? msg : "quota exceeded");
		goto out;
	}
	if (r < 0)
		goto out;

	time_rfc3339_now(ts);
	for (long i = 0; i < count; i++) {
		struct placed *p = &placed[i];
		size_t scanned = 0, n;
		json_t *alts, *spec;
		_cleanup_free_ char *alts_text = NULL;
		sqlite3_stmt *q = s->st[SST_INST_INSERT];

		req.group_hosts = (const char *const *)ghosts.v;
		req.n_group_hosts = ghosts.n;
		n = sched_select(&ctx, s->hosts, s->n_hosts, &req, &s->cursor, pick, max_alt,
				 &scanned);
		s->stats.hosts_scanned += scanned;
		if (n == 0) {
			_cleanup_free_ char *why =
				sched_no_host_reason(&ctx, s->hosts, s->n_hosts, &req, p->name);

			sched_tx_rollback(s);
			in_tx = false;
			undo_claims(placed, n_placed, &req);
			s->stats.no_valid_host++;
			r = reject(s, c, "%s", why ? why : "no valid host");
			goto out;
		}
		uuid_generate_str(p->uuid);
		p->host = s->hosts[pick[0]];
		if (!sched_numa_fit(p->host, &req, &p->fit))
			p->fit = (struct sched_fit){ .node = -1 };
		sched_host_claim(p->host, &req, &p->fit);
		n_placed++;
		if ((req.group_policy == SCHED_GROUP_ANTI_AFFINITY ||
		     (req.group_policy == SCHED_GROUP_AFFINITY && ghosts.n == 0)) &&
		    strvec_add(&ghosts, p->host->name) < 0) {
			r = err_set(-ENOMEM, "out of memory");
			goto out;
		}
		alts = json_array();
		for (size_t k = 1; alts && k < n; k++)
			json_array_append_new(alts, json_string(s->hosts[pick[k]]->name));
		alts_text = alts ? json_dumps(alts, JSON_COMPACT) : NULL;
		json_decref(alts);
		spec = spec_new(p->uuid, p->name, project, i, f, im, b);
		p->spec = spec ? json_dumps(spec, JSON_COMPACT) : NULL;
		p->spec_json = spec;
		if (!alts_text || !p->spec) {
			r = err_set(-ENOMEM, "out of memory");
			goto out;
		}
		sqlite3_bind_text(q, 1, p->uuid, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, project, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, p->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 4, "scheduling", -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 5, p->host->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 6, f->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 7, im->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 8, group, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 9, c->rid ? c->rid : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 10, p->spec, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 11, alts_text, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 12, "{}", -1, SQLITE_STATIC);
		sqlite3_bind_int64(q, 13, 1);
		sqlite3_bind_null(q, 14);
		sqlite3_bind_text(q, 15, ts, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 16, ts, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 17, az, -1, SQLITE_STATIC);
		r = sched_db_step_done(s, SST_INST_INSERT, "writing an instance");
		if (r == 0)
			r = alloc_insert(s, p->uuid, project, p->host->name, &one, req.disk_gb, &p->fit);
		if (r < 0)
			goto out;
		json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s}", "uuid", p->uuid, "name",
						      p->name, "host", p->host->name, "state",
						      "scheduling"));
	}
	{
		json_t *res = result_new(true, NULL, json_pack("{s:O}", "instances", list));

		r = res ? store_result(s, c, res) : err_set(-ENOMEM, "out of memory");
		if (r < 0) {
			json_decref(res);
			goto out; /* rolls back and undoes the claims */
		}
		r = sched_tx_commit(s);
		in_tx = false;
		if (r < 0) {
			undo_claims(placed, n_placed, &req);
			json_decref(res);
			goto out;
		}
		r = emit_result(c, count == 1 ? placed[0].uuid : NULL, res);
	}
	for (long i = 0; r == 0 && i < count; i++) {
		struct placed *p = &placed[i];

		log_info("instance scheduled instance=%s name=%s project=%s host=%s request=%s",
			 p->uuid, p->name, project, p->host->name, c->rid);
		r = emit_state(c->out, c->rid, p->uuid, project, p->host->name, "scheduling", NULL);
		if (r == 0)
			r = send_build_json(c->out, p->host, json_incref(p->spec_json), c->rid, 1,
					    &p->fit);
	}
	s->stats.decisions += (uint64_t)count;
	n_placed = 0; /* committed: the claims stay */
out:
	if (in_tx) {
		sched_tx_rollback(s);
		undo_claims(placed, n_placed, &req);
	}
	for (long i = 0; placed && i < count; i++) {
		free(placed[i].name);
		free(placed[i].spec);
		json_decref(placed[i].spec_json);
	}
	free(placed);
	free(pick);
	json_decref(list);
	strvec_free(&ghosts);
	return r;
}

/* Send the builds of the instances in UUIDS that are still `scheduling`. */
static int resend_builds(struct sched *s, const struct strvec *uuids, struct sched_out *out)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < uuids->n; i++) {
		struct inst_row row = { 0 };
		struct alloc_row a = { 0 };
		struct sched_host *h;

		if (sched_inst_get(s, uuids->v[i], &row) == 1 &&
		    strcmp(row.state, "scheduling") == 0 && alloc_get(s, row.uuid, &a) == 1 &&
		    (h = sched_host_find(s, a.host)) != NULL) {
			log_info("build sent again instance=%s host=%s attempt=%ld", row.uuid, h->name,
				 row.attempts);
			r = send_build(out, h, row.spec, row.request_id, row.attempts, &a.fit);
		}
		free(a.host);
		inst_row_free(&row);
	}
	return r;
}

int sched_resume(struct sched *s, struct sched_out *out)
{
	sqlite3_stmt *q = NULL;
	struct strvec uuids = { 0 };
	int r = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT uuid FROM instances WHERE state = 'scheduling'", -1,
			       &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "resume: %s", sqlite3_errmsg(s->db));
	while (r == 0 && sqlite3_step(q) == SQLITE_ROW)
		if (strvec_add(&uuids, (const char *)sqlite3_column_text(q, 0)) < 0)
			r = err_set(-ENOMEM, "out of memory");
	sqlite3_finalize(q);
	if (r == 0)
		r = resend_builds(s, &uuids, out);
	strvec_free(&uuids);
	return r;
}

/* ---- instance commands ------------------------------------------------- */

/* Find the instance the request names; rejects (returns 1) when absent. */
static int find_target(struct sched *s, struct call *c, struct inst_row *row)
{
	const char *project = jstr(c->body, "project"), *ref = jstr(c->body, "instance");
	int r;

	if (!project || !ref) {
		r = reject(s, c, "%s: project and instance are required", c->type);
		return r < 0 ? r : 1;
	}
	r = sched_inst_find(s, project, ref, row);
	if (r == -EEXIST) {
		r = reject(s, c, "%s", err_msg());
		return r < 0 ? r : 1;
	}
	if (r < 0)
		return r;
	if (r == 0) {
		r = reject(s, c, "instance %s not found in project %s", ref, project);
		return r < 0 ? r : 1;
	}
	return 0;
}

static int h_delete(struct sched *s, struct call *c)
{
	struct inst_row row = { 0 };
	char *old_state = NULL;
	int r = find_target(s, c, &row);

	if (r != 0)
		return r < 0 ? r : 0;
	if (!row.host) {
		/* never placed (or every host failed): nothing to clean up anywhere */
		old_state = row.state;
		row.state = (char *)"deleted";
		r = sched_tx_begin(s);
		if (r == 0)
			r = sched_inst_update(s, &row);
		if (r == 0)
			r = accept(s, c, row.uuid, json_pack("{s:s, s:s}", "uuid", row.uuid, "state",
							     "deleted"));
		if (r == 0)
			r = sched_tx_commit(s);
		else
			sched_tx_rollback(s);
		if (r == 0)
			r = emit_state(c->out, c->rid, row.uuid, row.project, NULL, "deleted", NULL);
		row.state = old_state;
		inst_row_free(&row);
		return r;
	}
	old_state = row.state;
	row.state = (char *)"deleting";
	r = sched_tx_begin(s);
	if (r == 0)
		r = sched_inst_update(s, &row);
	if (r == 0)
		r = accept(s, c, row.uuid,
			   json_pack("{s:s, s:s, s:s}", "uuid", row.uuid, "host", row.host, "state",
				     "deleting"));
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0)
		r = emit_state(c->out, c->rid, row.uuid, row.project, row.host, "deleting", NULL);
	if (r == 0)
		r = emit_host_cmd(c->out, row.host, "instance.delete", c->rid, row.uuid,
				  json_pack("{s:s}", "uuid", row.uuid));
	row.state = old_state;
	inst_row_free(&row);
	return r;
}

/* stop / start / reboot / console: forwarded to the instance's host. */
struct power_op {
	const char *type;
	const char *needs; /* state it must be in, NULL = any placed */
};

static const struct power_op power_ops[] = {
	{ "instance.stop", "active" },
	{ "instance.start", "stopped" },
	{ "instance.reboot", "active" },
	{ "instance.console", NULL },
};

static int h_power(struct sched *s, struct call *c)
{
	struct inst_row row = { 0 };
	const struct power_op *op = NULL;
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(power_ops); i++)
		if (strcmp(power_ops[i].type, c->type) == 0)
			op = &power_ops[i];
	if (!op)
		return reject(s, c, "%s: not an instance command", c->type);
	r = find_target(s, c, &row);
	if (r != 0)
		return r < 0 ? r : 0;
	if (!row.host)
		r = reject(s, c, "instance %s is %s and has no host", row.name, row.state);
	else if (op->needs && strcmp(row.state, op->needs) != 0)
		r = reject(s, c, "instance %s is %s: %s needs it %s", row.name, row.state,
			   c->type + strlen("instance."), op->needs);
	else {
		json_t *cmd = json_pack("{s:s}", "uuid", row.uuid);
		json_t *lines = json_object_get(c->body, "lines");

		if (cmd && lines && strcmp(c->type, "instance.console") == 0)
			json_object_set(cmd, "lines", lines);
		r = emit_host_cmd(c->out, row.host, c->type, c->rid, row.uuid, cmd);
		/* the agent answers a console request with the log itself */
		if (r == 0 && strcmp(c->type, "instance.console") != 0)
			r = accept(s, c, row.uuid,
				   json_pack("{s:s, s:s, s:s}", "uuid", row.uuid, "host", row.host,
					     "state", row.state));
	}
	inst_row_free(&row);
	return r;
}

static json_t *inst_json(const struct inst_row *row, bool full)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "uuid", row->uuid, "name",
			      row->name, "project", row->project, "state", row->state, "flavor",
			      row->flavor, "image", row->image);

	if (!o)
		return NULL;
	json_object_set_new(o, "host", row->host ? json_string(row->host) : json_null());
	json_object_set_new(o, "created", json_string(row->created ? row->created : ""));
	if (!full)
		return o;
	json_object_set_new(o, "updated", json_string(row->updated ? row->updated : ""));
	json_object_set_new(o, "attempts", json_integer(row->attempts));
	json_object_set_new(o, "reason", row->reason ? json_string(row->reason) : json_null());
	json_object_set_new(o, "server_group",
			    row->server_group ? json_string(row->server_group) : json_null());
	json_object_set_new(o, "faults", row->faults ? json_loads(row->faults, 0, NULL)
						     : json_object());
	json_object_set_new(o, "alternates", row->alternates ? json_loads(row->alternates, 0, NULL)
							     : json_array());
	{
		json_t *spec = json_loads(row->spec, 0, NULL);
		json_t *meta = spec ? json_object_get(spec, "metadata") : NULL;

		json_object_set_new(o, "metadata", meta ? json_incref(meta) : json_object());
		json_decref(spec);
	}
	return o;
}

static int h_show(struct sched *s, struct call *c)
{
	struct inst_row row = { 0 };
	int r = find_target(s, c, &row);

	if (r != 0)
		return r < 0 ? r : 0;
	r = accept(s, c, row.uuid, inst_json(&row, true));
	inst_row_free(&row);
	return r;
}

static int h_list(struct sched *s, struct call *c)
{
	const char *project = jstr(c->body, "project");
	sqlite3_stmt *q = NULL;
	json_t *arr;
	int rc;

	if (!project)
		return reject(s, c, "instance.list: project is required");
	if (sqlite3_prepare_v2(s->db,
			       "SELECT uuid FROM instances WHERE project = ?1 AND state != 'deleted' "
			       "ORDER BY name, created",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "listing instances: %s", sqlite3_errmsg(s->db));
	arr = json_array();
	sqlite3_bind_text(q, 1, project, -1, SQLITE_STATIC);
	while (arr && (rc = sqlite3_step(q)) == SQLITE_ROW) {
		struct inst_row row = { 0 };

		if (sched_inst_get(s, (const char *)sqlite3_column_text(q, 0), &row) == 1)
			json_array_append_new(arr, inst_json(&row, false));
		inst_row_free(&row);
	}
	sqlite3_finalize(q);
	return accept(s, c, NULL, arr);
}

/* ---- quotas ------------------------------------------------------------ */

static json_t *amounts_json(const struct quota_amounts *a)
{
	json_t *o = json_object();

	for (int i = 0; o && i < QUOTA_RESOURCE_LAST; i++)
		json_object_set_new(o, quota_resource_names[i], json_integer(a->v[i]));
	return o;
}

static int quota_data(struct sched *s, const char *project, json_t **out)
{
	struct quota_amounts lim, used;
	int r = quota_limits_get(s->quotas, project, &lim);

	if (r == 0)
		r = quota_usage_get(s->quotas, project, &used);
	if (r < 0)
		return r;
	*out = json_pack("{s:s, s:o, s:o}", "project", project, "limits", amounts_json(&lim),
			 "usage", amounts_json(&used));
	return *out ? 0 : err_set(-ENOMEM, "out of memory");
}

static int h_quota_show(struct sched *s, struct call *c)
{
	const char *project = jstr(c->body, "project");
	json_t *data = NULL;
	int r;

	if (!project)
		return reject(s, c, "quota.show: project is required");
	r = quota_data(s, project, &data);
	return r < 0 ? r : accept(s, c, NULL, data);
}

static int h_quota_set(struct sched *s, struct call *c)
{
	const char *project = jstr(c->body, "project");
	json_t *lim = json_object_get(c->body, "limits");
	struct quota_amounts set;
	json_t *data = NULL, *v;
	const char *k;
	int r;

	if (!project || !json_is_object(lim))
		return reject(s, c, "quota.set: project and limits are required");
	for (int i = 0; i < QUOTA_RESOURCE_LAST; i++)
		set.v[i] = -2; /* leave alone */
	json_object_foreach(lim, k, v) {
		enum quota_resource res;

		if (quota_resource_parse(k, &res) < 0)
			return reject(s, c, "quota.set: %s", err_msg());
		if (!json_is_integer(v) || json_integer_value(v) < -1)
			return reject(s, c, "quota.set: limits.%s: expected an integer of at least -1 "
				      "(-1 = unlimited)", k);
		set.v[res] = (long)json_integer_value(v);
	}
	r = sched_tx_begin(s);
	if (r == 0)
		r = quota_limits_set(s->quotas, project, &set);
	if (r == 0)
		r = quota_data(s, project, &data);
	if (r == 0)
		r = accept(s, c, NULL, data);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0)
		log_info("quota set project=%s", project);
	return r;
}

/* ---- catalogs ---------------------------------------------------------- */

static int h_flavor_list(struct sched *s, struct call *c)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < s->n_flavors; i++)
		json_array_append_new(arr, sched_flavor_to_json(&s->flavors[i]));
	return accept(s, c, NULL, arr);
}

static int h_image_list(struct sched *s, struct call *c)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < s->n_images; i++)
		json_array_append_new(arr, sched_image_to_json(&s->images[i]));
	return accept(s, c, NULL, arr);
}

static int h_flavor_add(struct sched *s, struct call *c)
{
	struct sched_flavor f;
	json_t *data;
	int r;

	if (sched_flavor_from_json(c->body, &f) < 0)
		return reject(s, c, "flavor.add: %s", err_msg());
	if (sched_flavor_find(s, f.name)) {
		r = reject(s, c, "flavor %s already exists", f.name);
		sched_flavor_free(&f);
		return r;
	}
	data = sched_flavor_to_json(&f);
	r = sched_catalog_add_flavor(s, &f);
	if (r < 0) {
		json_decref(data);
		return r;
	}
	return accept(s, c, NULL, data);
}

static int h_image_add(struct sched *s, struct call *c)
{
	struct sched_image im;
	json_t *data;
	int r;

	if (sched_image_from_json(c->body, &im) < 0)
		return reject(s, c, "image.add: %s", err_msg());
	if (sched_image_find(s, im.name)) {
		r = reject(s, c, "image %s already exists", im.name);
		sched_image_free(&im);
		return r;
	}
	data = sched_image_to_json(&im);
	r = sched_catalog_add_image(s, &im);
	if (r < 0) {
		json_decref(data);
		return r;
	}
	return accept(s, c, NULL, data);
}

static int catalog_remove(struct sched *s, struct call *c, bool flavor)
{
	const char *name = jstr(c->body, "name");
	int r;

	if (!name)
		return reject(s, c, "%s: name is required", c->type);
	r = sched_catalog_remove(s, flavor, name);
	if (r == -ENOENT)
		return reject(s, c, "%s '%s' not found", flavor ? "flavor" : "image", name);
	if (r < 0)
		return r;
	return accept(s, c, NULL, json_pack("{s:s}", "name", name));
}

static int h_flavor_remove(struct sched *s, struct call *c)
{
	return catalog_remove(s, c, true);
}

static int h_image_remove(struct sched *s, struct call *c)
{
	return catalog_remove(s, c, false);
}

/* ---- hosts ------------------------------------------------------------- */

static int host_cmp(const void *a, const void *b)
{
	const struct sched_host *x = *(struct sched_host *const *)a;
	const struct sched_host *y = *(struct sched_host *const *)b;

	return strcmp(x->name, y->name);
}

static int h_host_list(struct sched *s, struct call *c)
{
	json_t *arr = json_array();
	struct sched_host **sorted = malloc((s->n_hosts ? s->n_hosts : 1) * sizeof(*sorted));

	if (!sorted) {
		json_decref(arr);
		return err_set(-ENOMEM, "out of memory");
	}
	if (s->n_hosts)
		memcpy(sorted, s->hosts, s->n_hosts * sizeof(*sorted));
	qsort(sorted, s->n_hosts, sizeof(*sorted), host_cmp);
	for (size_t i = 0; arr && i < s->n_hosts; i++) {
		const struct sched_host *h = sorted[i];
		bool up = sched_host_up(h, s->cfg, c->now_ms);
		json_t *o = json_pack(
			"{s:s, s:s, s:s, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, "
			"s:I, s:f, s:I}",
			"name", h->name, "availability_zone", h->az ? h->az : "nova", "state",
			!up ? "down" : h->degraded ? "degraded" : "up", "vcpus", "used", (json_int_t)h->vcpu_used, "total",
			(json_int_t)sched_host_vcpu_cap(h), "pcpus", "used", (json_int_t)h->pcpu_used,
			"total", (json_int_t)h->pcpu_total, "ram_mb", "used", (json_int_t)h->ram_used,
			"total", (json_int_t)sched_host_ram_cap(h), "disk_gb", "used",
			(json_int_t)h->disk_used, "total", (json_int_t)sched_host_disk_cap(h),
			"instances", (json_int_t)h->instances, "steal_pct", h->steal_pct,
			"recent_failures", (json_int_t)h->recent_failures);

		if (o)
			json_object_set_new(o, "last_report_ms",
					    json_integer(h->last_report_ms ? c->now_ms - h->last_report_ms
									   : -1));
		json_array_append_new(arr, o);
	}
	free(sorted);
	return accept(s, c, NULL, arr);
}

static int h_report(struct sched *s, struct call *c)
{
	const char *name = jstr(c->body, "host");
	struct sched_host *h;
	_cleanup_free_ char *text = NULL;
	sqlite3_stmt *q = s->st[SST_HOST_PUT];
	bool first;

	if (!name) {
		log_warn("host.report without a host name: skipped");
		return 0;
	}
	h = sched_host_get(s, name);
	if (!h)
		return err_set(-ENOMEM, "out of memory");
	first = h->last_report_ms == 0;
	if (sched_host_apply_report(h, c->body, s->cfg, c->now_ms) < 0) {
		log_warn("host report skipped host=%s error=\"%s\"", name, err_msg());
		return 0;
	}
	if (first)
		log_info("host reported host=%s az=%s vcpus=%ld pcpus=%ld ram_mb=%ld", name, h->az,
			 sched_host_vcpu_cap(h), h->pcpu_total, sched_host_ram_cap(h));
	text = json_dumps(c->body, JSON_COMPACT);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, c->now_ms);
	return sched_db_step_done(s, SST_HOST_PUT, "storing a host report");
}

/* ---- agents' events ---------------------------------------------------- */

static int h_state(struct sched *s, struct call *c)
{
	const char *uuid = jstr(c->body, "uuid"), *st = jstr(c->body, "state");
	const char *host = jstr(c->body, "host"), *reason = jstr(c->body, "reason");
	struct inst_row row = { 0 };
	struct alloc_row a = { 0 };
	enum instance_state state;
	bool have_alloc = false;
	int r;

	if (!uuid || !st || instance_state_parse(st, &state) < 0)
		return 0;
	if (state == INST_SCHEDULING)
		return 0; /* ours */
	r = sched_inst_get(s, uuid, &row);
	if (r <= 0)
		return r;
	if (strcmp(row.state, "deleted") == 0 || strcmp(row.state, st) == 0 ||
	    (host && row.host && strcmp(host, row.host) != 0)) {
		/* terminal, no change, or from a host the instance has left */
		inst_row_free(&row);
		return 0;
	}
	free(row.state);
	free(row.reason);
	row.state = strdup(st);
	row.reason = reason ? strdup(reason) : NULL;
	if (!row.state) {
		inst_row_free(&row);
		return err_set(-ENOMEM, "out of memory");
	}
	r = sched_tx_begin(s);
	if (r == 0 && state == INST_DELETED) {
		r = alloc_get(s, uuid, &a);
		have_alloc = r == 1;
		if (have_alloc) {
			sqlite3_bind_text(s->st[SST_ALLOC_DEL], 1, uuid, -1, SQLITE_STATIC);
			r = sched_db_step_done(s, SST_ALLOC_DEL, "deleting an allocation");
			if (r == 0)
				r = quota_release(s->quotas, row.project, &a.amt);
		}
	}
	if (r >= 0)
		r = sched_inst_update(s, &row);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0) {
		struct sched_host *h = row.host ? sched_host_find(s, row.host) : NULL;

		if (have_alloc)
			alloc_release_mem(s, &a);
		if (h && state == INST_ACTIVE)
			h->recent_failures = 0;
		log_info("instance state instance=%s host=%s state=%s", uuid,
			 row.host ? row.host : "-", st);
	}
	free(a.host);
	inst_row_free(&row);
	return r;
}

/* "build failed on every host tried (2 of 3): h1: ...; h2: ..." */
static char *faults_text(json_t *faults, long attempts, long max)
{
	struct strbuf sb = { .max = 64 * 1024 };
	const char *k;
	json_t *v;
	bool first = true;

	sb_printf(&sb, "no host could build it (%ld of %ld attempts)", attempts, max);
	json_object_foreach(faults, k, v) {
		sb_printf(&sb, "%s %s: %s", first ? ":" : ";", k,
			  json_string_value(v) ? json_string_value(v) : "failed");
		first = false;
	}
	return sb_steal(&sb);
}

static int h_reschedule(struct sched *s, struct call *c)
{
	const char *uuid = jstr(c->body, "uuid"), *failed = jstr(c->body, "failed_host");
	const char *why = jstr(c->body, "reason");
	struct inst_row row = { 0 };
	struct alloc_row a = { 0 };
	struct sched_flavor fl = { 0 };
	struct sched_image img = { 0 };
	struct sched_req req = { 0 };
	struct strvec tried = { 0 }, ghosts = { 0 };
	struct sched_ctx ctx = { .cfg = s->cfg, .now_ms = c->now_ms };
	struct sched_host *to = NULL, *from;
	struct sched_fit fit = { .node = -1 };
	json_t *spec = NULL, *faults = NULL, *alts = NULL, *v;
	_cleanup_free_ char *faults_s = NULL, *reason = NULL;
	char *old_state, *old_host, *old_faults, *old_reason;
	const char *k;
	size_t i;
	int r;

	if (!uuid)
		return 0;
	r = sched_inst_get(s, uuid, &row);
	if (r <= 0)
		return r;
	if ((strcmp(row.state, "scheduling") != 0 && strcmp(row.state, "building") != 0) ||
	    !row.host || (failed && strcmp(failed, row.host) != 0)) {
		log_info("reschedule ignored instance=%s state=%s host=%s failed_host=%s", uuid,
			 row.state, row.host ? row.host : "-", failed ? failed : "-");
		inst_row_free(&row);
		return 0;
	}
	r = alloc_get(s, uuid, &a);
	if (r <= 0)
		goto out;
	from = sched_host_find(s, row.host);
	if (from)
		from->recent_failures++;
	faults = json_loads(row.faults ? row.faults : "{}", 0, NULL);
	if (!faults)
		faults = json_object();
	json_object_set_new(faults, row.host, json_string(why ? why : "build failed"));
	json_object_foreach(faults, k, v)
		strvec_add(&tried, k);
	spec = json_loads(row.spec, 0, NULL);
	if (spec && sched_flavor_from_json(json_object_get(spec, "flavor"), &fl) == 0 &&
	    sched_image_from_json(json_object_get(spec, "image"), &img) == 0) {
		req.flavor = &fl;
		req.image = &img;
		req.az = row.az;
		req.disk_gb = a.disk_gb;
		req.tried_hosts = (const char *const *)tried.v;
		req.n_tried_hosts = tried.n;
		if (row.server_group) {
			enum sched_group_policy pol;

			if (group_policy(s, row.project, row.server_group, NULL, &pol) == 0 &&
			    group_hosts(s, row.project, row.server_group, &ghosts) == 0) {
				req.group_policy = pol;
				req.group_hosts = (const char *const *)ghosts.v;
				req.n_group_hosts = ghosts.n;
			}
		}
		alts = json_loads(row.alternates ? row.alternates : "[]", 0, NULL);
		if (row.attempts < s->cfg->max_attempts) {
			json_array_foreach(alts, i, v) {
				struct sched_host *h = sched_host_find(s, json_string_value(v));
				char buf[256];

				if (!h)
					continue;
				if (sched_host_reject_reason(&ctx, h, &req, buf, sizeof(buf))) {
					if (!json_object_get(faults, h->name))
						json_object_set_new(faults, h->name,
								    json_string(buf));
					continue;
				}
				if (sched_numa_fit(h, &req, &fit)) {
					to = h;
					break;
				}
			}
		}
	}
	faults_s = json_dumps(faults, JSON_COMPACT);
	old_state = row.state;
	old_host = row.host;
	old_faults = row.faults;
	old_reason = row.reason;
	row.faults = faults_s;
	r = sched_tx_begin(s);
	if (r == 0 && to) {
		sqlite3_stmt *q = s->st[SST_ALLOC_MOVE];

		sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, to->name, -1, SQLITE_STATIC);
		sqlite3_bind_int(q, 3, fit.node);
		sqlite3_bind_int64(q, 4, fit.page_kb);
		sqlite3_bind_int64(q, 5, fit.pages);
		r = sched_db_step_done(s, SST_ALLOC_MOVE, "moving an allocation");
		row.state = (char *)"scheduling";
		row.host = to->name;
		row.attempts++;
		row.reason = NULL;
	} else if (r == 0) {
		sqlite3_bind_text(s->st[SST_ALLOC_DEL], 1, uuid, -1, SQLITE_STATIC);
		r = sched_db_step_done(s, SST_ALLOC_DEL, "deleting an allocation");
		if (r == 0)
			r = quota_release(s->quotas, row.project, &a.amt);
		reason = faults_text(faults, row.attempts, s->cfg->max_attempts);
		row.state = (char *)"error";
		row.host = NULL;
		row.reason = reason;
	}
	if (r == 0)
		r = sched_inst_update(s, &row);
	if (r == 0)
		r = sched_tx_commit(s);
	else
		sched_tx_rollback(s);
	if (r == 0) {
		alloc_release_mem(s, &a);
		if (to) {
			sched_host_claim(to, &req, &fit);
			s->stats.reschedules++;
			log_info("instance rescheduled instance=%s from=%s to=%s attempt=%ld "
				 "reason=\"%s\"", uuid, old_host, to->name, row.attempts,
				 why ? why : "");
			r = emit_state(c->out, row.request_id, uuid, row.project, to->name,
				       "scheduling", NULL);
			if (r == 0)
				r = send_build(c->out, to, row.spec, row.request_id, row.attempts, &fit);
		} else {
			log_warn("instance failed instance=%s reason=\"%s\"", uuid, reason);
			r = emit_state(c->out, row.request_id, uuid, row.project, NULL, "error",
				       reason);
		}
	}
	row.state = old_state;
	row.host = old_host;
	row.faults = old_faults;
	row.reason = old_reason;
out:
	free(a.host);
	json_decref(spec);
	json_decref(faults);
	json_decref(alts);
	sched_flavor_free(&fl);
	sched_image_free(&img);
	strvec_free(&tried);
	strvec_free(&ghosts);
	inst_row_free(&row);
	return r;
}

/* ---- the table --------------------------------------------------------- */

struct handler {
	const char *type;
	int (*fn)(struct sched *s, struct call *c);
	bool stored; /* changes state: outcome kept for duplicates */
};

static const struct handler handlers[] = {
	/* requests on stratus.api */
	{ "instance.boot", h_boot, true },
	{ "instance.delete", h_delete, true },
	{ "instance.stop", h_power, true },
	{ "instance.start", h_power, true },
	{ "instance.reboot", h_power, true },
	{ "instance.console", h_power, false },
	{ "instance.show", h_show, false },
	{ "instance.list", h_list, false },
	{ "quota.show", h_quota_show, false },
	{ "quota.set", h_quota_set, true },
	{ "flavor.list", h_flavor_list, false },
	{ "flavor.add", h_flavor_add, true },
	{ "flavor.remove", h_flavor_remove, true },
	{ "image.list", h_image_list, false },
	{ "image.add", h_image_add, true },
	{ "image.remove", h_image_remove, true },
	{ "host.list", h_host_list, false },
	/* agents' events on stratus.events */
	{ "instance.state", h_state, false },
	{ "instance.reschedule", h_reschedule, false },
	/* reports on stratus.metrics */
	{ "host.report", h_report, false },
};

/* A request seen before: its stored outcome, and its builds again. */
static int answer_duplicate(struct sched *s, struct call *c)
{
	sqlite3_stmt *q = s->st[SST_REQ_GET];
	json_t *res = NULL;
	int rc, r = 0;

	sqlite3_bind_text(q, 1, c->rid, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		res = json_loads((const char *)sqlite3_column_text(q, 0), 0, NULL);
	else if (rc != SQLITE_DONE)
		r = err_set(-EIO, "reading a request outcome: %s", sqlite3_errmsg(s->db));
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	if (r < 0 || !res)
		return r;
	log_info("duplicate request answered type=%s request=%s", c->type, c->rid);
	if (strcmp(c->type, "instance.boot") == 0) {
		json_t *list = json_object_get(json_object_get(res, "data"), "instances");
		struct strvec uuids = { 0 };
		json_t *it;
		size_t i;

		json_array_foreach(list, i, it) {
			const char *u = json_string_value(json_object_get(it, "uuid"));

			if (u && strvec_add(&uuids, u) < 0)
				r = err_set(-ENOMEM, "out of memory");
		}
		if (r == 0)
			r = resend_builds(s, &uuids, c->out);
		strvec_free(&uuids);
	}
	if (r == 0)
		r = emit_result(c, NULL, res);
	else
		json_decref(res);
	return r < 0 ? r : 1;
}

int sched_dispatch(struct sched *s, const char *type, const char *request_id, json_t *body,
		   int64_t now_ms, struct sched_out *out)
{
	struct call c = { .type = type, .rid = request_id, .body = body, .now_ms = now_ms,
			  .out = out };

	for (size_t i = 0; i < ARRAY_SIZE(handlers); i++) {
		int r;

		if (strcmp(handlers[i].type, type) != 0)
			continue;
		c.stored = handlers[i].stored;
		if (!json_is_object(body))
			return reject(s, &c, "%s: body: expected an object", type);
		if (c.stored && request_id && *request_id) {
			r = answer_duplicate(s, &c);
			if (r != 0)
				return r < 0 ? r : 0;
		}
		return handlers[i].fn(s, &c);
	}
	/* not ours (the commands we send, our own results): nothing to do */
	log_debug("message ignored type=%s request=%s", type, request_id ? request_id : "-");
	return 0;
}
