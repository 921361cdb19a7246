/* The bus: and broker: config sections. */
#include <stddef.h>

#include "bus/bus.h"

const struct cfg_field bus_config_fields[] = {
	{ .key = "bootstrap_servers", .type = CFG_STRING,
	  .offset = offsetof(struct bus_config, bootstrap_servers),
	  .expected = "a list of brokers like host1:9092,host2:9092" },
	{ .key = "address_file", .type = CFG_STRING,
	  .offset = offsetof(struct bus_config, address_file), .expected = "a file path" },
	{ .key = "client_id", .type = CFG_STRING, .offset = offsetof(struct bus_config, client_id) },
	{ .key = "group_id", .type = CFG_STRING, .offset = offsetof(struct bus_config, group_id) },
	{ .key = "properties", .type = CFG_MAP, .offset = offsetof(struct bus_config, properties) },
	{ 0 },
};

void bus_config_free(struct bus_config *c)
{
	cfg_free(bus_config_fields, c);
}

const struct cfg_field broker_config_fields[] = {
	{ .key = "brokers", .type = CFG_INT, .offset = offsetof(struct broker_config, brokers),
	  .min = 1, .max = 16, .def = "1" },
	{ .key = "partitions", .type = CFG_INT,
	  .offset = offsetof(struct broker_config, partitions), .min = 1, .max = 256, .def = "4" },
	{ .key = "address_file", .type = CFG_STRING,
	  .offset = offsetof(struct broker_config, address_file), .expected = "a file path" },
	{ .key = "topics", .type = CFG_MAP, .offset = offsetof(struct broker_config, topics) },
	{ 0 },
};

void broker_config_free(struct broker_config *c)
{
	cfg_free(broker_config_fields, c);
}
