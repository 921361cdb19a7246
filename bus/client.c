/*
 * The librdkafka client (its configuration: bus/bootstrap.c): the idempotent
 * producer with delivery reports, the at-least-once consumer.
 *
 * Nothing here knows whether the brokers are stratus-bus's mock cluster or
 * a real Kafka cluster: both are reached through bootstrap.servers.
 */
#define LOG_TAG "bus"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"

/* ---- producer ---------------------------------------------------------- */

struct bus_producer {
	rd_kafka_t *rk;
	const struct bus_config *cfg;  /* to rebuild rk; outlives the producer */
	size_t max_message;            /* bus.max_message_bytes */
	struct bus_follow follow;
	pthread_mutex_t follow_mu;     /* one thread looks at the file */
	pthread_rwlock_t lock;         /* rk is replaced under the write lock */
	uint64_t reconnects;           /* atomic */
	uint64_t delivered, failed;    /* totals (atomic) */
	uint64_t failed_at_flush;      /* failed at the last flush */
	char last_error[256];
	bus_delivery_fn on_delivery;
	void *opaque;
};

/* A message purged from the handle of a broker that went away: queue it
 * again on the new handle (under the write lock of producer_rebuild). */
static bool requeue(struct bus_producer *p, rd_kafka_t *rk, const rd_kafka_message_t *m)
{
	rd_kafka_resp_err_t err;

	if (rk == p->rk || (m->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE &&
			    m->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT))
		return false;
	err = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(rd_kafka_topic_name(m->rkt)),
				RD_KAFKA_V_KEY(m->key, m->key_len),
				RD_KAFKA_V_VALUE(m->payload, m->len),
				RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
	if (err) {
		log_error("cannot queue again for the new broker topic=%s error=\"%s\"",
			  rd_kafka_topic_name(m->rkt), rd_kafka_err2str(err));
		return false;
	}
	return true;
}

static void delivery_report(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct bus_producer *p = opaque;
	const char *topic = rd_kafka_topic_name(m->rkt);

	if (requeue(p, rk, m))
		return; /* its report comes from the new handle */
	if (m->err) {
		__atomic_add_fetch(&p->failed, 1, __ATOMIC_SEQ_CST);
		snprintf(p->last_error, sizeof(p->last_error), "%s", rd_kafka_err2str(m->err));
		log_error("produce failed topic=%s key=%.*s bytes=%zu error=\"%s\"", topic,
			  (int)(m->key ? m->key_len : 0), m->key ? (const char *)m->key : "",
			  m->len, rd_kafka_err2str(m->err));
	} else {
		__atomic_add_fetch(&p->delivered, 1, __ATOMIC_SEQ_CST);
	}
	if (p->on_delivery)
		p->on_delivery(p->opaque, topic, m->partition, m->offset, m->err ? -EIO : 0,
			       m->err ? rd_kafka_err2str(m->err) : NULL);
}

static void producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct bus_producer *p = opaque;

	bus_client_error(rk, err, reason, p ? &p->follow : NULL);
}

/* Defaults that bus.properties may override. */
static const char *const producer_defaults[] = {
	"linger.ms", "2",               /* latency matters more than batch size here */
	NULL,
};

static int producer_handle(struct bus_producer *p, const char *bootstrap, rd_kafka_t **out)
{
	rd_kafka_conf_t *conf = NULL;
	char errstr[256];
	int r;

	r = bus_rdkafka_conf_at(p->cfg, bootstrap, producer_defaults, true, &conf);
	if (r < 0)
		return r;
	/* not negotiable: no duplicates, no reordering on retries; and the
	 * size limit is bus.max_message_bytes (bus_produce checks the
	 * payload; this leaves room for the protocol around it) */
	if ((r = bus_conf_set(conf, "enable.idempotence", "true")) < 0 ||
	    (r = bus_conf_set_size(conf, "message.max.bytes", p->max_message + BUS_PROTOCOL_HEADROOM)) < 0)
		goto fail;
	rd_kafka_conf_set_dr_msg_cb(conf, delivery_report);
	rd_kafka_conf_set_error_cb(conf, producer_error_cb);
	rd_kafka_conf_set_opaque(conf, p);
	*out = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!*out) {
		r = err_set(-EINVAL, "bus: cannot create a producer: %s", errstr);
		goto fail;
	}
	return 0;
fail:
	rd_kafka_conf_destroy(conf);
	return r;
}

/* The broker moved: a handle on TO, the old one's queue moved onto it. */
static void producer_rebuild(struct bus_producer *p, char *to)
{
	rd_kafka_t *old = NULL, *nrk = NULL;
	int64_t until;

	if (producer_handle(p, to, &nrk) < 0) {
		log_warn("bus: broker moved to %s, cannot reconnect yet: %s", to, err_msg());
		free(to);
		return;
	}
	bus_follow_log_move(p->follow.addr, to);
	pthread_rwlock_wrlock(&p->lock);
	old = p->rk;
	p->rk = nrk;
	/* what the dead broker never acknowledged comes back in delivery
	 * reports (PURGE_*) and requeue() gives it to the new handle */
	rd_kafka_purge(old, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	until = time_mono_ms() + 5000;
	do
		rd_kafka_poll(old, 10);
	while (rd_kafka_outq_len(old) > 0 && time_mono_ms() < until);
	pthread_rwlock_unlock(&p->lock);
	rd_kafka_destroy(old);
	free(p->follow.addr);
	p->follow.addr = to;
	__atomic_add_fetch(&p->reconnects, 1, __ATOMIC_SEQ_CST);
}

/* From the poll paths: has stratus-bus moved? */
static void producer_follow(struct bus_producer *p)
{
	char *to = NULL;

	if (!p->follow.path || pthread_mutex_trylock(&p->follow_mu) != 0)
		return;
	if (bus_follow_moved(&p->follow, &to) > 0)
		producer_rebuild(p, to);
	pthread_mutex_unlock(&p->follow_mu);
}

int bus_producer_new(const struct bus_config *cfg, struct bus_producer **out)
{
	_cleanup_free_ char *bootstrap = NULL;
	struct bus_producer *p = NULL;
	int r;

	p = calloc(1, sizeof(*p));
	if (!p)
		return err_set(-ENOMEM, "out of memory");
	p->cfg = cfg;
	pthread_mutex_init(&p->follow_mu, NULL);
	pthread_rwlock_init(&p->lock, NULL);
	if ((r = bus_message_limit(cfg ? cfg->max_message_bytes : 0, &p->max_message)) < 0 ||
	    (r = bus_follow_init(&p->follow, cfg, &bootstrap)) < 0 ||
	    (r = producer_handle(p, bootstrap, &p->rk)) < 0)
		goto fail;
	*out = p;
	return 0;
fail:
	bus_follow_free(&p->follow);
	pthread_rwlock_destroy(&p->lock);
	pthread_mutex_destroy(&p->follow_mu);
	free(p);
	return r;
}

int bus_producer_prepare(struct bus_producer *p, const char *topic)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_t *rkt;
	rd_kafka_resp_err_t err;
	int r = 0;

	pthread_rwlock_rdlock(&p->lock);
	rkt = rd_kafka_topic_new(p->rk, topic, NULL);
	if (!rkt) {
		r = err_set(-EINVAL, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
		goto out;
	}
	/* the answer fills the handle's cache: the first produce needs no
	 * metadata round of its own (librdkafka looks for unknown topics on a
	 * one-second timer) */
	err = rd_kafka_metadata(p->rk, 0, rkt, &md, 5000);
	if (err)
		r = err_set(-EIO, "topic %s: no metadata: %s", topic, rd_kafka_err2str(err));
	else
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
out:
	pthread_rwlock_unlock(&p->lock);
	return r;
}

void bus_producer_set_delivery_cb(struct bus_producer *p, bus_delivery_fn fn, void *opaque)
{
	p->on_delivery = fn;
	p->opaque = opaque;
}

/* flags: RD_KAFKA_MSG_F_COPY or RD_KAFKA_MSG_F_FREE (then data is ours on success) */
static int produce(struct bus_producer *p, const char *topic, const char *key, void *data,
		   size_t len, int flags)
{
	rd_kafka_resp_err_t err;

	if (len > p->max_message)
		return err_set(-E2BIG, "bus: message for %s of %zu bytes is over "
			       "bus.max_message_bytes (%zu bytes): not sent", topic, len,
			       p->max_message);
	for (;;) {
		producer_follow(p);
		pthread_rwlock_rdlock(&p->lock);
		err = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic),
					RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
					RD_KAFKA_V_VALUE(data, len), RD_KAFKA_V_MSGFLAGS(flags),
					RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		rd_kafka_poll(p->rk, 10); /* make room: serve delivery reports */
		pthread_rwlock_unlock(&p->lock);
	}
	if (!err)
		rd_kafka_poll(p->rk, 0);
	pthread_rwlock_unlock(&p->lock);
	if (err)
		return err_set(-EIO, "produce to %s: %s", topic, rd_kafka_err2str(err));
	return 0;
}

int bus_produce_raw(struct bus_producer *p, const char *topic, const char *key,
		    const void *data, size_t len)
{
	return produce(p, topic, key, (void *)(uintptr_t)data, len, RD_KAFKA_MSG_F_COPY);
}

int bus_produce(struct bus_producer *p, const char *topic, const char *key,
		const struct bus_envelope *e)
{
	enum bus_topic_class tc;
	char *data = NULL;
	size_t len;
	int r;

	if (!topic) {
		if (e->tc == BUS_TC_HOST)
			return err_set(-EINVAL, "%s: travels on %s<host>: the topic must be given",
				       e->type, BUS_TOPIC_HOST_PREFIX);
		topic = bus_topic_class_name(e->tc);
	}
	r = bus_topic_classify(topic, &tc);
	if (r < 0)
		return r;
	if (tc != e->tc && bus_validate(e->type, tc, e->body) < 0)
		return err_set(-EINVAL, "%s: does not travel on %s (its topic is %s)", e->type,
			       topic, bus_topic_class_name(e->tc));
	if (!key)
		key = bus_envelope_default_key(e);
	r = bus_envelope_serialize(e, &data, &len);
	if (r < 0)
		return r;
	r = produce(p, topic, key, data, len, RD_KAFKA_MSG_F_FREE);
	if (r < 0)
		free(data);
	return r;
}

/* rd_kafka_poll/flush in slices of at most a second, following the broker */
static rd_kafka_resp_err_t producer_wait(struct bus_producer *p, int timeout_ms, bool flush)
{
	int64_t until = time_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

	for (;;) {
		int64_t left = until - time_mono_ms();
		int slice = left > 1000 ? 1000 : left > 0 ? (int)left : 0;

		producer_follow(p);
		pthread_rwlock_rdlock(&p->lock);
		if (flush)
			err = rd_kafka_flush(p->rk, slice);
		else
			rd_kafka_poll(p->rk, slice);
		pthread_rwlock_unlock(&p->lock);
		if ((flush && err != RD_KAFKA_RESP_ERR__TIMED_OUT) || slice == 0 ||
		    time_mono_ms() >= until)
			return err;
	}
}

void bus_producer_poll(struct bus_producer *p, int timeout_ms)
{
	producer_wait(p, timeout_ms, false);
}

int bus_producer_flush(struct bus_producer *p, int timeout_ms)
{
	rd_kafka_resp_err_t err = producer_wait(p, timeout_ms, true);
	uint64_t failed = __atomic_load_n(&p->failed, __ATOMIC_SEQ_CST);
	uint64_t new_failed = failed - p->failed_at_flush;

	p->failed_at_flush = failed;
	if (new_failed)
		return err_set(-EIO, "bus: %" PRIu64 " message(s) could not be delivered: %s",
			       new_failed, p->last_error);
	if (err == RD_KAFKA_RESP_ERR__TIMED_OUT)
		return err_set(-ETIMEDOUT, "bus: %d message(s) still undelivered after %d ms",
			       rd_kafka_outq_len(p->rk), timeout_ms);
	return 0;
}

uint64_t bus_producer_delivered(const struct bus_producer *p)
{
	return __atomic_load_n(&p->delivered, __ATOMIC_SEQ_CST);
}

uint64_t bus_producer_failed(const struct bus_producer *p)
{
	return __atomic_load_n(&p->failed, __ATOMIC_SEQ_CST);
}

uint64_t bus_producer_reconnects(const struct bus_producer *p)
{
	return __atomic_load_n(&p->reconnects, __ATOMIC_SEQ_CST);
}

void bus_producer_free(struct bus_producer *p)
{
	if (!p)
		return;
	if (producer_wait(p, 10000, true) == RD_KAFKA_RESP_ERR__TIMED_OUT)
		log_error("producer closed with messages undelivered count=%d",
			  rd_kafka_outq_len(p->rk));
	rd_kafka_destroy(p->rk);
	bus_follow_free(&p->follow);
	pthread_rwlock_destroy(&p->lock);
	pthread_mutex_destroy(&p->follow_mu);
	free(p);
}

/* ---- consumer ---------------------------------------------------------- */

struct bus_consumer {
	rd_kafka_t *rk;
	const struct bus_config *cfg;  /* outlives the consumer */
	char *group;                   /* NULL in observe mode */
	char **topics;                 /* NULL-terminated copy */
	bool from_end;
	size_t max_message;            /* bus.max_message_bytes */
	struct bus_follow follow;
	uint64_t reconnects;
	bool observe;
	struct bus_producer *errors;   /* for error events */
	bool own_errors;
	char *source;
	uint64_t rejected;
	unsigned fail_streak;          /* handler failures in a row */
	struct retired *retired;       /* handles of brokers gone, being destroyed */
};

/*
 * The handle of a broker that went away, destroyed on a thread of its own:
 * a commit in flight there (ours, or the auto-commit timer's) waits for a
 * coordinator that never comes back, and librdkafka's destroy waits for it
 * (one session.timeout.ms, measured with 2.0.2: 6 s with our default, 45 s
 * with librdkafka's), which the caller's loop must not.
 */
struct retired {
	pthread_t thread;
	rd_kafka_t *rk;
	int done;                      /* atomic: destroyed, the thread ends */
	struct retired *next;
};

static void *retire_main(void *arg)
{
	struct retired *r = arg;

	/* no close: the group's coordinator is gone with the old broker */
	rd_kafka_destroy_flags(r->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Join the retired handles whose destroy is over (ALL: wait for every one;
 * their callbacks may still see C until then). */
static void consumer_reap(struct bus_consumer *c, bool all)
{
	struct retired **pp = &c->retired;

	while (*pp) {
		struct retired *r = *pp;

		if (!all && !__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		pthread_join(r->thread, NULL);
		free(r);
	}
}

static void consumer_retire(struct bus_consumer *c, rd_kafka_t *rk)
{
	struct retired *r = calloc(1, sizeof(*r));

	if (r) {
		r->rk = rk;
		if (pthread_create(&r->thread, NULL, retire_main, r) == 0) {
			r->next = c->retired;
			c->retired = r;
			return;
		}
		free(r);
	}
	log_warn("bus: destroying the old consumer handle inline (no thread for it)");
	rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

/* observe mode: assign every partition of the wanted topics (no group) */
static int observe_assign(rd_kafka_t *rk, const char *const *topics, bool from_end)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_partition_list_t *parts = NULL;
	rd_kafka_resp_err_t err;
	int r = 0;

	/* metadata of the named topics (which creates them where auto-create is
	 * on), else of every topic */
	if (topics && topics[0]) {
		for (size_t i = 0; topics[i]; i++) {
			rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topics[i], NULL);

			if (!rkt)
				return err_set(-EINVAL, "topic %s: %s", topics[i],
					       rd_kafka_err2str(rd_kafka_last_error()));
			for (int tries = 0; tries < 20; tries++) {
				err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
				if (err)
					break;
				if (md->topic_cnt == 1 && !md->topics[0].err &&
				    md->topics[0].partition_cnt > 0)
					break;
				rd_kafka_metadata_destroy(md);
				md = NULL;
				usleep(100 * 1000); /* being created */
			}
			rd_kafka_topic_destroy(rkt);
			if (err || !md) {
				r = err_set(-EIO, "topic %s: no metadata: %s", topics[i],
					    err ? rd_kafka_err2str(err) : "topic does not exist");
				goto out;
			}
			if (!parts)
				parts = rd_kafka_topic_partition_list_new(8);
			for (int p = 0; p < md->topics[0].partition_cnt; p++) {
				int64_t lo = RD_KAFKA_OFFSET_BEGINNING, hi = RD_KAFKA_OFFSET_END;

				/* the end as an offset now, not OFFSET_END resolved
				 * later: what is produced after this call is seen */
				if (from_end && rd_kafka_query_watermark_offsets(
							rk, topics[i], p, &lo, &hi, 5000))
					hi = RD_KAFKA_OFFSET_END;
				rd_kafka_topic_partition_list_add(parts, topics[i], p)->offset =
					from_end ? hi : RD_KAFKA_OFFSET_BEGINNING;
			}
			rd_kafka_metadata_destroy(md);
			md = NULL;
		}
	} else {
		err = rd_kafka_metadata(rk, 1, NULL, &md, 5000);
		if (err)
			return err_set(-EIO, "bus: no metadata: %s", rd_kafka_err2str(err));
		parts = rd_kafka_topic_partition_list_new(8);
		for (int t = 0; t < md->topic_cnt; t++) {
			if (strncmp(md->topics[t].topic, "stratus.", 8) != 0)
				continue;
			for (int p = 0; p < md->topics[t].partition_cnt; p++)
				rd_kafka_topic_partition_list_add(parts, md->topics[t].topic, p)
					->offset = from_end ? RD_KAFKA_OFFSET_END
							    : RD_KAFKA_OFFSET_BEGINNING;
		}
	}
	err = rd_kafka_assign(rk, parts);
	if (err)
		r = err_set(-EIO, "bus: assign: %s", rd_kafka_err2str(err));
out:
	if (md)
		rd_kafka_metadata_destroy(md);
	if (parts)
		rd_kafka_topic_partition_list_destroy(parts);
	return r;
}

/* Defaults that bus.properties may override. */
static const char *const consumer_defaults[] = {
	"auto.offset.reset", "earliest",   /* a new group misses no request */
	"auto.commit.interval.ms", "1000", /* stored offsets reach the broker within 1 s */
	/* a dead member's partitions move on after 6 s (Kafka's minimum),
	 * not 45 s: the group's other members take over sooner */
	"session.timeout.ms", "6000",
	"heartbeat.interval.ms", "2000",
	NULL,
};

static void consumer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct bus_consumer *c = opaque;

	bus_client_error(rk, err, reason, c ? &c->follow : NULL);
}

/* A librdkafka consumer on BOOTSTRAP: the group's subscription, or in
 * observe mode every partition of the topics assigned. */
static int consumer_handle(struct bus_consumer *c, const char *bootstrap, rd_kafka_t **out)
{
	/* the fetch sizes follow bus.max_message_bytes: a partition's fetch
	 * holds one message at the limit; a response may carry a message far
	 * over it (up to 32 times), which is then answered, not a wedge */
	size_t part = c->max_message + BUS_PROTOCOL_HEADROOM, fetch = 4 * part;
	size_t receive = fetch + 32 * c->max_message;
	rd_kafka_conf_t *conf = NULL;
	rd_kafka_t *rk = NULL;
	char errstr[256];
	int r;

	r = bus_rdkafka_conf_at(c->cfg, bootstrap, c->observe ? NULL : consumer_defaults, false,
			    &conf);
	if (r < 0)
		return r;
	rd_kafka_conf_set_error_cb(conf, consumer_error_cb);
	rd_kafka_conf_set_opaque(conf, c);
	if ((r = bus_conf_set_size(conf, "max.partition.fetch.bytes", part)) < 0 ||
	    (r = bus_conf_set_size(conf, "fetch.max.bytes", fetch)) < 0 ||
	    (r = bus_conf_set_size(conf, "receive.message.max.bytes", receive)) < 0)
		goto fail;
	if (c->observe) {
		char gid[UUID_STRLEN + 16];

		/* a group of its own that never commits: assign() wants one */
		snprintf(gid, sizeof(gid), "observer-");
		uuid_generate_str(gid + strlen(gid));
		if ((r = bus_conf_set(conf, "group.id", gid)) < 0 ||
		    (r = bus_conf_set(conf, "enable.auto.commit", "false")) < 0 ||
		    (r = bus_conf_set(conf, "allow.auto.create.topics", "true")) < 0)
			goto fail;
	} else {
		if ((r = bus_conf_set(conf, "group.id", c->group)) < 0 ||
		    /* not negotiable: at least once */
		    (r = bus_conf_set(conf, "enable.auto.offset.store", "false")) < 0 ||
		    (r = bus_conf_set(conf, "enable.auto.commit", "true")) < 0)
			goto fail;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (!rk) {
		r = err_set(-EINVAL, "bus: cannot create a consumer: %s", errstr);
		goto fail;
	}
	conf = NULL;
	rd_kafka_poll_set_consumer(rk);
	if (c->observe) {
		r = observe_assign(rk, (const char *const *)c->topics, c->from_end);
		if (r < 0)
			goto fail;
	} else {
		rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(4);
		rd_kafka_resp_err_t err;

		for (size_t i = 0; c->topics[i]; i++)
			rd_kafka_topic_partition_list_add(subs, c->topics[i], RD_KAFKA_PARTITION_UA);
		err = rd_kafka_subscribe(rk, subs);
		rd_kafka_topic_partition_list_destroy(subs);
		if (err) {
			r = err_set(-EINVAL, "bus: subscribe: %s", rd_kafka_err2str(err));
			goto fail;
		}
	}
	*out = rk;
	return 0;
fail:
	if (conf)
		rd_kafka_conf_destroy(conf);
	if (rk)
		rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	return r;
}

int bus_consumer_new(const struct bus_config *cfg, const struct bus_consumer_opts *o,
		     struct bus_consumer **out)
{
	_cleanup_free_ char *bootstrap = NULL;
	struct bus_consumer *c = NULL;
	size_t n = 0;
	int r;

	while (o->topics && o->topics[n])
		n++;
	if (n == 0 && !o->observe)
		return err_set(-EINVAL, "bus: consumer: no topics given");
	c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(-ENOMEM, "out of memory");
	c->observe = o->observe;
	c->from_end = o->from_end;
	c->cfg = cfg;
	c->source = strdup(o->source ? o->source : cfg && cfg->client_id ? cfg->client_id
									   : "stratus");
	c->topics = calloc(n + 1, sizeof(char *));
	if (!o->observe)
		c->group = strdup(o->group_id ? o->group_id : cfg && cfg->group_id ? cfg->group_id
										   : "stratus");
	if (!c->source || !c->topics || (!o->observe && !c->group)) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		c->topics[i] = strdup(o->topics[i]);
		if (!c->topics[i]) {
			r = err_set(-ENOMEM, "out of memory");
			goto fail;
		}
	}
	if ((r = bus_message_limit(cfg ? cfg->max_message_bytes : 0, &c->max_message)) < 0 ||
	    (r = bus_follow_init(&c->follow, cfg, &bootstrap)) < 0 ||
	    (r = consumer_handle(c, bootstrap, &c->rk)) < 0)
		goto fail;
	c->errors = o->errors;
	*out = c;
	return 0;
fail:
	bus_consumer_free(c);
	return r;
}

/* The broker moved: a new consumer in the same group on the same topics
 * there (the new broker has neither the old offsets nor the messages: the
 * group starts at the beginning of its partitions). */
static void consumer_follow(struct bus_consumer *c)
{
	rd_kafka_t *rk = NULL;
	char *to = NULL;

	if (bus_follow_moved(&c->follow, &to) <= 0)
		return;
	if (consumer_handle(c, to, &rk) < 0) {
		log_warn("bus: broker moved to %s, cannot reconnect yet: %s", to, err_msg());
		free(to);
		return;
	}
	bus_follow_log_move(c->follow.addr, to);
	consumer_reap(c, false); /* those of earlier moves that are over */
	consumer_retire(c, c->rk);
	c->rk = rk;
	c->fail_streak = 0;
	free(c->follow.addr);
	c->follow.addr = to;
	c->reconnects++;
}

/* The request id of a message that did not validate, when it has one. */
static void raw_request_id(const void *data, size_t len, char out[UUID_STRLEN])
{
	json_t *root = len <= BUS_MAX_MESSAGE ? json_loadb(data, len, 0, NULL) : NULL;
	const char *rid = json_string_value(json_object_get(root, "request_id"));

	if (rid && uuid_valid(rid))
		snprintf(out, UUID_STRLEN, "%s", rid);
	else
		uuid_generate_str(out);
	json_decref(root);
}

/* Answer an invalid message with request.result {ok: false} on stratus.events. */
static void answer_invalid(struct bus_consumer *c, const struct bus_message *m,
			   const char *why)
{
	struct bus_envelope *e = NULL;
	char rid[UUID_STRLEN];
	json_t *body;
	int r;

	if (!c->errors) {
		r = bus_producer_new(c->cfg, &c->errors);
		if (r < 0) {
			log_error("cannot answer an invalid message: %s", err_msg());
			return;
		}
		c->own_errors = true;
	}
	raw_request_id(m->payload, m->len, rid);
	body = json_pack("{s:b, s:s, s:{s:s, s:i, s:I}}", "ok", 0, "error", why, "data", "topic",
			 m->topic, "partition", (int)m->partition, "offset",
			 (json_int_t)m->offset);
	r = bus_envelope_new("request.result", BUS_TC_EVENTS, c->source, rid, body, &e);
	if (r >= 0)
		r = bus_produce(c->errors, BUS_TOPIC_EVENTS, m->key ? m->key : rid, e);
	if (r >= 0)
		r = bus_producer_flush(c->errors, 5000);
	if (r < 0)
		log_error("cannot answer an invalid message topic=%s partition=%d offset=%" PRId64
			  ": %s", m->topic, (int)m->partition, m->offset, err_msg());
	bus_envelope_free(e);
}

static int store_offset(struct bus_consumer *c, const rd_kafka_message_t *rkm)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_resp_err_t err;

	rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(rkm->rkt), rkm->partition)
		->offset = rkm->offset + 1;
	err = rd_kafka_offsets_store(c->rk, l);
	if (!err && l->elems[0].err)
		err = l->elems[0].err;
	rd_kafka_topic_partition_list_destroy(l);
	if (err) /* e.g. the partition was revoked meanwhile: it is delivered again */
		return err_set(-EIO, "store offset %s[%d]@%" PRId64 ": %s",
			       rd_kafka_topic_name(rkm->rkt), (int)rkm->partition, rkm->offset,
			       rd_kafka_err2str(err));
	return 0;
}

/* not durable: rewind the partition so that the message comes again */
static void rewind_to(struct bus_consumer *c, const rd_kafka_message_t *rkm)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_error_t *error;

	rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(rkm->rkt), rkm->partition)
		->offset = rkm->offset;
	error = rd_kafka_seek_partitions(c->rk, l, 5000);
	if (error) {
		log_error("rewind failed topic=%s partition=%d offset=%" PRId64 " error=\"%s\"",
			  rd_kafka_topic_name(rkm->rkt), (int)rkm->partition, rkm->offset,
			  rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
	}
	rd_kafka_topic_partition_list_destroy(l);
}

int bus_consumer_poll(struct bus_consumer *c, int timeout_ms, bus_handler_fn fn, void *opaque)
{
	rd_kafka_message_t *rkm;
	struct bus_envelope *e = NULL;
	_cleanup_free_ char *key = NULL;
	struct bus_message m = { 0 };
	int r;

	consumer_follow(c);
	rkm = rd_kafka_consumer_poll(c->rk, timeout_ms);
	if (!rkm)
		return 0;
	if (rkm->err) {
		r = 0;
		if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) {
			r = err_set(-EIO, "bus consumer: fatal: %s", rd_kafka_message_errstr(rkm));
		} else if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			log_warn("consumer error topic=%s error=\"%s\"",
				 rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "-",
				 rd_kafka_message_errstr(rkm));
		}
		rd_kafka_message_destroy(rkm);
		return r;
	}
	if (rkm->key) {
		key = strndup(rkm->key, rkm->key_len);
		if (!key) {
			rd_kafka_message_destroy(rkm);
			return err_set(-ENOMEM, "out of memory");
		}
	}
	m.topic = rd_kafka_topic_name(rkm->rkt);
	m.partition = rkm->partition;
	m.offset = rkm->offset;
	m.key = key;
	m.payload = rkm->payload;
	m.len = rkm->len;
	if (rkm->len > c->max_message)
		r = err_set(-E2BIG, "message of %zu bytes is over bus.max_message_bytes (%zu bytes)",
			    rkm->len, c->max_message);
	else
		r = bus_envelope_parse(rkm->payload ? rkm->payload : "", rkm->len, m.topic, &e);
	if (r < 0) {
		_cleanup_free_ char *why = strdup(err_msg());

		c->rejected++;
		if (c->observe) {
			m.error = why ? why : "invalid message";
			fn(opaque, &m);
		} else {
			log_warn("invalid message skipped topic=%s partition=%d offset=%" PRId64
				 " error=\"%s\"", m.topic, (int)m.partition, m.offset,
				 why ? why : "?");
			answer_invalid(c, &m, why ? why : "invalid message");
			if (store_offset(c, rkm) < 0)
				log_warn("%s", err_msg());
		}
		rd_kafka_message_destroy(rkm);
		return 1;
	}
	m.env = e;
	r = fn(opaque, &m);
	if (!c->observe) {
		if (r >= 0) {
			c->fail_streak = 0;
			if (store_offset(c, rkm) < 0)
				log_warn("%s", err_msg());
		} else {
			/* back off: 50 ms, 100 ms ... 5 s, so that a failing effect
			 * (store down, disk full) is not retried in a tight loop */
			unsigned shift = c->fail_streak < 7 ? c->fail_streak : 7;
			unsigned ms = (50u << shift) < 5000u ? 50u << shift : 5000u;

			c->fail_streak++;
			log_warn("handler failed, message will come again topic=%s partition=%d "
				 "offset=%" PRId64 " type=%s id=%s failures=%u retry_ms=%u", m.topic,
				 (int)m.partition, m.offset, e->type, e->id, c->fail_streak, ms);
			rewind_to(c, rkm);
			usleep(ms * 1000);
		}
	}
	bus_envelope_free(e);
	rd_kafka_message_destroy(rkm);
	return 1;
}

bool bus_consumer_assigned(struct bus_consumer *c)
{
	rd_kafka_topic_partition_list_t *parts = NULL;
	bool yes;

	if (rd_kafka_assignment(c->rk, &parts))
		return false;
	yes = parts->cnt > 0;
	rd_kafka_topic_partition_list_destroy(parts);
	return yes;
}

int bus_consumer_commit(struct bus_consumer *c)
{
	rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, NULL, 0);

	if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
		return err_set(-EIO, "bus: commit: %s", rd_kafka_err2str(err));
	return 0;
}

/*
 * The offsets are taken now, as the assignment's positions (the next
 * message poll would return: everything before it handled): with NULL,
 * librdkafka would read the stored offsets later, on its own thread, by
 * which time the caller may have stored those of work not durable yet.
 */
int bus_consumer_commit_async(struct bus_consumer *c)
{
	rd_kafka_topic_partition_list_t *parts = NULL, *now;
	rd_kafka_resp_err_t err;

	if (rd_kafka_assignment(c->rk, &parts))
		return 0; /* no assignment: nothing to commit */
	err = rd_kafka_position(c->rk, parts);
	now = rd_kafka_topic_partition_list_new(parts->cnt > 0 ? parts->cnt : 1);
	for (int i = 0; !err && i < parts->cnt; i++)
		if (parts->elems[i].offset >= 0) /* consumed from at least once */
			rd_kafka_topic_partition_list_add(now, parts->elems[i].topic,
							  parts->elems[i].partition)
				->offset = parts->elems[i].offset;
	if (!err && now->cnt > 0)
		err = rd_kafka_commit(c->rk, now, 1);
	rd_kafka_topic_partition_list_destroy(now);
	rd_kafka_topic_partition_list_destroy(parts);
	if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
		return err_set(-EIO, "bus: commit: %s", rd_kafka_err2str(err));
	return 0;
}

uint64_t bus_consumer_rejected(const struct bus_consumer *c)
{
	return c->rejected;
}

int64_t bus_consumer_lag(struct bus_consumer *c)
{
	rd_kafka_topic_partition_list_t *parts = NULL;
	int64_t lag = 0;

	if (rd_kafka_assignment(c->rk, &parts))
		return -1;
	if (parts->cnt == 0 || rd_kafka_position(c->rk, parts)) {
		rd_kafka_topic_partition_list_destroy(parts);
		return -1;
	}
	for (int i = 0; i < parts->cnt; i++) {
		int64_t lo, hi;
		const rd_kafka_topic_partition_t *p = &parts->elems[i];

		if (rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &lo, &hi) ||
		    hi < 0)
			continue;
		lag += p->offset >= 0 ? (hi > p->offset ? hi - p->offset : 0) : hi - lo;
	}
	rd_kafka_topic_partition_list_destroy(parts);
	return lag;
}

uint64_t bus_consumer_reconnects(const struct bus_consumer *c)
{
	return c->reconnects;
}

void bus_consumer_free(struct bus_consumer *c)
{
	if (!c)
		return;
	if (c->rk) {
		rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->rk);

		if (err)
			log_warn("consumer close: %s", rd_kafka_err2str(err));
		rd_kafka_destroy(c->rk);
	}
	consumer_reap(c, true);
	if (c->own_errors)
		bus_producer_free(c->errors);
	for (size_t i = 0; c->topics && c->topics[i]; i++)
		free(c->topics[i]);
	free(c->topics);
	free(c->group);
	bus_follow_free(&c->follow);
	free(c->source);
	free(c);
}
