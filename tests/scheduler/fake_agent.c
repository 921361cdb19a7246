/*
 * A scripted agent for the scheduler simulation (tests/scheduler/test_sim.sh):
 * reports a host on stratus.metrics, takes commands from stratus.host.NAME
 * over the real bus, and answers like an agent would, without libvirt.
 *
 *   fake_agent NAME LOG [--interval-ms N] [--build-ms N] [--pcpus N]
 *              [--ram-mb N] [--reject-dedicated] [--silent-file PATH]
 *
 * Builds go building -> active after --build-ms (a build it already has is
 * ignored); --reject-dedicated asks for a reschedule of dedicated flavors
 * ("NUMA fit: ..."), as an agent whose re-check fails. While PATH of
 * --silent-file exists it stops reporting (a host going silent). Every
 * command is logged to LOG as "build UUID attempt N", "reject UUID", ...
 */
#define LOG_TAG "fake-agent"
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bus/bus.h"
#include "core/core.h"
#include "core/crypto.h"

#define MAX_INST 256

static volatile sig_atomic_t stopping;

struct inst {
	char uuid[UUID_STRLEN];
	char project[64];
	char rid[UUID_STRLEN];
	int64_t due_ms; /* 0: not pending */
	bool active;
};

struct agent {
	const char *name;
	FILE *log;
	long interval_ms, build_ms, pcpus, ram_mb;
	bool reject_dedicated;
	const char *silent_file;
	struct bus_producer *prod;
	/* its signing key, from its name (a restarted fake agent keeps it) */
	unsigned char sign_priv[32], sign_pub[32];
	char sign_pub_text[48];
	struct inst inst[MAX_INST];
	size_t n;
};

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static void send_event(struct agent *a, const char *type, const char *rid, const char *key,
		       json_t *body)
{
	struct bus_envelope *e = NULL;

	if (bus_envelope_new(type, BUS_TC_EVENTS, a->name, rid, body, &e) < 0) {
		fprintf(stderr, "fake_agent %s: %s\n", a->name, err_msg());
		return;
	}
	if (bus_envelope_sign(e, a->sign_priv, a->sign_pub) < 0 ||
	    bus_produce(a->prod, BUS_TOPIC_EVENTS, key, e) < 0)
		fprintf(stderr, "fake_agent %s: produce: %s\n", a->name, err_msg());
	bus_envelope_free(e);
}

static void send_state(struct agent *a, const struct inst *i, const char *state)
{
	send_event(a, "instance.state", i->rid, i->uuid,
		   json_pack("{s:s, s:s, s:s, s:s}", "uuid", i->uuid, "project", i->project, "host",
			     a->name, "state", state));
}

static void report(struct agent *a)
{
	struct bus_envelope *e = NULL;
	long half = a->pcpus / 2;
	json_t *b = json_pack(
		"{s:s, s:s, s:{s:{s:i, s:i}, s:{s:I}, s:{s:I, s:i}, s:{s:i}, "
		"s:[{s:i, s:I, s:I}, {s:i, s:I, s:I}]}, s:i}",
		"host", a->name, "availability_zone", "az1", "inventory", "VCPU", "total", 4,
		/* a signed envelope carries no reals: 4.0 and 0.5 as thousandths */
		"allocation_ratio_milli", 4000, "PCPU", "total", (json_int_t)a->pcpus, "MEMORY_MB", "total",
		(json_int_t)a->ram_mb, "reserved", 512, "DISK_GB", "total", 200, "numa", "node", 0,
		"pcpus", (json_int_t)half, "memory_mb", (json_int_t)(a->ram_mb / 2), "node", 1,
		"pcpus", (json_int_t)(a->pcpus - half), "memory_mb", (json_int_t)(a->ram_mb / 2),
		"steal_pct_milli", 500);

	/* builds' secrets are sealed to this key (not opened: nothing here reads them) */
	json_object_set_new(b, "box_key", json_string("4LfY9mqpKOK+zTUIYGi0iPyCTcQhVvXiGRXKMFzKJkg="));

	/* and its envelopes are signed with this one, pinned on first use */
	json_object_set_new(b, "sign_key", json_string(a->sign_pub_text));
	if (bus_envelope_new("host.report", BUS_TC_METRICS, a->name, NULL, b, &e) < 0 ||
	    bus_envelope_sign(e, a->sign_priv, a->sign_pub) < 0) {
		bus_envelope_free(e);
		fprintf(stderr, "fake_agent %s: %s\n", a->name, err_msg());
		return;
	}
	bus_produce(a->prod, BUS_TOPIC_METRICS, a->name, e);
	bus_envelope_free(e);
}

static struct inst *find(struct agent *a, const char *uuid)
{
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->inst[i].uuid, uuid) == 0)
			return &a->inst[i];
	return NULL;
}

static int handle(void *opaque, const struct bus_message *m)
{
	struct agent *a = opaque;
	const struct bus_envelope *e = m->env;
	const char *uuid = json_string_value(json_object_get(e->body, "uuid"));
	struct inst *i;

	if (!uuid)
		return 0;
	i = find(a, uuid);
	if (strcmp(e->type, "instance.build") == 0) {
		const char *pol = json_string_value(json_object_get(
			json_object_get(json_object_get(e->body, "flavor"), "extra_specs"),
			"hw:cpu_policy"));
		long attempt = (long)json_integer_value(json_object_get(e->body, "attempt"));
		const char *project = json_string_value(json_object_get(e->body, "project"));

		if (i) {
			fprintf(a->log, "duplicate %s attempt %ld\n", uuid, attempt);
			return 0;
		}
		if (a->reject_dedicated && pol && strcmp(pol, "dedicated") == 0) {
			fprintf(a->log, "reject %s attempt %ld\n", uuid, attempt);
			send_event(a, "instance.reschedule", e->request_id, uuid,
				   json_pack("{s:s, s:s, s:s, s:s, s:i}", "uuid", uuid, "project",
					     project ? project : "", "failed_host", a->name, "reason",
					     "NUMA fit: no node has the pCPUs free", "attempt",
					     (int)attempt));
			return 0;
		}
		if (a->n == MAX_INST)
			return 0;
		i = &a->inst[a->n++];
		memset(i, 0, sizeof(*i));
		snprintf(i->uuid, sizeof(i->uuid), "%s", uuid);
		snprintf(i->project, sizeof(i->project), "%s", project ? project : "");
		snprintf(i->rid, sizeof(i->rid), "%s", e->request_id);
		i->due_ms = time_mono_ms() + a->build_ms;
		fprintf(a->log, "build %s attempt %ld\n", uuid, attempt);
		send_state(a, i, "building");
	} else if (!i) {
		fprintf(a->log, "unknown %s %s\n", e->type, uuid);
	} else if (strcmp(e->type, "instance.delete") == 0) {
		fprintf(a->log, "delete %s\n", uuid);
		send_state(a, i, "deleted");
		*i = a->inst[--a->n];
	} else if (strcmp(e->type, "instance.stop") == 0) {
		send_state(a, i, "stopped");
	} else if (strcmp(e->type, "instance.start") == 0) {
		send_state(a, i, "active");
	} else if (strcmp(e->type, "instance.reboot") == 0) {
		send_state(a, i, "rebooting");
		send_state(a, i, "active");
	} else if (strcmp(e->type, "instance.console") == 0) {
		char text[128];

		/* as the agent answers: the last lines of the serial log */
		snprintf(text, sizeof(text), "serial log of %s on %s", uuid, a->name);
		send_event(a, "request.result", e->request_id, uuid,
			   json_pack("{s:b, s:{s:[s, s]}}", "ok", 1, "data", "lines", text,
				     "login: "));
	}
	fflush(a->log);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "interval-ms", required_argument, NULL, 'i' },
		{ "build-ms", required_argument, NULL, 'b' },
		{ "pcpus", required_argument, NULL, 'p' },
		{ "ram-mb", required_argument, NULL, 'r' },
		{ "reject-dedicated", no_argument, NULL, 'R' },
		{ "silent-file", required_argument, NULL, 's' },
		{ 0 },
	};
	static struct agent a = { .interval_ms = 500, .build_ms = 300, .pcpus = 4, .ram_mb = 16384 };
	/* the mock broker answers idle fetches after fetch.wait.max.ms: keep it short */
	static char *pkeys[] = { (char *)"fetch.wait.max.ms", NULL };
	static char *pvals[] = { (char *)"10", NULL };
	struct bus_config cfg = { .properties = { .keys = pkeys, .vals = pvals, .n = 1 } };
	struct bus_consumer *c = NULL;
	struct bus_consumer_opts co = { 0 };
	const char *topics[2] = { NULL, NULL };
	_cleanup_free_ char *topic = NULL, *group = NULL;
	struct sigaction sa = { .sa_handler = on_signal };
	int64_t last = 0;
	int opt;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		long *dst = opt == 'i' ? &a.interval_ms : opt == 'b' ? &a.build_ms
			  : opt == 'p' ? &a.pcpus : opt == 'r' ? &a.ram_mb : NULL;

		if (opt == 'R')
			a.reject_dedicated = true;
		else if (opt == 's')
			a.silent_file = optarg;
		else if (!dst || parse_long(optarg, 0, 1L << 30, dst) < 0)
			return 2;
	}
	if (argc - optind != 2) {
		fprintf(stderr, "usage: fake_agent NAME LOG [options]\n");
		return 2;
	}
	a.name = argv[optind];
	a.log = fopen(argv[optind + 1], "a");
	if (!a.log)
		return 1;
	setvbuf(a.log, NULL, _IOLBF, 0);
	log_init("fake_agent", false, LOG_LVL_WARN);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	topic = bus_topic_host(a.name);
	if (!topic || asprintf(&group, "stratus-agent-%s", a.name) < 0)
		return 1;
	topics[0] = topic;
	co.group_id = group;
	co.topics = topics;
	co.source = a.name;
	if (crypto_sha256(a.name, strlen(a.name), a.sign_priv) < 0 ||
	    crypto_ed25519_public(a.sign_priv, a.sign_pub) < 0) {
		fprintf(stderr, "fake_agent %s: signing key: %s\n", a.name, err_msg());
		return 1;
	}
	crypto_key_to_text(a.sign_pub, a.sign_pub_text);
	if (bus_producer_new(&cfg, &a.prod) < 0 || bus_consumer_new(&cfg, &co, &c) < 0) {
		fprintf(stderr, "fake_agent %s: %s\n", a.name, err_msg());
		return 1;
	}
	fprintf(a.log, "started %s\n", a.name);
	while (!stopping) {
		int64_t now = time_mono_ms();

		if (now - last >= a.interval_ms) {
			if (!a.silent_file || access(a.silent_file, F_OK) != 0)
				report(&a);
			last = now;
		}
		for (size_t k = 0; k < a.n; k++) {
			if (a.inst[k].due_ms && now >= a.inst[k].due_ms) {
				a.inst[k].due_ms = 0;
				a.inst[k].active = true;
				fprintf(a.log, "active %s\n", a.inst[k].uuid);
				send_state(&a, &a.inst[k], "active");
			}
		}
		bus_consumer_poll(c, 50, handle, &a);
		bus_producer_poll(a.prod, 0);
	}
	bus_consumer_free(c);
	bus_producer_free(a.prod);
	fclose(a.log);
	return 0;
}
