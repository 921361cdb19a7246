/*
 * The catalog requests: flavor.list / add / remove, image.add (image.list,
 * remove, share: image_access.c; the catalogs live in the state, state.c).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"


int sched_on_flavor_list(struct sched *s, struct sched_call *c)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < s->n_flavors; i++)
		json_array_append_new(arr, sched_flavor_to_json(&s->flavors[i]));
	return sched_accept(s, c, NULL, arr);
}

int sched_on_flavor_add(struct sched *s, struct sched_call *c)
{
	struct sched_flavor f;
	json_t *data;
	int r;

	if (sched_flavor_from_json(c->body, &f) < 0)
		return sched_reject(s, c, "flavor.add: %s", err_msg());
	if (sched_flavor_find(s, f.name)) {
		r = sched_reject(s, c, "flavor %s already exists", f.name);
		sched_flavor_free(&f);
		return r;
	}
	data = sched_flavor_to_json(&f);
	r = sched_catalog_add_flavor(s, &f);
	if (r < 0) {
		json_decref(data);
		return r;
	}
	return sched_accept(s, c, NULL, data);
}

int sched_on_image_add(struct sched *s, struct sched_call *c)
{
	const char *vis = sched_jstr(c->body, "visibility");
	bool private = vis && strcmp(vis, "private") == 0;
	struct sched_image im;
	char name[256];
	json_t *data;
	int r;

	if (vis && !private && strcmp(vis, "public") != 0)
		return sched_reject(s, c, "image.add: visibility: expected public or private, got '%s'",
				    vis);
	if (sched_image_from_json(c->body, &im) < 0)
		return sched_reject(s, c, "image.add: %s", err_msg());
	if (sched_image_find(s, im.name)) {
		r = sched_reject(s, c, "image %s already exists", im.name);
		sched_image_free(&im);
		return r;
	}
	/* the URLs through the operator's filter before anyone fetches them */
	const char *const urls[] = { im.url, im.kernel_url, im.initrd_url };

	for (size_t i = 0; i < ARRAY_SIZE(urls); i++) {
		if (urls[i] && img_url_check(&s->cfg->image_url_filter, urls[i]) < 0) {
			r = sched_reject(s, c, "image %s: %s", im.name, err_msg());
			sched_image_free(&im);
			return r;
		}
	}
	data = sched_image_to_json(&im);
	snprintf(name, sizeof(name), "%s", im.name);
	r = sched_catalog_add_image(s, &im);
	/* private: owned by the project the admin names (or its own) */
	if (r == 0)
		r = sched_image_set_owner(s, name, private ? c->project : NULL);
	if (r < 0) {
		json_decref(data);
		return r;
	}
	if (data) {
		json_object_set_new(data, "visibility", json_string(private ? "private" : "public"));
		if (private && c->project)
			json_object_set_new(data, "owner", json_string(c->project));
	}
	return sched_accept(s, c, NULL, data);
}

/* flavor.remove (image.remove: image_access.c, it checks owners and users) */
static int catalog_remove(struct sched *s, struct sched_call *c, bool flavor)
{
	const char *name = sched_jstr(c->body, "name");
	int r;

	if (!name)
		return sched_reject(s, c, "%s: name is required", c->type);
	r = sched_catalog_remove(s, flavor, name);
	if (r == -ENOENT)
		return sched_reject(s, c, "%s '%s' not found", flavor ? "flavor" : "image", name);
	if (r < 0)
		return r;
	return sched_accept(s, c, NULL, json_pack("{s:s}", "name", name));
}

int sched_on_flavor_remove(struct sched *s, struct sched_call *c)
{
	return catalog_remove(s, c, true);
}


