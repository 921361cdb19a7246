/*
 * The single-machine broker of stratus-bus: librdkafka's mock cluster, a
 * real Kafka-protocol broker on loopback (or broker.listen) that keeps its
 * logs in memory.
 */
#define LOG_TAG "bus"
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

/*
 * broker.listen. librdkafka 2.0.2's mock cluster binds each broker's
 * listener to 127.0.0.1 with a port the kernel picks and advertises in its
 * metadata the address getsockname() gives back; its API (rdkafka_mock.h)
 * has no way to choose another. It creates the listeners synchronously in
 * rd_kafka_mock_cluster_new(), in the calling thread, before its own thread
 * starts. So stratus-bus defines bind() (bus/main.c): the dynamic linker
 * gives that definition to librdkafka in place of libc's, and it asks
 * bus_broker_bind_rewrite() whether this bind is one of those listeners:
 * only in the thread running bus_broker_start(), only during
 * rd_kafka_mock_cluster_new(), only for 127.0.0.1 port 0. Every other bind
 * goes to the kernel unchanged. The listeners then listen on, and the
 * metadata advertises, the configured address. bus_broker_start() checks
 * the bootstrap address afterwards, so a program without that bind() (the
 * tests' in-process brokers) gets an error, not a broker on loopback.
 */
static __thread const struct in_addr *listen_addr;
static __thread int listen_result;

bool bus_broker_bind_rewrite(const struct sockaddr *sa, socklen_t len, struct sockaddr_in *out)
{
	if (!listen_addr || !sa || sa->sa_family != AF_INET || len < sizeof(*out))
		return false;
	memcpy(out, sa, sizeof(*out));
	if (out->sin_addr.s_addr != htonl(INADDR_LOOPBACK) || out->sin_port != 0)
		return false;
	out->sin_addr = *listen_addr;
	return true;
}

void bus_broker_bind_result(int r)
{
	if (r < 0 && listen_result == 0)
		listen_result = r;
}

/* Can this machine listen on ADDR? librdkafka 2.0.2 aborts (an assertion in
 * rd_kafka_mock_cluster_destroy) when a mock broker's bind fails, so ask
 * the kernel first. */
static int probe_listen(const char *name, const struct in_addr *addr)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr = *addr };
	int fd, r = 0;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_sys(-errno, "broker: socket");
	if (bind(fd, (const struct sockaddr *)&sin, sizeof(sin)) < 0) {
		int e = errno;

		r = err_set(-e, "broker: cannot listen on %s: %s (broker.listen must be an "
			    "address of this machine)", name, strerror(e));
	}
	close(fd);
	return r;
}

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
	char *prefix = NULL;
	struct in_addr addr;
	const char *listen;
	bool loopback;
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
	if ((r = broker_config_check(cfg)) < 0)
		goto fail;
	listen = cfg->listen ? cfg->listen : "127.0.0.1";
	loopback = strcmp(listen, "127.0.0.1") == 0;
	inet_pton(AF_INET, listen, &addr);
	if ((r = probe_listen(listen, &addr)) < 0)
		goto fail;
	listen_addr = loopback ? NULL : &addr;
	listen_result = 0;
	b->mc = rd_kafka_mock_cluster_new(b->rk, (int)cfg->brokers);
	listen_addr = NULL;
	if (!b->mc) {
		if (listen_result < 0)
			r = err_set(-EIO, "broker: cannot listen on %s: %s (broker.listen must be an "
				    "address of this machine)", listen, strerror(-listen_result));
		else
			r = err_set(-EIO, "broker: cannot start a mock cluster of %ld broker(s)",
				    cfg->brokers);
		goto fail;
	}
	if (asprintf(&prefix, "%s:", listen) < 0) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	if (strncmp(bus_broker_bootstraps(b), prefix, strlen(prefix)) != 0) {
		r = err_set(-ENOTSUP, "broker.listen: the brokers listen on %s, not on %s: only "
			    "stratus-bus can choose their address", bus_broker_bootstraps(b),
			    listen);
		goto fail;
	}
	free(prefix);
	prefix = NULL;
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
	free(prefix);
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
