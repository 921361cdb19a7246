/* bus internals that the bus's own files and its tests share. */
#ifndef STRATUS_BUS_PRIV_H
#define STRATUS_BUS_PRIV_H

#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "bus/bus.h"

struct field;

/* One row of the message type table (bus/types.c). */
struct bus_type {
	const char *name;                 /* "instance.boot" */
	enum bus_topic_class tc;          /* the topic class it travels on */
	const struct field *fields;       /* the body's schema */
	int (*check)(const json_t *body); /* extra check after the schema, or NULL */
};

const struct bus_type *bus_type_table(size_t *n);
/* The row of NAME on class tc (BUS_TC_LAST: the first row of NAME). */
const struct bus_type *bus_type_find(const char *name, enum bus_topic_class tc);
/* bus_validate() that also returns the row that accepted the body. */
int bus_type_validate(const char *type, enum bus_topic_class tc, const json_t *body,
		      const struct bus_type **row);

/* librdkafka configuration for CFG: bootstrap, client.id, then DEFAULTS
 * (key, value, ..., NULL), then bus.properties (which win over defaults;
 * for a producer, consumer-only properties are left out). *out:
 * rd_kafka_conf_destroy() (or hand it to rd_kafka_new). */
int bus_rdkafka_conf(const struct bus_config *cfg, const char *const *defaults, bool producer,
		     rd_kafka_conf_t **out);
int bus_conf_set(rd_kafka_conf_t *conf, const char *key, const char *val);

/* Bytes of Kafka protocol (record batch and request headers) allowed
 * around a message of bus.max_message_bytes. */
#define BUS_PROTOCOL_HEADROOM (64 * 1024)
/* bus.max_message_bytes (0: BUS_MAX_MESSAGE) checked: 1 KiB to
 * BUS_MAX_MESSAGE; -EINVAL naming the key. */
int bus_message_limit(uint64_t configured, size_t *out);
/* librdkafka's log lines, through ours (rd_kafka_conf_set_log_cb). */
void bus_rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* broker.listen (bus/broker.c): while bus_broker_start() creates the mock
 * cluster in this thread, a bind of an AF_INET socket to 127.0.0.1:0 is to
 * be made to the configured address instead. True with *out filled in when
 * SA is such a bind (and FD is set up for it); stratus-bus's bind()
 * (bus/main.c) asks. */
bool bus_broker_bind_rewrite(int fd, const struct sockaddr *sa, socklen_t len,
			     struct sockaddr_in *out);
/* What the rewritten bind returned (-errno or 0), for the error message. */
void bus_broker_bind_result(int r);

/* The mock cluster behind a started broker (for fault-injecting tests). */
rd_kafka_mock_cluster_t *bus_broker_mock(struct bus_broker *b);


/* ---- the client's bootstrap (bus/bootstrap.c), shared with bus/client.c -- */
/* bus_rdkafka_conf() on a bootstrap already known */
int bus_rdkafka_conf_at(const struct bus_config *cfg, const char *bootstrap,
			const char *const *defaults, bool producer, rd_kafka_conf_t **out);
int bus_conf_set_size(rd_kafka_conf_t *conf, const char *key, size_t v);

/*
 * When the bootstrap comes from stratus-bus's address file, a client looks
 * at the file at most once a second (sooner while librdkafka says every
 * broker is down) from its poll paths; when the file names another broker
 * (stratus-bus restarted on a new port), it rebuilds its librdkafka handle
 * there. See docs/bus.md, "The broker comes and goes".
 */
struct bus_follow {
	char *path;            /* the address file; NULL: bus.bootstrap_servers */
	char *addr;            /* the bootstrap the handle was made with */
	int64_t next_ms;       /* next look at the file */
	int down;              /* all brokers down (error callback; atomic) */
};
/* The bootstrap for CFG into *bootstrap (malloc'd); F follows the address
 * file when that is where it came from. */
int bus_follow_init(struct bus_follow *f, const struct bus_config *cfg, char **bootstrap);
void bus_follow_free(struct bus_follow *f);
/* 1 with *to (malloc'd) when the address file names another bootstrap now */
int bus_follow_moved(struct bus_follow *f, char **to);
/* One log line per move of the broker, whatever the number of clients. */
void bus_follow_log_move(const char *from, const char *to);
/* librdkafka's error callback body; F (may be NULL) learns "all brokers down". */
void bus_client_error(rd_kafka_t *rk, int err, const char *reason, struct bus_follow *f);

#endif
