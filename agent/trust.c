/*
 * The agent's edge of the trust model (docs/agent.md "Trust"): a command
 * on stratus.host.<host> is done only when the scheduler signed it with a
 * key of agent.scheduler_keys and its ts lies within
 * agent.command_max_age; a build's secrets arrive sealed to this host's
 * X25519 key (<state_dir>/host-box.key, created on first start, 0600),
 * whose public part travels in every host report. Everything the agent
 * publishes is signed with its Ed25519 key (<state_dir>/host-sign.key,
 * created the same way, its public part beside it in host-sign.pub); the
 * public part is the report's sign_key, which the scheduler pins.
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent_priv.h"
#include "core/crypto.h"

/* One agent.scheduler_keys entry: base64 key text, or a file holding it. */
static int load_sched_key(const char *entry, size_t i, unsigned char key[AGENT_KEY_LEN])
{
	char what[64];

	snprintf(what, sizeof(what), "agent.scheduler_keys[%zu]", i);
	return crypto_key_from_entry(what, entry, "scheduler-sign.pub", key);
}

/* <DIR>/<NAME>: loaded, or created with GEN on first start (mode 0600). */
static int host_key(const char *dir, const char *name, const char *what,
		    int (*gen)(unsigned char *pub, unsigned char *priv),
		    int (*pub_of)(const unsigned char *priv, unsigned char *pub),
		    unsigned char priv[AGENT_KEY_LEN], unsigned char pub[AGENT_KEY_LEN])
{
	_cleanup_free_ char *path = NULL;
	int r;

	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return err_set(-ENOMEM, "out of memory");
	r = crypto_key_load(path, priv);
	if (r == -ENOENT) {
		r = gen(pub, priv);
		if (r == 0)
			r = crypto_key_save(path, priv);
		if (r == 0)
			log_info("created the host's %s key file=%s", what, path);
	} else if (r == 0) {
		r = pub_of(priv, pub);
	}
	if (r < 0)
		return err_prefix(r, "host %s key %s", what, path);
	return 0;
}

/* <state_dir>/host-sign.pub (0644): for the scheduler's host_keys. */
static int write_sign_pub(const struct agent *a)
{
	_cleanup_free_ char *path = NULL;
	char text[64];
	size_t n;
	int r;

	if (asprintf(&path, "%s/host-sign.pub", a->cfg->state_dir) < 0)
		return err_set(-ENOMEM, "out of memory");
	n = (size_t)snprintf(text, sizeof(text), "%s\n", a->sign_pub_text);
	r = write_file_durable(path, text, n, 0644);
	return r < 0 ? err_prefix(r, "host signing key %s", path) : 0;
}

int agent_trust_open(struct agent *a)
{
	const struct cfg_strlist *keys = &a->cfg->scheduler_keys;
	int r;

	if (keys->n) {
		a->sched_keys = calloc(keys->n, sizeof(*a->sched_keys));
		if (!a->sched_keys)
			return err_set(-ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < keys->n; i++) {
		char id[BUS_KEY_ID_LEN + 1];

		r = load_sched_key(keys->v[i], i, a->sched_keys[i]);
		if (r < 0)
			return r;
		bus_key_id(a->sched_keys[i], id);
		log_info("trusting scheduler key key=%s", id);
	}
	a->n_sched_keys = keys->n;
	if (!keys->n)
		log_warn("agent.scheduler_keys is empty: every command on %s will be refused",
			 a->topic);
	r = host_key(a->cfg->state_dir, "host-box.key", "box", crypto_x25519_keygen,
		     crypto_x25519_public, a->box_priv, a->box_pub);
	if (r == 0)
		r = host_key(a->cfg->state_dir, "host-sign.key", "signing", crypto_ed25519_keygen,
			     crypto_ed25519_public, a->sign_priv, a->sign_pub);
	if (r < 0)
		return r;
	crypto_key_to_text(a->box_pub, a->box_pub_text);
	crypto_key_to_text(a->sign_pub, a->sign_pub_text);
	return write_sign_pub(a);
}

void agent_trust_close(struct agent *a)
{
	free(a->sched_keys);
	a->sched_keys = NULL;
	a->n_sched_keys = 0;
	explicit_bzero(a->box_priv, sizeof(a->box_priv));
	explicit_bzero(a->sign_priv, sizeof(a->sign_priv));
}

int agent_trust_sign(struct agent *a, struct bus_envelope *e)
{
	return bus_envelope_sign(e, a->sign_priv, a->sign_pub);
}

int agent_trust_check(struct agent *a, const struct bus_envelope *e, int64_t now_ms)
{
	int64_t ts_ms, max = a->cfg->command_max_age_ms;
	const char *to;
	int r;

	if (!a->n_sched_keys)
		return err_set(-EPERM, "no scheduler key is configured (agent.scheduler_keys)");
	r = bus_envelope_verify(e, (const unsigned char (*)[BUS_KEY_LEN])a->sched_keys,
				a->n_sched_keys);
	if (r < 0)
		return r;
	to = json_string_value(json_object_get(e->body, "host"));
	if (!to || strcmp(to, a->cfg->host) != 0)
		return err_set(-EPERM, "addressed to host '%.64s', not to this host (%s)",
			       to ? to : "(none: body.host missing)", a->cfg->host);
	r = bus_envelope_ts_ms(e, &ts_ms);
	if (r < 0)
		return err_set(-EPERM, "%s", err_msg());
	if (max > 0 && now_ms - ts_ms > max)
		return err_set(-EPERM, "stale: ts %s is older than agent.command_max_age (%llds): "
			       "a replay, or a command held back", e->ts, (long long)(max / 1000));
	if (max > 0 && ts_ms - now_ms > max)
		return err_set(-EPERM, "ts %s lies more than agent.command_max_age (%llds) in the "
			       "future", e->ts, (long long)(max / 1000));
	return 0;
}

int agent_trust_open_build(struct agent *a, json_t *body)
{
	int r = bus_open_sealed(body, bus_build_secret_fields, a->box_priv, BUS_SEAL_BUILD);

	if (r < 0)
		return err_prefix(r, "instance.build %s",
				  json_string_value(json_object_get(body, "uuid")));
	return 0;
}
