/*
 * bench_bus: envelopes through the bus, end to end, on whatever broker the
 * address file (or $STRATUS_BUS_ADDR_FILE) names.
 *
 *   bench_bus [-L] [-n COUNT] [-r RATE] [-s SECONDS] [-z BYTES] [-w FETCH_WAIT_MS]
 *
 * -w sets the consumer's fetch.wait.max.ms (bus.properties); 0 keeps the
 * default. -L runs the latency phase only.
 *
 * Phase 1 (throughput): COUNT envelopes of about BYTES (1 KiB) each, built
 * and validated (bus_envelope_new), serialized and produced as fast as the
 * producer takes them; a consumer in another thread parses and validates
 * each (bus_consumer_poll). Prints envelopes/s from the first send to the
 * last receive.
 * Phase 2 (latency): RATE envelopes/s for SECONDS; prints p50/p99/max of
 * produce-to-consume latency (monotonic clock, same process).
 * Output lines start with "bus " so that run.sh can pick them up.
 */
#define LOG_TAG "bench"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus.h"

struct phase {
	char run[UUID_STRLEN];   /* only this phase's envelopes count */
	long want;
	long got;                /* atomic */
	int64_t *lat_ns;         /* per seq */
	int64_t last_ns;
	bool warm;               /* a warm-up envelope arrived */
};

#define WINDOW 8000 /* envelopes in flight: about 2 MiB per partition of 4 */

static struct phase *cur;
static char *pad;
static volatile int stop_consumer;
static struct bus_config cfg, ccfg; /* producer's, consumer's */

static int handle(void *opaque, const struct bus_message *m)
{
	const json_t *b = m->env->body;
	const char *run = json_string_value(json_object_get(b, "run"));
	long seq = (long)json_integer_value(json_object_get(b, "seq"));
	int64_t sent = json_integer_value(json_object_get(b, "sent_ns"));
	struct phase *p = __atomic_load_n(&cur, __ATOMIC_ACQUIRE);
	int64_t now = time_mono_ns();

	(void)opaque;
	if (!p || !run || strcmp(run, p->run) != 0)
		return 0;
	if (seq < 0) {
		__atomic_store_n(&p->warm, true, __ATOMIC_RELEASE);
		return 0;
	}
	if (seq < p->want && p->lat_ns[seq] == 0) {
		p->lat_ns[seq] = now - sent;
		p->last_ns = now;
		__atomic_add_fetch(&p->got, 1, __ATOMIC_ACQ_REL);
	}
	return 0;
}

static void *consumer_main(void *arg)
{
	struct bus_consumer *c = arg;

	while (!stop_consumer)
		if (bus_consumer_poll(c, 100, handle, NULL) < 0) {
			fprintf(stderr, "consumer: %s\n", err_msg());
			break;
		}
	return NULL;
}


/* one host.report of about the wanted size; seq < 0 = warm-up */
static int send_one(struct bus_producer *p, const struct phase *ph, long seq)
{
	struct bus_envelope *e = NULL;
	char key[32];
	json_t *body;
	int r;

	body = json_pack("{s:s, s:s, s:I, s:I, s:s}", "host", "bench-host", "run", ph->run, "seq",
			 (json_int_t)seq, "sent_ns", (json_int_t)time_mono_ns(), "pad", pad);
	r = bus_envelope_new("host.report", BUS_TC_METRICS, "bench", NULL, body, &e);
	if (r < 0)
		return r;
	snprintf(key, sizeof(key), "bench-%ld", seq & 3); /* spread over the partitions */
	r = bus_produce(p, BUS_TOPIC_METRICS, key, e);
	bus_envelope_free(e);
	return r;
}

/* serialized length of the envelope send_one would build for seq */
static size_t envelope_len(const struct phase *ph, long seq)
{
	struct bus_envelope *e = NULL;
	char *s = NULL;
	size_t len = 0;
	json_t *b = json_pack("{s:s, s:s, s:I, s:I, s:s}", "host", "bench-host", "run", ph->run,
			      "seq", (json_int_t)seq, "sent_ns", (json_int_t)time_mono_ns(), "pad",
			      pad ? pad : "");

	if (bus_envelope_new("host.report", BUS_TC_METRICS, "bench", NULL, b, &e) == 0 &&
	    bus_envelope_serialize(e, &s, &len) == 0)
		free(s);
	bus_envelope_free(e);
	return len;
}

/* CPU per envelope on one core, no bus: build+validate+serialize, then
 * parse+validate. What bounds the end-to-end rate on a small machine. */
static void cpu_costs(long n)
{
	struct phase ph = { .run = "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d" };
	char *s = NULL;
	size_t len = 0;
	int64_t t0, t1, t2;

	t0 = time_mono_ns();
	for (long i = 0; i < n; i++) {
		struct bus_envelope *e = NULL;
		json_t *b = json_pack("{s:s, s:s, s:I, s:I, s:s}", "host", "bench-host", "run",
				      ph.run, "seq", (json_int_t)i, "sent_ns", (json_int_t)t0, "pad",
				      pad);

		free(s);
		s = NULL;
		if (bus_envelope_new("host.report", BUS_TC_METRICS, "bench", NULL, b, &e) == 0)
			bus_envelope_serialize(e, &s, &len);
		bus_envelope_free(e);
	}
	t1 = time_mono_ns();
	for (long i = 0; s && i < n; i++) {
		struct bus_envelope *e = NULL;

		bus_envelope_parse(s, len, BUS_TOPIC_METRICS, &e);
		bus_envelope_free(e);
	}
	t2 = time_mono_ns();
	free(s);
	printf("bus cpu_us_per_envelope build_serialize %.2f parse %.2f\n",
	       (double)(t1 - t0) / 1e3 / (double)n, (double)(t2 - t1) / 1e3 / (double)n);
}

static int warm_up(struct bus_producer *p, struct phase *ph)
{
	int64_t deadline = time_mono_ms() + 30000;

	__atomic_store_n(&cur, ph, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&ph->warm, __ATOMIC_ACQUIRE)) {
		if (time_mono_ms() > deadline)
			return err_set(-ETIMEDOUT, "warm-up: the consumer received nothing in 30 s");
		if (send_one(p, ph, -1) < 0)
			return -1;
		bus_producer_flush(p, 1000);
		usleep(100 * 1000);
	}
	return 0;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static struct phase *phase_new(long want)
{
	struct phase *ph = calloc(1, sizeof(*ph));

	uuid_generate_str(ph->run);
	ph->want = want;
	ph->lat_ns = calloc((size_t)want, sizeof(int64_t));
	return ph;
}

static int wait_all(struct phase *ph, int secs)
{
	int64_t deadline = time_mono_ms() + secs * 1000L;

	while (__atomic_load_n(&ph->got, __ATOMIC_ACQUIRE) < ph->want) {
		if (time_mono_ms() > deadline)
			return err_set(-ETIMEDOUT, "only %ld of %ld envelopes arrived", ph->got,
				       ph->want);
		usleep(1000);
	}
	return 0;
}

int main(int argc, char **argv)
{
	long count = 200000, rate = 1000, secs = 5, size = 1024, wait_ms = 0;
	struct bus_consumer_opts co = { .group_id = NULL };
	const char *topics[] = { BUS_TOPIC_METRICS, NULL };
	char group[64], fetch_wait[32] = "", *keys[] = { (char *)(uintptr_t)"auto.offset.reset",
							  (char *)(uintptr_t)"fetch.wait.max.ms" },
			  *vals[] = { (char *)(uintptr_t)"latest", fetch_wait };
	struct bus_producer *p = NULL;
	struct bus_consumer *c = NULL;
	struct phase *t = NULL, *l = NULL;
	pthread_t th;
	int64_t t0, t1;
	bool latency_only = false;
	int opt, r = 1;

	while ((opt = getopt(argc, argv, "Ln:r:s:z:w:")) != -1) {
		if (opt == 'L') {
			latency_only = true;
			continue;
		}
		long *dst = opt == 'n' ? &count : opt == 'r' ? &rate : opt == 's' ? &secs :
			    opt == 'w' ? &wait_ms : &size;

		if (opt == '?' || parse_long(optarg, 1, 100000000L, dst) < 0) {
			fprintf(stderr, "usage: bench_bus [-L] [-n COUNT] [-r RATE] [-s SECONDS] "
				"[-z BYTES] [-w FETCH_WAIT_MS]\n");
			return 2;
		}
	}
	log_init("bench_bus", false, LOG_LVL_WARN);
	/* a fresh group that starts at the end: only this run's envelopes */
	snprintf(group, sizeof(group), "bench-%ld", (long)getpid());
	cfg.client_id = (char *)(uintptr_t)"bench";
	ccfg.client_id = (char *)(uintptr_t)"bench";
	ccfg.properties = (struct cfg_map){ .keys = keys, .vals = vals, .n = wait_ms ? 2 : 1 };
	snprintf(fetch_wait, sizeof(fetch_wait), "%ld", wait_ms);
	co.group_id = group;
	co.topics = topics;
	/* pad the body so that a serialized envelope is `size` bytes */
	pad = calloc(1, (size_t)size + 1);
	{
		struct phase probe = { .run = "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d" };
		size_t base = envelope_len(&probe, 100000);

		memset(pad, 'x', (size_t)size > base ? (size_t)size - base : 0);
	}

	if (bus_producer_new(&cfg, &p) < 0 || bus_consumer_new(&ccfg, &co, &c) < 0) {
		fprintf(stderr, "bench_bus: %s\n", err_msg());
		goto out;
	}
	if (pthread_create(&th, NULL, consumer_main, c) != 0)
		goto out;

	/* phase 1: throughput */
	if (latency_only)
		goto latency;
	t = phase_new(count);
	if (warm_up(p, t) < 0)
		goto fail;
	printf("bus envelope_bytes %zu\n", envelope_len(t, count / 2));
	cpu_costs(20000);
	t0 = time_mono_ns();
	for (long i = 0; i < count; i++) {
		/* flow control: stratus-bus keeps 5 MiB per partition in memory; a
		 * consumer further behind than that would lose envelopes */
		while (i - __atomic_load_n(&t->got, __ATOMIC_ACQUIRE) > WINDOW)
			bus_producer_poll(p, 1);
		if (send_one(p, t, i) < 0)
			goto fail;
	}
	if (bus_producer_flush(p, 60000) < 0 || wait_all(t, 60) < 0)
		goto fail;
	t1 = t->last_ns;
	printf("bus throughput_msgs_per_s %.0f count %ld seconds %.3f\n",
	       (double)count / ((double)(t1 - t0) / 1e9), count, (double)(t1 - t0) / 1e9);

latency:
	/* phase 2: latency at a fixed rate */
	l = phase_new(rate * secs);
	if (warm_up(p, l) < 0)
		goto fail;
	{
		struct timespec start, next;

		clock_gettime(CLOCK_MONOTONIC, &start);
		for (long i = 0; i < l->want; i++) {
			int64_t at = (int64_t)start.tv_sec * 1000000000L + start.tv_nsec +
				     i * (1000000000L / rate);

			next.tv_sec = at / 1000000000L;
			next.tv_nsec = at % 1000000000L;
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
			if (send_one(p, l, i) < 0)
				goto fail;
			bus_producer_poll(p, 0);
		}
	}
	if (bus_producer_flush(p, 30000) < 0 || wait_all(l, 30) < 0)
		goto fail;
	qsort(l->lat_ns, (size_t)l->want, sizeof(int64_t), cmp64);
	printf("bus latency_ms fetch_wait_ms %s rate %ld p50 %.2f p99 %.2f max %.2f count %ld\n",
	       wait_ms ? fetch_wait : "default", rate,
	       (double)l->lat_ns[l->want / 2] / 1e6, (double)l->lat_ns[l->want * 99 / 100] / 1e6,
	       (double)l->lat_ns[l->want - 1] / 1e6, l->want);
	r = 0;
	goto done;
fail:
	fprintf(stderr, "bench_bus: %s\n", err_msg());
done:
	stop_consumer = 1;
	pthread_join(th, NULL);
out:
	bus_consumer_free(c);
	bus_producer_free(p);
	if (t)
		free(t->lat_ns);
	if (l)
		free(l->lat_ns);
	free(t);
	free(l);
	free(pad);
	return r;
}
