/*
 * The agent's SQLite store as an instance source (read-only), through the
 * store's own API (store/store.h, whose schema is the contract between the
 * two daemons). Each lookup asks the store, so a change the agent commits is
 * seen by the next request; the rendered documents are cached per instance
 * and the cache entry is kept only while the row's spec, address and MAC
 * are unchanged (the same invalidation rule as the JSON source).
 *
 * The spec in the store is the spec as received; when it carries no
 * network, the address and MAC the agent allocated (row columns) are put
 * in before parsing.
 */
#include <errno.h>
#include <string.h>

#include "store/store.h"
#include "metadata/metadata_priv.h"

#define STORE_CACHE_MAX 4096 /* cached instances; cleared when full */

struct store_source {
	pthread_mutex_t lock; /* one SQLite connection, one cache */
	struct store *st;
	struct md_instance **cache;
	size_t n;
};

/* What must not change for a cached rendering to stay valid. */
static char *row_key(const struct store_instance *row)
{
	char *k = NULL;

	if (asprintf(&k, "%s\n%s\n%s", row->spec_json, row->address ? row->address : "",
		     row->mac ? row->mac : "") < 0)
		return NULL;
	return k;
}

static int row_to_instance(const struct store_instance *row, struct md_instance **out)
{
	json_error_t je;
	json_t *j = json_loads(row->spec_json, 0, &je);
	struct instance_spec spec;
	int r;

	if (!j || !json_is_object(j)) {
		json_decref(j);
		return err_set(-EINVAL, "store: instance %s: spec_json is not a JSON object",
			       row->uuid);
	}
	if (!json_object_get(j, "network") && row->address && row->mac)
		json_object_set_new(j, "network", json_pack("{s:s, s:s}", "mac", row->mac, "address",
							     row->address));
	r = model_spec_parse(j, &spec);
	json_decref(j);
	if (r < 0)
		return err_prefix(r, "store: instance %s", row->uuid);
	r = md_instance_new(&spec, out);
	if (r < 0)
		model_spec_free(&spec);
	return r;
}

/* The cached instance for ROW, or a new one (replacing a stale entry).
 * Called with the lock held. */
static int cached(struct store_source *ss, const struct store_instance *row,
		  struct md_instance **out)
{
	char *key = row_key(row);
	struct md_instance *in = NULL;
	size_t i;
	int r;

	if (!key)
		return err_set(-ENOMEM, "out of memory");
	for (i = 0; i < ss->n; i++)
		if (strcmp(ss->cache[i]->spec.uuid, row->uuid) == 0)
			break;
	if (i < ss->n && strcmp(ss->cache[i]->canon, key) == 0) {
		free(key);
		*out = md_instance_ref(ss->cache[i]);
		return 0;
	}
	r = row_to_instance(row, &in);
	if (r < 0) {
		free(key);
		return r;
	}
	in->canon = key;
	if (i < ss->n) {
		md_instance_unref(ss->cache[i]); /* changed: drop the old rendering */
		ss->cache[i] = in;
	} else {
		if (ss->n == STORE_CACHE_MAX) {
			for (size_t k = 0; k < ss->n; k++)
				md_instance_unref(ss->cache[k]);
			ss->n = 0;
		}
		ss->cache[ss->n++] = in;
	}
	*out = md_instance_ref(in);
	return 0;
}

static bool servable(enum instance_state s)
{
	switch (s) {
	case INST_BUILDING:
	case INST_ACTIVE:
	case INST_STOPPED:
	case INST_REBOOTING:
	case INST_REBUILDING: /* its new guest asks during the rebuild */
	case INST_MIGRATING:
	case INST_RESIZING: /* the same guest, a new flavor */
	case INST_VERIFY_RESIZE:
	case INST_REVERTING:
		return true;
	case INST_SCHEDULING:
	case INST_DELETING:
	case INST_DELETED:
	case INST_ERROR:
	case INST_STATE_LAST:
		break;
	}
	return false;
}

static int lookup(struct store_source *ss, const char *addr, const char *uuid,
		  struct md_instance **out)
{
	struct store_instance row;
	int r;

	memset(&row, 0, sizeof(row));
	pthread_mutex_lock(&ss->lock);
	r = addr ? store_instance_by_ip(ss->st, addr, &row)
		 : store_instance_get(ss->st, uuid, &row);
	if (r == 0) {
		r = servable(row.state) ? cached(ss, &row, out) : -ENOENT;
		store_instance_free(&row);
	}
	pthread_mutex_unlock(&ss->lock);
	return r;
}

static int ss_lookup_addr(void *impl, const char *addr, struct md_instance **out)
{
	return lookup(impl, addr, NULL, out);
}

static int ss_lookup_id(void *impl, const char *uuid, struct md_instance **out)
{
	return lookup(impl, NULL, uuid, out);
}

/* Every lookup reads the store: nothing to reload. */
static int ss_reload(void *impl)
{
	(void)impl;
	return 0;
}

static void ss_close(void *impl)
{
	struct store_source *ss = impl;

	if (!ss)
		return;
	for (size_t i = 0; i < ss->n; i++)
		md_instance_unref(ss->cache[i]);
	free(ss->cache);
	store_close(ss->st);
	pthread_mutex_destroy(&ss->lock);
	free(ss);
}

static const struct md_source_ops store_source_ops = {
	.name = "store",
	.lookup_addr = ss_lookup_addr,
	.lookup_id = ss_lookup_id,
	.reload = ss_reload,
	.close = ss_close,
};

int md_source_store_open(const char *path, struct md_source **out)
{
	struct store_source *ss = calloc(1, sizeof(*ss));
	struct md_source *src = calloc(1, sizeof(*src));
	int r;

	if (!ss || !src || !(ss->cache = calloc(STORE_CACHE_MAX, sizeof(*ss->cache)))) {
		if (ss)
			free(ss->cache);
		free(ss);
		free(src);
		return err_set(-ENOMEM, "out of memory");
	}
	r = store_open(path, true, &ss->st);
	if (r < 0) {
		free(ss->cache);
		free(ss);
		free(src);
		return r;
	}
	pthread_mutex_init(&ss->lock, NULL);
	src->ops = &store_source_ops;
	src->impl = ss;
	*out = src;
	return 0;
}
