/*
 * The catalog requests: flavor.list / add / remove, image.list / add /
 * remove (the catalogs themselves live in the state, see state.c).
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

int sched_on_image_list(struct sched *s, struct sched_call *c)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < s->n_images; i++)
		json_array_append_new(arr, sched_image_to_json(&s->images[i]));
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
	struct sched_image im;
	json_t *data;
	int r;

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
	r = sched_catalog_add_image(s, &im);
	if (r < 0) {
		json_decref(data);
		return r;
	}
	return sched_accept(s, c, NULL, data);
}

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

int sched_on_image_remove(struct sched *s, struct sched_call *c)
{
	return catalog_remove(s, c, false);
}

