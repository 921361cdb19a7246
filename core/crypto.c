/* Cryptography on OpenSSL 3 (core/crypto.h). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "core/core.h"
#include "core/crypto.h"

int crypto_random(void *buf, size_t n)
{
	if (RAND_bytes(buf, (int)n) != 1)
		return err_set(-EIO, "crypto: no random bytes from OpenSSL");
	return 0;
}

bool crypto_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

/* SHA-256 fetched once: an implicit fetch per call costs more than a
 * short message's hash (OpenSSL 3). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

#define SHA256_BLOCK 64

/*
 * HMAC-SHA256 (RFC 2104) over the SHA-256 fetched once: OpenSSL 3's
 * HMAC() one-shot fetches the HMAC method and the digest by name on every
 * call, which cost more than the short messages it authenticates (every
 * signed request: the client's signature and the scheduler's check).
 * RFC 4231's vectors are in tests/core/test_crypto.c.
 */
int crypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t n,
		       unsigned char mac[CRYPTO_MAC_LEN])
{
	unsigned char k[SHA256_BLOCK] = { 0 }, pad[SHA256_BLOCK], inner[32];
	EVP_MD_CTX *c;
	int ok;

	pthread_once(&sha256_once, sha256_fetch);
	c = sha256_md ? EVP_MD_CTX_new() : NULL;
	ok = c != NULL;
	/* a key longer than a block is its hash */
	if (key_len > SHA256_BLOCK)
		ok = ok && EVP_DigestInit_ex(c, sha256_md, NULL) == 1 &&
		     EVP_DigestUpdate(c, key, key_len) == 1 && EVP_DigestFinal_ex(c, k, NULL) == 1;
	else if (key_len)
		memcpy(k, key, key_len);
	for (size_t i = 0; i < SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x36;
	ok = ok && EVP_DigestInit_ex(c, sha256_md, NULL) == 1 &&
	     EVP_DigestUpdate(c, pad, sizeof(pad)) == 1 &&
	     (n == 0 || EVP_DigestUpdate(c, data, n) == 1) &&
	     EVP_DigestFinal_ex(c, inner, NULL) == 1;
	for (size_t i = 0; i < SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x5c;
	ok = ok && EVP_DigestInit_ex(c, sha256_md, NULL) == 1 &&
	     EVP_DigestUpdate(c, pad, sizeof(pad)) == 1 &&
	     EVP_DigestUpdate(c, inner, sizeof(inner)) == 1 && EVP_DigestFinal_ex(c, mac, NULL) == 1;
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(pad, sizeof(pad));
	OPENSSL_cleanse(inner, sizeof(inner));
	EVP_MD_CTX_free(c);
	return ok ? 0 : err_set(-EIO, "crypto: HMAC-SHA256 failed");
}

int crypto_sha256(const void *data, size_t n, unsigned char out[32])
{
	if (EVP_Digest(data, n, out, NULL, EVP_sha256(), NULL) != 1)
		return err_set(-EIO, "crypto: SHA-256 failed");
	return 0;
}


int crypto_sha256_2(const void *a, size_t na, const void *b, size_t nb, unsigned char out[32])
{
	EVP_MD_CTX *c;
	int ok;

	pthread_once(&sha256_once, sha256_fetch);
	c = sha256_md ? EVP_MD_CTX_new() : NULL;
	ok = c && EVP_DigestInit_ex(c, sha256_md, NULL) == 1 && EVP_DigestUpdate(c, a, na) == 1 &&
	     (nb == 0 || EVP_DigestUpdate(c, b, nb) == 1) && EVP_DigestFinal_ex(c, out, NULL) == 1;
	EVP_MD_CTX_free(c);
	return ok ? 0 : err_set(-EIO, "crypto: SHA-256 failed");
}

int crypto_hkdf_sha256(const void *ikm, size_t ikm_len, const void *salt, size_t salt_len,
		       const char *info, unsigned char out[CRYPTO_KEY_LEN])
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM p[5], *q = p;
	char digest[] = "SHA256";
	int r = 0;

	if (!ctx) {
		r = err_set(-EIO, "crypto: HKDF is not available");
		goto out;
	}
	*q++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)(uintptr_t)ikm,
						 ikm_len);
	if (salt && salt_len)
		*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
							 (void *)(uintptr_t)salt, salt_len);
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
						 (void *)(uintptr_t)(info ? info : ""),
						 info ? strlen(info) : 0);
	*q = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(ctx, out, CRYPTO_KEY_LEN, p) != 1)
		r = err_set(-EIO, "crypto: HKDF-SHA256 failed");
out:
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return r;
}

/* ---- key pairs --------------------------------------------------------- */

static int raw_public(int type, const unsigned char priv[CRYPTO_KEY_LEN],
		      unsigned char pub[CRYPTO_KEY_LEN])
{
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(type, NULL, priv, CRYPTO_KEY_LEN);
	size_t len = CRYPTO_KEY_LEN;
	int r = 0;

	if (!k || EVP_PKEY_get_raw_public_key(k, pub, &len) != 1 || len != CRYPTO_KEY_LEN)
		r = err_set(-EINVAL, "crypto: not a valid private key");
	EVP_PKEY_free(k);
	return r;
}

static int keygen(int type, unsigned char pub[CRYPTO_KEY_LEN], unsigned char priv[CRYPTO_KEY_LEN])
{
	unsigned char seed[CRYPTO_KEY_LEN];
	int r = crypto_random(seed, sizeof(seed));

	if (r == 0)
		r = raw_public(type, seed, pub);
	if (r == 0)
		memcpy(priv, seed, sizeof(seed));
	OPENSSL_cleanse(seed, sizeof(seed));
	return r;
}

int crypto_ed25519_keygen(unsigned char pub[CRYPTO_KEY_LEN], unsigned char priv[CRYPTO_KEY_LEN])
{
	return keygen(EVP_PKEY_ED25519, pub, priv);
}

int crypto_ed25519_public(const unsigned char priv[CRYPTO_KEY_LEN],
			  unsigned char pub[CRYPTO_KEY_LEN])
{
	return raw_public(EVP_PKEY_ED25519, priv, pub);
}

int crypto_x25519_keygen(unsigned char pub[CRYPTO_KEY_LEN], unsigned char priv[CRYPTO_KEY_LEN])
{
	return keygen(EVP_PKEY_X25519, pub, priv);
}

int crypto_x25519_public(const unsigned char priv[CRYPTO_KEY_LEN],
			 unsigned char pub[CRYPTO_KEY_LEN])
{
	return raw_public(EVP_PKEY_X25519, priv, pub);
}

/*
 * Key objects cached per thread: OpenSSL derives the public point again
 * each time a raw Ed25519 private key becomes an EVP_PKEY, which costs as
 * much as the signature itself; a daemon signs with one key and verifies
 * with a few. Freed when the thread exits (pthread key destructor).
 */
#define KEY_CACHE 4

struct key_cache {
	struct {
		bool priv;
		unsigned char raw[CRYPTO_KEY_LEN];
		EVP_PKEY *k;
	} e[KEY_CACHE];
	unsigned next;
};

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_free(void *p)
{
	struct key_cache *c = p;

	for (size_t i = 0; c && i < KEY_CACHE; i++) {
		EVP_PKEY_free(c->e[i].k);
		OPENSSL_cleanse(c->e[i].raw, sizeof(c->e[i].raw));
	}
	free(c);
}

static void cache_init(void)
{
	(void)pthread_key_create(&cache_key, cache_free);
}

/* The EVP_PKEY of a raw Ed25519 key (PRIV: private, else public), owned
 * by this thread's cache; NULL when it is no valid key or on ENOMEM. */
static EVP_PKEY *ed25519_key(const unsigned char raw[CRYPTO_KEY_LEN], bool priv)
{
	struct key_cache *c;
	EVP_PKEY *k;
	unsigned slot;

	pthread_once(&cache_once, cache_init);
	c = pthread_getspecific(cache_key);
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (c && pthread_setspecific(cache_key, c) != 0) {
			free(c);
			c = NULL;
		}
	}
	for (size_t i = 0; c && i < KEY_CACHE; i++)
		if (c->e[i].k && c->e[i].priv == priv && CRYPTO_memcmp(c->e[i].raw, raw, CRYPTO_KEY_LEN) == 0)
			return c->e[i].k;
	k = priv ? EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw, CRYPTO_KEY_LEN)
		 : EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, CRYPTO_KEY_LEN);
	if (!k || !c)
		return k; /* no cache: the caller frees it (see key_done) */
	slot = c->next++ % KEY_CACHE;
	EVP_PKEY_free(c->e[slot].k);
	c->e[slot].k = k;
	c->e[slot].priv = priv;
	memcpy(c->e[slot].raw, raw, CRYPTO_KEY_LEN);
	return k;
}

/* Free K unless this thread's cache holds it. */
static void key_done(EVP_PKEY *k)
{
	struct key_cache *c = pthread_getspecific(cache_key);

	for (size_t i = 0; c && i < KEY_CACHE; i++)
		if (c->e[i].k == k)
			return;
	EVP_PKEY_free(k);
}

int crypto_ed25519_sign(const unsigned char priv[CRYPTO_KEY_LEN], const void *msg, size_t n,
			unsigned char sig[CRYPTO_SIG_LEN])
{
	EVP_PKEY *k = ed25519_key(priv, true);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	size_t len = CRYPTO_SIG_LEN;
	int r = 0;

	if (!k || !md || EVP_DigestSignInit(md, NULL, NULL, NULL, k) != 1 ||
	    EVP_DigestSign(md, sig, &len, msg, n) != 1 || len != CRYPTO_SIG_LEN)
		r = err_set(-EIO, "crypto: Ed25519 signing failed");
	EVP_MD_CTX_free(md);
	key_done(k);
	return r;
}

int crypto_ed25519_verify(const unsigned char pub[CRYPTO_KEY_LEN], const void *msg, size_t n,
			  const unsigned char sig[CRYPTO_SIG_LEN])
{
	EVP_PKEY *k = ed25519_key(pub, false);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = 0;

	if (!k || !md || EVP_DigestVerifyInit(md, NULL, NULL, NULL, k) != 1)
		r = err_set(-EINVAL, "crypto: not a valid Ed25519 public key");
	else if (EVP_DigestVerify(md, sig, CRYPTO_SIG_LEN, msg, n) != 1)
		r = err_set(-EBADMSG, "crypto: Ed25519 signature does not verify");
	EVP_MD_CTX_free(md);
	key_done(k);
	return r;
}

/* ---- AEAD -------------------------------------------------------------- */

static int aead(bool seal, const unsigned char key[CRYPTO_KEY_LEN],
		const unsigned char nonce[CRYPTO_NONCE_LEN], const void *aad, size_t aad_len,
		const unsigned char *in, size_t n, unsigned char *out, unsigned char tag[CRYPTO_TAG_LEN])
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int len = 0, r = 0;

	if (!c || EVP_CipherInit_ex(c, EVP_chacha20_poly1305(), NULL, key, nonce, seal) != 1 ||
	    (aad_len && EVP_CipherUpdate(c, NULL, &len, aad, (int)aad_len) != 1) ||
	    (n && EVP_CipherUpdate(c, out, &len, in, (int)n) != 1)) {
		r = err_set(-EIO, "crypto: ChaCha20-Poly1305 failed");
		goto out;
	}
	if (seal) {
		if (EVP_CipherFinal_ex(c, out + len, &len) != 1 ||
		    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, CRYPTO_TAG_LEN, tag) != 1)
			r = err_set(-EIO, "crypto: ChaCha20-Poly1305 failed");
	} else {
		if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, CRYPTO_TAG_LEN, tag) != 1 ||
		    EVP_CipherFinal_ex(c, out + len, &len) != 1)
			r = err_set(-EBADMSG, "crypto: sealed data does not authenticate "
					      "(wrong key, or altered)");
	}
out:
	EVP_CIPHER_CTX_free(c);
	return r;
}

int crypto_aead_seal(const unsigned char key[CRYPTO_KEY_LEN], const void *aad, size_t aad_len,
		     const void *pt, size_t n, unsigned char **out, size_t *out_len)
{
	unsigned char *buf;
	int r;

	if (n > CRYPTO_SEAL_MAX)
		return err_set(-E2BIG, "crypto: %zu bytes to seal, more than %u", n, CRYPTO_SEAL_MAX);
	buf = malloc(n + CRYPTO_AEAD_OVERHEAD);
	if (!buf)
		return err_set(-ENOMEM, "out of memory");
	r = crypto_random(buf, CRYPTO_NONCE_LEN);
	if (r == 0)
		r = aead(true, key, buf, aad, aad_len, pt, n, buf + CRYPTO_NONCE_LEN,
			 buf + CRYPTO_NONCE_LEN + n);
	if (r < 0) {
		free(buf);
		return r;
	}
	*out = buf;
	*out_len = n + CRYPTO_AEAD_OVERHEAD;
	return 0;
}

int crypto_aead_open(const unsigned char key[CRYPTO_KEY_LEN], const void *aad, size_t aad_len,
		     const void *ct, size_t n, unsigned char **out, size_t *out_len)
{
	const unsigned char *in = ct;
	unsigned char tag[CRYPTO_TAG_LEN], *buf;
	size_t len;
	int r;

	if (n < CRYPTO_AEAD_OVERHEAD)
		return err_set(-EBADMSG, "crypto: sealed data too short (%zu bytes)", n);
	len = n - CRYPTO_AEAD_OVERHEAD;
	if (len > CRYPTO_SEAL_MAX)
		return err_set(-E2BIG, "crypto: %zu sealed bytes, more than %u", len, CRYPTO_SEAL_MAX);
	buf = malloc(len + 1);
	if (!buf)
		return err_set(-ENOMEM, "out of memory");
	memcpy(tag, in + n - CRYPTO_TAG_LEN, CRYPTO_TAG_LEN);
	r = aead(false, key, in, aad, aad_len, in + CRYPTO_NONCE_LEN, len, buf, tag);
	if (r < 0) {
		OPENSSL_cleanse(buf, len);
		free(buf);
		return r;
	}
	buf[len] = '\0'; /* for text callers */
	*out = buf;
	*out_len = len;
	return 0;
}

/* ---- sealed boxes ------------------------------------------------------ */

static int box_key(const unsigned char sk[CRYPTO_KEY_LEN], const unsigned char pk[CRYPTO_KEY_LEN],
		   const unsigned char epk[CRYPTO_KEY_LEN], const unsigned char rpk[CRYPTO_KEY_LEN],
		   const char *info, unsigned char key[CRYPTO_KEY_LEN])
{
	EVP_PKEY *mine = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, CRYPTO_KEY_LEN);
	EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, pk, CRYPTO_KEY_LEN);
	EVP_PKEY_CTX *ctx = mine ? EVP_PKEY_CTX_new(mine, NULL) : NULL;
	unsigned char shared[CRYPTO_KEY_LEN], salt[2 * CRYPTO_KEY_LEN];
	size_t len = sizeof(shared);
	int r;

	if (!ctx || !peer || EVP_PKEY_derive_init(ctx) != 1 ||
	    EVP_PKEY_derive_set_peer(ctx, peer) != 1 || EVP_PKEY_derive(ctx, shared, &len) != 1 ||
	    len != sizeof(shared)) {
		r = err_set(-EBADMSG, "crypto: X25519 key agreement failed (bad key)");
		goto out;
	}
	memcpy(salt, epk, CRYPTO_KEY_LEN);
	memcpy(salt + CRYPTO_KEY_LEN, rpk, CRYPTO_KEY_LEN);
	r = crypto_hkdf_sha256(shared, len, salt, sizeof(salt), info, key);
out:
	OPENSSL_cleanse(shared, sizeof(shared));
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(mine);
	EVP_PKEY_free(peer);
	return r;
}

int crypto_box_seal(const unsigned char rpk[CRYPTO_KEY_LEN], const char *info, const void *pt,
		    size_t n, unsigned char **out, size_t *out_len)
{
	unsigned char epk[CRYPTO_KEY_LEN], esk[CRYPTO_KEY_LEN], key[CRYPTO_KEY_LEN];
	unsigned char *ct = NULL, *buf = NULL;
	size_t ct_len = 0;
	int r;

	if ((r = crypto_x25519_keygen(epk, esk)) < 0 ||
	    (r = box_key(esk, rpk, epk, rpk, info, key)) < 0 ||
	    (r = crypto_aead_seal(key, info, strlen(info), pt, n, &ct, &ct_len)) < 0)
		goto out;
	buf = malloc(CRYPTO_KEY_LEN + ct_len);
	if (!buf) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	memcpy(buf, epk, CRYPTO_KEY_LEN);
	memcpy(buf + CRYPTO_KEY_LEN, ct, ct_len);
	*out = buf;
	*out_len = CRYPTO_KEY_LEN + ct_len;
out:
	OPENSSL_cleanse(esk, sizeof(esk));
	OPENSSL_cleanse(key, sizeof(key));
	free(ct);
	return r;
}

int crypto_box_open(const unsigned char rsk[CRYPTO_KEY_LEN], const char *info, const void *ct,
		    size_t n, unsigned char **out, size_t *out_len)
{
	const unsigned char *in = ct;
	unsigned char rpk[CRYPTO_KEY_LEN], key[CRYPTO_KEY_LEN];
	int r;

	if (n < CRYPTO_BOX_OVERHEAD)
		return err_set(-EBADMSG, "crypto: sealed box too short (%zu bytes)", n);
	if ((r = crypto_x25519_public(rsk, rpk)) < 0 ||
	    (r = box_key(rsk, in, in, rpk, info, key)) < 0)
		return r;
	r = crypto_aead_open(key, info, strlen(info), in + CRYPTO_KEY_LEN, n - CRYPTO_KEY_LEN, out,
			     out_len);
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}

/* ---- a sealer: one ephemeral pair per epoch ---------------------------- */

struct sealer_entry {
	unsigned char rpk[CRYPTO_KEY_LEN];
	unsigned char key[CRYPTO_KEY_LEN];
	bool used;
};

struct crypto_sealer {
	const char *info;
	int64_t max_age_ns;
	long max_boxes;
	unsigned char epk[CRYPTO_KEY_LEN], esk[CRYPTO_KEY_LEN];
	bool have_pair;
	int64_t epoch_ns;             /* when the pair was made */
	long boxes;                   /* sealed in this epoch */
	struct sealer_entry *tab;     /* open addressing, cap a power of two */
	size_t cap, n;
};

#define SEALER_MIN_CAP 64

static void sealer_wipe(struct crypto_sealer *sl)
{
	if (sl->tab)
		OPENSSL_cleanse(sl->tab, sl->cap * sizeof(*sl->tab));
	OPENSSL_cleanse(sl->esk, sizeof(sl->esk));
	sl->n = 0;
	sl->boxes = 0;
	sl->have_pair = false;
}

int crypto_sealer_new(const char *info, int64_t max_age_ms, long max_boxes,
		      struct crypto_sealer **out)
{
	struct crypto_sealer *sl = calloc(1, sizeof(*sl));

	if (!sl || !(sl->tab = calloc(SEALER_MIN_CAP, sizeof(*sl->tab)))) {
		free(sl);
		return err_set(-ENOMEM, "out of memory");
	}
	sl->info = info;
	sl->max_age_ns = max_age_ms * 1000000;
	sl->max_boxes = max_boxes;
	sl->cap = SEALER_MIN_CAP;
	*out = sl;
	return 0;
}

void crypto_sealer_free(struct crypto_sealer *sl)
{
	if (!sl)
		return;
	sealer_wipe(sl);
	free(sl->tab);
	free(sl);
}

/* The slot of RPK (public keys are uniform: their first bytes hash them). */
static struct sealer_entry *sealer_slot(struct sealer_entry *tab, size_t cap,
					const unsigned char rpk[CRYPTO_KEY_LEN])
{
	uint64_t h;
	size_t i;

	memcpy(&h, rpk, sizeof(h));
	for (i = (size_t)h & (cap - 1); tab[i].used; i = (i + 1) & (cap - 1))
		if (memcmp(tab[i].rpk, rpk, CRYPTO_KEY_LEN) == 0)
			break;
	return &tab[i];
}

static int sealer_grow(struct crypto_sealer *sl)
{
	size_t cap = sl->cap * 2;
	struct sealer_entry *tab = calloc(cap, sizeof(*tab));

	if (!tab)
		return err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < sl->cap; i++)
		if (sl->tab[i].used)
			*sealer_slot(tab, cap, sl->tab[i].rpk) = sl->tab[i];
	OPENSSL_cleanse(sl->tab, sl->cap * sizeof(*sl->tab));
	free(sl->tab);
	sl->tab = tab;
	sl->cap = cap;
	return 0;
}

/* The box key to RPK in this epoch (a new epoch when the last is over). */
static int sealer_key(struct crypto_sealer *sl, const unsigned char rpk[CRYPTO_KEY_LEN],
		      const unsigned char **key)
{
	int64_t now = time_mono_ns();
	struct sealer_entry *e;
	int r;

	if (sl->have_pair && (now - sl->epoch_ns >= sl->max_age_ns || sl->boxes >= sl->max_boxes))
		sealer_wipe(sl);
	if (!sl->have_pair) {
		r = crypto_x25519_keygen(sl->epk, sl->esk);
		if (r < 0)
			return r;
		sl->have_pair = true;
		sl->epoch_ns = now;
	}
	e = sealer_slot(sl->tab, sl->cap, rpk);
	if (!e->used) {
		if (2 * (sl->n + 1) > sl->cap) {
			r = sealer_grow(sl);
			if (r < 0)
				return r;
			e = sealer_slot(sl->tab, sl->cap, rpk);
		}
		r = box_key(sl->esk, rpk, sl->epk, rpk, sl->info, e->key);
		if (r < 0)
			return r;
		memcpy(e->rpk, rpk, CRYPTO_KEY_LEN);
		e->used = true;
		sl->n++;
	}
	*key = e->key;
	return 0;
}

int crypto_sealer_seal(struct crypto_sealer *sl, const unsigned char rpk[CRYPTO_KEY_LEN],
		       const void *pt, size_t n, unsigned char **out, size_t *out_len)
{
	const unsigned char *key = NULL;
	unsigned char *ct = NULL, *buf;
	size_t ct_len = 0;
	int r = sealer_key(sl, rpk, &key);

	if (r == 0)
		r = crypto_aead_seal(key, sl->info, strlen(sl->info), pt, n, &ct, &ct_len);
	if (r < 0)
		return r;
	buf = malloc(CRYPTO_KEY_LEN + ct_len);
	if (!buf) {
		free(ct);
		return err_set(-ENOMEM, "out of memory");
	}
	memcpy(buf, sl->epk, CRYPTO_KEY_LEN);
	memcpy(buf + CRYPTO_KEY_LEN, ct, ct_len);
	free(ct);
	sl->boxes++;
	*out = buf;
	*out_len = CRYPTO_KEY_LEN + ct_len;
	return 0;
}

/* ---- key files and text ------------------------------------------------ */

void crypto_key_to_text(const unsigned char key[CRYPTO_KEY_LEN], char buf[45])
{
	EVP_EncodeBlock((unsigned char *)buf, key, CRYPTO_KEY_LEN);
}

int crypto_key_from_text(const char *text, unsigned char key[CRYPTO_KEY_LEN])
{
	unsigned char *raw = NULL;
	size_t len = 0;
	int r = base64_decode(text, CRYPTO_KEY_LEN, &raw, &len);

	if (r < 0 || len != CRYPTO_KEY_LEN) {
		free(raw);
		return err_set(-EINVAL, "expected a key of 32 bytes in base64 (44 characters)");
	}
	memcpy(key, raw, CRYPTO_KEY_LEN);
	OPENSSL_cleanse(raw, len);
	free(raw);
	return 0;
}

int crypto_key_from_entry(const char *what, const char *entry, const char *seen_in,
			  unsigned char key[CRYPTO_KEY_LEN])
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r;

	if (crypto_key_from_text(entry, key) == 0)
		return 0;
	if (entry[0] != '/' && entry[0] != '.')
		return err_set(-EINVAL, "%s: '%.60s' is neither a base64 Ed25519 public key nor a "
			       "file path", what, entry);
	r = read_file(entry, 4096, &text, &len);
	if (r < 0)
		return err_prefix(r, "%s", what);
	text[strcspn(text, "\r\n")] = '\0';
	if (crypto_key_from_text(text, key) < 0)
		return err_set(-EINVAL, "%s: %s: expected one line of base64 (a 32-byte Ed25519 "
			       "public key, as in %s)", what, entry, seen_in);
	return 0;
}

int crypto_key_load(const char *path, unsigned char key[CRYPTO_KEY_LEN])
{
	_cleanup_free_ char *text = NULL;
	struct stat st;
	size_t n;
	int r;

	if (stat(path, &st) < 0)
		return err_set(-errno, "key file %s: %s", path, strerror(errno));
	if (st.st_mode & 077)
		return err_set(-EPERM, "key file %s: mode %04o lets others read it (chmod 600)", path,
			       (unsigned)(st.st_mode & 07777));
	if ((r = read_file(path, 256, &text, &n)) < 0)
		return err_prefix(r, "key file %s", path);
	text[strcspn(text, "\r\n")] = '\0';
	if ((r = crypto_key_from_text(text, key)) < 0)
		return err_prefix(r, "key file %s", path);
	return 0;
}

int crypto_key_save(const char *path, const unsigned char key[CRYPTO_KEY_LEN])
{
	char text[46];
	int r;

	crypto_key_to_text(key, text);
	text[44] = '\n';
	text[45] = '\0';
	r = write_file_durable(path, text, strlen(text), 0600);
	OPENSSL_cleanse(text, sizeof(text));
	return r < 0 ? err_prefix(r, "key file %s", path) : 0;
}
