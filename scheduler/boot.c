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

int sched_on_boot(struct sched *s, struct sched_call *c)
{
	const json_t *b = c->body;
	const char *project = sched_jstr(b, "project"), *name = sched_jstr(b, "name");
	const char *fname = sched_jstr(b, "flavor"), *iname = sched_jstr(b, "image");
	const char *group = sched_jstr(b, "server_group"), *gpol = sched_jstr(b, "server_group_policy");
	const char *az = sched_jstr(b, "availability_zone");
	const json_t *jcount = json_object_get(b, "count");
	long count = jcount ? (long)json_integer_value(jcount) : 1;
	const struct sched_flavor *f;
	const struct sched_image *im;
	struct sched_req req = { 0 };
	struct sched_strvec ghosts = { 0 };
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
		return sched_reject(s, c, "instance.boot: project, name, flavor and image are required");
	if (jcount && (!json_is_integer(jcount) || count < 1 || count > SCHED_MAX_COUNT))
		return sched_reject(s, c, "instance.boot: count: expected an integer from 1 to %d",
			      SCHED_MAX_COUNT);
	f = sched_flavor_find(s, fname);
	if (!f) {
		_cleanup_free_ char *known = catalog_names(s, true);

		return sched_reject(s, c, "flavor '%s' not found (known: %s)", fname, known ? known : "?");
	}
	im = sched_image_find(s, iname);
	if (!im) {
		_cleanup_free_ char *known = catalog_names(s, false);

		return sched_reject(s, c, "image '%s' not found (known: %s)", iname, known ? known : "?");
	}
	if (f->disk_gb > 0 && f->disk_gb < im->min_disk_gb)
		return sched_reject(s, c, "flavor %s: disk %ld GB is smaller than image %s min_disk %ld GB",
			      f->name, f->disk_gb, im->name, im->min_disk_gb);
	if (boot_check_user_data(b) < 0)
		return sched_reject(s, c, "instance.boot: %s", err_msg());
	if (gpol && strcmp(gpol, "affinity") != 0 && strcmp(gpol, "anti-affinity") != 0)
		return sched_reject(s, c, "server_group_policy: expected affinity or anti-affinity, got '%s'",
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
			r = sched_reject(s, c, "instance %s already exists in project %s", placed[i].name,
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

		r = sched_group_policy(s, project, group, gpol, &pol);
		if (r == -EINVAL) {
			sched_tx_rollback(s);
			in_tx = false;
			r = sched_reject(s, c, "%s", err_msg());
			goto out;
		}
		if (r < 0)
			goto out;
		req.group_policy = pol;
		r = sched_group_hosts(s, project, group, &ghosts);
		if (r < 0)
			goto out;
	}
	r = quota_claim(s->quotas, project, &total, NULL);
	if (r == -EDQUOT) {
		_cleanup_free_ char *msg = strdup(err_msg());

		sched_tx_rollback(s);
		in_tx = false;
		s->stats.over_quota++;
		r = sched_reject(s, c, "%s", msg ? msg : "quota exceeded");
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
			r = sched_reject(s, c, "%s", why ? why : "no valid host");
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
		    sched_strvec_add(&ghosts, p->host->name) < 0) {
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
			r = sched_alloc_insert(s, p->uuid, project, p->host->name, &one, req.disk_gb, &p->fit);
		if (r < 0)
			goto out;
		json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s}", "uuid", p->uuid, "name",
						      p->name, "host", p->host->name, "state",
						      "scheduling"));
	}
	{
		json_t *res = sched_result_new(true, NULL, json_pack("{s:O}", "instances", list));

		r = res ? sched_store_result(s, c, res) : err_set(-ENOMEM, "out of memory");
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
		r = sched_emit_result(c, count == 1 ? placed[0].uuid : NULL, res);
	}
	for (long i = 0; r == 0 && i < count; i++) {
		struct placed *p = &placed[i];

		log_info("instance scheduled instance=%s name=%s project=%s host=%s request=%s",
			 p->uuid, p->name, project, p->host->name, c->rid);
		r = sched_emit_state(c->out, c->rid, p->uuid, project, p->host->name, "scheduling", NULL);
		if (r == 0)
			r = sched_send_build_json(c->out, p->host, json_incref(p->spec_json), c->rid, 1,
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
	sched_strvec_free(&ghosts);
	return r;
}

/* Send the builds of the instances in UUIDS that are still `scheduling`. */
int sched_resend_builds(struct sched *s, const struct sched_strvec *uuids, struct sched_out *out)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < uuids->n; i++) {
		struct inst_row row = { 0 };
		struct sched_alloc a = { 0 };
		struct sched_host *h;

		if (sched_inst_get(s, uuids->v[i], &row) == 1 &&
		    strcmp(row.state, "scheduling") == 0 && sched_alloc_get(s, row.uuid, &a) == 1 &&
		    (h = sched_host_find(s, a.host)) != NULL) {
			log_info("build sent again instance=%s host=%s attempt=%ld", row.uuid, h->name,
				 row.attempts);
			r = sched_send_build(out, h, row.spec, row.request_id, row.attempts, &a.fit);
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

