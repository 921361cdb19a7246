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

int bus_envelope_verify(const struct bus_envelope *e, const unsigned char (*keys)[BUS_KEY_LEN],
			size_t n)
{
	const char *kid = json_string_value(json_object_get(e->auth, "key"));
	const char *sig64 = json_string_value(json_object_get(e->auth, "sig"));
	_cleanup_free_ unsigned char *sig = NULL;
	_cleanup_free_ char *canon = NULL;
	size_t sig_len = 0, len;
	int r;

	if (!e->auth)
		return err_set(-EPERM, "unsigned: commands on %s<host> must carry the scheduler's "
			       "signature (auth.key, auth.sig)", BUS_TOPIC_HOST_PREFIX);
	if (!kid || !sig64)
		return err_set(-EPERM, "auth: expected the strings key and sig (a scheduler "
			       "signature), got another auth object");
	for (size_t i = 0; i < n; i++) {
		char id[BUS_KEY_ID_LEN + 1];

		bus_key_id(keys[i], id);
		if (strcmp(id, kid) != 0)
			continue;
		if (base64_decode(sig64, CRYPTO_SIG_LEN, &sig, &sig_len) < 0 ||
		    sig_len != CRYPTO_SIG_LEN)
			return err_set(-EPERM, "auth.sig: not a base64 Ed25519 signature (key %s)",
				       kid);
		r = bus_envelope_canonical(e, &canon, &len);
		if (r < 0)
			return r;
		if (crypto_ed25519_verify(keys[i], canon, len, sig) < 0)
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

const char *const bus_console_secret_fields[] = { "result_key", NULL };

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

int bus_seal_fields(json_t *body, const char *const *fields, const unsigned char rpk[BUS_KEY_LEN],
		    const char *info)
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
	r = crypto_box_seal(rpk, info, text, len, &box, &box_len);
	if (r < 0)
		return err_prefix(r, "sealing %s", info);
	b64 = base64_encode(box, box_len);
	if (!b64)
		return err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; fields[i]; i++)
		json_object_del(body, fields[i]);
	json_object_set_new(body, "sealed", json_string(b64));
	return 0;
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
