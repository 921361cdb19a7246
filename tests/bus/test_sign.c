/* Signed commands and sealed fields (bus/sign.c): a signature survives the
 * wire and nothing else does; every refusal names its reason; a sealed
 * box opens only with its key and purpose. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "bus/bus.h"
#include "core/crypto.h"

#define UUID1 "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d"

static struct bus_envelope *stop_for(const char *host)
{
	struct bus_envelope *e = NULL;

	assert_int_equal(bus_envelope_new("instance.stop", BUS_TC_HOST, "test", NULL,
					  json_pack("{s:s, s:s}", "uuid", UUID1, "host", host), &e),
			 0);
	return e;
}

/* E serialized and parsed again, as a consumer sees it */
static struct bus_envelope *wire(const struct bus_envelope *e)
{
	struct bus_envelope *in = NULL;
	char *text = NULL;
	size_t len;

	assert_int_equal(bus_envelope_serialize(e, &text, &len), 0);
	assert_int_equal(bus_envelope_parse(text, len, "stratus.host.h1", &in), 0);
	free(text);
	return in;
}

static void test_sign_verify(void **state)
{
	unsigned char sk[32], pk[2][32], other_sk[32];
	struct bus_envelope *e = stop_for("h1"), *in;
	char id[BUS_KEY_ID_LEN + 1];

	(void)state;
	assert_int_equal(crypto_ed25519_keygen(pk[0], sk), 0);
	assert_int_equal(crypto_ed25519_keygen(pk[1], other_sk), 0);
	/* unsigned */
	assert_int_equal(bus_envelope_verify(e, (const unsigned char (*)[32])pk, 2), -EPERM);
	assert_non_null(strstr(err_msg(), "unsigned"));
	assert_int_equal(bus_envelope_sign(e, sk, pk[0]), 0);
	bus_key_id(pk[0], id);
	assert_string_equal(json_string_value(json_object_get(e->auth, "key")), id);
	assert_int_equal(strlen(id), 16);
	/* through the wire: still good, with either trusted key listed first */
	in = wire(e);
	assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])pk, 2), 0);
	assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])pk[1], 1), -EPERM);
	assert_non_null(strstr(err_msg(), "not a trusted scheduler key"));
	assert_non_null(strstr(err_msg(), id));
	/* the body changed after signing */
	json_object_set_new(in->body, "uuid", json_string("9d6e2f7a-1b2c-4d3e-8f90-a1b2c3d4e5f6"));
	assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])pk, 1), -EPERM);
	assert_non_null(strstr(err_msg(), "bad signature by key"));
	bus_envelope_free(in);
	/* an envelope field changed after signing */
	in = wire(e);
	in->ts[3] = in->ts[3] == '6' ? '7' : '6';
	assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])pk, 1), -EPERM);
	bus_envelope_free(in);
	/* a signature from another key under this key's id */
	in = wire(e);
	{
		struct bus_envelope *f = stop_for("h1");

		snprintf(f->id, sizeof(f->id), "%s", in->id);
		snprintf(f->ts, sizeof(f->ts), "%s", in->ts);
		snprintf(f->request_id, sizeof(f->request_id), "%s", in->request_id);
		assert_int_equal(bus_envelope_sign(f, other_sk, pk[0]), 0);
		json_object_set(in->auth, "sig", json_object_get(f->auth, "sig"));
		bus_envelope_free(f);
	}
	assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])pk, 1), -EPERM);
	bus_envelope_free(in);
	bus_envelope_free(e);
}

static void test_ts(void **state)
{
	struct bus_envelope *e = stop_for("h1");
	int64_t ms = 0;

	(void)state;
	snprintf(e->ts, sizeof(e->ts), "%s", "1970-01-01T00:00:01.250Z");
	assert_int_equal(bus_envelope_ts_ms(e, &ms), 0);
	assert_int_equal(ms, 1250);
	snprintf(e->ts, sizeof(e->ts), "%s", "1970-01-01T01:00:00+01:00");
	assert_int_equal(bus_envelope_ts_ms(e, &ms), 0);
	assert_int_equal(ms, 0);
	snprintf(e->ts, sizeof(e->ts), "%s", "yesterday");
	assert_int_equal(bus_envelope_ts_ms(e, &ms), -EINVAL);
	bus_envelope_free(e);
}

static void test_seal_open(void **state)
{
	unsigned char pk[32], sk[32], pk2[32], sk2[32];
	json_t *body = json_pack("{s:s, s:s, s:{s:s}}", "uuid", UUID1, "user_data", "aGVsbG8=",
				 "metadata", "role", "web");
	json_t *copy;
	char *text;

	(void)state;
	assert_int_equal(crypto_x25519_keygen(pk, sk), 0);
	assert_int_equal(crypto_x25519_keygen(pk2, sk2), 0);
	assert_int_equal(bus_seal_fields(body, bus_build_secret_fields, pk, BUS_SEAL_BUILD), 0);
	text = json_dumps(body, JSON_COMPACT);
	assert_null(strstr(text, "aGVsbG8="));
	assert_null(strstr(text, "role"));
	free(text);
	copy = json_deep_copy(body);
	/* another key, another purpose: refused, the body unchanged */
	assert_int_equal(bus_open_sealed(body, bus_build_secret_fields, sk2, BUS_SEAL_BUILD),
			 -EBADMSG);
	assert_non_null(strstr(err_msg(), "the box does not open"));
	assert_int_equal(bus_open_sealed(body, bus_build_secret_fields, sk, BUS_SEAL_BOOT), -EBADMSG);
	assert_true(json_equal(body, copy));
	/* the right key: the clear fields back */
	assert_int_equal(bus_open_sealed(body, bus_build_secret_fields, sk, BUS_SEAL_BUILD), 0);
	assert_null(json_object_get(body, "sealed"));
	assert_string_equal(json_string_value(json_object_get(body, "user_data")), "aGVsbG8=");
	/* a sealed field also given in clear: refused */
	json_object_set_new(copy, "user_data", json_string("Y2xlYXI="));
	assert_int_equal(bus_open_sealed(copy, bus_build_secret_fields, sk, BUS_SEAL_BUILD), -EINVAL);
	assert_non_null(strstr(err_msg(), "'user_data' is also given in clear"));
	/* nothing secret: nothing sealed */
	json_decref(copy);
	copy = json_pack("{s:s}", "uuid", UUID1);
	assert_int_equal(bus_seal_fields(copy, bus_build_secret_fields, pk, BUS_SEAL_BUILD), 0);
	assert_null(json_object_get(copy, "sealed"));
	json_decref(copy);
	json_decref(body);
}

/* A batch of every size up to 9 and a big one: each envelope verifies on
 * its own after the wire; anything changed in one of them, its position,
 * its path, or the batch size, is refused. */
static void test_batch(void **state)
{
	static const size_t sizes[] = { 1, 2, 3, 4, 5, 7, 8, 9, 257, 300 };
	unsigned char sk[32], pk[32];

	(void)state;
	assert_int_equal(crypto_ed25519_keygen(pk, sk), 0);
	for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
		size_t n = sizes[z];
		struct bus_envelope **v = calloc(n, sizeof(*v));
		char sig0[128] = "";

		assert_non_null(v);
		for (size_t i = 0; i < n; i++) {
			char host[32];

			snprintf(host, sizeof(host), "h%zu", i);
			v[i] = stop_for(host);
		}
		assert_int_equal(bus_envelopes_sign(v, n, sk, pk), 0);
		for (size_t i = 0; i < n; i++) {
			struct bus_envelope *in = wire(v[i]);
			const char *pos = json_string_value(json_object_get(in->auth, "batch"));
			const char *sig = json_string_value(json_object_get(in->auth, "sig"));

			size_t first = i - i % BUS_BATCH_LEAVES;
			size_t size = n - first < BUS_BATCH_LEAVES ? n - first : BUS_BATCH_LEAVES;

			/* one signature for each batch of up to BUS_BATCH_LEAVES; a
			 * batch of one is signed alone */
			assert_int_equal(pos == NULL, size == 1);
			assert_non_null(sig);
			if (i == first)
				snprintf(sig0, sizeof(sig0), "%s", sig);
			else
				assert_string_equal(sig, sig0);
			assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])&pk, 1),
					 0);
			/* a body changed after signing */
			json_object_set_new(in->body, "host", json_string("elsewhere"));
			assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])&pk, 1),
					 -EPERM);
			assert_non_null(strstr(err_msg(), "bad signature by key"));
			bus_envelope_free(in);
		}
		if (n >= 3 && n < BUS_BATCH_LEAVES) {
			struct bus_envelope *in = wire(v[1]);
			json_t *auth = json_deep_copy(in->auth);
			char other[16];

			/* another position, or another batch size, with the same path */
			snprintf(other, sizeof(other), "0/%zu", n);
			json_object_set_new(auth, "batch", json_string(other));
			assert_int_equal(bus_envelope_set_auth(in, json_deep_copy(auth)), 0);
			assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])&pk, 1),
					 -EPERM);
			snprintf(other, sizeof(other), "1/%zu", n + 1);
			json_object_set_new(auth, "batch", json_string(other));
			assert_int_equal(bus_envelope_set_auth(in, json_deep_copy(auth)), 0);
			assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])&pk, 1),
					 -EPERM);
			/* malformed positions and paths: refused with their reason */
			json_object_set_new(auth, "batch", json_string("1/1"));
			assert_int_equal(bus_envelope_set_auth(in, json_deep_copy(auth)), 0);
			assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])&pk, 1),
					 -EPERM);
			assert_non_null(strstr(err_msg(), "auth.batch '1/1': expected I/N"));
			snprintf(other, sizeof(other), "1/%zu", n);
			json_object_set_new(auth, "batch", json_string(other));
			json_object_set_new(auth, "path", json_string("AAAA"));
			assert_int_equal(bus_envelope_set_auth(in, json_deep_copy(auth)), 0);
			assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])&pk, 1),
					 -EPERM);
			assert_non_null(strstr(err_msg(), "auth.path: not base64 of 32-byte hashes"));
			/* a batch position without its path */
			json_object_del(auth, "path");
			assert_int_equal(bus_envelope_set_auth(in, auth), 0);
			assert_int_equal(bus_envelope_verify(in, (const unsigned char (*)[32])&pk, 1),
					 -EPERM);
			assert_non_null(strstr(err_msg(), "and batch with path"));
			bus_envelope_free(in);
		}
		for (size_t i = 0; i < n; i++)
			bus_envelope_free(v[i]);
		free(v);
	}
}

/* The sealer's boxes open as any box; one ephemeral key per epoch, a new
 * one after max_boxes; boxes to another key do not open with this one. */
static void test_sealer(void **state)
{
	unsigned char pk[3][32], sk[3][32], *box = NULL, *pt = NULL, epk[32];
	struct crypto_sealer *sl = NULL;
	size_t len, pt_len;

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(crypto_x25519_keygen(pk[i], sk[i]), 0);
	assert_int_equal(crypto_sealer_new(BUS_SEAL_BUILD, 3600 * 1000, 4, &sl), 0);
	for (int round = 0; round < 6; round++) {
		int to = round % 3;

		assert_int_equal(crypto_sealer_seal(sl, pk[to], "secret", 6, &box, &len), 0);
		assert_int_equal(len, 6 + CRYPTO_BOX_OVERHEAD);
		if (round == 0)
			memcpy(epk, box, 32);
		/* the same pair for 4 boxes, then a new one */
		assert_int_equal(memcmp(epk, box, 32) == 0, round < 4);
		assert_int_equal(crypto_box_open(sk[to], BUS_SEAL_BUILD, box, len, &pt, &pt_len), 0);
		assert_int_equal(pt_len, 6);
		assert_memory_equal(pt, "secret", 6);
		free(pt);
		pt = NULL;
		assert_int_equal(crypto_box_open(sk[(to + 1) % 3], BUS_SEAL_BUILD, box, len, &pt,
						 &pt_len), -EBADMSG);
		assert_int_equal(crypto_box_open(sk[to], BUS_SEAL_BOOT, box, len, &pt, &pt_len),
				 -EBADMSG);
		free(box);
		box = NULL;
	}
	/* many recipients: the table grows, every box still opens */
	for (int i = 0; i < 200; i++) {
		unsigned char p[32], s[32];

		assert_int_equal(crypto_x25519_keygen(p, s), 0);
		assert_int_equal(crypto_sealer_seal(sl, p, "x", 1, &box, &len), 0);
		assert_int_equal(crypto_box_open(s, BUS_SEAL_BUILD, box, len, &pt, &pt_len), 0);
		free(box);
		free(pt);
		box = pt = NULL;
	}
	crypto_sealer_free(sl);
	crypto_sealer_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sign_verify),
		cmocka_unit_test(test_ts),
		cmocka_unit_test(test_seal_open),
		cmocka_unit_test(test_batch),
		cmocka_unit_test(test_sealer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
