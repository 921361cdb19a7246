/*
 * Who may see and boot an image (tenant-private images, issue 18).
 *
 * An image is public (no row in image_owners: what the config and an
 * admin's image.add make), private to one project (a row in image_owners),
 * or private and shared with named projects (rows in image_shares). The
 * catalog itself (images table, s->images) does not change: access is kept
 * beside it in its own tables so that older states open unchanged.
 *
 *   image_owners(name PK, project)            the owner of a private image
 *   image_shares(name, project, PK both)      projects it is shared with
 *
 * Names stay unique over the whole catalog (a private image's name is taken
 * for everyone). An image a caller may not see is answered exactly as one
 * that does not exist ("image 'x' not found"), so that a member learns
 * nothing of another project's private images by booting or removing them.
 *
 * Removal of an image that instances (not deleted) still use is refused,
 * naming them: their overlays are backed by it, and a rebuild or a
 * reschedule would need it again. See docs/images.md "Private images".
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

#define IMG_MAX_USERS_NAMED 5 /* instances named in an "in use" refusal */

static const char access_schema[] =
	"CREATE TABLE IF NOT EXISTS image_owners ("
	" name TEXT PRIMARY KEY, project TEXT NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS image_shares ("
	" name TEXT NOT NULL, project TEXT NOT NULL, PRIMARY KEY(name, project)) WITHOUT ROWID;";

int sched_image_access_open(struct sched *s)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, access_schema, NULL, NULL, &msg) != SQLITE_OK) {
		int r = err_set(-EIO, "scheduler state: creating the image access tables: %s",
				msg ? msg : "?");

		sqlite3_free(msg);
		return r;
	}
	return 0;
}

/* Run SQL with up to two text parameters; 0 done, <0 error. */
static int exec2(struct sched *s, const char *sql, const char *a, const char *b)
{
	sqlite3_stmt *q = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: image access: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, a, -1, SQLITE_STATIC);
	if (b)
		sqlite3_bind_text(q, 2, b, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		r = err_set(-EIO, "scheduler state: image access: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

int sched_image_owner(struct sched *s, const char *name, char **owner)
{
	sqlite3_stmt *q = NULL;
	int rc, r = 0;

	*owner = NULL;
	if (sqlite3_prepare_v2(s->db, "SELECT project FROM image_owners WHERE name = ?1", -1, &q,
			       NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: image access: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		*owner = strdup((const char *)sqlite3_column_text(q, 0));
		if (!*owner)
			r = err_set(-ENOMEM, "out of memory");
	} else if (rc != SQLITE_DONE) {
		r = err_set(-EIO, "scheduler state: image access: %s", sqlite3_errmsg(s->db));
	}
	sqlite3_finalize(q);
	return r;
}

/* The projects NAME is shared with, added to SV. */
static int image_shares(struct sched *s, const char *name, struct sched_strvec *sv)
{
	sqlite3_stmt *q = NULL;
	int rc, r = 0;

	if (sqlite3_prepare_v2(s->db,
			       "SELECT project FROM image_shares WHERE name = ?1 ORDER BY project",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: image access: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	while (r == 0 && (rc = sqlite3_step(q)) == SQLITE_ROW)
		r = sched_strvec_add(sv, (const char *)sqlite3_column_text(q, 0));
	if (r == 0 && rc != SQLITE_DONE)
		r = err_set(-EIO, "scheduler state: image access: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	return r;
}

int sched_image_visible(struct sched *s, const char *name, const char *project, bool admin)
{
	_cleanup_free_ char *owner = NULL;
	struct sched_strvec sv = { 0 };
	int r;

	if (admin)
		return 1;
	r = sched_image_owner(s, name, &owner);
	if (r < 0)
		return r;
	if (!owner || (project && strcmp(owner, project) == 0))
		return 1;
	r = image_shares(s, name, &sv);
	for (size_t i = 0; r == 0 && project && i < sv.n; i++)
		if (strcmp(sv.v[i], project) == 0)
			r = 1;
	sched_strvec_free(&sv);
	return r;
}

const struct sched_image *sched_image_lookup(struct sched *s, const char *name,
					     const char *project, bool admin)
{
	const struct sched_image *im = sched_image_find(s, name);

	if (!im || sched_image_visible(s, im->name, project, admin) != 1)
		return NULL;
	return im;
}

char *sched_image_names(struct sched *s, const char *project, bool admin)
{
	struct strbuf sb = { .max = 16 * 1024 };
	size_t shown = 0;

	for (size_t i = 0; i < s->n_images; i++) {
		if (sched_image_visible(s, s->images[i].name, project, admin) != 1)
			continue;
		sb_printf(&sb, "%s%s", shown++ ? ", " : "", s->images[i].name);
	}
	if (!shown)
		sb_printf(&sb, "none");
	return sb_steal(&sb);
}

int sched_image_set_owner(struct sched *s, const char *name, const char *project)
{
	int r = exec2(s, "DELETE FROM image_shares WHERE name = ?1", name, NULL);

	if (r == 0 && project)
		r = exec2(s, "INSERT OR REPLACE INTO image_owners(name, project) VALUES (?1, ?2)",
			  name, project);
	else if (r == 0)
		r = exec2(s, "DELETE FROM image_owners WHERE name = ?1", name, NULL);
	return r;
}

/* The catalog entry as image.list shows it to PROJECT: + visibility, owner,
 * and (owner or admin only) the projects it is shared with. */
static json_t *image_listed(struct sched *s, const struct sched_image *im, const char *project,
			    bool admin)
{
	_cleanup_free_ char *owner = NULL;
	struct sched_strvec sv = { 0 };
	json_t *o = sched_image_to_json(im), *arr = NULL;
	int r = sched_image_owner(s, im->name, &owner);

	if (r == 0 && owner)
		r = image_shares(s, im->name, &sv);
	if (r < 0 || !o) {
		json_decref(o);
		sched_strvec_free(&sv);
		return NULL;
	}
	json_object_set_new(o, "visibility",
			    json_string(!owner ? "public" : sv.n ? "shared" : "private"));
	if (owner)
		json_object_set_new(o, "owner", json_string(owner));
	if (owner && (admin || (project && strcmp(project, owner) == 0))) {
		arr = json_array();
		for (size_t i = 0; arr && i < sv.n; i++)
			json_array_append_new(arr, json_string(sv.v[i]));
		json_object_set_new(o, "shared_with", arr);
	}
	sched_strvec_free(&sv);
	return o;
}

int sched_on_image_list(struct sched *s, struct sched_call *c)
{
	json_t *arr = json_array();
	int r = 0;

	for (size_t i = 0; arr && r == 0 && i < s->n_images; i++) {
		const struct sched_image *im = &s->images[i];
		json_t *o;

		r = sched_image_visible(s, im->name, c->project, c->admin);
		if (r < 0)
			break;
		if (r == 0)
			continue;
		r = 0;
		o = image_listed(s, im, c->project, c->admin);
		if (!o)
			r = err_set(-ENOMEM, "image.list: out of memory");
		else
			json_array_append_new(arr, o);
	}
	if (r < 0 || !arr) {
		json_decref(arr);
		return r < 0 ? r : err_set(-ENOMEM, "out of memory");
	}
	return sched_accept(s, c, NULL, arr);
}

int sched_image_in_use(struct sched *s, const char *name, char **names, long *count)
{
	struct strbuf sb = { .max = 4096 };
	sqlite3_stmt *q = NULL;
	long n = 0;
	int rc, r = 0;

	if (sqlite3_prepare_v2(s->db,
			       "SELECT project, name FROM instances WHERE image = ?1 AND "
			       "state != 'deleted' ORDER BY created",
			       -1, &q, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: image users: %s", sqlite3_errmsg(s->db));
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (n < IMG_MAX_USERS_NAMED)
			sb_printf(&sb, "%s%s/%s", n ? ", " : "", sqlite3_column_text(q, 0),
				  sqlite3_column_text(q, 1));
		n++;
	}
	if (rc != SQLITE_DONE)
		r = err_set(-EIO, "scheduler state: image users: %s", sqlite3_errmsg(s->db));
	sqlite3_finalize(q);
	if (n > IMG_MAX_USERS_NAMED)
		sb_printf(&sb, " and %ld more", n - IMG_MAX_USERS_NAMED);
	if (r < 0) {
		free(sb_steal(&sb));
		return r;
	}
	*count = n;
	*names = sb_steal(&sb);
	return 0;
}

/* The image C names, if C may change it (an admin, or a member of the
 * owning project); answers and returns NULL otherwise (*r set). */
static const struct sched_image *owned_target(struct sched *s, struct sched_call *c,
					      char **owner, int *r)
{
	const char *name = sched_jstr(c->body, "name");
	const struct sched_image *im = name ? sched_image_lookup(s, name, c->project, c->admin)
					    : NULL;

	*owner = NULL;
	*r = 0;
	if (!name) {
		*r = sched_reject(s, c, "%s: name is required", c->type);
		return NULL;
	}
	if (!im) {
		*r = sched_reject(s, c, "image '%s' not found", name);
		return NULL;
	}
	*r = sched_image_owner(s, im->name, owner);
	if (*r < 0)
		return NULL;
	if (!c->admin && !*owner) {
		*r = sched_reject(s, c, "%s: admin only: image %s is public", c->type, im->name);
		return NULL;
	}
	if (!c->admin && strcmp(*owner, c->project) != 0) {
		/* shared with the caller: it may boot it, not change it */
		*r = sched_reject(s, c, "%s: image %s belongs to project %s, not to %s", c->type,
				  im->name, *owner, c->project);
		free(*owner);
		*owner = NULL;
		return NULL;
	}
	return im;
}

int sched_on_image_remove(struct sched *s, struct sched_call *c)
{
	_cleanup_free_ char *owner = NULL, *users = NULL;
	const struct sched_image *im;
	char name[256];
	long n = 0;
	int r;

	im = owned_target(s, c, &owner, &r);
	if (!im)
		return r;
	snprintf(name, sizeof(name), "%s", im->name);
	r = sched_image_in_use(s, name, &users, &n);
	if (r < 0)
		return r;
	if (n > 0)
		return sched_reject(s, c, "image %s is in use by %ld instance%s (%s): delete or "
				    "rebuild them first", name, n, n == 1 ? "" : "s", users);
	r = sched_catalog_remove(s, false, name);
	if (r == 0)
		r = exec2(s, "DELETE FROM image_shares WHERE name = ?1", name, NULL);
	if (r == 0)
		r = exec2(s, "DELETE FROM image_owners WHERE name = ?1", name, NULL);
	if (r < 0)
		return r;
	return sched_accept(s, c, NULL, json_pack("{s:s}", "name", name));
}

/* image.share / image.unshare {name, with}: by the owner or an admin. */
static int share(struct sched *s, struct sched_call *c, bool add)
{
	_cleanup_free_ char *owner = NULL;
	const char *with = sched_jstr(c->body, "with");
	const struct sched_image *im;
	int r;

	if (!with)
		return sched_reject(s, c, "%s: with (a project) is required", c->type);
	im = owned_target(s, c, &owner, &r);
	if (!im)
		return r;
	if (!owner)
		return sched_reject(s, c, "%s: image %s is public: only private images are shared",
				    c->type, im->name);
	if (strcmp(with, owner) == 0)
		return sched_reject(s, c, "%s: image %s already belongs to project %s", c->type,
				    im->name, with);
	r = exec2(s, add ? "INSERT OR IGNORE INTO image_shares(name, project) VALUES (?1, ?2)"
			 : "DELETE FROM image_shares WHERE name = ?1 AND project = ?2",
		  im->name, with);
	if (r < 0)
		return r;
	return sched_accept(s, c, NULL, json_pack("{s:s, s:s, s:b}", "name", im->name, "with",
						  with, "shared", add));
}

int sched_on_image_share(struct sched *s, struct sched_call *c)
{
	return share(s, c, true);
}

int sched_on_image_unshare(struct sched *s, struct sched_call *c)
{
	return share(s, c, false);
}
