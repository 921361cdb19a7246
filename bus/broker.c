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
 * rd_kafka_mock_cluster_new(), in the calling thread, broker 1 first,
 * before its own thread starts. So stratus-bus defines bind() (bus/main.c):
 * the dynamic linker gives that definition to librdkafka in place of
 * libc's, and it asks bus_broker_bind_rewrite() whether this bind is one of
 * those listeners: only in the thread running bus_broker_start(), only
 * during rd_kafka_mock_cluster_new(), only for 127.0.0.1 port 0. Those go
 * to the configured address (and port + N - 1 for broker N, with
 * SO_REUSEADDR so that a restart finds its port free); every other bind
 * goes to the kernel unchanged. The listeners then listen on, and the
 * metadata advertises, the configured address. bus_broker_start() checks
 * the bootstrap addresses afterwards, so a program without that bind()
 * (the tests' in-process brokers) gets an error, not a broker elsewhere.
 */
static __thread const struct sockaddr_in *listen_sa;
static __thread int listen_next; /* brokers bound so far */
static __thread int listen_result;

bool bus_broker_bind_rewrite(int fd, const struct sockaddr *sa, socklen_t len,
			     struct sockaddr_in *out)
{
	int one = 1;

	if (!listen_sa || !sa || sa->sa_family != AF_INET || len < sizeof(*out))
		return false;
	memcpy(out, sa, sizeof(*out));
	if (out->sin_addr.s_addr != htonl(INADDR_LOOPBACK) || out->sin_port != 0)
		return false;
	out->sin_addr = listen_sa->sin_addr;
	if (listen_sa->sin_port) {
		out->sin_port = htons((uint16_t)(ntohs(listen_sa->sin_port) + listen_next));
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	}
	listen_next++;
	return true;
}

void bus_broker_bind_result(int r)
{
	if (r < 0 && listen_result == 0)
		listen_result = r;
}

/* "ADDR:PORT" of broker I (0-based) on SA; only "ADDR" when the port is 0. */
static void addr_name(const struct sockaddr_in *sa, long i, char *buf, size_t n)
{
	char a[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &sa->sin_addr, a, sizeof(a));
	if (sa->sin_port)
		snprintf(buf, n, "%s:%ld", a, ntohs(sa->sin_port) + i);
	else
		snprintf(buf, n, "%s", a);
}

/* Can this machine listen where the brokers will? librdkafka 2.0.2 aborts
 * (an assertion in rd_kafka_mock_cluster_destroy) when a mock broker's bind
 * fails, so ask the kernel first, the same way. */
static int probe_listen(const struct sockaddr_in *sa, long brokers)
{
	for (long i = 0; i < (sa->sin_port ? brokers : 1); i++) {
		struct sockaddr_in sin = *sa;
		char name[64];
		int fd, one = 1;

		if (sa->sin_port)
			sin.sin_port = htons((uint16_t)(ntohs(sa->sin_port) + i));
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return err_sys(-errno, "broker: socket");
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (const struct sockaddr *)&sin, sizeof(sin)) < 0) {
			int e = errno;

			close(fd);
			addr_name(sa, i, name, sizeof(name));
			return err_set(-e, "broker: cannot listen on %s: %s%s", name, strerror(e),
				       e == EADDRNOTAVAIL ? " (broker.listen must be an address of "
				       "this machine)" : "");
		}
		close(fd);
	}
	return 0;
}

/* The bootstrap list is what broker.listen asked for. */
static int check_bootstraps(const struct sockaddr_in *sa, long brokers, const char *got)
{
	char want[64];
	size_t off = 0;

	for (long i = 0; i < brokers; i++) {
		size_t n;

		addr_name(sa, i, want, sizeof(want));
		n = strlen(want);
		if (strncmp(got + off, want, n) != 0 || (!sa->sin_port && got[off + n] != ':'))
			return err_set(-ENOTSUP, "broker.listen: the brokers listen on %s, not on %s: "
				       "only stratus-bus can choose their address", got, want);
		off += strcspn(got + off, ",");
		if (got[off] == ',')
			off++;
	}
	return 0;
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
	char errstr[256], cap[32];
	struct sockaddr_in sa;
	size_t limit;
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
	/* the mock keeps no broker config (message.max.bytes): the one limit
	 * it has is the size of a request it reads, this handle's
	 * receive.message.max.bytes; a larger one closes the connection.
	 * Room for one message at bus.max_message_bytes, or for the 1 MB
	 * batch of a Kafka client with default settings (kcat). */
	if ((r = bus_message_limit(cfg->max_message_bytes, &limit)) < 0)
		goto fail;
	snprintf(cap, sizeof(cap), "%zu",
		 (limit > 1000000 ? limit : 1000000) + BUS_PROTOCOL_HEADROOM);
	if ((r = bus_conf_set(conf, "receive.message.max.bytes", cap)) < 0)
		goto fail;
	b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!b->rk) {
		r = err_set(-EIO, "broker: %s", errstr);
		goto fail;
	}
	conf = NULL;
	if ((r = broker_listen_addr(cfg, &sa)) < 0)
		goto fail;
	if ((r = probe_listen(&sa, cfg->brokers)) < 0)
		goto fail;
	/* the default (127.0.0.1, any port) is the mock's own way */
	listen_sa = sa.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && !sa.sin_port ? NULL : &sa;
	listen_next = 0;
	listen_result = 0;
	b->mc = rd_kafka_mock_cluster_new(b->rk, (int)cfg->brokers);
	listen_sa = NULL;
	if (!b->mc) {
		char name[64];

		addr_name(&sa, 0, name, sizeof(name));
		if (listen_result < 0)
			r = err_set(listen_result, "broker: cannot listen on %s: %s", name,
				    strerror(-listen_result));
		else
			r = err_set(-EIO, "broker: cannot start a mock cluster of %ld broker(s)",
				    cfg->brokers);
		goto fail;
	}
	if ((r = check_bootstraps(&sa, cfg->brokers, bus_broker_bootstraps(b))) < 0)
		goto fail;
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
