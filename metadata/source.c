/*
 * Instances and where the service finds them.
 *
 * struct md_source is the seam: lookup by address, lookup by id, reload.
 * The JSON implementation here reads an array of instance specs (the
 * standalone service and the tests); the agent's SQLite store plugs in
 * later with the same operations (docs/metadata.md "Sources").
 *
 * A reload builds a new snapshot. An instance whose spec did not change
 * (same canonical JSON) is carried over as the same object, so its render
 * cache and rate-limit bucket survive; a changed one is a new object, so
 * its documents are rendered afresh: that is the cache invalidation.
 */
#include <errno.h>
#include <string.h>

#include "metadata/metadata_priv.h"

#define SOURCE_FILE_MAX (64u << 20)

int md_instance_new(struct instance_spec *spec, struct md_instance **out)
{
	struct md_instance *in = calloc(1, sizeof(*in));
	int r;

	if (!in)
		return err_set(-ENOMEM, "out of memory");
	atomic_init(&in->refs, 1);
	in->refill_ns = time_mono_ns();
	in->tokens = -1; /* full on first use */
	r = md_guest_address(spec, in->addr);
	if (r < 0 && r != -ENOENT) {
		free(in);
		return r;
	}
	if (r == -ENOENT)
		in->addr[0] = '\0';
	pthread_mutex_init(&in->lock, NULL);
	in->spec = *spec;
	memset(spec, 0, sizeof(*spec));
	*out = in;
	return 0;
}

void md_instance_unref(struct md_instance *in)
{
	if (!in || atomic_fetch_sub(&in->refs, 1) != 1)
		return;
	model_spec_free(&in->spec);
	md_tree_free(in->tree);
	free(in->canon);
	pthread_mutex_destroy(&in->lock);
	free(in);
}

const struct instance_spec *md_instance_spec(const struct md_instance *in)
{
	return &in->spec;
}

const struct md_tree *md_instance_tree_locked(struct md_instance *in)
{
	if (!in->tree && md_render(&in->spec, &in->tree) < 0)
		in->tree = NULL;
	return in->tree;
}

/* ---- the JSON file source ---------------------------------------------- */

struct snapshot {
	struct md_instance **by_id;   /* sorted by uuid */
	struct md_instance **by_addr; /* instances with an address, sorted by it */
	size_t n, n_addr;
};

struct json_source {
	char *name;
	char *path;  /* NULL: from a string */
	char *text;  /* the string source */
	pthread_mutex_t lock;
	struct snapshot *snap;
};

static void snapshot_free(struct snapshot *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		md_instance_unref(s->by_id[i]);
	free(s->by_id);
	free(s->by_addr);
	free(s);
}

static int cmp_id(const void *a, const void *b)
{
	return strcmp((*(struct md_instance *const *)a)->spec.uuid,
		      (*(struct md_instance *const *)b)->spec.uuid);
}

static int cmp_addr(const void *a, const void *b)
{
	return strcmp((*(struct md_instance *const *)a)->addr,
		      (*(struct md_instance *const *)b)->addr);
}

static struct md_instance *find_id(const struct snapshot *s, const char *uuid)
{
	size_t lo = 0, hi = s ? s->n : 0;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(uuid, s->by_id[mid]->spec.uuid);

		if (c == 0)
			return s->by_id[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static struct md_instance *find_addr(const struct snapshot *s, const char *addr)
{
	size_t lo = 0, hi = s ? s->n_addr : 0;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(addr, s->by_addr[mid]->addr);

		if (c == 0)
			return s->by_addr[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Parse TEXT into a snapshot, reusing unchanged instances of OLD. */
static int snapshot_load(const char *name, const char *text, const struct snapshot *old,
			 struct snapshot **out)
{
	json_error_t je;
	json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	struct snapshot *s = NULL;
	int r = 0;

	if (!root)
		return err_set(-EINVAL, "%s:%d:%d: %s", name, je.line, je.column, je.text);
	if (!json_is_array(root)) {
		r = err_set(-EINVAL, "%s: expected a JSON array of instance specs", name);
		goto out;
	}
	s = calloc(1, sizeof(*s));
	size_t n = json_array_size(root);

	if (!s || !(s->by_id = calloc(n + 1, sizeof(*s->by_id))) ||
	    !(s->by_addr = calloc(n + 1, sizeof(*s->by_addr)))) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *el = json_array_get(root, i);
		char *canon = json_dumps(el, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
		struct instance_spec spec;
		struct md_instance *in = NULL, *prev;

		if (!canon) {
			r = err_set(-ENOMEM, "out of memory");
			goto out;
		}
		r = model_spec_parse(el, &spec);
		if (r < 0) {
			free(canon);
			r = err_prefix(r, "%s: instance %zu", name, i);
			goto out;
		}
		prev = find_id(old, spec.uuid);
		if (prev && prev->canon && strcmp(prev->canon, canon) == 0) {
			in = md_instance_ref(prev);
			model_spec_free(&spec);
			free(canon);
		} else {
			r = md_instance_new(&spec, &in);
			if (r < 0) {
				model_spec_free(&spec);
				free(canon);
				r = err_prefix(r, "%s: instance %zu", name, i);
				goto out;
			}
			in->canon = canon;
		}
		s->by_id[s->n++] = in;
		if (in->addr[0])
			s->by_addr[s->n_addr++] = in;
	}
	qsort(s->by_id, s->n, sizeof(*s->by_id), cmp_id);
	qsort(s->by_addr, s->n_addr, sizeof(*s->by_addr), cmp_addr);
	for (size_t i = 1; i < s->n; i++)
		if (strcmp(s->by_id[i - 1]->spec.uuid, s->by_id[i]->spec.uuid) == 0) {
			r = err_set(-EINVAL, "%s: instance %s is listed twice", name,
				    s->by_id[i]->spec.uuid);
			goto out;
		}
	for (size_t i = 1; i < s->n_addr; i++)
		if (strcmp(s->by_addr[i - 1]->addr, s->by_addr[i]->addr) == 0) {
			r = err_set(-EINVAL, "%s: instances %s and %s have the same address %s",
				    name, s->by_addr[i - 1]->spec.uuid, s->by_addr[i]->spec.uuid,
				    s->by_addr[i]->addr);
			goto out;
		}
out:
	json_decref(root);
	if (r < 0) {
		snapshot_free(s);
		return r;
	}
	*out = s;
	return 0;
}

static int js_reload(void *impl)
{
	struct json_source *js = impl;
	struct snapshot *s = NULL, *old;
	char *text = NULL;
	size_t len;
	int r;

	if (js->path) {
		r = read_file(js->path, SOURCE_FILE_MAX, &text, &len);
		if (r < 0)
			return err_prefix(r, "instances");
	}
	pthread_mutex_lock(&js->lock);
	old = js->snap;
	if (old) /* keep OLD alive while comparing without holding the lock long */
		for (size_t i = 0; i < old->n; i++)
			md_instance_ref(old->by_id[i]);
	pthread_mutex_unlock(&js->lock);

	r = snapshot_load(js->name, js->path ? text : js->text, old, &s);
	free(text);

	pthread_mutex_lock(&js->lock);
	if (old)
		for (size_t i = 0; i < old->n; i++)
			md_instance_unref(old->by_id[i]);
	if (r == 0) {
		old = js->snap;
		js->snap = s;
	} else {
		old = NULL;
	}
	pthread_mutex_unlock(&js->lock);
	snapshot_free(old);
	return r;
}

static int js_lookup_addr(void *impl, const char *addr, struct md_instance **out)
{
	struct json_source *js = impl;
	struct md_instance *in;

	pthread_mutex_lock(&js->lock);
	in = find_addr(js->snap, addr);
	if (in)
		md_instance_ref(in);
	pthread_mutex_unlock(&js->lock);
	if (!in)
		return -ENOENT;
	*out = in;
	return 0;
}

static int js_lookup_id(void *impl, const char *uuid, struct md_instance **out)
{
	struct json_source *js = impl;
	struct md_instance *in;

	pthread_mutex_lock(&js->lock);
	in = find_id(js->snap, uuid);
	if (in)
		md_instance_ref(in);
	pthread_mutex_unlock(&js->lock);
	if (!in)
		return -ENOENT;
	*out = in;
	return 0;
}

static void js_close(void *impl)
{
	struct json_source *js = impl;

	if (!js)
		return;
	snapshot_free(js->snap);
	pthread_mutex_destroy(&js->lock);
	free(js->name);
	free(js->path);
	free(js->text);
	free(js);
}

static const struct md_source_ops json_source_ops = {
	.name = "json",
	.lookup_addr = js_lookup_addr,
	.lookup_id = js_lookup_id,
	.reload = js_reload,
	.close = js_close,
};

static int json_open(const char *name, const char *path, const char *text,
		     struct md_source **out)
{
	struct json_source *js = calloc(1, sizeof(*js));
	struct md_source *src = calloc(1, sizeof(*src));
	int r;

	if (!js || !src || !(js->name = strdup(name)) || (path && !(js->path = strdup(path))) ||
	    (text && !(js->text = strdup(text)))) {
		if (js) {
			free(js->name);
			free(js->path);
			free(js->text);
		}
		free(js);
		free(src);
		return err_set(-ENOMEM, "out of memory");
	}
	pthread_mutex_init(&js->lock, NULL);
	r = js_reload(js);
	if (r < 0) {
		js_close(js);
		free(src);
		return r;
	}
	src->ops = &json_source_ops;
	src->impl = js;
	*out = src;
	return 0;
}

int md_source_json_open(const char *path, struct md_source **out)
{
	return json_open(path, path, NULL, out);
}

int md_source_json_open_string(const char *name, const char *json, struct md_source **out)
{
	return json_open(name, NULL, json, out);
}

void md_source_close(struct md_source *src)
{
	if (!src)
		return;
	src->ops->close(src->impl);
	free(src);
}
