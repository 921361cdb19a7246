/*
 * The client against librdkafka's mock cluster (in process, the same
 * broker stratus-bus runs) with faults injected through its calls:
 * a broker down during 1,000 sends, request errors, messages that finally
 * fail, handlers that are not durable, malformed messages.
 */
#define LOG_TAG "test"
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"

#define PRODUCE_API_KEY 0 /* Kafka protocol ApiKey of Produce */

static struct bus_broker *broker;
static rd_kafka_mock_cluster_t *mc;
static struct bus_config cfg;

static int setup(void **state)
{
	struct broker_config bc = { .brokers = 1, .partitions = 2 };

	(void)state;
	if (bus_broker_start(&bc, &broker) < 0) {
		fprintf(stderr, "broker: %s\n", err_msg());
		return -1;
	}
	mc = bus_broker_mock(broker);
	cfg.bootstrap_servers = strdup(bus_broker_bootstraps(broker));
	cfg.client_id = strdup("test-faults");
	if (getenv("TEST_DEBUG")) { /* librdkafka's own debug contexts */
		cfg.properties.keys = calloc(1, sizeof(char *));
		cfg.properties.vals = calloc(1, sizeof(char *));
		cfg.properties.keys[0] = strdup("debug");
		cfg.properties.vals[0] = strdup(getenv("TEST_DEBUG"));
		cfg.properties.n = 1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	bus_config_free(&cfg);
	bus_broker_stop(broker);
	return 0;
}

/* instance.delete for host topic T carrying seq */
static struct bus_envelope *command(long seq)
{
	struct bus_envelope *e = NULL;
	char uuid[UUID_STRLEN];

	uuid_generate_str(uuid);
	assert_int_equal(bus_envelope_new("instance.delete", BUS_TC_HOST, "test", NULL,
					  json_pack("{s:s, s:i}", "uuid", uuid, "seq", (int)seq), &e),
			 0);
	return e;
}

struct seen {
	long n;            /* size of counts */
	int *counts;       /* times each seq arrived */
	long distinct, total;
	int fail_first;    /* handler fails this many times first */
	char last_id[UUID_STRLEN];
};

static int record(void *opaque, const struct bus_message *m)
{
	struct seen *s = opaque;
	long seq = (long)json_integer_value(json_object_get(m->env->body, "seq"));

	if (s->fail_first > 0) {
		s->fail_first--;
		s->total++;
		return -EIO; /* not durable: must come again */
	}
	snprintf(s->last_id, sizeof(s->last_id), "%s", m->env->id);
	s->total++;
	if (seq >= 0 && seq < s->n && s->counts[seq]++ == 0)
		s->distinct++;
	return 0;
}

/* consume TOPIC in GROUP until want distinct seqs or timeout */
static void consume(const char *topic, const char *group, struct seen *s, long want,
		    int timeout_ms)
{
	const char *topics[] = { topic, NULL };
	struct bus_consumer_opts o = { .group_id = group, .topics = topics, .source = "test" };
	struct bus_consumer *c = NULL;
	int64_t deadline = time_mono_ms() + timeout_ms;

	assert_int_equal(bus_consumer_new(&cfg, &o, &c), 0);
	while (s->distinct < want && time_mono_ms() < deadline)
		assert_true(bus_consumer_poll(c, 100, record, s) >= 0);
	/* a little more: duplicates would show now */
	for (int i = 0; i < 5; i++)
		bus_consumer_poll(c, 100, record, s);
	assert_int_equal(bus_consumer_commit(c), 0);
	bus_consumer_free(c);
}

static void test_broker_down_during_sends(void **state)
{
	enum { N = 1000 };
	const char *topic = "stratus.host.down";
	struct bus_producer *p = NULL;
	struct seen s = { .n = N, .counts = calloc(N, sizeof(int)) };
	int64_t down_at = 0;

	(void)state;
	assert_int_equal(bus_producer_new(&cfg, &p), 0);
	for (long i = 0; i < N; i++) {
		struct bus_envelope *e = command(i);

		if (i == 300) {
			assert_int_equal(rd_kafka_mock_broker_set_down(mc, 1), 0);
			down_at = time_mono_ms();
		}
		if (i == 700) {
			/* down for a while: at least 2 s, sends queueing meanwhile */
			while (time_mono_ms() - down_at < 2000)
				bus_producer_poll(p, 100);
			assert_true(bus_producer_delivered(p) <= 300);
			assert_int_equal(rd_kafka_mock_broker_set_up(mc, 1), 0);
		}
		assert_int_equal(bus_produce(p, topic, NULL, e), 0);
		bus_envelope_free(e);
		if (i % 10 == 0)
			bus_producer_poll(p, 1);
	}
	if (bus_producer_flush(p, 60000) < 0)
		fail_msg("flush: %s", err_msg());
	assert_int_equal(bus_producer_delivered(p), N);
	assert_int_equal(bus_producer_failed(p), 0);
	bus_producer_free(p);

	consume(topic, "test-down", &s, N, 30000);
	print_message("broker down for 2 s: %ld of %d distinct arrived, %ld deliveries\n",
		      s.distinct, N, s.total);
	assert_int_equal(s.distinct, N); /* none lost */
	assert_int_equal(s.total, N);    /* idempotent: none twice */
	free(s.counts);
}

static void test_request_errors_are_retried(void **state)
{
	enum { N = 50 };
	const char *topic = "stratus.host.errs";
	struct bus_producer *p = NULL;
	struct seen s = { .n = N, .counts = calloc(N, sizeof(int)) };

	(void)state;
	/*
	 * One partition, written once before the errors: a broker with no
	 * producer state for a partition accepts any first sequence, so a
	 * pipelined later batch that lands while the first one is being
	 * retried is taken, and librdkafka counts the first as acked by it
	 * (lost). Kafka had that defect too (KAFKA-15591); the mock still
	 * has it. With the state there, the broker answers the later batch
	 * out-of-order and the producer resends both in order.
	 */
	assert_int_equal(rd_kafka_mock_topic_create(mc, topic, 1, 1), 0);
	assert_int_equal(bus_producer_new(&cfg, &p), 0);
	/* metadata first, so that the errors hit Produce requests */
	{
		struct bus_envelope *e = command(N + 1);

		assert_int_equal(bus_produce(p, topic, NULL, e), 0);
		bus_envelope_free(e);
		assert_int_equal(bus_producer_flush(p, 10000), 0);
	}
	rd_kafka_mock_push_request_errors(mc, PRODUCE_API_KEY, 4,
					  RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
					  RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
					  RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
					  RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE);
	for (long i = 0; i < N; i++) {
		struct bus_envelope *e = command(i);

		assert_int_equal(bus_produce(p, topic, NULL, e), 0);
		bus_envelope_free(e);
	}
	if (bus_producer_flush(p, 30000) < 0)
		fail_msg("flush: %s", err_msg());
	assert_int_equal(bus_producer_failed(p), 0);
	bus_producer_free(p);
	consume(topic, "test-errs", &s, N, 30000);
	assert_int_equal(s.distinct, N);
	for (long i = 0; i < N; i++)
		assert_int_equal(s.counts[i], 1); /* retried, yet once each */
	free(s.counts);
}

struct report {
	int failed;
	char err[128];
};

static void on_report(void *opaque, const char *topic, int32_t partition, int64_t offset,
		      int err, const char *errstr)
{
	struct report *r = opaque;

	(void)topic;
	(void)partition;
	(void)offset;
	if (err) {
		r->failed++;
		snprintf(r->err, sizeof(r->err), "%s", errstr);
	}
}

/* A message that finally fails is reported: counted, called back, and the
 * flush says so. Never silently lost. */
static void test_final_failure_is_reported(void **state)
{
	struct bus_config c2 = { 0 };
	char *keys[] = { (char *)(uintptr_t)"message.timeout.ms" };
	char *vals[] = { (char *)(uintptr_t)"1500" };
	struct bus_producer *p = NULL;
	struct report rep = { 0 };

	(void)state;
	c2.bootstrap_servers = cfg.bootstrap_servers;
	c2.properties.keys = keys;
	c2.properties.vals = vals;
	c2.properties.n = 1;
	assert_int_equal(bus_producer_new(&c2, &p), 0);
	bus_producer_set_delivery_cb(p, on_report, &rep);
	assert_int_equal(rd_kafka_mock_broker_set_down(mc, 1), 0);
	for (long i = 0; i < 5; i++) {
		struct bus_envelope *e = command(i);

		assert_int_equal(bus_produce(p, "stratus.host.lost", NULL, e), 0);
		bus_envelope_free(e);
	}
	assert_int_equal(bus_producer_flush(p, 10000), -EIO);
	assert_non_null(strstr(err_msg(), "5 message(s) could not be delivered"));
	assert_int_equal(bus_producer_failed(p), 5);
	assert_int_equal(rep.failed, 5);
	assert_int_equal(rd_kafka_mock_broker_set_up(mc, 1), 0);
	/* the next flush reports only new failures */
	assert_int_equal(bus_producer_flush(p, 1000), 0);
	bus_producer_free(p);
}

/* A handler that says "not durable" gets the message again. */
static void test_not_durable_comes_again(void **state)
{
	const char *topic = "stratus.host.retry";
	struct bus_producer *p = NULL;
	struct seen s = { .n = 2, .counts = calloc(2, sizeof(int)), .fail_first = 2 };

	(void)state;
	assert_int_equal(bus_producer_new(&cfg, &p), 0);
	{
		struct bus_envelope *e = command(0);

		assert_int_equal(bus_produce(p, topic, "k", e), 0);
		bus_envelope_free(e);
	}
	assert_int_equal(bus_producer_flush(p, 10000), 0);
	consume(topic, "test-retry", &s, 1, 20000);
	assert_int_equal(s.distinct, 1);
	assert_int_equal(s.counts[0], 1);
	assert_int_equal(s.total, 3); /* failed twice, then durable */

	bus_producer_free(p);
	free(s.counts);
}

struct result_watch {
	int results;
	char error[512];
	json_int_t offset;
};

static int watch_results(void *opaque, const struct bus_message *m)
{
	struct result_watch *w = opaque;

	if (!m->env || strcmp(m->env->type, "request.result") != 0)
		return 0;
	if (json_is_false(json_object_get(m->env->body, "ok"))) {
		w->results++;
		snprintf(w->error, sizeof(w->error), "%s",
			 json_string_value(json_object_get(m->env->body, "error")));
		w->offset = json_integer_value(
			json_object_get(json_object_get(m->env->body, "data"), "offset"));
	}
	return 0;
}

/* Malformed messages: skipped (offset stored), answered with an error
 * event, the valid message behind them handled: no stuck partition. */
static void test_malformed_is_answered_and_skipped(void **state)
{
	const char *topic = "stratus.host.bad";
	const char *ev[] = { BUS_TOPIC_EVENTS, NULL };
	struct bus_consumer_opts wo = { .observe = true, .topics = ev };
	struct bus_consumer *w = NULL;
	struct bus_producer *p = NULL;
	struct seen s = { .n = 1, .counts = calloc(1, sizeof(int)) };
	struct result_watch rw = { 0 };
	struct bus_envelope *e = command(0);
	int64_t deadline;

	(void)state;
	assert_int_equal(bus_producer_new(&cfg, &p), 0);
	/* one partition key for all three: same partition, in order */
	assert_int_equal(bus_produce_raw(p, topic, "same", "{\"v\":1,", 7), 0);
	assert_int_equal(bus_produce_raw(p, topic, "same", "{\"v\":7,\"type\":\"x\"}", 18), 0);
	assert_int_equal(bus_produce(p, topic, "same", e), 0);
	bus_envelope_free(e);
	assert_int_equal(bus_producer_flush(p, 10000), 0);
	consume(topic, "test-bad", &s, 1, 20000);
	assert_int_equal(s.distinct, 1);
	assert_int_equal(s.total, 1); /* the handler never saw the two bad ones */

	assert_int_equal(bus_consumer_new(&cfg, &wo, &w), 0);
	deadline = time_mono_ms() + 10000;
	while (rw.results < 2 && time_mono_ms() < deadline)
		bus_consumer_poll(w, 100, watch_results, &rw);
	bus_consumer_free(w);
	assert_int_equal(rw.results, 2);
	assert_string_equal(rw.error, "envelope: v: unsupported version 7 (this build speaks 1)");
	assert_int_equal(rw.offset, 1);
	bus_producer_free(p);
	free(s.counts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_broker_down_during_sends),
		cmocka_unit_test(test_request_errors_are_retried),
		cmocka_unit_test(test_final_failure_is_reported),
		cmocka_unit_test(test_not_durable_comes_again),
		cmocka_unit_test(test_malformed_is_answered_and_skipped),
	};

	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	log_init("test_faults", false, getenv("TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR);
	return cmocka_run_group_tests(tests, setup, teardown);
}
