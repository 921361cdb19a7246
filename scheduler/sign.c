/*
 * The scheduler's keys (docs/scheduler.md "Keys"): an Ed25519 key that
 * signs every command to stratus.host.<host>, and an X25519 key that
 * clients seal a boot's secrets to. Both are created on first start in
 * scheduler.key_dir (default: the state database's directory), private
 * parts mode 0600, public parts beside them as .pub files (0644) for
 * operators to hand to agents (agent.scheduler_keys) and clients.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>

#include "core/crypto.h"
#include "scheduler/sched_priv.h"

_Static_assert(SCHED_KEY_LEN == CRYPTO_KEY_LEN, "one key length");

#define SCHED_SEAL_EPOCH_MS (10 * 60 * 1000) /* a new ephemeral pair every 10 minutes */
#define SCHED_SEAL_EPOCH_BOXES (1L << 20)    /* or after this many builds */

static char *key_dir(const struct sched_config *cfg)
{
	_cleanup_free_ char *copy = NULL;

	if (cfg->key_dir && *cfg->key_dir)
		return strdup(cfg->key_dir);
	copy = strdup(cfg->state_path ? cfg->state_path : ".");
	return copy ? strdup(dirname(copy)) : NULL;
}

static int write_pub(const char *path, const unsigned char pub[SCHED_KEY_LEN])
{
	char text[64];
	size_t n;

	crypto_key_to_text(pub, text);
	n = strlen(text);
	text[n++] = '\n';
	return write_file_durable(path, text, n, 0644);
}

/* DIR/NAME.key (created with gen when missing) and DIR/NAME.pub. */
static int key_pair(const char *dir, const char *name,
		    int (*gen)(unsigned char *pub, unsigned char *priv),
		    int (*pub_of)(const unsigned char *priv, unsigned char *pub),
		    unsigned char priv[SCHED_KEY_LEN], unsigned char pub[SCHED_KEY_LEN])
{
	_cleanup_free_ char *kpath = NULL, *ppath = NULL;
	int r;

	if (asprintf(&kpath, "%s/%s.key", dir, name) < 0 ||
	    asprintf(&ppath, "%s/%s.pub", dir, name) < 0)
		return err_set(-ENOMEM, "out of memory");
	r = crypto_key_load(kpath, priv);
	if (r == -ENOENT) {
		r = gen(pub, priv);
		if (r == 0)
			r = crypto_key_save(kpath, priv);
		if (r == 0)
			log_info("created key file=%s", kpath);
	} else if (r == 0) {
		r = pub_of(priv, pub);
	}
	if (r == 0)
		r = write_pub(ppath, pub);
	if (r < 0)
		return err_prefix(r, "scheduler key %s", kpath);
	return 0;
}

int sched_keys_open(const struct sched_config *cfg, struct sched_keys *out)
{
	_cleanup_free_ char *dir = key_dir(cfg);
	struct sched_keys k;
	int r;

	if (!dir)
		return err_set(-ENOMEM, "out of memory");
	r = mkdir_p(dir, 0750);
	if (r < 0)
		return err_sys(r, "scheduler keys: creating %s", dir);
	r = key_pair(dir, "scheduler-sign", crypto_ed25519_keygen, crypto_ed25519_public,
		     k.sign_priv, k.sign_pub);
	if (r == 0)
		r = key_pair(dir, "scheduler-box", crypto_x25519_keygen, crypto_x25519_public,
			     k.box_priv, k.box_pub);
	if (r < 0)
		return r;
	bus_key_id(k.sign_pub, k.key_id);
	*out = k;
	return 0;
}

json_t *sched_keys_json(const struct sched_keys *k)
{
	char sign[64], box[64];

	crypto_key_to_text(k->sign_pub, sign);
	crypto_key_to_text(k->box_pub, box);
	return json_pack("{s:s, s:s, s:s}", "sign_key", sign, "key_id", k->key_id, "box_key", box);
}

int sched_keys_print(const struct sched_config *cfg, FILE *f)
{
	struct sched_keys k;
	_cleanup_free_ char *dir = key_dir(cfg);
	char sign[64], box[64];
	int r = sched_keys_open(cfg, &k);

	if (r < 0)
		return r;
	crypto_key_to_text(k.sign_pub, sign);
	crypto_key_to_text(k.box_pub, box);
	fprintf(f, "sign_key: %s\nkey_id: %s\nbox_key: %s\nsign_key_file: %s/scheduler-sign.pub\n"
		"box_key_file: %s/scheduler-box.pub\n", sign, k.key_id, box, dir ? dir : "?",
		dir ? dir : "?");
	explicit_bzero(&k, sizeof(k));
	return 0;
}

/* M's envelope, unsigned; *sign: whether it must carry our signature
 * (every command to a host, and our own instance.state and
 * instance.migration events: pins.c tells them from a host's). */
static int msg_envelope(const struct sched_msg *m, struct bus_envelope **out, bool *sign)
{
	enum bus_topic_class tc;
	int r = bus_topic_classify(m->topic, &tc);

	if (r == 0)
		r = bus_envelope_new(m->type, tc, "stratus-scheduler",
				     m->request_id[0] ? m->request_id : NULL, json_incref(m->body), out);
	if (r == 0)
		*sign = tc == BUS_TC_HOST || strcmp(m->type, "instance.state") == 0 ||
			strcmp(m->type, "instance.migration") == 0;
	return r;
}

int sched_msg_envelope(const struct sched *s, const struct sched_msg *m,
		       struct bus_envelope **out)
{
	struct bus_envelope *e = NULL;
	bool sign = false;
	int r = msg_envelope(m, &e, &sign);

	if (r == 0 && sign)
		r = bus_envelope_sign(e, s->keys.sign_priv, s->keys.sign_pub);
	if (r < 0) {
		bus_envelope_free(e);
		return r;
	}
	*out = e;
	return 0;
}

int sched_out_envelopes_new(const struct sched_out *out, struct bus_envelope **v, bool *sign)
{
	for (size_t i = 0; i < out->n; i++) {
		v[i] = NULL;
		sign[i] = false;
		if (msg_envelope(&out->v[i], &v[i], &sign[i]) < 0)
			log_error("not sent type=%s topic=%s: %s", out->v[i].type, out->v[i].topic,
				  err_msg());
	}
	return 0;
}

int sched_envelopes_sign(const struct sched *s, struct bus_envelope **v, const bool *sign,
			 size_t n)
{
	_cleanup_free_ struct bus_envelope **batch = calloc(n ? n : 1, sizeof(*batch));
	size_t k = 0;

	if (!batch)
		return err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		if (v[i] && sign[i])
			batch[k++] = v[i];
	return bus_envelopes_sign(batch, k, s->keys.sign_priv, s->keys.sign_pub);
}

int sched_out_envelopes(const struct sched *s, const struct sched_out *out,
			struct bus_envelope **v)
{
	_cleanup_free_ bool *sign = calloc(out->n ? out->n : 1, sizeof(*sign));
	int r = sign ? sched_out_envelopes_new(out, v, sign) : err_set(-ENOMEM, "out of memory");

	if (r == 0)
		r = sched_envelopes_sign(s, v, sign, out->n);
	if (r < 0 && sign)
		for (size_t i = 0; i < out->n; i++) {
			bus_envelope_free(v[i]);
			v[i] = NULL;
		}
	return r;
}

/* instance.boot's secrets, sealed by the client to our box key, opened in
 * place; the body is checked against the schema again with them. */
int sched_open_boot(const struct sched *s, json_t *body)
{
	int r;

	if (!json_object_get(body, "sealed"))
		return 0;
	r = bus_open_sealed(body, bus_build_secret_fields, s->keys.box_priv, BUS_SEAL_BOOT);
	if (r == 0)
		r = bus_validate("instance.boot", BUS_TC_API, body);
	return r;
}

/*
 * instance.build's secrets sealed to H's box key (from its report), through
 * the scheduler's build sealer: one ephemeral X25519 pair per epoch
 * (SCHED_SEAL_EPOCH_MS, SCHED_SEAL_EPOCH_BOXES) and one key agreement per
 * host per epoch, not two X25519 operations per build (docs/scheduler.md
 * "Where the time goes"); the agent opens them as any sealed box.
 */
int sched_seal_build(struct sched *s, const struct sched_host *h, json_t *body)
{
	if (!h->has_box_key)
		return err_set(-ENOKEY, "host %s: its report carries no box_key: the build's "
			       "secrets cannot be sealed to it", h->name);
	if (!s->build_sealer) {
		int r = crypto_sealer_new(BUS_SEAL_BUILD, SCHED_SEAL_EPOCH_MS, SCHED_SEAL_EPOCH_BOXES,
					  &s->build_sealer);

		if (r < 0)
			return r;
	}
	return bus_seal_fields_with(body, bus_build_secret_fields, s->build_sealer, h->box_key);
}

int sched_on_keys(struct sched *s, struct sched_call *c)
{
	json_t *data = sched_keys_json(&s->keys);

	if (!data)
		return err_set(-ENOMEM, "out of memory");
	return sched_accept(s, c, NULL, data);
}
