/* The bus: and broker: config sections. */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"

const struct cfg_field bus_config_fields[] = {
	{ .key = "bootstrap_servers", .type = CFG_STRING,
	  .offset = offsetof(struct bus_config, bootstrap_servers),
	  .expected = "a list of brokers like host1:9092,host2:9092" },
	{ .key = "address_file", .type = CFG_STRING,
	  .offset = offsetof(struct bus_config, address_file), .expected = "a file path" },
	{ .key = "client_id", .type = CFG_STRING, .offset = offsetof(struct bus_config, client_id) },
	{ .key = "group_id", .type = CFG_STRING, .offset = offsetof(struct bus_config, group_id) },
	{ .key = "max_message_bytes", .type = CFG_SIZE,
	  .offset = offsetof(struct bus_config, max_message_bytes), .def = "1M" },
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
	{ .key = "listen", .type = CFG_STRING, .offset = offsetof(struct broker_config, listen),
	  .def = "127.0.0.1", .expected = "an IPv4 address of this machine, like 10.0.0.5:9092" },
	{ .key = "topics", .type = CFG_MAP, .offset = offsetof(struct broker_config, topics) },
	{ .key = "metrics_listen", .type = CFG_STRING,
	  .offset = offsetof(struct broker_config, metrics_listen), .expected = "ADDR:PORT" },
	{ 0 },
};

void broker_config_free(struct broker_config *c)
{
	cfg_free(broker_config_fields, c);
}

int broker_listen_addr(const struct broker_config *c, struct sockaddr_in *out)
{
	struct sockaddr_in sa;
	const char *colon;
	long max;
	int r;

	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	out->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (!c->listen)
		return 0; /* not loaded from a file: 127.0.0.1, ports of the kernel's choice */
	colon = strrchr(c->listen, ':');
	max = 65535 - (c->brokers > 1 ? c->brokers - 1 : 0);
	r = net_addr_port_parse(c->listen, 1, max, NET_PORT_OPTIONAL, &sa);
	if (r == -ERANGE)
		return err_set(-EINVAL, "%s: broker.listen: port '%s': expected 1 to %ld (broker N "
			       "listens on port + N - 1)", cfg_where(&c->listen), colon + 1, max);
	if (r < 0)
		return err_set(-EINVAL, "%s: broker.listen: expected an IPv4 address of this "
			       "machine and an optional port, like 10.0.0.5 or 10.0.0.5:9092, got '%s'",
			       cfg_where(&c->listen), c->listen);
	/* the brokers advertise the address they listen on: a wildcard would
	 * be advertised as is, and no client can connect to it */
	if (sa.sin_addr.s_addr == htonl(INADDR_ANY) || sa.sin_addr.s_addr == htonl(INADDR_BROADCAST))
		return err_set(-EINVAL, "%s: broker.listen: %.*s cannot be advertised to clients: "
			       "give one address of this machine", cfg_where(&c->listen),
			       colon ? (int)(colon - c->listen) : (int)strlen(c->listen), c->listen);
	*out = sa;
	return 0;
}
