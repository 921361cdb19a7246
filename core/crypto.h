/*
 * Cryptography for the bus's trust model (DESIGN.md "Trust model",
 * docs/core.md "crypto"), on OpenSSL 3: HMAC-SHA256 for credentials,
 * Ed25519 for the scheduler's and agents' signatures, X25519 sealed boxes
 * for tenant data, ChaCha20-Poly1305 as the AEAD.
 *
 * A separate header from core/core.h so that only the files that use it
 * pull in its types. Every function returns 0 or a negative errno with
 * err_msg() set; -EBADMSG is a signature, tag or key that does not verify.
 * Buffers returned through **out are malloc'd: the caller frees them.
 */
#ifndef STRATUS_CORE_CRYPTO_H
#define STRATUS_CORE_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRYPTO_KEY_LEN 32     /* Ed25519 and X25519 keys, AEAD keys */
#define CRYPTO_SIG_LEN 64     /* Ed25519 signature */
#define CRYPTO_MAC_LEN 32     /* HMAC-SHA256 */
#define CRYPTO_NONCE_LEN 12   /* ChaCha20-Poly1305 */
#define CRYPTO_TAG_LEN 16
#define CRYPTO_AEAD_OVERHEAD (CRYPTO_NONCE_LEN + CRYPTO_TAG_LEN)
#define CRYPTO_BOX_OVERHEAD (CRYPTO_KEY_LEN + CRYPTO_AEAD_OVERHEAD)
#define CRYPTO_SEAL_MAX (4u << 20) /* largest plaintext sealed or opened */

int crypto_random(void *buf, size_t n);
/* Constant-time comparison. */
bool crypto_equal(const void *a, const void *b, size_t n);

int crypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t n,
		       unsigned char mac[CRYPTO_MAC_LEN]);
/* SHA-256 of DATA. */
int crypto_sha256(const void *data, size_t n, unsigned char out[32]);
/* SHA-256 of A || B (B may be NULL when NB is 0). */
int crypto_sha256_2(const void *a, size_t na, const void *b, size_t nb, unsigned char out[32]);
/* HKDF-SHA256 (RFC 5869) of IKM with SALT (may be NULL) and INFO: one key. */
int crypto_hkdf_sha256(const void *ikm, size_t ikm_len, const void *salt, size_t salt_len,
		       const char *info, unsigned char out[CRYPTO_KEY_LEN]);

/* Ed25519: 32-byte raw private key (seed) and public key. */
int crypto_ed25519_keygen(unsigned char pub[CRYPTO_KEY_LEN], unsigned char priv[CRYPTO_KEY_LEN]);
int crypto_ed25519_public(const unsigned char priv[CRYPTO_KEY_LEN],
			  unsigned char pub[CRYPTO_KEY_LEN]);
int crypto_ed25519_sign(const unsigned char priv[CRYPTO_KEY_LEN], const void *msg, size_t n,
			unsigned char sig[CRYPTO_SIG_LEN]);
/* 0, or -EBADMSG when SIG is not PUB's signature of MSG. */
int crypto_ed25519_verify(const unsigned char pub[CRYPTO_KEY_LEN], const void *msg, size_t n,
			  const unsigned char sig[CRYPTO_SIG_LEN]);

/* X25519 key pairs. */
int crypto_x25519_keygen(unsigned char pub[CRYPTO_KEY_LEN], unsigned char priv[CRYPTO_KEY_LEN]);
int crypto_x25519_public(const unsigned char priv[CRYPTO_KEY_LEN],
			 unsigned char pub[CRYPTO_KEY_LEN]);

/*
 * AEAD (ChaCha20-Poly1305) under a 32-byte KEY: *out = nonce || ciphertext ||
 * tag (n + CRYPTO_AEAD_OVERHEAD bytes), AAD authenticated but not sent.
 * open: -EBADMSG when the tag (key, AAD or bytes) does not verify.
 */
int crypto_aead_seal(const unsigned char key[CRYPTO_KEY_LEN], const void *aad, size_t aad_len,
		     const void *pt, size_t n, unsigned char **out, size_t *out_len);
int crypto_aead_open(const unsigned char key[CRYPTO_KEY_LEN], const void *aad, size_t aad_len,
		     const void *ct, size_t n, unsigned char **out, size_t *out_len);

/*
 * Sealed box to an X25519 public key RPK: an ephemeral key pair, the key
 * HKDF-SHA256(X25519(eph, rpk), salt = epk || rpk, info = INFO), then the
 * AEAD with INFO as its AAD. *out = epk || nonce || ciphertext || tag.
 * Only the holder of RSK opens it; INFO binds it to its purpose (a box
 * sealed for "stratus build secrets" does not open as anything else).
 */
int crypto_box_seal(const unsigned char rpk[CRYPTO_KEY_LEN], const char *info, const void *pt,
		    size_t n, unsigned char **out, size_t *out_len);
int crypto_box_open(const unsigned char rsk[CRYPTO_KEY_LEN], const char *info, const void *ct,
		    size_t n, unsigned char **out, size_t *out_len);

/*
 * A sender that seals many boxes (the scheduler sealing builds to hosts):
 * the same format as crypto_box_seal, opened by crypto_box_open, but the
 * ephemeral key pair is one per epoch instead of one per box, and the box
 * key of each recipient is derived once per epoch and kept: a box costs
 * one AEAD instead of two X25519 operations. An epoch ends after MAX_AGE_MS
 * or MAX_BOXES boxes (the nonces stay random 96-bit ones under each key);
 * its secret key and derived keys are then wiped and a new pair made. The
 * ephemeral secret never leaves memory. INFO is the purpose of every box
 * (a string constant the sealer keeps a pointer to).
 */
struct crypto_sealer;
/* *out: a new sealer; caller frees with crypto_sealer_free. */
int crypto_sealer_new(const char *info, int64_t max_age_ms, long max_boxes,
		      struct crypto_sealer **out);
void crypto_sealer_free(struct crypto_sealer *sl);
/* crypto_box_seal to RPK through SL's epoch (the same *out). */
int crypto_sealer_seal(struct crypto_sealer *sl, const unsigned char rpk[CRYPTO_KEY_LEN],
		       const void *pt, size_t n, unsigned char **out, size_t *out_len);

/*
 * A key file: the 32 raw key bytes as one line of base64 (44 characters).
 * load: -ENOENT when missing, -EPERM when group or others may read it
 * (mode must be 0600 or stricter), -EINVAL when malformed.
 * save: written atomically with mode 0600.
 */
int crypto_key_load(const char *path, unsigned char key[CRYPTO_KEY_LEN]);
int crypto_key_save(const char *path, const unsigned char key[CRYPTO_KEY_LEN]);
/* A public key as base64 text into buf (at least 45 bytes), and back
 * (-EINVAL unless exactly 32 bytes). */
void crypto_key_to_text(const unsigned char key[CRYPTO_KEY_LEN], char buf[45]);
int crypto_key_from_text(const char *text, unsigned char key[CRYPTO_KEY_LEN]);
/* A configured public key: base64 text, or the path (starting with / or .)
 * of a file holding it on its first line. Errors name the setting WHAT
 * ("agent.scheduler_keys[0]") and say where such a key is found (SEEN_IN). */
int crypto_key_from_entry(const char *what, const char *entry, const char *seen_in,
			  unsigned char key[CRYPTO_KEY_LEN]);

#endif
