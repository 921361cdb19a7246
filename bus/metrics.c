/*
 * stratus-bus's Prometheus metrics on broker.metrics_listen.
 *
 * librdkafka's mock cluster keeps no statistics of its own and its API
 * (rdkafka_mock.h) has no call that reads them, so what it can tell is
 * what a Kafka client sees: at each scrape one client of the broker
 * (made on the first scrape, kept) reads the metadata (topics, partitions)
 * and every partition's watermarks. The high watermark of a partition is
 * the count of messages ever written to it (the mock deletes nothing), so
 * stratus_bus_topic_messages_total is "messages in" per topic. Bytes, and
 * messages read by consumers, are not known to the mock: not exported.
 */
#define LOG_TAG "bus"
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"
#include "core/prom.h"

#define QUERY_TIMEOUT_MS 2000
#define MAX_TOPICS 4096

struct bus_metrics {
	struct prom_server *srv;
	pthread_mutex_t lock;
	rd_kafka_t *rk;            /* the scraping client, made on first use */
	char *bootstraps;
	long brokers;
	uint64_t scrapes_failed;
};

static int client_open(struct bus_metrics *m)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char errstr[256];

	rd_kafka_conf_set_log_cb(conf, bus_rdkafka_log);
	if (bus_conf_set(conf, "bootstrap.servers", m->bootstraps) < 0 ||
	    bus_conf_set(conf, "client.id", "stratus-bus-metrics") < 0 ||
	    bus_conf_set(conf, "log_level", "3") < 0) {
		rd_kafka_conf_destroy(conf);
		return -EINVAL;
	}
	m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!m->rk) {
		log_warn("metrics: cannot make a client error=\"%s\"", errstr);
		return -EIO;
	}
	return 0;
}

static void write_topics(struct bus_metrics *m, struct strbuf *sb,
			 const struct rd_kafka_metadata *md)
{
	prom_head(sb, "stratus_bus_topic_partitions", "gauge", "Partitions of the topic.");
	for (int t = 0; t < md->topic_cnt && t < MAX_TOPICS; t++)
		sb_printf(sb, "stratus_bus_topic_partitions{topic=\"%s\"} %d\n",
			  md->topics[t].topic, md->topics[t].partition_cnt);
	prom_head(sb, "stratus_bus_topic_messages_total", "counter",
		  "Messages written to the topic (sum of its partitions' high watermarks).");
	for (int t = 0; t < md->topic_cnt && t < MAX_TOPICS; t++) {
		const struct rd_kafka_metadata_topic *tp = &md->topics[t];
		long long sum = 0;

		for (int p = 0; p < tp->partition_cnt; p++) {
			int64_t lo = 0, hi = 0;

			if (rd_kafka_query_watermark_offsets(m->rk, tp->topic,
							     tp->partitions[p].id, &lo, &hi,
							     QUERY_TIMEOUT_MS) == 0 && hi > 0)
				sum += hi;
		}
		sb_printf(sb, "stratus_bus_topic_messages_total{topic=\"%s\"} %lld\n", tp->topic,
			  sum);
	}
}

static char *metrics_text(void *ud)
{
	struct bus_metrics *m = ud;
	struct strbuf sb = { .max = 4u << 20 };
	const struct rd_kafka_metadata *md = NULL;
	int up = 0;

	pthread_mutex_lock(&m->lock);
	if (m->rk || client_open(m) == 0) {
		rd_kafka_resp_err_t err = rd_kafka_metadata(m->rk, 1, NULL, &md, QUERY_TIMEOUT_MS);

		if (err) {
			log_warn("metrics: reading the broker's metadata failed error=\"%s\"",
				 rd_kafka_err2str(err));
			md = NULL;
		}
	}
	up = md != NULL;
	if (!up)
		m->scrapes_failed++;
	prom_head(&sb, "stratus_bus_up", "gauge",
		  "1 when the broker answered this scrape's metadata request.");
	sb_printf(&sb, "stratus_bus_up %d\n", up);
	prom_head(&sb, "stratus_bus_brokers", "gauge", "Brokers in the mock cluster.");
	sb_printf(&sb, "stratus_bus_brokers %ld\n", m->brokers);
	prom_head(&sb, "stratus_bus_scrape_failures_total", "counter",
		  "Scrapes whose metadata request got no answer.");
	sb_printf(&sb, "stratus_bus_scrape_failures_total %llu\n",
		  (unsigned long long)m->scrapes_failed);
	if (md) {
		prom_head(&sb, "stratus_bus_topics", "gauge", "Topics on the broker.");
		sb_printf(&sb, "stratus_bus_topics %d\n", md->topic_cnt);
		write_topics(m, &sb, md);
		rd_kafka_metadata_destroy(md);
	}
	pthread_mutex_unlock(&m->lock);
	return sb_steal(&sb);
}

int bus_metrics_check(const struct broker_config *c)
{
	struct sockaddr_in sa;
	int r;

	if (!c->metrics_listen || !*c->metrics_listen)
		return 0;
	r = prom_listen_parse("broker.metrics_listen", c->metrics_listen, &sa);
	return r < 0 ? err_prefix(r, "%s", cfg_where(&c->metrics_listen)) : 0;
}

int bus_metrics_start(const struct broker_config *c, const char *bootstraps,
		      struct bus_metrics **out)
{
	struct bus_metrics *m;
	int r;

	*out = NULL;
	if (!c->metrics_listen || !*c->metrics_listen)
		return 0;
	m = calloc(1, sizeof(*m));
	if (!m || !(m->bootstraps = strdup(bootstraps))) {
		free(m);
		return err_set(-ENOMEM, "out of memory");
	}
	pthread_mutex_init(&m->lock, NULL);
	m->brokers = c->brokers;
	r = prom_serve("broker.metrics_listen", c->metrics_listen, metrics_text, NULL, m, &m->srv);
	if (r < 0) {
		bus_metrics_stop(m);
		return r;
	}
	*out = m;
	return 0;
}

void bus_metrics_stop(struct bus_metrics *m)
{
	if (!m)
		return;
	prom_stop(m->srv); /* no scrape runs after this */
	if (m->rk)
		rd_kafka_destroy(m->rk);
	pthread_mutex_destroy(&m->lock);
	free(m->bootstraps);
	free(m);
}
