/*
 * bus: the Kafka message bus (librdkafka) and the Stratus envelope.
 * See docs/bus.md.
 */
#ifndef STRATUS_BUS_H
#define STRATUS_BUS_H

#include "core/core.h"

/* Where stratus-bus writes its bootstrap address, and where clients look
 * for it when bus.bootstrap_servers is not set. STRATUS_BUS_ADDR_FILE in
 * the environment overrides this default. */
#define BUS_DEFAULT_ADDR_FILE "/run/stratus/bus.addr"

/* The `bus:` section, shared by every daemon and stratusctl. */
struct bus_config {
	char *bootstrap_servers;    /* "host:port,...": a real Kafka cluster */
	char *address_file;         /* else: the file stratus-bus wrote */
	char *client_id;
	char *group_id;             /* consumer group (daemons set their own default) */
	struct cfg_map properties;  /* passed through to librdkafka (SASL/TLS...) */
};
extern const struct cfg_field bus_config_fields[];
void bus_config_free(struct bus_config *c);

/* The `broker:` section of stratus-bus. */
struct broker_config {
	long brokers;               /* mock cluster size */
	long partitions;            /* default partitions per topic */
	char *address_file;
	struct cfg_map topics;      /* topic -> partition count */
};
extern const struct cfg_field broker_config_fields[];
void broker_config_free(struct broker_config *c);

#endif
