/*
 * Signed commands and sealed fields (docs/bus.md "Signed commands" and
 * "Sealed fields"): what the scheduler writes to stratus.host.<host> is
 * signed with its Ed25519 key over the envelope's canonical bytes; a
 * message's secret fields travel as one sealed box ("sealed") to the
 * reader's X25519 key. One implementation for the scheduler (signs,
 * seals builds, opens boots), the agent (verifies, opens builds) and
 * stratusctl (seals boots; bus send --sign-key).
 */
#define LOG_TAG "bus"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bus/bus.h"
#include "core/crypto.h"

_Static_assert(BUS_KEY_LEN == CRYPTO_KEY_LEN, "one key length");

const char *const bus_build_secret_fields[] = { "user_data", "ssh_keys", "metadata", NULL };

void bus_key_id(const unsigned char pub[BUS_KEY_LEN], char out[BUS_KEY_ID_LEN + 1])
{
	unsigned char h[32];

	if (crypto_sha256(pub, BUS_KEY_LEN, h) < 0)
		memset(h, 0, sizeof(h));
	for (int i = 0; i < BUS_KEY_ID_LEN / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
	out[BUS_KEY_ID_LEN] = '\0';
}

int bus_envelope_sign(struct bus_envelope *e, const unsigned char priv[BUS_KEY_LEN],
		      const unsigned char pub[BUS_KEY_LEN])
{
	unsigned char sig[CRYPTO_SIG_LEN];
	_cleanup_free_ char *canon = NULL, *sig64 = NULL;
	char id[BUS_KEY_ID_LEN + 1];
	size_t len;
	json_t *auth;
	int r;

	r = bus_envelope_set_auth(e, NULL);
	if (r == 0)
		r = bus_envelope_canonical(e, &canon, &len);
	if (r == 0)
		r = crypto_ed25519_sign(priv, canon, len, sig);
	if (r < 0)
		return err_prefix(r, "signing envelope %s", e->id);
	bus_key_id(pub, id);
	sig64 = base64_encode(sig, sizeof(sig));
	auth = sig64 ? json_pack("{s:s, s:s}", "key", id, "sig", sig64) : NULL;
	if (!auth)
		return err_set(-ENOMEM, "out of memory");
	return bus_envelope_set_auth(e, auth); /* takes auth */
}

/* ---- batches: one signature over a tree of envelopes -------------------- */

#define HASH_LEN 32

static int leaf_hash(const struct bus_envelope *e, unsigned char out[HASH_LEN])
{
	_cleanup_free_ char *canon = NULL;
	size_t len;
	int r = bus_envelope_canonical(e, &canon, &len);

	return r < 0 ? r : crypto_sha256_2("\0", 1, canon, len, out);
}

static int node_hash(const unsigned char *l, const unsigned char *rt, unsigned char out[HASH_LEN])
{
	unsigned char lr[2 * HASH_LEN];

	memcpy(lr, l, HASH_LEN);
	memcpy(lr + HASH_LEN, rt, HASH_LEN);
	return crypto_sha256_2("\1", 1, lr, sizeof(lr), out);
}

/* What a batch's signature covers: domain, 0, N big endian, root. */
static void batch_message(size_t n, const unsigned char root[HASH_LEN],
			  unsigned char msg[sizeof(BUS_BATCH_DOMAIN) + 4 + HASH_LEN])
{
	memcpy(msg, BUS_BATCH_DOMAIN, sizeof(BUS_BATCH_DOMAIN)); /* with its 0 */
	msg += sizeof(BUS_BATCH_DOMAIN);
	for (int i = 0; i < 4; i++)
		msg[i] = (unsigned char)(n >> (8 * (3 - i)));
	memcpy(msg + 4, root, HASH_LEN);
}

/* One batch of 2..BUS_BATCH_LEAVES envelopes. */
static int sign_batch(struct bus_envelope **v, size_t n, const unsigned char priv[BUS_KEY_LEN],
		      const char *kid)
{
	/* every level, leaves first: n + ceil(n / 2) + ... < 2n + one per level */
	unsigned char (*t)[HASH_LEN] = calloc(2 * n + 16, HASH_LEN);
	unsigned char msg[sizeof(BUS_BATCH_DOMAIN) + 4 + HASH_LEN], sig[CRYPTO_SIG_LEN];
	_cleanup_free_ char *sig64 = NULL;
	size_t at = 0, m = n;
	int r = t ? 0 : err_set(-ENOMEM, "out of memory");

	for (size_t i = 0; r == 0 && i < n; i++)
		if ((r = bus_envelope_set_auth(v[i], NULL)) == 0)
			r = leaf_hash(v[i], t[i]);
	for (; r == 0 && m > 1; at += m, m = (m + 1) / 2) {
		for (size_t i = 0; r == 0 && i + 1 < m; i += 2)
			r = node_hash(t[at + i], t[at + i + 1], t[at + m + i / 2]);
		if (m % 2) /* the odd last node goes up unchanged */
			memcpy(t[at + m + m / 2], t[at + m - 1], HASH_LEN);
	}
	if (r == 0) {
		batch_message(n, t[at], msg);
		r = crypto_ed25519_sign(priv, msg, sizeof(msg), sig);
	}
	if (r == 0 && !(sig64 = base64_encode(sig, sizeof(sig))))
		r = err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < n; i++) {
		unsigned char path[16 * HASH_LEN];
		_cleanup_free_ char *path64 = NULL;
		char pos[32];
		size_t np = 0, k = i;
		json_t *auth;

		for (at = 0, m = n; m > 1; at += m, m = (m + 1) / 2, k /= 2)
			if ((k ^ 1) < m)
				memcpy(path + HASH_LEN * np++, t[at + (k ^ 1)], HASH_LEN);
		snprintf(pos, sizeof(pos), "%zu/%zu", i, n);
		path64 = base64_encode(path, np * HASH_LEN);
		auth = path64 ? json_pack("{s:s, s:s, s:s, s:s}", "key", kid, "sig", sig64, "batch",
					  pos, "path", path64) : NULL;
		r = auth ? bus_envelope_set_auth(v[i], auth) : err_set(-ENOMEM, "out of memory");
	}
	free(t);
	return r;
}

int bus_envelopes_sign(struct bus_envelope **v, size_t n, const unsigned char priv[BUS_KEY_LEN],
		       const unsigned char pub[BUS_KEY_LEN])
{
	char kid[BUS_KEY_ID_LEN + 1];
	int r = 0;

	bus_key_id(pub, kid);
	for (size_t at = 0; r == 0 && at < n; at += BUS_BATCH_LEAVES) {
		size_t k = n - at < BUS_BATCH_LEAVES ? n - at : BUS_BATCH_LEAVES;

		r = k == 1 ? bus_envelope_sign(v[at], priv, pub) : sign_batch(v + at, k, priv, kid);
	}
	return r < 0 ? err_prefix(r, "signing a batch of %zu envelopes", n) : 0;
}

/* "I/N" with I < N <= BUS_BATCH_LEAVES. */
static int batch_pos(const char *s, size_t *i, size_t *n)
{
	long a, b;
	char *end;

	errno = 0;
	a = strtol(s, &end, 10);
	if (end == s || *end != '/' || errno)
		return -EINVAL;
	s = end + 1;
	b = strtol(s, &end, 10);
	if (end == s || *end || errno || a < 0 || b < 2 || a >= b || b > BUS_BATCH_LEAVES)
		return -EINVAL;
	*i = (size_t)a;
	*n = (size_t)b;
	return 0;
}

/* The batch root of E from its leaf and auth.path (-EPERM: malformed). */
static int batch_root(const struct bus_envelope *e, const char *pos, const char *path64,
		      size_t *n_out, unsigned char root[HASH_LEN])
{
	_cleanup_free_ unsigned char *path = NULL;
	unsigned char h[HASH_LEN];
	size_t i, n, m, len = 0, used = 0;
	int r;

	if (batch_pos(pos, &i, &n) < 0)
		return err_set(-EPERM, "auth.batch '%.20s': expected I/N, 0 <= I < N, "
			       "2 <= N <= %d", pos, BUS_BATCH_LEAVES);
	if (base64_decode(path64, 16 * HASH_LEN, &path, &len) < 0 || len % HASH_LEN)
		return err_set(-EPERM, "auth.path: not base64 of 32-byte hashes");
	r = leaf_hash(e, h);
	for (m = n; r == 0 && m > 1; m = (m + 1) / 2, i /= 2) {
		if ((i ^ 1) >= m)
			continue; /* the odd last node: up unchanged */
		if (used + HASH_LEN > len)
			return err_set(-EPERM, "auth.path: too short for position %s", pos);
		r = i & 1 ? node_hash(path + used, h, h) : node_hash(h, path + used, h);
		used += HASH_LEN;
	}
	if (r < 0)
		return r;
	if (used != len)
		return err_set(-EPERM, "auth.path: too long for position %s", pos);
	memcpy(root, h, HASH_LEN);
	*n_out = n;
	return 0;
}

int bus_envelope_verify(const struct bus_envelope *e, const unsigned char (*keys)[BUS_KEY_LEN],
			size_t n)
{
	const char *kid = json_string_value(json_object_get(e->auth, "key"));
	const char *sig64 = json_string_value(json_object_get(e->auth, "sig"));
	const char *pos = json_string_value(json_object_get(e->auth, "batch"));
	const char *path64 = json_string_value(json_object_get(e->auth, "path"));
	unsigned char msg[sizeof(BUS_BATCH_DOMAIN) + 4 + HASH_LEN], root[HASH_LEN];
	_cleanup_free_ unsigned char *sig = NULL;
	_cleanup_free_ char *canon = NULL;
	size_t sig_len = 0, len, leaves = 0;
	int r;

	if (!e->auth)
		return err_set(-EPERM, "unsigned: commands on %s<host> must carry the scheduler's "
			       "signature (auth.key, auth.sig)", BUS_TOPIC_HOST_PREFIX);
	if (!kid || !sig64 || !pos != !path64)
		return err_set(-EPERM, "auth: expected the strings key and sig (and batch with "
			       "path: a scheduler signature), got another auth object");
	for (size_t i = 0; i < n; i++) {
		char id[BUS_KEY_ID_LEN + 1];

		bus_key_id(keys[i], id);
		if (strcmp(id, kid) != 0)
			continue;
		if (base64_decode(sig64, CRYPTO_SIG_LEN, &sig, &sig_len) < 0 ||
		    sig_len != CRYPTO_SIG_LEN)
			return err_set(-EPERM, "auth.sig: not a base64 Ed25519 signature (key %s)",
				       kid);
		if (pos) {
			r = batch_root(e, pos, path64, &leaves, root);
			if (r < 0)
				return r;
			batch_message(leaves, root, msg);
			r = crypto_ed25519_verify(keys[i], msg, sizeof(msg), sig);
		} else {
			r = bus_envelope_canonical(e, &canon, &len);
			if (r < 0)
				return r;
			r = crypto_ed25519_verify(keys[i], canon, len, sig);
		}
		if (r < 0)
			return err_set(-EPERM, "bad signature by key %s: the envelope was changed "
				       "after signing, or forged", kid);
		return 0;
	}
	return err_set(-EPERM, "signed by key %.32s, which is not a trusted scheduler key "
		       "(agent.scheduler_keys)", kid);
}

int bus_envelope_ts_ms(const struct bus_envelope *e, int64_t *out)
{
	struct tm tm;
	const char *p;
	long ms = 0, off = 0;

	memset(&tm, 0, sizeof(tm));
	p = strptime(e->ts, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return err_set(-EINVAL, "ts '%s': not RFC 3339", e->ts);
	if (*p == '.') {
		long scale = 100;

		for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
			ms += scale > 0 ? (*p - '0') * scale : 0;
	}
	if ((*p == '+' || *p == '-') && strlen(p) == 6)
		off = (p[0] == '-' ? -1 : 1) *
		      (((p[1] - '0') * 10 + (p[2] - '0')) * 3600L + ((p[4] - '0') * 10 + (p[5] - '0')) * 60L);
	else if (*p != 'Z' && *p != 'z')
		return err_set(-EINVAL, "ts '%s': not RFC 3339", e->ts);
	*out = ((int64_t)timegm(&tm) - off) * 1000 + ms;
	return 0;
}

/* ---- sealed fields -------------------------------------------------------- */

const char *const bus_console_secret_fields[] = { "result_key", "token", NULL };

json_t *bus_result_sealed(const unsigned char key[BUS_KEY_LEN], const char *rid, json_t *data)
{
	_cleanup_free_ char *text = json_dumps(data ? data : json_null(),
					       JSON_COMPACT | JSON_ENCODE_ANY);
	_cleanup_free_ unsigned char *ct = NULL;
	_cleanup_free_ char *b64 = NULL;
	size_t n;

	json_decref(data);
	if (!text || crypto_aead_seal(key, rid, strlen(rid), text, strlen(text), &ct, &n) < 0)
		return NULL;
	b64 = base64_encode(ct, n);
	return b64 ? json_pack("{s:b, s:s}", "ok", true, "sealed", b64) : NULL;
}

/* BODY's FIELDS sealed: through SL when given, else a box of its own. */
static int seal_fields(json_t *body, const char *const *fields, struct crypto_sealer *sl,
		       const unsigned char rpk[BUS_KEY_LEN], const char *info)
{
	_cleanup_free_ unsigned char *box = NULL;
	_cleanup_free_ char *text = NULL, *b64 = NULL;
	json_t *secrets = json_object();
	size_t len, box_len;
	int r;

	if (!secrets)
		return err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; fields[i]; i++) {
		json_t *v = json_object_get(body, fields[i]);

		if (v)
			json_object_set(secrets, fields[i], v);
	}
	if (json_object_size(secrets) == 0) {
		json_decref(secrets);
		return 0; /* nothing secret: nothing sealed */
	}
	text = json_dumps(secrets, JSON_COMPACT);
	json_decref(secrets);
	if (!text)
		return err_set(-ENOMEM, "out of memory");
	len = strlen(text);
	r = sl ? crypto_sealer_seal(sl, rpk, text, len, &box, &box_len)
	       : crypto_box_seal(rpk, info, text, len, &box, &box_len);
	explicit_bzero(text, len);
	if (r < 0)
		return err_prefix(r, "sealing %s", info ? info : "secrets");
	b64 = base64_encode(box, box_len);
	if (!b64)
		return err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; fields[i]; i++)
		json_object_del(body, fields[i]);
	json_object_set_new(body, "sealed", json_string(b64));
	return 0;
}

int bus_seal_fields(json_t *body, const char *const *fields, const unsigned char rpk[BUS_KEY_LEN],
		    const char *info)
{
	return seal_fields(body, fields, NULL, rpk, info);
}

int bus_seal_fields_with(json_t *body, const char *const *fields, struct crypto_sealer *sl,
			 const unsigned char rpk[BUS_KEY_LEN])
{
	return seal_fields(body, fields, sl, rpk, NULL);
}

int bus_open_sealed(json_t *body, const char *const *fields, const unsigned char rsk[BUS_KEY_LEN],
		    const char *info)
{
	const char *b64 = json_string_value(json_object_get(body, "sealed"));
	_cleanup_free_ unsigned char *box = NULL, *pt = NULL;
	size_t box_len, pt_len;
	json_t *secrets, *v;
	const char *k;
	int r;

	if (!json_object_get(body, "sealed"))
		return 0;
	if (!b64 || base64_decode(b64, BUS_MAX_MESSAGE, &box, &box_len) < 0)
		return err_set(-EINVAL, "sealed: expected a base64 sealed box");
	if (crypto_box_open(rsk, info, box, box_len, &pt, &pt_len) < 0)
		return err_set(-EBADMSG, "sealed: the box does not open (tampered, or sealed to "
			       "another key than this one)");
	secrets = json_loadb((const char *)pt, pt_len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(secrets)) {
		json_decref(secrets);
		return err_set(-EINVAL, "sealed: the box does not hold a JSON object");
	}
	r = 0;
	json_object_foreach(secrets, k, v) {
		bool allowed = false;

		for (size_t i = 0; fields[i]; i++)
			allowed = allowed || strcmp(fields[i], k) == 0;
		if (!allowed)
			r = err_set(-EINVAL, "sealed: field '%.64s' may not be sealed", k);
		else if (json_object_get(body, k))
			r = err_set(-EINVAL, "sealed: field '%s' is also given in clear", k);
		if (r < 0)
			break;
	}
	if (r == 0) {
		json_object_update(body, secrets);
		json_object_del(body, "sealed");
	}
	json_decref(secrets);
	return r;
}
