/*
 * The broker comes and goes, and messages of every size (issue 17):
 *   - stratus-bus dies and another one starts on the same address file:
 *     a producer and a consumer made before follow it by themselves, and
 *     a message queued for the dead broker is delivered by the new one;
 *   - bus.max_message_bytes: the producer refuses more; a consumer that
 *     meets a bigger message anyway answers it with an error event and
 *     goes on with the next offset; stratus-bus refuses a 10 MB request
 *     and the message after it is not lost;
 *   - a commit in flight when the broker dies does not hold the consumer's
 *     caller: librdkafka's destroy of the old handle waits for it (one
 *     session.timeout.ms), on a thread of its own.
 */
#define LOG_TAG "test"
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"

static char tmpdir[] = "/tmp/stratus-busres.XXXXXX";
static char addr_file[256];

static struct bus_broker *start_broker(void)
{
	struct broker_config bc = { .brokers = 1, .partitions = 1 };
	struct bus_broker *b = NULL;
	char line[256];

	assert_int_equal(bus_broker_start(&bc, &b), 0);
	snprintf(line, sizeof(line), "%s\n", bus_broker_bootstraps(b));
	assert_int_equal(write_file_atomic(addr_file, line, strlen(line), 0644), 0);
	return b;
}

struct got {
	int n;
	char ids[16][UUID_STRLEN];
	char types[16][BUS_TYPE_MAX];
	size_t lens[16];
	char errors[16][256];
};

static int record(void *opaque, const struct bus_message *m)
{
	struct got *g = opaque;

	if (g->n < 16 && m->env) {
		const char *err = json_string_value(json_object_get(m->env->body, "error"));

		snprintf(g->ids[g->n], UUID_STRLEN, "%s", m->env->id);
		snprintf(g->types[g->n], BUS_TYPE_MAX, "%s", m->env->type);
		snprintf(g->errors[g->n], 256, "%s", err ? err : "");
		g->lens[g->n] = m->len;
		g->n++;
	}
	return 0;
}

/* poll C until G holds N messages (or 30 s) */
static void wait_for(struct bus_consumer *c, struct got *g, int n)
{
	int64_t until = time_mono_ms() + 30000;

	while (g->n < n && time_mono_ms() < until)
		bus_consumer_poll(c, 200, record, g);
	assert_int_equal(g->n, n);
}

/* instance.state with a reason of PAD bytes */
static struct bus_envelope *state(size_t pad)
{
	struct bus_envelope *e = NULL;
	char uuid[UUID_STRLEN];
	char *reason = malloc(pad + 1);

	assert_non_null(reason);
	memset(reason, 'r', pad);
	reason[pad] = '\0';
	uuid_generate_str(uuid);
	assert_int_equal(bus_envelope_new("instance.state", BUS_TC_EVENTS, "test", NULL,
					  json_pack("{s:s, s:s, s:s, s:s}", "uuid", uuid, "project",
						    "acme", "state", "active", "reason", reason),
					  &e),
			 0);
	free(reason);
	return e;
}

static size_t serialized_len(const struct bus_envelope *e)
{
	char *data = NULL;
	size_t len = 0;

	assert_int_equal(bus_envelope_serialize(e, &data, &len), 0);
	free(data);
	return len;
}

static void test_follows_a_new_broker(void **state_)
{
	struct bus_config cfg = { .address_file = addr_file, .client_id = (char *)"resilience" };
	static const char *const topics[] = { BUS_TOPIC_EVENTS, NULL };
	struct bus_consumer_opts o = { .group_id = "follow", .topics = topics };
	struct bus_producer *p = NULL;
	struct bus_consumer *c = NULL;
	struct bus_broker *a, *b;
	struct bus_envelope *e1 = state(10), *e2 = state(10);
	static struct got g;
	int64_t t0;

	(void)state_;
	a = start_broker();
	assert_int_equal(bus_producer_new(&cfg, &p), 0);
	assert_int_equal(bus_consumer_new(&cfg, &o, &c), 0);
	assert_int_equal(bus_produce(p, NULL, NULL, e1), 0);
	assert_int_equal(bus_producer_flush(p, 10000), 0);
	wait_for(c, &g, 1);
	assert_string_equal(g.ids[0], e1->id);

	/* kill -9 of stratus-bus: its log and its port are gone; a message is
	 * queued while no broker runs */
	bus_broker_stop(a);
	assert_int_equal(bus_produce(p, NULL, NULL, e2), 0);
	bus_producer_poll(p, 500);
	b = start_broker();
	t0 = time_mono_ms();
	assert_int_equal(bus_producer_flush(p, 15000), 0);
	wait_for(c, &g, 2);
	assert_string_equal(g.ids[1], e2->id);
	print_message("moved in %lld ms\n", (long long)(time_mono_ms() - t0));
	assert_true(time_mono_ms() - t0 < 20000);
	assert_int_equal(bus_producer_reconnects(p), 1);
	assert_int_equal(bus_consumer_reconnects(c), 1);
	assert_int_equal(bus_producer_failed(p), 0);

	bus_consumer_free(c);
	bus_producer_free(p);
	bus_broker_stop(b);
	bus_envelope_free(e1);
	bus_envelope_free(e2);
}

/* no bus_consumer_poll call may block while the old handle's commit waits
 * for its session timeout (10 s here, 45 s by default) */
static void test_commit_in_flight_does_not_block(void **state_)
{
	static char *keys[] = { (char *)"session.timeout.ms" }, *vals[] = { (char *)"10000" };
	struct bus_config cfg = { .address_file = addr_file, .client_id = (char *)"inflight",
				  .properties = { .keys = keys, .vals = vals, .n = 1 } };
	static const char *const topics[] = { BUS_TOPIC_EVENTS, NULL };
	struct bus_consumer_opts o = { .group_id = "inflight", .topics = topics };
	struct bus_producer *p = NULL;
	struct bus_consumer *c = NULL;
	struct bus_envelope *e1 = state(10), *e2 = state(10);
	struct bus_broker *a, *b;
	static struct got g;
	int64_t t0, longest = 0, until;

	(void)state_;
	a = start_broker();
	assert_int_equal(bus_producer_new(&cfg, &p), 0);
	assert_int_equal(bus_consumer_new(&cfg, &o, &c), 0);
	assert_int_equal(bus_produce(p, NULL, NULL, e1), 0);
	assert_int_equal(bus_producer_flush(p, 10000), 0);
	wait_for(c, &g, 1);

	bus_broker_stop(a);
	t0 = time_mono_ms();
	assert_int_equal(bus_consumer_commit_async(c), 0); /* e1's offset, to nobody */
	assert_true(time_mono_ms() - t0 < 1000);
	b = start_broker();
	assert_int_equal(bus_produce(p, NULL, NULL, e2), 0);
	assert_int_equal(bus_producer_flush(p, 15000), 0);
	until = time_mono_ms() + 30000;
	while (g.n < 2 && time_mono_ms() < until) {
		t0 = time_mono_ms();
		bus_consumer_poll(c, 200, record, &g);
		if (time_mono_ms() - t0 > longest)
			longest = time_mono_ms() - t0;
	}
	print_message("longest poll while following: %lld ms\n", (long long)longest);
	assert_int_equal(g.n, 2);
	assert_string_equal(g.ids[1], e2->id);
	assert_int_equal(bus_consumer_reconnects(c), 1);
	assert_true(longest < 5000);

	bus_consumer_free(c); /* waits for the old handle */
	bus_producer_free(p);
	bus_broker_stop(b);
	bus_envelope_free(e1);
	bus_envelope_free(e2);
}

/* a raw producer that does not know our limit (kcat -X message.max.bytes=...) */
static rd_kafka_t *raw_producer(const char *bootstrap)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char errstr[256];
	rd_kafka_t *rk;

	assert_int_equal(bus_conf_set(conf, "bootstrap.servers", bootstrap), 0);
	assert_int_equal(bus_conf_set(conf, "message.max.bytes", "20000000"), 0);
	assert_int_equal(bus_conf_set(conf, "message.timeout.ms", "4000"), 0);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	assert_non_null(rk);
	return rk;
}

static void raw_send(rd_kafka_t *rk, size_t len)
{
	char *buf = malloc(len);

	assert_non_null(buf);
	memset(buf, ' ', len);
	memcpy(buf, "{\"v\":1", 6);
	assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(BUS_TOPIC_EVENTS),
					   RD_KAFKA_V_VALUE(buf, len),
					   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END),
			 0);
	rd_kafka_flush(rk, 20000); /* delivered, or failed after message.timeout.ms */
}

/* 2 MB and exactly-limit messages on a broker that takes them (a Kafka with
 * a larger message.max.bytes); 10 MB through stratus-bus's broker, which
 * refuses it; each followed by a valid message that must arrive. */
static void test_sizes(void **state_)
{
	struct bus_config cfg = { .client_id = (char *)"sizes" };
	static const char *const topics[] = { BUS_TOPIC_EVENTS, NULL };
	struct bus_consumer_opts o = { .group_id = "sizes", .topics = topics, .source = "sizes" };
	struct bus_producer *p = NULL;
	struct bus_consumer *c = NULL;
	static struct got g, g2;
	rd_kafka_conf_t *mconf = rd_kafka_conf_new();
	rd_kafka_mock_cluster_t *mc;
	rd_kafka_t *mrk, *raw;
	struct bus_envelope *e, *exact, *v1, *v2, *v3;
	char errstr[256];
	size_t n;

	(void)state_;
	/* the limit is refused by the producer, one byte over */
	for (n = BUS_MAX_MESSAGE - 400; serialized_len(e = state(n)) < BUS_MAX_MESSAGE; n++)
		bus_envelope_free(e);
	assert_int_equal(serialized_len(e), BUS_MAX_MESSAGE);
	exact = e;

	mrk = rd_kafka_new(RD_KAFKA_PRODUCER, mconf, errstr, sizeof(errstr));
	assert_non_null(mrk);
	mc = rd_kafka_mock_cluster_new(mrk, 1);
	assert_non_null(mc);
	assert_int_equal(rd_kafka_mock_topic_create(mc, BUS_TOPIC_EVENTS, 1, 1), 0);
	cfg.bootstrap_servers = strdup(rd_kafka_mock_cluster_bootstraps(mc));
	assert_int_equal(bus_producer_new(&cfg, &p), 0);
	assert_int_equal(bus_consumer_new(&cfg, &o, &c), 0);
	raw = raw_producer(cfg.bootstrap_servers);

	/* the producer's own check */
	e = state(BUS_MAX_MESSAGE);
	assert_int_equal(bus_produce(p, NULL, NULL, e), -E2BIG);
	assert_non_null(strstr(err_msg(), "more than the limit of 1048576"));
	bus_envelope_free(e);
	{
		char *big = calloc(1, BUS_MAX_MESSAGE + 1);

		assert_int_equal(bus_produce_raw(p, BUS_TOPIC_EVENTS, NULL, big,
						 BUS_MAX_MESSAGE + 1), -E2BIG);
		assert_non_null(strstr(err_msg(), "of 1048577 bytes is over bus.max_message_bytes "
				       "(1048576 bytes): not sent"));
		free(big);
	}

	/* 2 MB: answered with an error event, then the next one */
	raw_send(raw, 2 * 1000 * 1000);
	v1 = state(10);
	assert_int_equal(bus_produce(p, NULL, NULL, v1), 0);
	assert_int_equal(bus_producer_flush(p, 10000), 0);
	wait_for(c, &g, 2); /* our own error event comes on stratus.events too */
	assert_string_equal(g.ids[0], v1->id);
	assert_string_equal(g.types[1], "request.result");
	assert_non_null(strstr(g.errors[1], "message of 2000000 bytes is over "
				"bus.max_message_bytes (1048576 bytes)"));
	assert_int_equal(bus_consumer_rejected(c), 1);

	/* exactly the limit: accepted and handed on */
	assert_int_equal(bus_produce(p, NULL, NULL, exact), 0);
	v2 = state(10);
	assert_int_equal(bus_produce(p, NULL, NULL, v2), 0);
	assert_int_equal(bus_producer_flush(p, 10000), 0);
	wait_for(c, &g, 4);
	assert_string_equal(g.ids[2], exact->id);
	assert_int_equal(g.lens[2], BUS_MAX_MESSAGE);
	assert_string_equal(g.ids[3], v2->id);
	assert_int_equal(bus_consumer_rejected(c), 1);
	bus_consumer_free(c);
	bus_producer_free(p);
	rd_kafka_destroy(raw);
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(mrk);
	free(cfg.bootstrap_servers);

	/* 10 MB through stratus-bus's broker: refused (the mock would take it
	 * and, pruning its 5 MiB log, lose the message after it) */
	{
		struct broker_config bc = { .brokers = 1, .partitions = 1 };
		struct bus_broker *b = NULL;

		assert_int_equal(bus_broker_start(&bc, &b), 0);
		cfg.bootstrap_servers = strdup(bus_broker_bootstraps(b));
		assert_int_equal(bus_producer_new(&cfg, &p), 0);
		o.group_id = "sizes-10m";
		assert_int_equal(bus_consumer_new(&cfg, &o, &c), 0);
		raw = raw_producer(cfg.bootstrap_servers);
		raw_send(raw, 10 * 1000 * 1000);
		assert_int_equal(rd_kafka_outq_len(raw), 0); /* failed, not delivered */
		v3 = state(10);
		assert_int_equal(bus_produce(p, NULL, NULL, v3), 0);
		assert_int_equal(bus_producer_flush(p, 10000), 0);
		wait_for(c, &g2, 1);
		assert_string_equal(g2.ids[0], v3->id);
		bus_consumer_free(c);
		bus_producer_free(p);
		rd_kafka_destroy(raw);
		bus_broker_stop(b);
		free(cfg.bootstrap_servers);
	}
	bus_envelope_free(exact);
	bus_envelope_free(v1);
	bus_envelope_free(v2);
	bus_envelope_free(v3);
}

static int setup(void **state_)
{
	(void)state_;
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(addr_file, sizeof(addr_file), "%s/bus.addr", tmpdir);
	log_init("test_resilience", false, getenv("TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN);
	return 0;
}

static int teardown(void **state_)
{
	(void)state_;
	unlink(addr_file);
	rmdir(tmpdir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_follows_a_new_broker),
		cmocka_unit_test(test_commit_in_flight_does_not_block),
		cmocka_unit_test(test_sizes),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
