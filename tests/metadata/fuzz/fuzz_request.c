/*
 * libFuzzer harness over the metadata service's request handling
 * (md_service_handle): method, URL, headers, source address, body length,
 * against three services (tokens optional, tokens required, proxied with a
 * rate limit) over the same instances. Built and run by
 * tests/metadata/test_fuzz.sh with clang -fsanitize=fuzzer,address,undefined.
 *
 * Input: byte 0 picks the service (bits 0-1), the source (bits 2-4) and
 * whether to attach a fresh valid token (bit 5); byte 1 is the body length;
 * the rest is lines: METHOD \n URL \n NAME: VALUE \n ...
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "metadata/metadata.h"
#include "metadata/metadata_priv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct md_source *src;
static struct md_service *svc[3];
static const char *const sources[] = {
	"10.0.0.5", "10.0.0.6", "10.9.9.9", "", "127.0.0.1", "10.0.0.5 ", "::1", "10.0.0.05",
};

static void setup(void)
{
	char *one = NULL, *all = NULL;
	size_t len;
	static struct md_config cfg[3];

	if (read_file("tests/data/spec-basic.json", 1u << 20, &one, &len) < 0)
		abort();
	/* the second instance: another uuid and address */
	json_error_t je;
	json_t *a = json_loads(one, 0, &je), *b = json_deep_copy(a), *arr = json_array();

	json_object_set_new(b, "uuid", json_string("22222222-2222-4222-8222-222222222222"));
	json_object_set_new(json_object_get(b, "network"), "address", json_string("10.0.0.6/24"));
	json_object_del(b, "user_data");
	json_array_append_new(arr, a);
	json_array_append_new(arr, b);
	all = json_dumps(arr, 0);
	json_decref(arr);
	if (md_source_json_open_string("fuzz", all, &src) < 0)
		abort();
	free(one);
	free(all);
	for (int i = 0; i < 3; i++) {
		cfg[i].tokens = i == 1 ? MD_TOKENS_REQUIRED : MD_TOKENS_OPTIONAL;
		cfg[i].proxy = i == 2;
		cfg[i].shared_secret = (char *)(uintptr_t)"fuzzing-shared-secret";
		cfg[i].rate_limit = i == 2 ? 1000 : 0;
		cfg[i].rate_burst = 10;
		if (md_service_new(&cfg[i], src, &svc[i]) < 0)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct md_header h[MD_HEADER_COUNT_MAX + 8];
	size_t nh = 0;
	char *buf, *line, *next, *method, *url;
	struct md_reply rep;

	if (!ready) {
		setup();
		ready = 1;
	}
	if (size < 2)
		return 0;
	unsigned sel = data[0];
	struct md_service *s = svc[(sel & 3) % 3];
	const char *source = sources[(sel >> 2) & 7];

	buf = malloc(size - 2 + 1);
	memcpy(buf, data + 2, size - 2);
	buf[size - 2] = '\0';
	method = buf;
	url = NULL;
	line = strchr(buf, '\n');
	if (line) {
		*line++ = '\0';
		url = line;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		line = next;
	}
	while (line && nh < ARRAY_SIZE(h) - 2) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		char *colon = strchr(line, ':');

		if (colon) {
			*colon++ = '\0';
			while (*colon == ' ')
				colon++;
		}
		h[nh++] = (struct md_header){ line, colon ? colon : "" };
		line = next;
	}
	char *tok = NULL;

	if (sel & 0x20) { /* a valid token for the first instance */
		struct md_header th = { "X-aws-ec2-metadata-token-ttl-seconds", "60" };
		struct md_request tr = { .method = "PUT", .url = "/latest/api/token", .headers = &th,
					 .n_headers = 1, .source = "10.0.0.5" };

		md_service_handle(svc[0], &tr, &rep);
		tok = rep.body;
		rep.body = NULL;
		md_reply_clear(&rep);
		if (tok)
			h[nh++] = (struct md_header){ "X-aws-ec2-metadata-token", tok };
	}
	struct md_request rq = {
		.method = method, .url = url, .headers = h, .n_headers = nh,
		.source = *source ? source : NULL, .body_len = data[1] & 0x80 ? data[1] : 0,
	};

	md_service_handle(s, &rq, &rep);
	if (rep.status < 200 || rep.status > 599 || (rep.len && !rep.body))
		abort();
	if (rep.status == 200 && rep.body && rep.body[rep.len] != '\0')
		abort();
	md_reply_clear(&rep);
	free(tok);
	free(buf);
	return 0;
}
