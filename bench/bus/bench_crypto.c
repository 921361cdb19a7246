/*
 * bench_crypto: what signing and sealing add to one host command, in
 * process, one core, beside the same message unsigned in the same run.
 *
 *   bench_crypto [-n COUNT]
 *
 * Per message, an instance.build of about 1.5 KiB (1 KiB of user data, an
 * ssh key, metadata):
 *   unsigned: bus_envelope_new + serialize + bus_envelope_parse (the
 *             scheduler's and the agent's work without the trust layer);
 *   signed:   the same + bus_envelope_sign + bus_envelope_verify;
 *   sealed:   the same as signed + bus_seal_fields (scheduler) and
 *             bus_open_sealed (agent) of the secrets.
 * Prints one line: "crypto unsigned_us A signed_us B sealed_us C".
 */
#define LOG_TAG "bench"
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"
#include "core/crypto.h"

static json_t *build_body(void)
{
	unsigned char ud[1024];
	_cleanup_free_ char *b64 = NULL;

	memset(ud, 'u', sizeof(ud));
	b64 = base64_encode(ud, sizeof(ud));
	return json_pack("{s:s, s:s, s:s, s:{s:s, s:i, s:i, s:i}, s:{s:s, s:s, s:s}, s:s, "
			 "s:[{s:s, s:s}], s:{s:s}, s:s}",
			 "uuid", "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d", "name", "web-1", "project",
			 "acme", "flavor", "name", "m1.small", "vcpus", 1, "ram_mb", 512, "disk_gb",
			 1, "image", "url", "http://10.0.0.1/d.qcow2", "checksum",
			 "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
			 "disk_format", "qcow2", "user_data", b64, "ssh_keys", "name", "k1", "key",
			 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 me@laptop", "metadata",
			 "role", "web", "host", "hv1");
}

enum mode { UNSIGNED, SIGNED, SEALED };

/* One message through MODE: 0 or <0 (err_msg set). */
static int one(enum mode m, const json_t *tmpl, const unsigned char *sk,
	       const unsigned char (*pk)[BUS_KEY_LEN], const unsigned char *box_pub,
	       const unsigned char *box_priv)
{
	struct bus_envelope *e = NULL, *in = NULL;
	json_t *body = json_deep_copy(tmpl);
	char *text = NULL;
	size_t len;
	int r;

	if (m == SEALED && bus_seal_fields(body, bus_build_secret_fields, box_pub,
					   BUS_SEAL_BUILD) < 0) {
		json_decref(body);
		return -1;
	}
	r = bus_envelope_new("instance.build", BUS_TC_HOST, "bench", NULL, body, &e);
	if (r == 0 && m != UNSIGNED)
		r = bus_envelope_sign(e, sk, pk[0]);
	if (r == 0)
		r = bus_envelope_serialize(e, &text, &len);
	if (r == 0)
		r = bus_envelope_parse(text, len, "stratus.host.hv1", &in);
	if (r == 0 && m != UNSIGNED)
		r = bus_envelope_verify(in, pk, 1);
	if (r == 0 && m == SEALED)
		r = bus_open_sealed(in->body, bus_build_secret_fields, box_priv, BUS_SEAL_BUILD);
	free(text);
	bus_envelope_free(e);
	bus_envelope_free(in);
	return r;
}

int main(int argc, char **argv)
{
	unsigned char sk[BUS_KEY_LEN], pk[1][BUS_KEY_LEN], bpub[BUS_KEY_LEN], bpriv[BUS_KEY_LEN];
	double us[3] = { 0 };
	long n = 5000;
	json_t *tmpl;
	int opt;

	while ((opt = getopt(argc, argv, "n:")) != -1) {
		if (opt != 'n' || parse_long(optarg, 1, 10000000L, &n) < 0) {
			fprintf(stderr, "usage: bench_crypto [-n COUNT]\n");
			return 2;
		}
	}
	log_init("bench_crypto", false, LOG_LVL_WARN);
	tmpl = build_body();
	if (!tmpl || crypto_ed25519_keygen(pk[0], sk) < 0 || crypto_x25519_keygen(bpub, bpriv) < 0) {
		fprintf(stderr, "bench_crypto: setup: %s\n", err_msg());
		return 1;
	}
	/* interleaved rounds: the machine's load hits every mode alike */
	for (int round = 0; round < 5; round++) {
		for (int m = UNSIGNED; m <= SEALED; m++) {
			int64_t t0 = time_mono_ns();

			for (long i = 0; i < n / 5; i++) {
				if (one((enum mode)m, tmpl, sk, (const unsigned char (*)[BUS_KEY_LEN])pk,
					bpub, bpriv) < 0) {
					fprintf(stderr, "bench_crypto: %s\n", err_msg());
					return 1;
				}
			}
			us[m] += (double)(time_mono_ns() - t0) / 1e3;
		}
	}
	for (int m = UNSIGNED; m <= SEALED; m++)
		us[m] /= (double)(n / 5 * 5);
	printf("crypto unsigned_us %.1f signed_us %.1f sealed_us %.1f\n", us[UNSIGNED], us[SIGNED],
	       us[SEALED]);
	json_decref(tmpl);
	return 0;
}
