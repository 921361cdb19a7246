/*
 * Build requests to ACTIVE through a running stratus-bus + stratus-agent:
 * sends N instance.build commands at once and waits for N active events.
 * Prints builds/s and p50/p99 request-to-active latency, and the agent's
 * own share of it (the sum of its step timings, excluding queueing).
 *
 *   agent_bench -c CONFIG -n 50 -s SPEC.json
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"
#include "core/crypto.h"

#define MAX_N 10000

struct sample {
	char uuid[UUID_STRLEN];
	int64_t sent_ns, active_ns;
	long steps_ms;
	long step_ms[8]; /* per step, in step_names order */
};

/* the build's steps (agent/build.c), for the per-step medians */
static const char *const step_names[] = { "claim", "network", "image", "seed", "define",
					  "start" };
#define N_STEPS (sizeof(step_names) / sizeof(step_names[0]))

struct ctx {
	struct sample *s;
	int n, done, failed;
};

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static int on_event(void *opaque, const struct bus_message *m)
{
	struct ctx *c = opaque;
	const char *uuid, *state;

	if (!m->env)
		return 0;
	uuid = json_string_value(json_object_get(m->env->body, "uuid"));
	if (!uuid)
		return 0;
	for (int i = 0; i < c->n; i++) {
		if (strcmp(c->s[i].uuid, uuid) != 0 || c->s[i].active_ns)
			continue;
		if (strcmp(m->env->type, "instance.reschedule") == 0) {
			fprintf(stderr, "build failed: %s\n",
				json_string_value(json_object_get(m->env->body, "reason")));
			c->failed++;
			c->s[i].active_ns = -1;
			c->done++;
			return 0;
		}
		state = json_string_value(json_object_get(m->env->body, "state"));
		if (!state || strcmp(state, "active") != 0)
			return 0;
		c->s[i].active_ns = time_mono_ns();
		json_t *t = json_object_get(m->env->body, "timings_ms");
		const char *k;
		json_t *v;

		json_object_foreach(t, k, v) {
			if (strcmp(k, "queued") == 0)
				continue;
			c->s[i].steps_ms += (long)json_integer_value(v);
			for (size_t st = 0; st < N_STEPS; st++)
				if (strcmp(k, step_names[st]) == 0)
					c->s[i].step_ms[st] = (long)json_integer_value(v);
		}
		c->done++;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *cfgpath = NULL, *specpath = NULL, *host = "hv1", *keypath = NULL;
	unsigned char sign_key[CRYPTO_KEY_LEN], sign_pub[CRYPTO_KEY_LEN];
	struct bus_config bcfg = { 0 };
	struct log_config lcfg = { 0 };
	struct ctx c = { 0 };
	long n = 50;
	int opt;

	while ((opt = getopt(argc, argv, "c:n:s:H:k:")) != -1) {
		switch (opt) {
		case 'c': cfgpath = optarg; break;
		case 'k': keypath = optarg; break;
		case 's': specpath = optarg; break;
		case 'H': host = optarg; break;
		case 'n':
			if (parse_long(optarg, 1, MAX_N, &n) < 0) {
				fprintf(stderr, "-n: 1 to %d\n", MAX_N);
				return 2;
			}
			break;
		default:
			fprintf(stderr, "usage: agent_bench -c CONFIG -s SPEC.json -k SIGN.key [-n N] [-H HOST]\n");
			return 2;
		}
	}
	if (!cfgpath || !specpath || !keypath) {
		fprintf(stderr, "usage: agent_bench -c CONFIG -s SPEC.json -k SIGN.key [-n N] [-H HOST]\n");
		return 2;
	}
	const struct cfg_section sections[] = {
		{ .name = "bus", .fields = bus_config_fields, .dst = &bcfg },
		{ .name = "log", .fields = log_config_fields, .dst = &lcfg },
		{ 0 },
	};
	if (cfg_load_file(cfgpath, sections) < 0) {
		fprintf(stderr, "%s\n", err_msg());
		return 1;
	}
	log_init("agent_bench", false, LOG_LVL_WARN);
	/* commands are signed as the scheduler signs them (agent.scheduler_keys) */
	if (crypto_key_load(keypath, sign_key) < 0 || crypto_ed25519_public(sign_key, sign_pub) < 0) {
		fprintf(stderr, "-k %s: %s\n", keypath, err_msg());
		return 1;
	}
	json_t *tmpl = json_load_file(specpath, 0, NULL);
	struct bus_producer *p = NULL;
	struct bus_consumer *cons = NULL;
	const char *topics[] = { BUS_TOPIC_EVENTS, NULL };
	struct bus_consumer_opts co = { .topics = topics, .observe = true, .from_end = true };
	char *topic = bus_topic_host(host);

	/* the host topic's leaders known before the clock starts, as in the
	 * scheduler, whose producer lives as long as it does (a new producer's
	 * first message waits for a metadata round) */
	if (!tmpl || !topic || bus_producer_new(&bcfg, &p) < 0 ||
	    bus_producer_prepare(p, topic) < 0 || bus_consumer_new(&bcfg, &co, &cons) < 0) {
		fprintf(stderr, "setup: %s\n", err_msg());
		return 1;
	}
	/* let the observer get its partitions before anything is sent */
	for (int i = 0; i < 50 && !bus_consumer_assigned(cons); i++)
		bus_consumer_poll(cons, 100, on_event, &c);
	bus_consumer_poll(cons, 500, on_event, &c);

	c.n = (int)n;
	c.s = calloc((size_t)n, sizeof(*c.s));
	int64_t t0 = time_mono_ns();

	for (int i = 0; i < c.n; i++) {
		json_t *body = json_deep_copy(tmpl);
		struct bus_envelope *e = NULL;
		char name[32];

		uuid_generate_str(c.s[i].uuid);
		snprintf(name, sizeof(name), "bench-%d", i);
		json_object_set_new(body, "uuid", json_string(c.s[i].uuid));
		json_object_set_new(body, "name", json_string(name));
		json_object_set_new(body, "host", json_string(host)); /* agent_trust_check */
		if (bus_envelope_new("instance.build", BUS_TC_HOST, "agent_bench", NULL, body, &e) < 0 ||
		    bus_envelope_sign(e, sign_key, sign_pub) < 0 || bus_produce(p, topic, c.s[i].uuid, e) < 0) {
			fprintf(stderr, "send: %s\n", err_msg());
			return 1;
		}
		c.s[i].sent_ns = time_mono_ns();
		bus_envelope_free(e);
	}
	bus_producer_flush(p, 5000);
	while (c.done < c.n && time_mono_ns() - t0 < 120LL * 1000000000)
		bus_consumer_poll(cons, 100, on_event, &c);
	int64_t t1 = time_mono_ns();

	if (c.done < c.n || c.failed) {
		fprintf(stderr, "only %d of %d builds became active (%d failed)\n", c.done - c.failed,
			c.n, c.failed);
		return 1;
	}
	static int64_t lat[MAX_N], own[MAX_N];
	int64_t last = 0;

	for (int i = 0; i < c.n; i++) {
		lat[i] = c.s[i].active_ns - c.s[i].sent_ns;
		own[i] = (int64_t)c.s[i].steps_ms * 1000000;
		if (c.s[i].active_ns > last)
			last = c.s[i].active_ns;
	}
	qsort(lat, (size_t)c.n, sizeof(lat[0]), cmp_i64);
	qsort(own, (size_t)c.n, sizeof(own[0]), cmp_i64);
	double secs = (double)(last - t0) / 1e9;

	printf("builds=%d seconds=%.3f builds_per_s=%.1f\n", c.n, secs, c.n / secs);
	printf("request_to_active_ms p50=%.1f p99=%.1f\n", lat[c.n / 2] / 1e6,
	       lat[(c.n * 99) / 100 >= c.n ? c.n - 1 : (c.n * 99) / 100] / 1e6);
	printf("agent_steps_ms p50=%.1f p99=%.1f\n", own[c.n / 2] / 1e6,
	       own[(c.n * 99) / 100 >= c.n ? c.n - 1 : (c.n * 99) / 100] / 1e6);
	printf("agent step p50 ms:");
	for (size_t st = 0; st < N_STEPS; st++) {
		for (int i = 0; i < c.n; i++)
			own[i] = c.s[i].step_ms[st];
		qsort(own, (size_t)c.n, sizeof(own[0]), cmp_i64);
		printf(" %s=%ld", step_names[st], (long)own[c.n / 2]);
	}
	printf("\n");
	(void)t1;
	bus_consumer_free(cons);
	bus_producer_free(p);
	free(topic);
	free(c.s);
	json_decref(tmpl);
	bus_config_free(&bcfg);
	return 0;
}
