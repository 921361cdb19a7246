/* The instance spec: JSON <-> struct instance_spec, with validation. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "model/model.h"

const char *const spec_seed_names[] = {
	[SPEC_SEED_NOCLOUD] = "nocloud",
	[SPEC_SEED_CONFIGDRIVE] = "configdrive",
	[SPEC_SEED_NONE] = "none",
	[SPEC_SEED_LAST] = NULL,
};

const char *const instance_state_names[] = {
	[INST_SCHEDULING] = "scheduling",
	[INST_BUILDING] = "building",
	[INST_ACTIVE] = "active",
	[INST_STOPPED] = "stopped",
	[INST_REBOOTING] = "rebooting",
	[INST_DELETING] = "deleting",
	[INST_DELETED] = "deleted",
	[INST_ERROR] = "error",
	[INST_REBUILDING] = "rebuilding",
	[INST_MIGRATING] = "migrating",
	[INST_RESIZING] = "resizing",
	[INST_VERIFY_RESIZE] = "verify_resize",
	[INST_REVERTING] = "reverting",
	[INST_STATE_LAST] = NULL,
};

int instance_state_parse(const char *name, enum instance_state *out)
{
	for (int i = 0; i < INST_STATE_LAST; i++) {
		if (strcmp(name, instance_state_names[i]) == 0) {
			*out = (enum instance_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

#define STR_MAX 4096 /* any one string field of a spec */

static int bad(const char *field, const char *fmt, ...) PRINTF_LIKE(2, 3);

static int bad(const char *field, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return err_set(-EINVAL, "%s: %s", field, what);
}

/* A string member. Absent: *out = NULL and 0 unless required. */
static int get_str(json_t *obj, const char *key, const char *field, bool required, size_t max,
		   char **out)
{
	json_t *v = json_object_get(obj, key);
	const char *s;

	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required)
			return bad(field, "missing");
		return 0;
	}
	if (!json_is_string(v))
		return bad(field, "expected a string");
	s = json_string_value(v);
	if (strlen(s) != json_string_length(v))
		return bad(field, "contains a NUL byte");
	if (required && !*s)
		return bad(field, "must not be empty");
	if (strlen(s) > max)
		return bad(field, "longer than %zu characters", max);
	*out = strdup(s);
	return *out ? 0 : err_set(-ENOMEM, "out of memory");
}

static int get_int(json_t *obj, const char *key, const char *field, bool required, long min,
		   long max, long *out)
{
	json_t *v = json_object_get(obj, key);
	json_int_t i;

	if (!v || json_is_null(v)) {
		if (required)
			return bad(field, "missing");
		return 0;
	}
	if (!json_is_integer(v))
		return bad(field, "expected an integer from %ld to %ld", min, max);
	i = json_integer_value(v);
	if (i < min || i > max)
		return bad(field, "expected an integer from %ld to %ld, got %lld", min, max,
			   (long long)i);
	*out = (long)i;
	return 0;
}

static bool valid_hostname(const char *h)
{
	size_t n = strlen(h), label = 0;

	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];

		if (c == '.') {
			if (label == 0 || h[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!(isalnum((unsigned char)c) || c == '-') || (label == 0 && c == '-'))
			return false;
		if (++label > 63)
			return false;
	}
	return h[n - 1] != '-' && h[n - 1] != '.';
}

/* Nova-like: lower-case, anything but [a-z0-9-] becomes '-', at most 63. */
static char *hostname_from_name(const char *name)
{
	char *h = malloc(64);
	size_t n = 0;

	if (!h)
		return NULL;
	for (const char *p = name; *p && n < 63; p++) {
		unsigned char c = (unsigned char)tolower((unsigned char)*p);

		if (isalnum(c))
			h[n++] = (char)c;
		else if (n > 0 && h[n - 1] != '-')
			h[n++] = '-';
	}
	while (n > 0 && h[n - 1] == '-')
		n--;
	if (n == 0) {
		free(h);
		return strdup("instance");
	}
	h[n] = '\0';
	return h;
}

static bool valid_project(const char *p)
{
	size_t n = strlen(p);

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)p[i]) && !strchr("_.-", p[i]))
			return false;
	return true;
}

static bool valid_mac(const char *m)
{
	if (strlen(m) != 17)
		return false;
	for (int i = 0; i < 17; i++) {
		if (i % 3 == 2) {
			if (m[i] != ':')
				return false;
		} else if (!isxdigit((unsigned char)m[i])) {
			return false;
		}
	}
	return true;
}

static bool valid_ipv4(const char *s)
{
	struct in_addr a;

	return inet_pton(AF_INET, s, &a) == 1;
}

static bool valid_cidr4(const char *s)
{
	char buf[32];
	const char *slash = strchr(s, '/');
	long plen;

	if (!slash || (size_t)(slash - s) >= sizeof(buf))
		return false;
	memcpy(buf, s, (size_t)(slash - s));
	buf[slash - s] = '\0';
	return valid_ipv4(buf) && parse_long(slash + 1, 0, 32, &plen) == 0;
}

static bool valid_checksum(const char *c)
{
	size_t want;
	const char *hex;

	if (strncmp(c, "sha256:", 7) == 0)
		want = 64;
	else if (strncmp(c, "sha512:", 7) == 0)
		want = 128;
	else
		return false;
	hex = c + 7;
	if (strlen(hex) != want)
		return false;
	for (size_t i = 0; i < want; i++)
		if (!isxdigit((unsigned char)hex[i]) || isupper((unsigned char)hex[i]))
			return false;
	return true;
}

static int get_kv_object(json_t *obj, const char *key, const char *field, size_t max_n,
			 size_t max_len, struct spec_kv **out, size_t *n_out)
{
	json_t *o = json_object_get(obj, key), *v;
	const char *k;
	struct spec_kv *kv;
	size_t n = 0;

	*out = NULL;
	*n_out = 0;
	if (!o || json_is_null(o))
		return 0;
	if (!json_is_object(o))
		return bad(field, "expected an object of strings");
	if (json_object_size(o) > max_n)
		return bad(field, "more than %zu entries", max_n);
	kv = calloc(json_object_size(o) + 1, sizeof(*kv));
	if (!kv)
		return err_set(-ENOMEM, "out of memory");
	json_object_foreach(o, k, v) {
		if (!json_is_string(v)) {
			bad(field, "%s: expected a string", k);
			goto fail;
		}
		if (strlen(k) > max_len || json_string_length(v) > max_len) {
			bad(field, "%.64s: longer than %zu characters", k, max_len);
			goto fail;
		}
		if (strlen(json_string_value(v)) != json_string_length(v)) {
			bad(field, "%s: contains a NUL byte", k);
			goto fail;
		}
		kv[n].key = strdup(k);
		kv[n].val = strdup(json_string_value(v));
		n++;
		if (!kv[n - 1].key || !kv[n - 1].val) {
			err_set(-ENOMEM, "out of memory");
			goto fail;
		}
	}
	*out = kv;
	*n_out = n;
	return 0;
fail:
	for (size_t i = 0; i < n; i++) {
		free(kv[i].key);
		free(kv[i].val);
	}
	free(kv);
	return -EINVAL;
}

static int parse_flavor(json_t *root, struct spec_flavor *f)
{
	json_t *o = json_object_get(root, "flavor");
	int r;

	if (!o)
		return bad("flavor", "missing");
	if (!json_is_object(o))
		return bad("flavor", "expected an object");
	if ((r = get_str(o, "name", "flavor.name", true, 255, &f->name)) < 0 ||
	    (r = get_int(o, "vcpus", "flavor.vcpus", true, 1, 1024, &f->vcpus)) < 0 ||
	    (r = get_int(o, "ram_mb", "flavor.ram_mb", true, 16, 16L << 20, &f->ram_mb)) < 0 ||
	    (r = get_int(o, "disk_gb", "flavor.disk_gb", true, 0, 1L << 16, &f->disk_gb)) < 0 ||
	    (r = get_int(o, "ephemeral_gb", "flavor.ephemeral_gb", false, 0, SPEC_EPHEMERAL_GB_MAX,
			 &f->ephemeral_gb)) < 0 ||
	    (r = get_int(o, "swap_mb", "flavor.swap_mb", false, 0, SPEC_SWAP_MB_MAX,
			 &f->swap_mb)) < 0 ||
	    (r = get_kv_object(o, "extra_specs", "flavor.extra_specs", 64, 255, &f->extra_specs,
			       &f->n_extra_specs)) < 0)
		return r;
	return 0;
}

static int parse_blob(json_t *img, const char *key, struct spec_blob *b)
{
	json_t *o = json_object_get(img, key);
	char f_url[32], f_sum[32];
	int r;

	if (!o || json_is_null(o))
		return 0;
	snprintf(f_url, sizeof(f_url), "image.%s.url", key);
	snprintf(f_sum, sizeof(f_sum), "image.%s.checksum", key);
	if (!json_is_object(o))
		return bad(f_url, "expected an object {url, checksum}");
	if ((r = get_str(o, "url", f_url, true, STR_MAX, &b->url)) < 0 ||
	    (r = get_str(o, "checksum", f_sum, true, 200, &b->checksum)) < 0)
		return r;
	if (strncmp(b->url, "http://", 7) != 0 && strncmp(b->url, "https://", 8) != 0 &&
	    strncmp(b->url, "file://", 7) != 0)
		return bad(f_url, "expected an http://, https:// or file:// URL, got '%.200s'", b->url);
	if (!valid_checksum(b->checksum))
		return bad(f_sum, "expected sha256:<64 hex digits> or sha512:<128 hex digits>, got '%.200s'",
			   b->checksum);
	return 0;
}

static int parse_image(json_t *root, struct spec_image *im)
{
	json_t *o = json_object_get(root, "image");
	int r;

	if (!o)
		return bad("image", "missing");
	if (!json_is_object(o))
		return bad("image", "expected an object");
	if ((r = get_str(o, "name", "image.name", false, 255, &im->name)) < 0 ||
	    (r = get_str(o, "url", "image.url", true, STR_MAX, &im->url)) < 0 ||
	    (r = get_str(o, "checksum", "image.checksum", true, 200, &im->checksum)) < 0 ||
	    (r = get_str(o, "disk_format", "image.disk_format", true, 16, &im->disk_format)) < 0 ||
	    (r = get_int(o, "min_disk_gb", "image.min_disk_gb", false, 0, 1L << 16,
			 &im->min_disk_gb)) < 0)
		return r;
	if (strncmp(im->url, "http://", 7) != 0 && strncmp(im->url, "https://", 8) != 0 &&
	    strncmp(im->url, "file://", 7) != 0)
		return bad("image.url", "expected an http://, https:// or file:// URL, got '%.200s'",
			   im->url);
	if (!valid_checksum(im->checksum))
		return bad("image.checksum",
			   "expected sha256:<64 hex digits> or sha512:<128 hex digits>, got '%.200s'",
			   im->checksum);
	if (strcmp(im->disk_format, "qcow2") != 0 && strcmp(im->disk_format, "raw") != 0)
		return bad("image.disk_format", "expected one of qcow2, raw, got '%s'",
			   im->disk_format);
	if ((r = parse_blob(o, "kernel", &im->kernel)) < 0 ||
	    (r = parse_blob(o, "initrd", &im->initrd)) < 0 ||
	    (r = get_str(o, "cmdline", "image.cmdline", false, 1024, &im->cmdline)) < 0)
		return r;
	if ((im->initrd.url || im->cmdline) && !im->kernel.url)
		return bad("image.kernel", "missing (image.initrd and image.cmdline need a kernel)");
	if ((r = get_kv_object(o, "properties", "image.properties", MODEL_PROP_LAST, 255,
			       &im->properties, &im->n_properties)) < 0)
		return r;
	struct model_image_props props;

	if ((r = model_image_props_parse(im->name, im->properties, im->n_properties, &props)) < 0)
		return err_prefix(r, "image.properties");
	return 0;
}

static int parse_keys(json_t *root, struct instance_spec *s)
{
	json_t *a = json_object_get(root, "ssh_keys"), *it;
	size_t i;

	if (!a || json_is_null(a))
		return 0;
	if (!json_is_array(a))
		return bad("ssh_keys", "expected an array of {name, key}");
	if (json_array_size(a) > SPEC_MAX_KEYS)
		return bad("ssh_keys", "more than %d keys", SPEC_MAX_KEYS);
	s->ssh_keys = calloc(json_array_size(a) + 1, sizeof(*s->ssh_keys));
	if (!s->ssh_keys)
		return err_set(-ENOMEM, "out of memory");
	json_array_foreach(a, i, it) {
		char field[64];
		int r;

		snprintf(field, sizeof(field), "ssh_keys[%zu]", i);
		if (!json_is_object(it))
			return bad(field, "expected an object {name, key}");
		s->n_ssh_keys = i + 1;
		snprintf(field, sizeof(field), "ssh_keys[%zu].name", i);
		if ((r = get_str(it, "name", field, true, 255, &s->ssh_keys[i].name)) < 0)
			return r;
		snprintf(field, sizeof(field), "ssh_keys[%zu].key", i);
		if ((r = get_str(it, "key", field, true, 16384, &s->ssh_keys[i].key)) < 0)
			return r;
		if (strchr(s->ssh_keys[i].key, '\n'))
			return bad(field, "must be one line");
	}
	return 0;
}

static int parse_network(json_t *root, struct spec_network *n)
{
	json_t *o = json_object_get(root, "network"), *dns, *it;
	size_t i;
	int r;

	if (!o || json_is_null(o))
		return 0;
	if (!json_is_object(o))
		return bad("network", "expected an object");
	n->present = true;
	if ((r = get_str(o, "mac", "network.mac", true, 17, &n->mac)) < 0 ||
	    (r = get_str(o, "address", "network.address", true, 18, &n->address)) < 0 ||
	    (r = get_str(o, "gateway", "network.gateway", false, 15, &n->gateway)) < 0)
		return r;
	if (!valid_mac(n->mac))
		return bad("network.mac", "expected a MAC like 52:54:00:12:34:56, got '%s'", n->mac);
	for (char *p = n->mac; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (!valid_cidr4(n->address))
		return bad("network.address", "expected an IPv4 address with prefix like 10.0.0.5/24, got '%s'",
			   n->address);
	if (n->gateway && !valid_ipv4(n->gateway))
		return bad("network.gateway", "expected an IPv4 address, got '%s'", n->gateway);
	dns = json_object_get(o, "dns");
	n->dns = calloc((dns && json_is_array(dns) ? json_array_size(dns) : 0) + 1, sizeof(char *));
	if (!n->dns)
		return err_set(-ENOMEM, "out of memory");
	if (!dns || json_is_null(dns))
		return 0;
	if (!json_is_array(dns) || json_array_size(dns) > 8)
		return bad("network.dns", "expected an array of at most 8 IPv4 addresses");
	json_array_foreach(dns, i, it) {
		if (!json_is_string(it) || !valid_ipv4(json_string_value(it)))
			return bad("network.dns", "entry %zu: expected an IPv4 address", i);
		n->dns[i] = strdup(json_string_value(it));
		if (!n->dns[i])
			return err_set(-ENOMEM, "out of memory");
		n->n_dns = i + 1;
	}
	return 0;
}

static int parse_all(json_t *root, struct instance_spec *s)
{
	char *uuid = NULL, *seed = NULL, *ud = NULL;
	int r;

	if (!json_is_object(root))
		return err_set(-EINVAL, "instance spec: expected a JSON object");
	r = get_str(root, "uuid", "uuid", true, 64, &uuid);
	if (r < 0)
		return r;
	if (!uuid_valid(uuid)) {
		r = bad("uuid", "expected a UUID like 0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d, got '%.64s'",
			uuid);
		free(uuid);
		return r;
	}
	for (int i = 0; i < 36; i++)
		s->uuid[i] = (char)tolower((unsigned char)uuid[i]);
	s->uuid[36] = '\0';
	free(uuid);

	if ((r = get_str(root, "name", "name", true, 255, &s->name)) < 0 ||
	    (r = get_str(root, "hostname", "hostname", false, 253, &s->hostname)) < 0 ||
	    (r = get_str(root, "project", "project", true, 64, &s->project)) < 0 ||
	    (r = get_str(root, "availability_zone", "availability_zone", false, 255,
			 &s->availability_zone)) < 0 ||
	    (r = get_int(root, "launch_index", "launch_index", false, 0, 100000,
			 &s->launch_index)) < 0 ||
	    (r = get_int(root, "generation", "generation", false, 0, 1000000000,
			 &s->generation)) < 0)
		return r;
	if (s->hostname && !valid_hostname(s->hostname))
		return bad("hostname", "expected an RFC 1123 host name, got '%.253s'", s->hostname);
	if (!s->hostname && !(s->hostname = hostname_from_name(s->name)))
		return err_set(-ENOMEM, "out of memory");
	if (!valid_project(s->project))
		return bad("project", "expected 1 to 64 of A-Z a-z 0-9 _ . -, got '%.64s'", s->project);
	if (!s->availability_zone && !(s->availability_zone = strdup("nova")))
		return err_set(-ENOMEM, "out of memory");

	if ((r = parse_flavor(root, &s->flavor)) < 0 || (r = parse_image(root, &s->image)) < 0 ||
	    (r = parse_keys(root, s)) < 0 || (r = parse_network(root, &s->network)) < 0 ||
	    (r = get_kv_object(root, "metadata", "metadata", SPEC_MAX_META, 255, &s->metadata,
			       &s->n_metadata)) < 0)
		return r;

	if ((r = get_str(root, "seed", "seed", false, 32, &seed)) < 0)
		return r;
	s->seed = SPEC_SEED_NOCLOUD;
	if (seed) {
		int i;

		for (i = 0; spec_seed_names[i]; i++)
			if (strcmp(seed, spec_seed_names[i]) == 0)
				break;
		if (!spec_seed_names[i]) {
			r = bad("seed", "expected one of nocloud, configdrive, none, got '%.32s'", seed);
			free(seed);
			return r;
		}
		s->seed = (enum spec_seed)i;
		free(seed);
	}

	if ((r = get_str(root, "user_data", "user_data", false, SPEC_USER_DATA_MAX * 4 / 3 + 8,
			 &ud)) < 0) {
		if (json_is_string(json_object_get(root, "user_data")))
			return bad("user_data", "larger than %d bytes", SPEC_USER_DATA_MAX);
		return r;
	}
	if (ud) {
		r = base64_decode(ud, SPEC_USER_DATA_MAX, &s->user_data, &s->user_data_len);
		free(ud);
		if (r == -E2BIG)
			return bad("user_data", "larger than %d bytes", SPEC_USER_DATA_MAX);
		if (r < 0)
			return bad("user_data", "expected base64");
	}
	return 0;
}

int model_spec_parse(json_t *obj, struct instance_spec *out)
{
	struct instance_spec s;
	int r;

	memset(&s, 0, sizeof(s));
	r = parse_all(obj, &s);
	if (r < 0) {
		model_spec_free(&s);
		return r;
	}
	*out = s;
	return 0;
}

int model_spec_parse_file(const char *path, struct instance_spec *out)
{
	json_error_t je;
	json_t *root;
	char *buf = NULL;
	size_t len;
	int r;

	r = read_file(path, 1u << 20, &buf, &len);
	if (r < 0)
		return r;
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	free(buf);
	if (!root)
		return err_set(-EINVAL, "%s:%d:%d: invalid JSON: %s", path, je.line, je.column, je.text);
	r = model_spec_parse(root, out);
	json_decref(root);
	if (r < 0)
		return err_prefix(r, "%s", path);
	return 0;
}

int model_spec_parse_text(const char *text, struct instance_spec *out)
{
	json_t *j = text ? json_loads(text, 0, NULL) : NULL;
	int r;

	if (!j)
		return err_set(-EINVAL, "the stored spec does not parse");
	r = model_spec_parse(j, out);
	json_decref(j);
	return r;
}

static json_t *kv_to_json(const struct spec_kv *kv, size_t n)
{
	json_t *o = json_object();

	for (size_t i = 0; o && i < n; i++)
		json_object_set_new(o, kv[i].key, json_string(kv[i].val));
	return o;
}

json_t *model_spec_to_json(const struct instance_spec *s)
{
	json_t *o, *keys, *net;

	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:{s:s, s:I, s:I, s:I, s:o}, "
		      "s:{s:s, s:s, s:s, s:I}, s:o, s:s}",
		      "uuid", s->uuid, "name", s->name, "hostname", s->hostname, "project",
		      s->project, "availability_zone", s->availability_zone, "launch_index",
		      (json_int_t)s->launch_index, "flavor", "name", s->flavor.name, "vcpus",
		      (json_int_t)s->flavor.vcpus, "ram_mb", (json_int_t)s->flavor.ram_mb, "disk_gb",
		      (json_int_t)s->flavor.disk_gb, "extra_specs",
		      kv_to_json(s->flavor.extra_specs, s->flavor.n_extra_specs), "image", "url",
		      s->image.url, "checksum", s->image.checksum, "disk_format",
		      s->image.disk_format, "min_disk_gb", (json_int_t)s->image.min_disk_gb,
		      "metadata", kv_to_json(s->metadata, s->n_metadata), "seed",
		      spec_seed_names[s->seed]);
	if (!o)
		return NULL;
	if (s->generation > 0)
		json_object_set_new(o, "generation", json_integer(s->generation));
	json_t *img = json_object_get(o, "image"), *fl = json_object_get(o, "flavor");

	if (s->flavor.ephemeral_gb) /* absent when 0: the form specs had before */
		json_object_set_new(fl, "ephemeral_gb", json_integer(s->flavor.ephemeral_gb));
	if (s->flavor.swap_mb)
		json_object_set_new(fl, "swap_mb", json_integer(s->flavor.swap_mb));
	if (s->image.name)
		json_object_set_new(img, "name", json_string(s->image.name));
	if (s->image.kernel.url)
		json_object_set_new(img, "kernel", json_pack("{s:s, s:s}", "url", s->image.kernel.url,
							     "checksum", s->image.kernel.checksum));
	if (s->image.initrd.url)
		json_object_set_new(img, "initrd", json_pack("{s:s, s:s}", "url", s->image.initrd.url,
							     "checksum", s->image.initrd.checksum));
	if (s->image.cmdline)
		json_object_set_new(img, "cmdline", json_string(s->image.cmdline));
	if (s->image.n_properties)
		json_object_set_new(img, "properties",
				    kv_to_json(s->image.properties, s->image.n_properties));
	keys = json_array();
	for (size_t i = 0; i < s->n_ssh_keys; i++)
		json_array_append_new(keys, json_pack("{s:s, s:s}", "name", s->ssh_keys[i].name,
						      "key", s->ssh_keys[i].key));
	json_object_set_new(o, "ssh_keys", keys);
	if (s->user_data) {
		char *b = base64_encode(s->user_data, s->user_data_len);

		json_object_set_new(o, "user_data", json_string(b));
		free(b);
	}
	if (s->network.present) {
		json_t *dns = json_array();

		for (size_t i = 0; i < s->network.n_dns; i++)
			json_array_append_new(dns, json_string(s->network.dns[i]));
		net = json_pack("{s:s, s:s, s:o}", "mac", s->network.mac, "address",
				s->network.address, "dns", dns);
		if (net && s->network.gateway)
			json_object_set_new(net, "gateway", json_string(s->network.gateway));
		json_object_set_new(o, "network", net);
	}
	return o;
}

static void kv_free(struct spec_kv *kv, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(kv[i].key);
		free(kv[i].val);
	}
	free(kv);
}

void model_spec_free(struct instance_spec *s)
{
	if (!s)
		return;
	free(s->name);
	free(s->hostname);
	free(s->project);
	free(s->availability_zone);
	free(s->flavor.name);
	kv_free(s->flavor.extra_specs, s->flavor.n_extra_specs);
	free(s->image.name);
	free(s->image.url);
	free(s->image.checksum);
	free(s->image.disk_format);
	free(s->image.kernel.url);
	free(s->image.kernel.checksum);
	free(s->image.initrd.url);
	free(s->image.initrd.checksum);
	free(s->image.cmdline);
	kv_free(s->image.properties, s->image.n_properties);
	free(s->user_data);
	for (size_t i = 0; i < s->n_ssh_keys; i++) {
		free(s->ssh_keys[i].name);
		free(s->ssh_keys[i].key);
	}
	free(s->ssh_keys);
	kv_free(s->metadata, s->n_metadata);
	free(s->network.mac);
	free(s->network.address);
	free(s->network.gateway);
	for (size_t i = 0; s->network.dns && s->network.dns[i]; i++)
		free(s->network.dns[i]);
	free(s->network.dns);
	memset(s, 0, sizeof(*s));
}

const char *model_spec_extra(const struct instance_spec *s, const char *key)
{
	for (size_t i = 0; i < s->flavor.n_extra_specs; i++)
		if (strcmp(s->flavor.extra_specs[i].key, key) == 0)
			return s->flavor.extra_specs[i].val;
	return NULL;
}

/* ---- flavor extra specs ------------------------------------------------ */

const char *const model_flavor_spec_keys[] = {
	[MODEL_SPEC_CPU_POLICY] = "hw:cpu_policy",
	[MODEL_SPEC_THREAD_POLICY] = "hw:cpu_thread_policy",
	[MODEL_SPEC_EMULATOR_POLICY] = "hw:emulator_threads_policy",
	[MODEL_SPEC_MEM_PAGE_SIZE] = "hw:mem_page_size",
	[MODEL_SPEC_NUMA_NODES] = "hw:numa_nodes",
	[MODEL_SPEC_LAST] = NULL,
};

const char *const model_cpu_policy_names[] = {
	[MODEL_CPU_SHARED] = "shared", [MODEL_CPU_DEDICATED] = "dedicated",
	[MODEL_CPU_POLICY_LAST] = NULL,
};

const char *const model_thread_policy_names[] = {
	[MODEL_THREAD_PREFER] = "prefer", [MODEL_THREAD_ISOLATE] = "isolate",
	[MODEL_THREAD_REQUIRE] = "require", [MODEL_THREAD_POLICY_LAST] = NULL,
};

const char *const model_emu_policy_names[] = {
	[MODEL_EMU_SHARE] = "share", [MODEL_EMU_ISOLATE] = "isolate",
	[MODEL_EMU_POLICY_LAST] = NULL,
};

const char *const model_page_req_names[] = {
	[MODEL_PAGE_REQ_NONE] = "", [MODEL_PAGE_REQ_SMALL] = "small",
	[MODEL_PAGE_REQ_LARGE] = "large", [MODEL_PAGE_REQ_ANY] = "any",
	[MODEL_PAGE_REQ_2MB] = "2MB", [MODEL_PAGE_REQ_1GB] = "1GB",
	[MODEL_PAGE_REQ_LAST] = NULL,
};

/* Other spellings of hw:mem_page_size, accepted but not listed. */
static const struct {
	const char *name;
	enum model_page_req page;
} page_req_aliases[] = {
	{ "2M", MODEL_PAGE_REQ_2MB },
	{ "2048", MODEL_PAGE_REQ_2MB },
	{ "1G", MODEL_PAGE_REQ_1GB },
	{ "1048576", MODEL_PAGE_REQ_1GB },
};

static const char *flavor_extra(const struct spec_flavor *f, enum model_flavor_spec key)
{
	for (size_t i = 0; i < f->n_extra_specs; i++)
		if (strcmp(f->extra_specs[i].key, model_flavor_spec_keys[key]) == 0)
			return f->extra_specs[i].val;
	return NULL;
}

static int policy_bad_value(const struct spec_flavor *f, enum model_flavor_spec key,
			    const char *val, const char *const *names, int first)
{
	char list[256] = "";
	size_t off = 0;

	for (int i = first; names[i] && off < sizeof(list); i++)
		off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i > first ? ", " : "",
					names[i]);
	return err_set(-EINVAL, "flavor %s: %s: invalid value '%.64s' (accepted: %s)", f->name,
		       model_flavor_spec_keys[key], val, list);
}

/* Look KEY up among NAMES (from FIRST); absent leaves *out alone. */
static int policy_enum(const struct spec_flavor *f, enum model_flavor_spec key,
		       const char *const *names, int first, int *out)
{
	const char *v = flavor_extra(f, key);

	if (!v)
		return 0;
	for (int i = first; names[i]; i++) {
		if (strcmp(v, names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	if (key == MODEL_SPEC_MEM_PAGE_SIZE) {
		for (size_t i = 0; i < ARRAY_SIZE(page_req_aliases); i++) {
			if (strcmp(v, page_req_aliases[i].name) == 0) {
				*out = (int)page_req_aliases[i].page;
				return 0;
			}
		}
	}
	return policy_bad_value(f, key, v, names, first);
}

/* The body of model_flavor_policy_parse: fills *p, *bad on failure. */
static int policy_read(const struct spec_flavor *f, struct model_flavor_policy *p,
		       enum model_flavor_spec *bad)
{
	const char *s;
	int v, r;

	v = (int)p->cpu;
	*bad = MODEL_SPEC_CPU_POLICY;
	if ((r = policy_enum(f, *bad, model_cpu_policy_names, 0, &v)) < 0)
		return r;
	p->cpu = (enum model_cpu_policy)v;
	v = -1;
	*bad = MODEL_SPEC_THREAD_POLICY;
	if ((r = policy_enum(f, *bad, model_thread_policy_names, 0, &v)) < 0)
		return r;
	if (v >= 0) {
		if (p->cpu != MODEL_CPU_DEDICATED)
			return err_set(-EINVAL, "flavor %s: hw:cpu_thread_policy=%s needs "
				       "hw:cpu_policy=dedicated", f->name,
				       model_thread_policy_names[v]);
		p->thread = (enum model_thread_policy)v;
	}
	v = -1;
	*bad = MODEL_SPEC_EMULATOR_POLICY;
	if ((r = policy_enum(f, *bad, model_emu_policy_names, 0, &v)) < 0)
		return r;
	if (v >= 0) {
		if (v == MODEL_EMU_ISOLATE && p->cpu != MODEL_CPU_DEDICATED)
			return err_set(-EINVAL, "flavor %s: hw:emulator_threads_policy=isolate needs "
				       "hw:cpu_policy=dedicated", f->name);
		p->emu = (enum model_emu_policy)v;
	}
	v = (int)p->page;
	*bad = MODEL_SPEC_MEM_PAGE_SIZE;
	if ((r = policy_enum(f, *bad, model_page_req_names, 1, &v)) < 0)
		return r;
	p->page = (enum model_page_req)v;
	*bad = MODEL_SPEC_NUMA_NODES;
	s = flavor_extra(f, *bad);
	if (s) {
		long n;

		if (parse_long(s, 1, MODEL_MAX_NUMA_NODES, &n) < 0)
			return err_set(-EINVAL, "flavor %s: hw:numa_nodes: invalid value '%.64s' "
				       "(accepted: an integer from 1 to %d)", f->name, s,
				       MODEL_MAX_NUMA_NODES);
		p->numa_nodes = (int)n;
	}
	return 0;
}

int model_flavor_policy_parse(const struct spec_flavor *f, struct model_flavor_policy *out,
			      enum model_flavor_spec *bad)
{
	struct model_flavor_policy p = { MODEL_CPU_SHARED, MODEL_THREAD_PREFER, MODEL_EMU_SHARE,
					 MODEL_PAGE_REQ_NONE, 0 };
	enum model_flavor_spec at = MODEL_SPEC_LAST;
	int r = policy_read(f, &p, &at);

	if (r < 0) {
		if (bad)
			*bad = at;
		return r;
	}
	*out = p;
	return 0;
}

const char *model_instance_id(const struct instance_spec *s, char *buf, size_t len)
{
	if (s->generation > 0)
		snprintf(buf, len, "%s-r%ld", s->uuid, s->generation);
	else
		snprintf(buf, len, "%s", s->uuid);
	return buf;
}
