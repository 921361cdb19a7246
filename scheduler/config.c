/*
 * The `scheduler:` config section and the flavor / image catalog entries.
 *
 * Catalog entries are one line each in the YAML so that the config loader's
 * field tables (which know scalars, lists and flat maps) carry them:
 *
 *   scheduler:
 *     flavors:
 *       m1.small: vcpus=1 ram_mb=1024 disk_gb=4
 *       m1.pinned: vcpus=2 ram_mb=1024 disk_gb=4 hw:cpu_policy=dedicated hw:mem_page_size=2MB
 *     images:
 *       debian-12: url=http://10.0.0.1/d.qcow2 checksum=sha256:... disk_format=qcow2 min_disk_gb=2
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "scheduler/sched_priv.h"

const char *const sched_policy_names[] = {
	[SCHED_SPREAD] = "spread", [SCHED_PACK] = "pack", [SCHED_POLICY_LAST] = NULL,
};
static const char *const sync_names[] = {
	[SCHED_SYNC_NORMAL] = "normal", [SCHED_SYNC_FULL] = "full", [SCHED_SYNC_LAST] = NULL,
};

#define MOFF(f) offsetof(struct sched_migrate_config, f)
static const struct cfg_field migration_fields[] = {
	{ .key = "downtime", .type = CFG_DURATION, .offset = MOFF(downtime_ms), .def = "500ms" },
	{ .key = "downtime_steps", .type = CFG_INT, .offset = MOFF(downtime_steps), .min = 1,
	  .max = 60, .def = "10" },
	{ .key = "downtime_delay", .type = CFG_DURATION, .offset = MOFF(downtime_delay_ms),
	  .def = "75s" },
	{ .key = "completion_timeout", .type = CFG_DURATION, .offset = MOFF(completion_timeout_ms),
	  .def = "800s" },
	{ .key = "timeout_action", .type = CFG_ENUM,
	  .offset = CFG_ENUM_OFFSET(struct sched_migrate_config, timeout_action),
	  .names = sched_migrate_action_names, .def = "abort" },
	{ .key = "auto_converge", .type = CFG_BOOL, .offset = MOFF(auto_converge), .def = "true" },
	{ .key = "prepare_timeout", .type = CFG_DURATION, .offset = MOFF(prepare_timeout_ms),
	  .def = "300s" },
	{ .key = "drain_concurrency", .type = CFG_INT, .offset = MOFF(drain_concurrency), .min = 1,
	  .max = 64, .def = "2" },
	{ 0 },
};

#define OFF(f) offsetof(struct sched_config, f)
#define DBL(k, f, lo, hi, d) \
	{ .key = (k), .type = CFG_DOUBLE, .offset = OFF(f), .dmin = (lo), .dmax = (hi), .def = (d) }

const struct cfg_field sched_config_fields[] = {
	{ .key = "state_path", .type = CFG_STRING, .offset = OFF(state_path),
	  .def = "/var/lib/stratus/scheduler.db", .expected = "a file path" },
	{ .key = "key_dir", .type = CFG_STRING, .offset = OFF(key_dir), .def = "",
	  .expected = "a directory" },
	{ .key = "synchronous", .type = CFG_ENUM,
	  .offset = CFG_ENUM_OFFSET(struct sched_config, sync), .names = sync_names,
	  .def = "normal" },
	{ .key = "heartbeat_interval", .type = CFG_DURATION, .offset = OFF(heartbeat_interval_ms),
	  .def = "10s" },
	{ .key = "missed_heartbeats", .type = CFG_INT, .offset = OFF(missed_heartbeats), .min = 1,
	  .max = 100, .def = "3" },
	{ .key = "placement", .type = CFG_ENUM,
	  .offset = CFG_ENUM_OFFSET(struct sched_config, placement),
	  .names = sched_policy_names, .def = "spread" },
	DBL("ram_weight_multiplier", ram_weight_multiplier, 0, 1e6, "1.0"),
	DBL("cpu_weight_multiplier", cpu_weight_multiplier, 0, 1e6, "1.0"),
	DBL("steal_weight_multiplier", steal_weight_multiplier, 0, 1e6, "1.0"),
	DBL("build_failure_weight_multiplier", build_failure_weight_multiplier, 0, 1e9, "100.0"),
	DBL("instance_count_weight_multiplier", instance_count_weight_multiplier, 0, 1e6, "0.0"),
	DBL("steal_threshold_pct", steal_threshold_pct, 0, 100, "0"),
	DBL("steal_smoothing", steal_smoothing, 0.01, 1, "0.3"),
	DBL("cpu_allocation_ratio", cpu_allocation_ratio, 0.1, 64, "4.0"),
	DBL("ram_allocation_ratio", ram_allocation_ratio, 0.1, 64, "1.0"),
	{ .key = "reserved_host_memory_mb", .type = CFG_INT, .offset = OFF(reserved_host_memory_mb),
	  .min = 0, .max = 1L << 30, .def = "512" },
	{ .key = "max_attempts", .type = CFG_INT, .offset = OFF(max_attempts), .min = 1, .max = 20,
	  .def = "3" },
	{ .key = "candidates", .type = CFG_INT, .offset = OFF(candidates), .min = 0,
	  .max = 1000000, .def = "50" },
	{ .key = "batch_max", .type = CFG_INT, .offset = OFF(batch_max), .min = 1, .max = 10000,
	  .def = "64" },
	{ .key = "batch_window", .type = CFG_DURATION, .offset = OFF(batch_window_ms),
	  .def = "1ms" },
	{ .key = "default_quotas", .type = CFG_SECTION, .offset = OFF(default_quotas),
	  .sub = quota_default_fields },
	{ .key = "flavors", .type = CFG_MAP, .offset = OFF(flavors) },
	{ .key = "images", .type = CFG_MAP, .offset = OFF(images) },
	{ .key = "host_keys", .type = CFG_MAP, .offset = OFF(host_keys) },
	{ .key = "metrics_listen", .type = CFG_STRING, .offset = OFF(metrics_listen),
	  .expected = "ADDR:PORT" },
	{ .key = "request_window", .type = CFG_DURATION, .offset = OFF(request_window_ms),
	  .def = "300s" },
	{ .key = "admin_credential", .type = CFG_STRING, .offset = OFF(admin_credential),
	  .expected = "a file path" },
	{ .key = "resize_confirm_window", .type = CFG_DURATION,
	  .offset = OFF(resize_confirm_window_ms), .def = "0s" },
	{ .key = "image_url_filter", .type = CFG_SECTION, .offset = OFF(image_url_filter),
	  .sub = img_url_filter_fields },
	{ .key = "migration", .type = CFG_SECTION, .offset = OFF(migration),
	  .sub = migration_fields },
	{ 0 },
};

void sched_config_free(struct sched_config *c)
{
	cfg_free(sched_config_fields, c);
}

/* ---- flavors ----------------------------------------------------------- */

void sched_flavor_free(struct sched_flavor *f)
{
	if (!f)
		return;
	free(f->name);
	cfg_map_free(&f->extra_specs);
	memset(f, 0, sizeof(*f));
}

static int map_add(struct cfg_map *m, const char *k, const char *v)
{
	char **nk = realloc(m->keys, (m->n + 2) * sizeof(char *));

	if (!nk)
		return -ENOMEM;
	m->keys = nk;
	char **nv = realloc(m->vals, (m->n + 2) * sizeof(char *));

	if (!nv)
		return -ENOMEM;
	m->vals = nv;
	m->keys[m->n] = strdup(k);
	m->vals[m->n] = strdup(v);
	if (!m->keys[m->n] || !m->vals[m->n]) {
		free(m->keys[m->n]);
		free(m->vals[m->n]);
		return -ENOMEM;
	}
	m->n++;
	m->keys[m->n] = m->vals[m->n] = NULL;
	return 0;
}

/* "a, b or c" (LAST_SEP " and " gives "a, b and c") from NAMES[first..n). */
static void names_join(char *buf, size_t len, const char *const *names, size_t first, size_t n,
		       const char *last_sep)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = first; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
					i == first ? "" : i + 1 == n ? last_sep : ", ", names[i]);
}

static size_t names_count(const char *const *names)
{
	size_t n = 0;

	while (names[n])
		n++;
	return n;
}

/* hw:mem_page_size in KiB for placement (SCHED_PAGE_*). */
static long page_kb(enum model_page_req p)
{
	switch (p) {
	case MODEL_PAGE_REQ_NONE:
	case MODEL_PAGE_REQ_SMALL:
		return SCHED_PAGE_SMALL;
	case MODEL_PAGE_REQ_LARGE:
		return SCHED_PAGE_LARGE;
	case MODEL_PAGE_REQ_ANY:
		return SCHED_PAGE_ANY;
	case MODEL_PAGE_REQ_2MB:
		return 2048;
	case MODEL_PAGE_REQ_1GB:
		return 1048576;
	case MODEL_PAGE_REQ_LAST:
		break;
	}
	return SCHED_PAGE_SMALL;
}

/* The scheduler's words for a bad hw:cpu_policy or hw:mem_page_size
 * ("expected shared or dedicated, got 'x'"); other faults keep model's. */
static int policy_error(const struct sched_flavor *f, enum model_flavor_spec bad, int r)
{
	const char *const *names = bad == MODEL_SPEC_CPU_POLICY ? model_cpu_policy_names
				   : bad == MODEL_SPEC_MEM_PAGE_SIZE ? model_page_req_names
								     : NULL;
	const char *v;
	char list[256];

	if (!names)
		return r;
	v = cfg_map_get(&f->extra_specs, model_flavor_spec_keys[bad]);
	names_join(list, sizeof(list), names, names == model_page_req_names ? 1 : 0,
		   names_count(names), " or ");
	return err_set(-EINVAL, "flavor %s: %s: expected %s, got '%s'", f->name,
		       model_flavor_spec_keys[bad], list, v ? v : "");
}

/* Derive the placement facts from the extra specs (model's parser). */
static int flavor_derive(struct sched_flavor *f)
{
	size_t n = f->extra_specs.n;
	struct spec_kv *kv = calloc(n ? n : 1, sizeof(*kv));
	struct spec_flavor sf = { .name = f->name, .vcpus = f->vcpus, .ram_mb = f->ram_mb,
				  .disk_gb = f->disk_gb, .ephemeral_gb = f->ephemeral_gb,
				  .swap_mb = f->swap_mb, .extra_specs = kv, .n_extra_specs = n };
	struct model_flavor_policy pol;
	enum model_flavor_spec bad = MODEL_SPEC_LAST;
	int r;

	if (!kv)
		return err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		kv[i] = (struct spec_kv){ f->extra_specs.keys[i], f->extra_specs.vals[i] };
	r = model_flavor_policy_parse(&sf, &pol, &bad);
	if (r < 0) {
		free(kv);
		return policy_error(f, bad, r);
	}
	r = model_flavor_hw_parse(&sf, &f->hw); /* pci_passthrough:alias, hw:cpu_* */
	free(kv);
	if (r == 0)
		r = sched_migration_specs_check(f); /* migration:* (migrate.c) */
	if (r < 0)
		return r;
	f->dedicated = pol.cpu == MODEL_CPU_DEDICATED;
	f->page_kb = page_kb(pol.page);
	return 0;
}

/*
 * The numeric fields of the catalog objects: one table each, read by both
 * the config line ("vcpus=2") and the JSON form (flavor.add, the state).
 */
struct num_field {
	const char *key;
	size_t offset;
	long min;
	bool required;
	long max; /* 0: 2^40 */
};

static const struct num_field flavor_nums[] = {
	{ "vcpus", offsetof(struct sched_flavor, vcpus), 1, true, 0 },
	{ "ram_mb", offsetof(struct sched_flavor, ram_mb), 1, true, 0 },
	{ "disk_gb", offsetof(struct sched_flavor, disk_gb), 0, false, 0 },
	{ "ephemeral_gb", offsetof(struct sched_flavor, ephemeral_gb), 0, false,
	  SPEC_EPHEMERAL_GB_MAX },
	{ "swap_mb", offsetof(struct sched_flavor, swap_mb), 0, false, SPEC_SWAP_MB_MAX },
};

static const struct num_field image_nums[] = {
	{ "min_disk_gb", offsetof(struct sched_image, min_disk_gb), 0, false, 0 },
};

static const struct num_field *num_find(const struct num_field *t, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(t[i].key, key) == 0)
			return &t[i];
	return NULL;
}

/* One "key=value" word of a catalog line into a JSON integer. */
static long num_max(const struct num_field *nf)
{
	return nf->max ? nf->max : 1L << 40;
}

static int word_long(const char *entry, const struct num_field *nf, const char *v, json_t *obj)
{
	long n;

	if (parse_long(v, nf->min, num_max(nf), &n) < 0 && !nf->max)
		return err_set(-EINVAL, "%s: %s: expected an integer of at least %ld, got '%s'",
			       entry, nf->key, nf->min, v);
	if (parse_long(v, nf->min, num_max(nf), &n) < 0)
		return err_set(-EINVAL, "%s: %s: expected an integer from %ld to %ld, got '%s'",
			       entry, nf->key, nf->min, nf->max, v);
	json_object_set_new(obj, nf->key, json_integer(n));
	return 0;
}

/* Split TEXT into words of key=value; calls fn for each. */
static int each_word(const char *entry, const char *text,
		     int (*fn)(void *ctx, const char *k, const char *v), void *ctx)
{
	_cleanup_free_ char *copy = strdup(text);
	char *save = NULL;

	if (!copy)
		return err_set(-ENOMEM, "out of memory");
	for (char *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(w, '=');
		int r;

		if (!eq || eq == w || !eq[1])
			return err_set(-EINVAL, "%s: expected key=value words, got '%s'", entry, w);
		*eq = '\0';
		r = fn(ctx, w, eq + 1);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A catalog line being turned into the object's JSON form. */
struct line_words {
	const char *entry;  /* "flavor m1.small", for messages */
	json_t *obj;
	json_t *extra_specs;
};

static int flavor_word(void *ctx, const char *k, const char *v)
{
	struct line_words *w = ctx;
	const struct num_field *nf = num_find(flavor_nums, ARRAY_SIZE(flavor_nums), k);
	const char *keys[ARRAY_SIZE(flavor_nums)];
	char list[128];

	if (nf)
		return word_long(w->entry, nf, v, w->obj);
	if (strchr(k, ':')) {
		json_object_set_new(w->extra_specs, k, json_string(v));
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(flavor_nums); i++)
		keys[i] = flavor_nums[i].key;
	names_join(list, sizeof(list), keys, 0, ARRAY_SIZE(flavor_nums), ", ");
	return err_set(-EINVAL, "%s: unknown key '%s' (expected %s or an extra spec like "
		       "hw:cpu_policy)", w->entry, k, list);
}

/* Words of an image line: where each goes in the JSON form. */
static const struct {
	const char *word;
	const char *object; /* NULL: a member of the image itself */
	const char *member;
} image_words[] = {
	{ "url", NULL, "url" },
	{ "checksum", NULL, "checksum" },
	{ "disk_format", NULL, "disk_format" },
	{ "min_disk_gb", NULL, "min_disk_gb" }, /* image_nums */
	{ "kernel", "kernel", "url" },
	{ "kernel_checksum", "kernel", "checksum" },
	{ "initrd", "initrd", "url" },
	{ "initrd_checksum", "initrd", "checksum" },
	{ "cmdline", NULL, "cmdline" },
};

/* Words are split on spaces: a cmdline writes its spaces as %20. */
static int cmdline_unescape(const char *entry, const char *v, char **out)
{
	struct strbuf sb = { .max = 4096 };
	int r = 0;

	for (const char *p = v; *p && r == 0; p++) {
		if (strncmp(p, "%20", 3) == 0) {
			r = sb_append(&sb, " ", 1);
			p += 2;
		} else {
			r = sb_append(&sb, p, 1);
		}
	}
	if (r < 0) {
		sb_free(&sb);
		return err_set(-EINVAL, "%s: cmdline: too long", entry);
	}
	*out = sb_steal(&sb);
	return *out ? 0 : err_set(-ENOMEM, "out of memory");
}

/* "hw_firmware_type, os_secure_boot, ..." (a static buffer) */
static const char *image_props_list(void)
{
	static char list[256];

	names_join(list, sizeof(list), model_image_prop_keys, 0, MODEL_PROP_LAST, ", ");
	return list;
}

static int image_word(void *ctx, const char *k, const char *v)
{
	struct line_words *w = ctx;
	const struct num_field *nf = num_find(image_nums, ARRAY_SIZE(image_nums), k);
	const char *keys[ARRAY_SIZE(image_words)];
	char list[256];

	if (nf)
		return word_long(w->entry, nf, v, w->obj);
	for (size_t i = 0; i < ARRAY_SIZE(image_words); i++) {
		_cleanup_free_ char *cmdline = NULL;
		json_t *dst = w->obj;

		if (strcmp(image_words[i].word, k) != 0)
			continue;
		if (strcmp(k, "cmdline") == 0) {
			int r = cmdline_unescape(w->entry, v, &cmdline);

			if (r < 0)
				return r;
			v = cmdline;
		}
		if (image_words[i].object) {
			dst = json_object_get(w->obj, image_words[i].object);
			if (!dst) {
				dst = json_object();
				json_object_set_new(w->obj, image_words[i].object, dst);
			}
		}
		if (!dst || json_object_set_new(dst, image_words[i].member, json_string(v)) < 0)
			return err_set(-ENOMEM, "out of memory");
		return 0;
	}
	for (int i = 0; i < MODEL_PROP_LAST; i++) {
		json_t *props = json_object_get(w->obj, "properties");

		if (strcmp(model_image_prop_keys[i], k) != 0)
			continue;
		if (!props) {
			props = json_object();
			json_object_set_new(w->obj, "properties", props);
		}
		if (!props || json_object_set_new(props, k, json_string(v)) < 0)
			return err_set(-ENOMEM, "out of memory");
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(image_words); i++)
		keys[i] = image_words[i].word;
	names_join(list, sizeof(list), keys, 0, ARRAY_SIZE(image_words), " or ");
	return err_set(-EINVAL, "%s: unknown key '%s' (expected %s, or an image property: %s)",
		       w->entry, k, list, image_props_list());
}

/* A flavor line must give every required number: "vcpus and ram_mb are required". */
static int flavor_line_complete(const char *entry, const json_t *obj)
{
	const char *req[ARRAY_SIZE(flavor_nums)];
	size_t n_req = 0;
	bool missing = false;
	char list[128];

	for (size_t i = 0; i < ARRAY_SIZE(flavor_nums); i++) {
		if (!flavor_nums[i].required)
			continue;
		req[n_req++] = flavor_nums[i].key;
		missing |= !json_object_get(obj, flavor_nums[i].key);
	}
	if (!missing)
		return 0;
	names_join(list, sizeof(list), req, 0, n_req, " and ");
	return err_set(-EINVAL, "%s: %s are required", entry, list);
}

/*
 * A catalog line -> the object's JSON form ({"name": NAME, ...}), which
 * sched_flavor_from_json / sched_image_from_json then parse: one parser
 * per object for the config and the requests. KIND: "flavor" or "image".
 * *out: a new reference.
 */
static int line_to_json(const char *kind, const char *name, const char *text,
			int (*word)(void *ctx, const char *k, const char *v), json_t **out)
{
	_cleanup_free_ char *entry = NULL;
	struct line_words w = { 0 };
	int r;

	if (asprintf(&entry, "%s %s", kind, name) < 0)
		return err_set(-ENOMEM, "out of memory");
	w.entry = entry;
	w.obj = json_pack("{s:s}", "name", name);
	w.extra_specs = json_object();
	if (!w.obj || !w.extra_specs) {
		json_decref(w.obj);
		json_decref(w.extra_specs);
		return err_set(-ENOMEM, "out of memory");
	}
	r = each_word(entry, text, word, &w);
	if (r == 0 && word == flavor_word)
		r = flavor_line_complete(entry, w.obj);
	if (r == 0 && word == flavor_word)
		json_object_set(w.obj, "extra_specs", w.extra_specs);
	json_decref(w.extra_specs);
	if (r < 0) {
		json_decref(w.obj);
		return r;
	}
	*out = w.obj;
	return 0;
}

int sched_flavor_parse(const char *name, const char *text, struct sched_flavor *out)
{
	json_t *o = NULL;
	int r = line_to_json("flavor", name, text, flavor_word, &o);

	if (r == 0)
		r = sched_flavor_from_json(o, out);
	json_decref(o);
	return r;
}

static int json_long(const json_t *o, const char *entry, const struct num_field *nf, void *obj)
{
	const json_t *v = json_object_get(o, nf->key);

	if (!v) {
		if (nf->required)
			return err_set(-EINVAL, "%s: %s: required", entry, nf->key);
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < nf->min ||
	    json_integer_value(v) > num_max(nf))
		return nf->max ? err_set(-EINVAL, "%s: %s: expected an integer from %ld to %ld",
					 entry, nf->key, nf->min, nf->max)
			       : err_set(-EINVAL, "%s: %s: expected an integer of at least %ld",
					 entry, nf->key, nf->min);
	*(long *)(void *)((char *)obj + nf->offset) = (long)json_integer_value(v);
	return 0;
}

int sched_flavor_from_json(const json_t *o, struct sched_flavor *out)
{
	struct sched_flavor f = { 0 };
	const char *name = json_string_value(json_object_get(o, "name"));
	json_t *es = json_object_get(o, "extra_specs");
	_cleanup_free_ char *entry = NULL;
	const char *k;
	json_t *v;
	int r = 0;

	if (!name || !*name)
		return err_set(-EINVAL, "flavor: name: required");
	f.name = strdup(name);
	if (!f.name)
		return err_set(-ENOMEM, "out of memory");
	if (asprintf(&entry, "flavor %s", name) < 0) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(flavor_nums); i++)
		r = json_long(o, entry, &flavor_nums[i], &f);
	if (r < 0)
		goto fail;
	if (es && !json_is_object(es)) {
		r = err_set(-EINVAL, "flavor %s: extra_specs: expected an object", name);
		goto fail;
	}
	json_object_foreach(es, k, v) {
		if (!json_is_string(v)) {
			r = err_set(-EINVAL, "flavor %s: extra_specs.%s: expected a string", name, k);
			goto fail;
		}
		if (map_add(&f.extra_specs, k, json_string_value(v)) < 0) {
			r = err_set(-ENOMEM, "out of memory");
			goto fail;
		}
	}
	r = flavor_derive(&f);
	if (r < 0)
		goto fail;
	*out = f;
	return 0;
fail:
	sched_flavor_free(&f);
	return r;
}

json_t *sched_flavor_to_json(const struct sched_flavor *f)
{
	json_t *es = json_object();

	json_t *o;

	for (size_t i = 0; es && i < f->extra_specs.n; i++)
		json_object_set_new(es, f->extra_specs.keys[i], json_string(f->extra_specs.vals[i]));
	o = json_pack("{s:s, s:I, s:I, s:I, s:o}", "name", f->name, "vcpus", (json_int_t)f->vcpus,
		      "ram_mb", (json_int_t)f->ram_mb, "disk_gb", (json_int_t)f->disk_gb,
		      "extra_specs", es ? es : json_object());
	if (o && f->ephemeral_gb) /* absent when 0, as before they existed */
		json_object_set_new(o, "ephemeral_gb", json_integer(f->ephemeral_gb));
	if (o && f->swap_mb)
		json_object_set_new(o, "swap_mb", json_integer(f->swap_mb));
	return o;
}

/* ---- images ------------------------------------------------------------ */

void sched_image_free(struct sched_image *i)
{
	if (!i)
		return;
	free(i->name);
	free(i->url);
	free(i->checksum);
	free(i->disk_format);
	free(i->kernel_url);
	free(i->kernel_checksum);
	free(i->initrd_url);
	free(i->initrd_checksum);
	free(i->cmdline);
	cfg_map_free(&i->properties);
	memset(i, 0, sizeof(*i));
}

static bool hex_of_len(const char *s, size_t n)
{
	if (strlen(s) != n)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	return true;
}

static bool checksum_ok(const char *c)
{
	return (strncmp(c, "sha256:", 7) == 0 && hex_of_len(c + 7, 64)) ||
	       (strncmp(c, "sha512:", 7) == 0 && hex_of_len(c + 7, 128));
}

static int image_check(struct sched_image *i)
{
	if (!i->url || !i->checksum || !i->disk_format)
		return err_set(-EINVAL, "image %s: url, checksum and disk_format are required",
			       i->name);
	if (!checksum_ok(i->checksum))
		return err_set(-EINVAL, "image %s: checksum: expected sha256:<64 hex digits> or "
			       "sha512:<128 hex digits>, got '%.40s'", i->name, i->checksum);
	if (!!i->kernel_url != !!i->kernel_checksum || !!i->initrd_url != !!i->initrd_checksum)
		return err_set(-EINVAL, "image %s: kernel and initrd each need a URL and a checksum",
			       i->name);
	if ((i->kernel_checksum && !checksum_ok(i->kernel_checksum)) ||
	    (i->initrd_checksum && !checksum_ok(i->initrd_checksum)))
		return err_set(-EINVAL, "image %s: kernel_checksum/initrd_checksum: expected "
			       "sha256:<64 hex digits> or sha512:<128 hex digits>", i->name);
	if ((i->initrd_url || i->cmdline) && !i->kernel_url)
		return err_set(-EINVAL, "image %s: initrd and cmdline need a kernel", i->name);
	if (strcmp(i->disk_format, "qcow2") != 0 && strcmp(i->disk_format, "raw") != 0)
		return err_set(-EINVAL, "image %s: disk_format: expected qcow2 or raw, got '%s'",
			       i->name, i->disk_format);
	return 0;
}

static int set_str(char **dst, const char *v)
{
	char *s = strdup(v);

	if (!s)
		return err_set(-ENOMEM, "out of memory");
	free(*dst);
	*dst = s;
	return 0;
}

/* The image's "properties" object: strings with Glance's names and
 * values (model_image_props_parse says which). */
static int image_properties(const json_t *o, struct sched_image *i)
{
	json_t *props = json_object_get(o, "properties"), *v;
	_cleanup_free_ struct spec_kv *kv = NULL;
	struct model_image_props parsed;
	const char *k;

	if (!props)
		return 0;
	if (!json_is_object(props))
		return err_set(-EINVAL, "image %s: properties: expected an object of strings",
			       i->name);
	json_object_foreach(props, k, v) {
		if (!json_is_string(v))
			return err_set(-EINVAL, "image %s: %s: expected a string", i->name, k);
		if (map_add(&i->properties, k, json_string_value(v)) < 0)
			return err_set(-ENOMEM, "out of memory");
	}
	kv = calloc(i->properties.n + 1, sizeof(*kv));
	if (!kv)
		return err_set(-ENOMEM, "out of memory");
	for (size_t j = 0; j < i->properties.n; j++)
		kv[j] = (struct spec_kv){ i->properties.keys[j], i->properties.vals[j] };
	return model_image_props_parse(i->name, kv, i->properties.n, &parsed);
}

int sched_image_parse(const char *name, const char *text, struct sched_image *out)
{
	json_t *o = NULL;
	int r = line_to_json("image", name, text, image_word, &o);

	if (r == 0)
		r = sched_image_from_json(o, out);
	json_decref(o);
	return r;
}

int sched_image_from_json(const json_t *o, struct sched_image *out)
{
	struct sched_image i = { 0 };
	const char *name = json_string_value(json_object_get(o, "name"));
	const char *keys[] = { "url", "checksum", "disk_format" };
	char **dst[] = { &i.url, &i.checksum, &i.disk_format };
	int r = 0;

	if (!name || !*name)
		return err_set(-EINVAL, "image: name: required");
	i.name = strdup(name);
	if (!i.name)
		return err_set(-ENOMEM, "out of memory");
	for (size_t k = 0; r == 0 && k < ARRAY_SIZE(keys); k++) {
		const char *v = json_string_value(json_object_get(o, keys[k]));

		if (v)
			r = set_str(dst[k], v);
	}
	for (size_t k = 0; r == 0 && k < ARRAY_SIZE(image_nums); k++)
		r = json_long(o, "image", &image_nums[k], &i);
	/* direct kernel boot, in the instance spec's shape */
	const char *ku = json_string_value(json_object_get(json_object_get(o, "kernel"), "url"));
	const char *kc = json_string_value(json_object_get(json_object_get(o, "kernel"), "checksum"));
	const char *iu = json_string_value(json_object_get(json_object_get(o, "initrd"), "url"));
	const char *ic = json_string_value(json_object_get(json_object_get(o, "initrd"), "checksum"));
	const char *cl = json_string_value(json_object_get(o, "cmdline"));

	if (r == 0 && ku)
		r = set_str(&i.kernel_url, ku);
	if (r == 0 && kc)
		r = set_str(&i.kernel_checksum, kc);
	if (r == 0 && iu)
		r = set_str(&i.initrd_url, iu);
	if (r == 0 && ic)
		r = set_str(&i.initrd_checksum, ic);
	if (r == 0 && cl)
		r = set_str(&i.cmdline, cl);
	if (r == 0)
		r = image_properties(o, &i);
	if (r == 0)
		r = image_check(&i);
	if (r < 0) {
		sched_image_free(&i);
		return r;
	}
	*out = i;
	return 0;
}

json_t *sched_image_to_json(const struct sched_image *i)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "name", i->name, "url", i->url,
			      "checksum", i->checksum, "disk_format", i->disk_format, "min_disk_gb",
			      (json_int_t)i->min_disk_gb);

	if (o && i->kernel_url)
		json_object_set_new(o, "kernel", json_pack("{s:s, s:s}", "url", i->kernel_url,
							   "checksum", i->kernel_checksum));
	if (o && i->initrd_url)
		json_object_set_new(o, "initrd", json_pack("{s:s, s:s}", "url", i->initrd_url,
							   "checksum", i->initrd_checksum));
	if (o && i->cmdline)
		json_object_set_new(o, "cmdline", json_string(i->cmdline));
	if (o && i->properties.n) {
		json_t *props = json_object();

		for (size_t k = 0; props && k < i->properties.n; k++)
			json_object_set_new(props, i->properties.keys[k],
					    json_string(i->properties.vals[k]));
		json_object_set_new(o, "properties", props);
	}
	return o;
}

int sched_config_check(const struct sched_config *c)
{
	for (size_t k = 0; k < c->flavors.n; k++) {
		struct sched_flavor f;
		int r = sched_flavor_parse(c->flavors.keys[k], c->flavors.vals[k], &f);

		if (r < 0)
			return err_prefix(r, "%s: scheduler.flavors.%s", cfg_where(&c->flavors),
					  c->flavors.keys[k]);
		sched_flavor_free(&f);
	}
	for (size_t k = 0; k < c->images.n; k++) {
		struct sched_image i;
		int r = sched_image_parse(c->images.keys[k], c->images.vals[k], &i);

		if (r < 0)
			return err_prefix(r, "%s: scheduler.images.%s", cfg_where(&c->images),
					  c->images.keys[k]);
		sched_image_free(&i);
	}
	if (c->request_window_ms < 1000 || c->request_window_ms > 86400000)
		return err_set(-EINVAL, "scheduler.request_window: expected 1s to 24h, got %lld ms",
			       (long long)c->request_window_ms);
	if (sched_pins_check_config(c) < 0)
		return err_prefix(-EINVAL, "%s", cfg_where(&c->host_keys));
	return sched_metrics_check(c);
}
