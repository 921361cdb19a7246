/* core/crypto.h against the RFCs' test vectors, and its refusals. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "core/crypto.h"

static void unhex(const char *h, unsigned char *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v = 0;

		assert_int_equal(sscanf(h + 2 * i, "%2x", &v), 1);
		out[i] = (unsigned char)v;
	}
}

static void test_hmac_hkdf_vectors(void **state)
{
	unsigned char mac[32], want[42], ikm[22], salt[13], okm[32], key[131];
	char info[11];

	(void)state;
	/* RFC 4231 test case 2 */
	assert_int_equal(crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac), 0);
	unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", want, 32);
	assert_memory_equal(mac, want, 32);
	/* case 1: a 20-byte key */
	memset(key, 0x0b, 20);
	assert_int_equal(crypto_hmac_sha256(key, 20, "Hi There", 8, mac), 0);
	unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", want, 32);
	assert_memory_equal(mac, want, 32);
	/* case 6: a key longer than the block (131 bytes), hashed first */
	memset(key, 0xaa, sizeof(key));
	assert_int_equal(crypto_hmac_sha256(key, sizeof(key), "Test Using Larger Than Block-Size "
					    "Key - Hash Key First", 54, mac), 0);
	unhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", want, 32);
	assert_memory_equal(mac, want, 32);
	/* RFC 5869 test case 1 (the first 32 bytes of its 42) */
	memset(ikm, 0x0b, sizeof(ikm));
	unhex("000102030405060708090a0b0c", salt, 13);
	for (int i = 0; i < 10; i++)
		info[i] = (char)(0xf0 + i);
	info[10] = '\0';
	assert_int_equal(crypto_hkdf_sha256(ikm, sizeof(ikm), salt, sizeof(salt), info, okm), 0);
	unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
	      want, 42);
	assert_memory_equal(okm, want, 32);
}

static void test_ed25519_vector(void **state)
{
	unsigned char sk[32], pk[32], want_pk[32], sig[64], want_sig[64];

	(void)state;
	/* RFC 8032 7.1 test 1: the empty message */
	unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", sk, 32);
	unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", want_pk, 32);
	unhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
	      "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b", want_sig, 64);
	assert_int_equal(crypto_ed25519_public(sk, pk), 0);
	assert_memory_equal(pk, want_pk, 32);
	assert_int_equal(crypto_ed25519_sign(sk, "", 0, sig), 0);
	assert_memory_equal(sig, want_sig, 64);
	assert_int_equal(crypto_ed25519_verify(pk, "", 0, sig), 0);
	/* refused: another message, a flipped bit, another key */
	assert_int_equal(crypto_ed25519_verify(pk, "x", 1, sig), -EBADMSG);
	assert_string_equal(err_msg(), "crypto: Ed25519 signature does not verify");
	sig[5] ^= 1;
	assert_int_equal(crypto_ed25519_verify(pk, "", 0, sig), -EBADMSG);
	sig[5] ^= 1;
	assert_int_equal(crypto_ed25519_keygen(pk, sk), 0);
	assert_int_equal(crypto_ed25519_verify(pk, "", 0, sig), -EBADMSG);
}

static void test_x25519_box(void **state)
{
	unsigned char a[32], apub[32], want[32], pk[32], sk[32], other[32], otherpub[32];
	unsigned char *box = NULL, *pt = NULL;
	size_t box_len = 0, pt_len = 0;
	const char *msg = "#cloud-config\npassword: s3cret\n";

	(void)state;
	/* RFC 7748 6.1: Alice's public key */
	unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", a, 32);
	unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", want, 32);
	assert_int_equal(crypto_x25519_public(a, apub), 0);
	assert_memory_equal(apub, want, 32);

	assert_int_equal(crypto_x25519_keygen(pk, sk), 0);
	assert_int_equal(crypto_box_seal(pk, "stratus test", msg, strlen(msg), &box, &box_len), 0);
	assert_int_equal(box_len, strlen(msg) + CRYPTO_BOX_OVERHEAD);
	assert_null(memmem(box, box_len, "s3cret", 6));
	assert_int_equal(crypto_box_open(sk, "stratus test", box, box_len, &pt, &pt_len), 0);
	assert_int_equal(pt_len, strlen(msg));
	assert_memory_equal(pt, msg, pt_len);
	free(pt);
	pt = NULL;
	/* refused: another recipient, another purpose, a flipped bit, truncated */
	assert_int_equal(crypto_x25519_keygen(otherpub, other), 0);
	assert_int_equal(crypto_box_open(other, "stratus test", box, box_len, &pt, &pt_len), -EBADMSG);
	assert_int_equal(crypto_box_open(sk, "stratus other", box, box_len, &pt, &pt_len), -EBADMSG);
	box[box_len - 20] ^= 0x40;
	assert_int_equal(crypto_box_open(sk, "stratus test", box, box_len, &pt, &pt_len), -EBADMSG);
	assert_string_equal(err_msg(), "crypto: sealed data does not authenticate (wrong key, or altered)");
	assert_int_equal(crypto_box_open(sk, "stratus test", box, 10, &pt, &pt_len), -EBADMSG);
	assert_null(pt);
	free(box);
}

static void test_aead(void **state)
{
	unsigned char key[32], *ct = NULL, *pt = NULL;
	size_t ct_len = 0, pt_len = 0;

	(void)state;
	assert_int_equal(crypto_random(key, sizeof(key)), 0);
	assert_int_equal(crypto_aead_seal(key, "aad", 3, "", 0, &ct, &ct_len), 0);
	assert_int_equal(ct_len, CRYPTO_AEAD_OVERHEAD);
	assert_int_equal(crypto_aead_open(key, "aad", 3, ct, ct_len, &pt, &pt_len), 0);
	assert_int_equal(pt_len, 0);
	free(pt);
	pt = NULL;
	assert_int_equal(crypto_aead_open(key, "aae", 3, ct, ct_len, &pt, &pt_len), -EBADMSG);
	free(ct);
}

static void test_key_files(void **state)
{
	char dir[] = "/tmp/stratus-crypto-XXXXXX", path[64], text[45];
	unsigned char k[32], back[32];
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key", dir);
	assert_int_equal(crypto_random(k, sizeof(k)), 0);
	assert_int_equal(crypto_key_save(path, k), 0);
	assert_int_equal(crypto_key_load(path, back), 0);
	assert_memory_equal(k, back, 32);
	crypto_key_to_text(k, text);
	assert_int_equal(strlen(text), 44);
	assert_int_equal(crypto_key_from_text(text, back), 0);
	assert_memory_equal(k, back, 32);
	/* refused: readable by others, missing, malformed, 31 bytes */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(crypto_key_load(path, back), -EPERM);
	assert_non_null(strstr(err_msg(), "mode 0644 lets others read it (chmod 600)"));
	assert_int_equal(unlink(path), 0);
	assert_int_equal(crypto_key_load(path, back), -ENOENT);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("not base64!\n", f);
	fclose(f);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(crypto_key_load(path, back), -EINVAL);
	assert_int_equal(crypto_key_from_text("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", back), -EINVAL);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hmac_hkdf_vectors),
		cmocka_unit_test(test_ed25519_vector),
		cmocka_unit_test(test_x25519_box),
		cmocka_unit_test(test_aead),
		cmocka_unit_test(test_key_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
