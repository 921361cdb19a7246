/*
 * The single-machine broker of stratus-bus: librdkafka's mock cluster, a
 * real Kafka-protocol broker on loopback that keeps its logs in memory.
 */
#define LOG_TAG "bus"
#include <errno.h>
#include <string.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"

struct bus_broker {
	rd_kafka_t *rk; /* the mock cluster needs a handle for its book keeping */
	rd_kafka_mock_cluster_t *mc;
};

/* The topics every Stratus cluster has; host topics come on demand. */
static const char *const fixed_topics[] = {
	BUS_TOPIC_API, BUS_TOPIC_EVENTS, BUS_TOPIC_METRICS,
};

static int create_topic(struct bus_broker *b, const char *topic, long partitions)
{
	rd_kafka_resp_err_t err;

	err = rd_kafka_mock_topic_create(b->mc, topic, (int)partitions, 1);
	if (err)
		return err_set(-EIO, "broker: create topic %s: %s", topic, rd_kafka_err2str(err));
	log_info("topic created topic=%s partitions=%ld", topic, partitions);
	return 0;
}

int bus_broker_start(const struct broker_config *cfg, struct bus_broker **out)
{
	struct bus_broker *b = NULL;
	rd_kafka_conf_t *conf = NULL;
	char errstr[256];
	int r;

	b = calloc(1, sizeof(*b));
	if (!b)
		return err_set(-ENOMEM, "out of memory");
	conf = rd_kafka_conf_new();
	rd_kafka_conf_set_log_cb(conf, bus_rdkafka_log);
	/* this handle only keeps the mock cluster's books: it never connects */
	if ((r = bus_conf_set(conf, "log_level", "4")) < 0)
		goto fail;
	if ((r = bus_conf_set(conf, "client.id", "stratus-bus")) < 0)
		goto fail;
	b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!b->rk) {
		r = err_set(-EIO, "broker: %s", errstr);
		goto fail;
	}
	conf = NULL;
	b->mc = rd_kafka_mock_cluster_new(b->rk, (int)cfg->brokers);
	if (!b->mc) {
		r = err_set(-EIO, "broker: cannot start a mock cluster of %ld broker(s)",
			    cfg->brokers);
		goto fail;
	}
	for (size_t i = 0; i < ARRAY_SIZE(fixed_topics); i++) {
		const char *n = cfg_map_get(&cfg->topics, fixed_topics[i]);
		long parts = cfg->partitions;

		if (n && parse_long(n, 1, 256, &parts) < 0) {
			r = err_set(-EINVAL, "broker.topics.%s: expected a partition count from 1 "
				    "to 256, got '%s'", fixed_topics[i], n);
			goto fail;
		}
		if ((r = create_topic(b, fixed_topics[i], parts)) < 0)
			goto fail;
	}
	for (size_t i = 0; i < cfg->topics.n; i++) {
		const char *t = cfg->topics.keys[i];
		enum bus_topic_class tc;
		long parts;

		if (bus_topic_classify(t, &tc) < 0 && strncmp(t, "stratus.", 8) != 0) {
			r = err_set(-EINVAL, "broker.topics.%s: not a Stratus topic name", t);
			goto fail;
		}
		if (parse_long(cfg->topics.vals[i], 1, 256, &parts) < 0) {
			r = err_set(-EINVAL, "broker.topics.%s: expected a partition count from 1 "
				    "to 256, got '%s'", t, cfg->topics.vals[i]);
			goto fail;
		}
		if (strcmp(t, BUS_TOPIC_API) == 0 || strcmp(t, BUS_TOPIC_EVENTS) == 0 ||
		    strcmp(t, BUS_TOPIC_METRICS) == 0)
			continue; /* done above */
		if ((r = create_topic(b, t, parts)) < 0)
			goto fail;
	}
	*out = b;
	return 0;
fail:
	if (conf)
		rd_kafka_conf_destroy(conf);
	bus_broker_stop(b);
	return r;
}

const char *bus_broker_bootstraps(const struct bus_broker *b)
{
	return rd_kafka_mock_cluster_bootstraps(b->mc);
}

rd_kafka_mock_cluster_t *bus_broker_mock(struct bus_broker *b)
{
	return b->mc;
}

void bus_broker_stop(struct bus_broker *b)
{
	if (!b)
		return;
	if (b->mc)
		rd_kafka_mock_cluster_destroy(b->mc);
	if (b->rk)
		rd_kafka_destroy(b->rk);
	free(b);
}
