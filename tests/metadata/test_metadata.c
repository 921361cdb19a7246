/*
 * metadata: the renderer (golden trees), listings, and the request
 * handling of the service without sockets: the path matrix of both APIs,
 * every auth failure, unknown instances, limits, rate limits, reloads.
 *
 * Golden files: tests/metadata/data/NAME.json -> NAME.tree (every rendered
 * file with its views). REGENERATE=1 rewrites them for review in the diff.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>
#include <cmocka.h>

#include "store/store.h"
#include "metadata/metadata.h"
#include "metadata/metadata_priv.h"

static const char *const golden[] = { "tests/data/spec-basic.json",
				      "tests/metadata/data/spec-odd.json" };

static char *tree_dump(const struct md_tree *t)
{
	struct strbuf sb = { .max = 1u << 22 };

	for (size_t i = 0; i < t->n; i++) {
		const struct md_file *f = &t->files[i];

		assert_int_equal(sb_printf(&sb, "== %s [%s%s%s]\n", f->path,
					   f->views & MD_VIEW_NOCLOUD ? "nocloud " : "",
					   f->views & MD_VIEW_CONFIGDRIVE ? "configdrive " : "",
					   f->views & MD_VIEW_HTTP ? "http" : ""), 0);
		assert_int_equal(sb_append(&sb, (const char *)f->data, f->len), 0);
		assert_int_equal(sb_append(&sb, "\n", 1), 0);
	}
	return sb_steal(&sb);
}

static void test_golden_trees(void **state)
{
	(void)state;
	for (size_t g = 0; g < ARRAY_SIZE(golden); g++) {
		struct instance_spec s;
		struct md_tree *t = NULL;
		char *want = NULL, *got, *gpath = NULL;
		size_t len;
		const char *slash = strrchr(golden[g], '/');

		assert_int_equal(model_spec_parse_file(golden[g], &s), 0);
		assert_int_equal(md_render(&s, &t), 0);
		got = tree_dump(t);
		assert_true(asprintf(&gpath, "tests/metadata/data/%.*s.tree",
				     (int)(strlen(slash + 1) - 5), slash + 1) > 0);
		if (getenv("REGENERATE") && strcmp(getenv("REGENERATE"), "1") == 0) {
			assert_int_equal(write_file_atomic(gpath, got, strlen(got), 0644), 0);
		} else {
			if (read_file(gpath, 1u << 22, &want, &len) < 0)
				fail_msg("%s: %s (REGENERATE=1 writes it)", gpath, err_msg());
			if (strcmp(want, got) != 0) {
				write_file_atomic("build/metadata-golden.out", got, strlen(got), 0644);
				fail_msg("%s differs from the rendering (see build/metadata-golden.out)",
					 gpath);
			}
		}
		free(want);
		free(got);
		free(gpath);
		md_tree_free(t);
		model_spec_free(&s);
	}
}

/* Parse YAML text with libyaml and return the scalar value of a top-level key. */
static char *yaml_get(const char *text, const char *key)
{
	yaml_parser_t p;
	yaml_document_t d;
	char *out = NULL;

	assert_true(yaml_parser_initialize(&p));
	yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
	assert_true(yaml_parser_load(&p, &d));
	yaml_node_t *root = yaml_document_get_root_node(&d);

	assert_non_null(root);
	assert_int_equal(root->type, YAML_MAPPING_NODE);
	for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
	     pr < root->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = yaml_document_get_node(&d, pr->key);
		yaml_node_t *v = yaml_document_get_node(&d, pr->value);

		if (strcmp((const char *)k->data.scalar.value, key) == 0 &&
		    v->type == YAML_SCALAR_NODE) {
			out = strdup((const char *)v->data.scalar.value);
			/* a string, not a YAML 1.1 bool/number: quoted or plain text */
			if (v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
				assert_false(strcmp(out, "yes") == 0);
		}
	}
	yaml_document_delete(&d);
	yaml_parser_delete(&p);
	return out;
}

/* Odd names survive: JSON and YAML read back to the very same strings. */
static void test_odd_values_round_trip(void **state)
{
	struct instance_spec s;
	struct md_tree *t = NULL;
	const struct md_file *f;
	json_error_t je;
	json_t *j;
	char *v;

	(void)state;
	assert_int_equal(model_spec_parse_file("tests/metadata/data/spec-odd.json", &s), 0);
	assert_int_equal(md_render(&s, &t), 0);
	f = md_tree_find(t, "openstack/latest/meta_data.json", MD_VIEW_HTTP);
	assert_non_null(f);
	j = json_loads((const char *)f->data, 0, &je);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "name")), s.name);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "meta"),
								"key: with colon")),
			    "value\n- not a list");
	json_decref(j);
	f = md_tree_find(t, "nocloud/meta-data", MD_VIEW_NOCLOUD);
	assert_non_null(f);
	v = yaml_get((const char *)f->data, "local-hostname");
	assert_string_equal(v, "yes");
	free(v);
	/* no network: no network-config, no local-ipv4, empty network_data links */
	assert_null(md_tree_find(t, "nocloud/network-config", MD_VIEW_NOCLOUD));
	assert_null(md_tree_find(t, "ec2/latest/meta-data/local-ipv4", MD_VIEW_HTTP));
	/* no user-data: NoCloud still has the (empty) file, the APIs do not */
	f = md_tree_find(t, "nocloud/user-data", MD_VIEW_NOCLOUD);
	assert_non_null(f);
	assert_int_equal(f->len, 0);
	assert_null(md_tree_find(t, "openstack/latest/user_data", MD_VIEW_HTTP));
	assert_null(md_tree_find(t, "ec2/latest/user-data", MD_VIEW_HTTP));
	/* the key name's line break does not split the EC2 listing */
	f = md_tree_find(t, "ec2/latest/meta-data/public-keys/", MD_VIEW_HTTP);
	assert_non_null(f);
	assert_string_equal((const char *)f->data, "0=line break\n1=k2");
	/* views: NoCloud files are not served over HTTP */
	assert_null(md_tree_find(t, "nocloud/meta-data", MD_VIEW_HTTP));
	md_tree_free(t);
	model_spec_free(&s);
}

static void test_listings(void **state)
{
	struct instance_spec s;
	struct md_tree *t = NULL;
	char *l = NULL;
	size_t len;

	(void)state;
	assert_int_equal(model_spec_parse_file("tests/data/spec-basic.json", &s), 0);
	assert_int_equal(md_render(&s, &t), 0);
	assert_int_equal(md_tree_list(t, "ec2", MD_VIEW_HTTP, &l, &len), 0);
	assert_string_equal(l, "2009-04-04\nlatest");
	free(l);
	assert_int_equal(md_tree_list(t, "openstack", MD_VIEW_HTTP, &l, &len), 0);
	assert_string_equal(l, "2012-08-10\n2013-10-17\n2015-10-15\n2016-10-06\nlatest");
	free(l);
	assert_int_equal(md_tree_list(t, "openstack/2012-08-10", MD_VIEW_HTTP, &l, &len), 0);
	assert_string_equal(l, "meta_data.json\nuser_data");
	free(l);
	assert_int_equal(md_tree_list(t, "ec2/latest", MD_VIEW_HTTP, &l, &len), 0);
	assert_string_equal(l, "dynamic/\nmeta-data/\nuser-data"); /* meta-data.json: config drive only */
	free(l);
	assert_int_equal(md_tree_list(t, "ec2/latest/meta-data/block-device-mapping",
				      MD_VIEW_HTTP, &l, &len), 0);
	assert_string_equal(l, "ami\nroot");
	free(l);
	assert_int_equal(md_tree_list(t, "ec2/latest/meta-data/public-keys/0", MD_VIEW_HTTP, &l,
				      &len), 0);
	assert_string_equal(l, "openssh-key");
	free(l);
	assert_int_equal(md_tree_list(t, "ec2/latest/meta-data/hostname", MD_VIEW_HTTP, &l, &len),
			 -ENOENT);
	assert_int_equal(md_tree_list(t, "nocloud", MD_VIEW_HTTP, &l, &len), -ENOENT);
	md_tree_free(t);
	model_spec_free(&s);
}

/* ---- the service without sockets --------------------------------------- */

static const char SECRET[] = "a-shared-secret-of-some-length";

/* Instances: basic at 10.0.0.5, a second one at 10.0.0.6, odd without network. */
static char *instances_json(const char *hostname2)
{
	json_error_t je;
	json_t *a = json_load_file("tests/data/spec-basic.json", 0, &je);
	json_t *b = json_deep_copy(a);
	json_t *c = json_load_file("tests/metadata/data/spec-odd.json", 0, &je);
	json_t *arr = json_array();
	char *out;

	assert_non_null(a);
	assert_non_null(c);
	json_object_set_new(b, "uuid", json_string("22222222-2222-4222-8222-222222222222"));
	json_object_set_new(b, "hostname", json_string(hostname2));
	json_object_set_new(json_object_get(b, "network"), "address", json_string("10.0.0.6/24"));
	json_array_append_new(arr, a);
	json_array_append_new(arr, b);
	json_array_append_new(arr, c);
	out = json_dumps(arr, 0);
	json_decref(arr);
	return out;
}

struct fx {
	struct md_source *src;
	struct md_service *svc;
	struct md_config cfg;
};

static void fx_open(struct fx *f, int tokens, bool proxy, long rate)
{
	char *js = instances_json("web-2");

	memset(f, 0, sizeof(*f));
	f->cfg.tokens = tokens;
	f->cfg.proxy = proxy;
	f->cfg.shared_secret = (char *)(uintptr_t)SECRET;
	f->cfg.rate_limit = rate;
	f->cfg.rate_burst = 3;
	f->cfg.threads = 1;
	assert_int_equal(md_source_json_open_string("instances", js, &f->src), 0);
	free(js);
	assert_int_equal(md_service_new(&f->cfg, f->src, &f->svc), 0);
}

static void fx_close(struct fx *f)
{
	md_service_free(f->svc);
	md_source_close(f->src);
}

/* One request; returns the status, *body (malloc'd) if asked. */
static int req(struct fx *f, const char *method, const char *url, const char *source,
	       const struct md_header *h, size_t nh, char **body, struct md_reply *keep)
{
	struct md_request rq = { .method = method, .url = url, .headers = h, .n_headers = nh,
				 .source = source };
	struct md_reply rep;
	int st;

	md_service_handle(f->svc, &rq, &rep);
	st = rep.status;
	if (body) {
		*body = rep.body;
		rep.body = NULL;
	}
	if (keep) {
		*keep = rep;
		keep->body = NULL;
	}
	md_reply_clear(&rep);
	return st;
}

/* Every file of the HTTP view, fetched by its API path, is the file. */
static void test_path_matrix(void **state)
{
	struct instance_spec s;
	struct md_tree *t = NULL;
	struct fx f;
	int n = 0;

	(void)state;
	fx_open(&f, MD_TOKENS_OPTIONAL, false, 0);
	assert_int_equal(model_spec_parse_file("tests/data/spec-basic.json", &s), 0);
	assert_int_equal(md_render(&s, &t), 0);
	for (size_t i = 0; i < t->n; i++) {
		const struct md_file *file = &t->files[i];
		char *url = NULL, *body = NULL;

		if (!(file->views & MD_VIEW_HTTP))
			continue;
		/* API path: /openstack/... as is, ec2/V/... -> /V/... */
		assert_true(asprintf(&url, "/%s",
				     strncmp(file->path, "ec2/", 4) == 0 ? file->path + 4
									: file->path) > 0);
		assert_int_equal(req(&f, "GET", url, "10.0.0.5", NULL, 0, &body, NULL), 200);
		assert_memory_equal(body, file->data, file->len);
		free(body);
		n++;
		/* every parent directory lists this entry */
		for (char *p = url + strlen(url) - 1; p > url + 1; p--) {
			if (*p != '/' || p == url + strlen(url) - 1)
				continue;
			char *dir = strndup(url, (size_t)(p - url));
			const char *name = p + 1;
			size_t nl = strcspn(name, "/");

			assert_int_equal(req(&f, "GET", dir, "10.0.0.5", NULL, 0, &body, NULL), 200);
			char *want = strndup(name, nl);

			assert_non_null(strstr(body, want));
			free(want);
			free(body);
			free(dir);
		}
		free(url);
	}
	assert_true(n > 40);
	/* the roots */
	char *body = NULL;

	assert_int_equal(req(&f, "GET", "/", "10.0.0.5", NULL, 0, &body, NULL), 200);
	assert_string_equal(body, "2009-04-04\nlatest");
	free(body);
	assert_int_equal(req(&f, "GET", "/openstack/", "10.0.0.5", NULL, 0, &body, NULL), 200);
	assert_string_equal(body, "2012-08-10\n2013-10-17\n2015-10-15\n2016-10-06\nlatest");
	free(body);
	assert_int_equal(req(&f, "GET", "//latest//meta-data/instance-id", "10.0.0.5", NULL, 0,
			     &body, NULL), 200);
	assert_string_equal(body, "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d");
	free(body);
	/* the second instance sees its own facts */
	assert_int_equal(req(&f, "GET", "/latest/meta-data/hostname", "10.0.0.6", NULL, 0, &body,
			     NULL), 200);
	assert_string_equal(body, "web-2");
	free(body);
	/* not ours */
	static const char *const missing[] = {
		"/latest/meta-data/nope", "/2007-01-19/meta-data/", "/openstack/2099-01-01/",
		"/latest/meta-data/../../openstack", "/latest/./meta-data", "/nocloud/meta-data",
		"/latest/meta-data/hostname/", "relative", "/latest/meta-data.json",
	};
	for (size_t i = 0; i < ARRAY_SIZE(missing); i++)
		assert_int_equal(req(&f, "GET", missing[i], "10.0.0.5", NULL, 0, NULL, NULL), 404);
	md_tree_free(t);
	model_spec_free(&s);
	fx_close(&f);
}

static void test_unknown_and_limits(void **state)
{
	struct fx f;
	char *a = NULL, *b = NULL, *big;
	struct md_header *many = calloc(MD_HEADER_COUNT_MAX + 1, sizeof(*many));
	const size_t n_many = MD_HEADER_COUNT_MAX + 1;
	struct md_reply rep;

	(void)state;
	fx_open(&f, MD_TOKENS_OPTIONAL, false, 0);
	/* unknown address: the same 404 as a missing path, nothing more */
	assert_int_equal(req(&f, "GET", "/latest/meta-data/instance-id", "10.9.9.9", NULL, 0, &a,
			     NULL), 404);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/nope", "10.0.0.5", NULL, 0, &b, NULL),
			 404);
	assert_string_equal(a, b);
	free(a);
	free(b);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/", NULL, NULL, 0, NULL, NULL), 404);
	assert_int_equal(req(&f, "PUT", "/latest/api/token", "10.9.9.9", NULL, 0, NULL, NULL), 404);
	/* healthz answers anyone */
	assert_int_equal(req(&f, "GET", "/healthz", "10.9.9.9", NULL, 0, &a, NULL), 200);
	assert_string_equal(a, "ok\n");
	free(a);
	/* URL cap */
	big = malloc(MD_URL_MAX + 2);
	memset(big, 'a', MD_URL_MAX + 1);
	big[0] = '/';
	big[MD_URL_MAX + 1] = '\0';
	assert_int_equal(req(&f, "GET", big, "10.0.0.5", NULL, 0, NULL, NULL), 414);
	big[MD_URL_MAX] = '\0';
	assert_int_equal(req(&f, "GET", big, "10.0.0.5", NULL, 0, NULL, NULL), 404);
	/* header caps: bytes and count */
	big[MD_URL_MAX] = 'a';
	struct md_header h1 = { "X-Big", big };

	for (int i = 0; i < 8; i++)
		many[i] = h1;
	assert_int_equal(req(&f, "GET", "/latest/", "10.0.0.5", many, 8, NULL, NULL), 431);
	for (size_t i = 0; i < n_many; i++)
		many[i] = (struct md_header){ "X-A", "1" };
	assert_int_equal(req(&f, "GET", "/latest/", "10.0.0.5", many, n_many, NULL, NULL), 431);
	assert_int_equal(req(&f, "GET", "/latest/", "10.0.0.5", many, MD_HEADER_COUNT_MAX, NULL,
			     NULL), 200);
	free(big);
	free(many);
	/* methods */
	assert_int_equal(req(&f, "POST", "/latest/", "10.0.0.5", NULL, 0, NULL, &rep), 405);
	assert_string_equal(rep.allow, "GET, HEAD, PUT");
	assert_int_equal(req(&f, "DELETE", "/latest/", "10.0.0.5", NULL, 0, NULL, NULL), 405);
	assert_int_equal(req(&f, "PUT", "/latest/meta-data/", "10.0.0.5", NULL, 0, NULL, NULL),
			 405);
	assert_int_equal(req(&f, "GET", "/latest/api/token", "10.0.0.5", NULL, 0, NULL, NULL), 405);
	assert_int_equal(req(&f, "HEAD", "/latest/meta-data/", "10.0.0.5", NULL, 0, NULL, NULL),
			 200);
	/* a body is refused */
	struct md_request rq = { .method = "PUT", .url = "/latest/api/token",
				 .source = "10.0.0.5", .body_len = 10 };

	md_service_handle(f.svc, &rq, &rep);
	assert_int_equal(rep.status, 413);
	md_reply_clear(&rep);
	fx_close(&f);
}

static char *get_token(struct fx *f, const char *source, const char *ttl)
{
	struct md_header h = { "X-aws-ec2-metadata-token-ttl-seconds", ttl };
	struct md_reply rep;
	char *tok = NULL;

	assert_int_equal(req(f, "PUT", "/latest/api/token", source, &h, 1, &tok, &rep), 200);
	assert_true(rep.token_ttl > 0);
	return tok;
}

static void test_tokens(void **state)
{
	struct fx f;
	char *tok, *tok6, *body = NULL;

	(void)state;
	for (int mode = 0; mode < MD_TOKENS_LAST; mode++) {
		fx_open(&f, mode, false, 0);
		tok = get_token(&f, "10.0.0.5", "21600");
		tok6 = get_token(&f, "10.0.0.6", "1");
		struct md_header good = { "X-aws-ec2-metadata-token", tok };
		struct md_header other = { "x-AWS-ec2-metadata-token", tok6 }; /* any case */
		struct md_header junk = { "X-aws-ec2-metadata-token", "AAAA" };

		assert_int_equal(req(&f, "GET", "/latest/meta-data/instance-id", "10.0.0.5", &good,
				     1, &body, NULL), 200);
		assert_string_equal(body, "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d");
		free(body);
		/* a token is bound to its instance */
		assert_int_equal(req(&f, "GET", "/latest/meta-data/instance-id", "10.0.0.5", &other,
				     1, NULL, NULL), 401);
		assert_int_equal(req(&f, "GET", "/latest/meta-data/instance-id", "10.0.0.6", &other,
				     1, NULL, NULL), 200);
		/* an invalid token is refused in both modes */
		assert_int_equal(req(&f, "GET", "/latest/meta-data/", "10.0.0.5", &junk, 1, NULL,
				     NULL), 401);
		/* no token: refused only when required, on both APIs */
		int want = mode == MD_TOKENS_REQUIRED ? 401 : 200;

		assert_int_equal(req(&f, "GET", "/latest/meta-data/", "10.0.0.5", NULL, 0, NULL,
				     NULL), want);
		assert_int_equal(req(&f, "GET", "/openstack/latest/meta_data.json", "10.0.0.5", NULL,
				     0, NULL, NULL), want);
		assert_int_equal(req(&f, "GET", "/openstack/latest/meta_data.json", "10.0.0.5",
				     &good, 1, NULL, NULL), 200);
		free(tok);
		free(tok6);

		/* TTL: 1..21600, present, a number */
		static const char *const bad_ttls[] = { "0", "21601", "-1", "abc", "", "1e3" };
		for (size_t i = 0; i < ARRAY_SIZE(bad_ttls); i++) {
			struct md_header h = { "X-aws-ec2-metadata-token-ttl-seconds", bad_ttls[i] };

			assert_int_equal(req(&f, "PUT", "/latest/api/token", "10.0.0.5", &h, 1, NULL,
					     NULL), 400);
		}
		assert_int_equal(req(&f, "PUT", "/latest/api/token", "10.0.0.5", NULL, 0, NULL,
				     NULL), 400);
		/* a PUT through a forwarding proxy is refused */
		struct md_header fwd[] = { { "X-aws-ec2-metadata-token-ttl-seconds", "60" },
					   { "X-Forwarded-For", "192.0.2.1" } };

		assert_int_equal(req(&f, "PUT", "/latest/api/token", "10.0.0.5", fwd, 2, NULL,
				     NULL), 403);
		fx_close(&f);
	}
	/* expiry, directly on the token functions */
	unsigned char key[MD_TOKEN_KEY_LEN] = { 1, 2, 3 };
	char *t = md_token_issue(key, "u-1", 10, 1000);

	assert_int_equal(md_token_check(key, "u-1", t, 1010), 0);
	assert_int_equal(md_token_check(key, "u-1", t, 1011), -EACCES);
	assert_int_equal(md_token_check(key, "u-2", t, 1000), -EACCES);
	key[0] = 9;
	assert_int_equal(md_token_check(key, "u-1", t, 1000), -EACCES);
	t[5] ^= 1;
	assert_int_equal(md_token_check(key, "u-1", t, 1000), -EACCES);
	free(t);
}

static void test_proxy(void **state)
{
	const char *id = "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d";
	char *sig = md_instance_id_signature(SECRET, id);
	char *sig_unknown = md_instance_id_signature(SECRET, "99999999-9999-4999-8999-999999999999");
	char *sig_wrong_key = md_instance_id_signature("another-secret-entirely", id);
	char *body = NULL;
	struct fx f;

	(void)state;
	/* Nova's signature: hex HMAC-SHA256 of the id with the shared secret */
	assert_int_equal(strlen(sig), 64);
	fx_open(&f, MD_TOKENS_OPTIONAL, true, 0);
	struct md_header good[] = { { "X-Instance-ID", id }, { "X-Instance-ID-Signature", sig } };
	struct md_header bad[] = { { "X-Instance-ID", id },
				   { "X-Instance-ID-Signature", sig_wrong_key } };
	struct md_header unknown[] = { { "X-Instance-ID", "99999999-9999-4999-8999-999999999999" },
				       { "X-Instance-ID-Signature", sig_unknown } };
	struct md_header swapped[] = { { "X-Instance-ID", "22222222-2222-4222-8222-222222222222" },
				       { "X-Instance-ID-Signature", sig } };
	struct md_header shortsig[] = { { "X-Instance-ID", id }, { "X-Instance-ID-Signature", "ab" } };

	assert_int_equal(req(&f, "GET", "/openstack/latest/meta_data.json", "192.0.2.9", good, 2,
			     &body, NULL), 200);
	assert_non_null(strstr(body, id));
	free(body);
	/* the source address does not matter in proxied mode */
	assert_int_equal(req(&f, "GET", "/latest/meta-data/hostname", NULL, good, 2, &body, NULL),
			 200);
	assert_string_equal(body, "web-1");
	free(body);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/", "10.0.0.5", NULL, 0, NULL, NULL), 400);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/", "10.0.0.5", good, 1, NULL, NULL), 400);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/", "10.0.0.5", good + 1, 1, NULL, NULL),
			 400);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/", "10.0.0.5", bad, 2, NULL, NULL), 403);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/", "10.0.0.5", swapped, 2, NULL, NULL),
			 403);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/", "10.0.0.5", shortsig, 2, NULL, NULL),
			 403);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/", "10.0.0.5", unknown, 2, NULL, NULL),
			 404);
	fx_close(&f);
	/* proxy mode without a secret is a config error */
	struct md_config c = { .proxy = true };

	assert_int_equal(md_config_check(&c), -EINVAL);
	free(sig);
	free(sig_unknown);
	free(sig_wrong_key);
}

static void test_rate_limit(void **state)
{
	struct md_reply rep;
	struct fx f;

	(void)state;
	fx_open(&f, MD_TOKENS_OPTIONAL, false, 1); /* 1/s, burst 3 */
	for (int i = 0; i < 3; i++)
		assert_int_equal(req(&f, "GET", "/latest/", "10.0.0.5", NULL, 0, NULL, NULL), 200);
	assert_int_equal(req(&f, "GET", "/latest/", "10.0.0.5", NULL, 0, NULL, &rep), 429);
	assert_true(rep.retry_after >= 1);
	/* per instance: the neighbour is not affected */
	assert_int_equal(req(&f, "GET", "/latest/", "10.0.0.6", NULL, 0, NULL, NULL), 200);
	fx_close(&f);
}

/* A reload keeps unchanged instances (and their cache) and replaces changed ones. */
static void test_reload_invalidates(void **state)
{
	struct md_instance *a1, *b1, *a2, *b2;
	char *js = instances_json("web-2"), *body = NULL;
	const char *path = "build/tests/metadata/instances.json";
	struct md_source *src;
	struct md_service *svc;
	struct md_config cfg = { .threads = 1 };

	(void)state;
	assert_int_equal(write_file_atomic(path, js, strlen(js), 0644), 0);
	free(js);
	assert_int_equal(md_source_json_open(path, &src), 0);
	assert_int_equal(md_service_new(&cfg, src, &svc), 0);
	struct fx f = { .src = src, .svc = svc };

	assert_int_equal(req(&f, "GET", "/latest/meta-data/hostname", "10.0.0.6", NULL, 0, &body,
			     NULL), 200);
	assert_string_equal(body, "web-2");
	free(body);
	assert_int_equal(src->ops->lookup_addr(src->impl, "10.0.0.5", &a1), 0);
	assert_int_equal(src->ops->lookup_addr(src->impl, "10.0.0.6", &b1), 0);
	js = instances_json("web-2-renamed");
	assert_int_equal(write_file_atomic(path, js, strlen(js), 0644), 0);
	free(js);
	assert_int_equal(md_source_reload(src), 0);
	assert_int_equal(src->ops->lookup_addr(src->impl, "10.0.0.5", &a2), 0);
	assert_int_equal(src->ops->lookup_addr(src->impl, "10.0.0.6", &b2), 0);
	assert_ptr_equal(a1, a2);     /* unchanged: same object, cache kept */
	assert_ptr_not_equal(b1, b2); /* changed: new object, rendered afresh */
	assert_int_equal(req(&f, "GET", "/latest/meta-data/hostname", "10.0.0.6", NULL, 0, &body,
			     NULL), 200);
	assert_string_equal(body, "web-2-renamed");
	free(body);
	/* a broken file keeps the previous instances */
	assert_int_equal(write_file_atomic(path, "[{", 2, 0644), 0);
	assert_true(md_source_reload(src) < 0);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/hostname", "10.0.0.6", NULL, 0, NULL,
			     NULL), 200);
	/* the same instance twice, or two at one address, are refused */
	char *one = NULL, *two = NULL;
	size_t len;

	assert_int_equal(read_file("tests/data/spec-basic.json", 1u << 20, &one, &len), 0);
	assert_true(asprintf(&two, "[%s, %s]", one, one) > 0);
	assert_int_equal(md_source_json_open_string("dup", two, &src), -EINVAL);
	assert_non_null(strstr(err_msg(), "listed twice"));
	free(two);
	assert_int_equal(md_source_json_open_string("notarray", one, &src), -EINVAL);
	free(one);
	md_instance_unref(a1);
	md_instance_unref(a2);
	md_instance_unref(b1);
	md_instance_unref(b2);
	md_service_free(svc);
	md_source_close(f.src);
}

/* The agent's store as the source: what the agent commits is served. */
static void test_store_source(void **state)
{
	const char *db = "build/tests/metadata/store-test.db";
	struct store *st = NULL;
	struct md_source *src = NULL;
	struct md_service *svc = NULL;
	struct md_config cfg = { .threads = 1 };
	struct md_instance *a = NULL, *b = NULL, *c = NULL;
	json_error_t je;
	json_t *j = json_load_file("tests/data/spec-basic.json", 0, &je);
	char addr[32], *body = NULL, *spec_json;
	struct store_instance row = { .uuid = "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d",
				      .state = INST_ACTIVE };

	(void)state;
	unlink(db);
	json_object_del(j, "network"); /* the agent allocates it */
	spec_json = json_dumps(j, 0);
	assert_int_equal(store_open(db, false, &st), 0);
	assert_int_equal(store_address_allocate(st, row.uuid, 0x0a4d0005, 0x0a4d00fe, 24,
						      "52:54:00:aa:bb:cc", addr, sizeof(addr)), 0);
	row.spec_json = spec_json;
	row.address = addr;
	row.mac = (char *)(uintptr_t)"52:54:00:aa:bb:cc";
	assert_int_equal(store_instance_put(st, &row), 0);

	assert_int_equal(md_source_store_open(db, &src), 0);
	assert_int_equal(md_service_new(&cfg, src, &svc), 0);
	struct fx f = { .src = src, .svc = svc };

	assert_int_equal(req(&f, "GET", "/latest/meta-data/local-ipv4", "10.77.0.5", NULL, 0, &body,
			     NULL), 200);
	assert_string_equal(body, "10.77.0.5");
	free(body);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/mac", "10.77.0.5", NULL, 0, &body, NULL),
			 200);
	assert_string_equal(body, "52:54:00:aa:bb:cc");
	free(body);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/hostname", "10.77.0.6", NULL, 0, NULL,
			     NULL), 404);
	assert_int_equal(src->ops->lookup_addr(src->impl, "10.77.0.5", &a), 0);
	assert_int_equal(src->ops->lookup_id(src->impl, row.uuid, &b), 0);
	assert_ptr_equal(a, b); /* unchanged row: the cached rendering */

	/* the agent changes the spec: the next request sees it */
	json_object_set_new(j, "hostname", json_string("changed"));
	free(spec_json);
	spec_json = json_dumps(j, 0);
	row.spec_json = spec_json;
	assert_int_equal(store_instance_put(st, &row), 0);
	assert_int_equal(req(&f, "GET", "/openstack/latest/meta_data.json", "10.77.0.5", NULL, 0,
			     &body, NULL), 200);
	assert_non_null(strstr(body, "\"hostname\": \"changed\""));
	free(body);
	assert_int_equal(src->ops->lookup_addr(src->impl, "10.77.0.5", &c), 0);
	assert_ptr_not_equal(a, c);
	/* deleting: no longer served */
	assert_int_equal(store_instance_set_state(st, row.uuid, INST_DELETING, NULL, NULL), 0);
	assert_int_equal(req(&f, "GET", "/latest/meta-data/hostname", "10.77.0.5", NULL, 0, NULL,
			     NULL), 404);
	md_instance_unref(a);
	md_instance_unref(b);
	md_instance_unref(c);
	md_service_free(svc);
	md_source_close(src);
	store_close(st);
	json_decref(j);
	free(spec_json);
}

static void test_seed_build(void **state)
{
	struct instance_spec s;
	unsigned char *iso = NULL;
	size_t len = 0;
	enum md_seed_format fmt;

	(void)state;
	assert_int_equal(model_spec_parse_file("tests/data/spec-basic.json", &s), 0);
	assert_int_equal(md_seed_build(&s, MD_SEED_NOCLOUD, &iso, &len), 0);
	assert_true(len >= 32768 + 2048 && len % 2048 == 0);
	/* primary volume descriptor at sector 16: "CD001", volume id at 40 */
	assert_memory_equal(iso + 16 * 2048 + 1, "CD001", 5);
	assert_memory_equal(iso + 16 * 2048 + 40, "cidata ", 7);
	free(iso);
	assert_int_equal(md_seed_build(&s, MD_SEED_CONFIGDRIVE, &iso, &len), 0);
	assert_memory_equal(iso + 16 * 2048 + 40, "config-2 ", 9);
	free(iso);
	assert_int_equal(md_seed_format_parse("configdrive", &fmt), 0);
	assert_int_equal(fmt, MD_SEED_CONFIGDRIVE);
	assert_int_equal(md_seed_format_parse("vfat", &fmt), -EINVAL);
	model_spec_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_trees),
		cmocka_unit_test(test_odd_values_round_trip),
		cmocka_unit_test(test_listings),
		cmocka_unit_test(test_path_matrix),
		cmocka_unit_test(test_unknown_and_limits),
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_proxy),
		cmocka_unit_test(test_rate_limit),
		cmocka_unit_test(test_reload_invalidates),
		cmocka_unit_test(test_store_source),
		cmocka_unit_test(test_seed_build),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
