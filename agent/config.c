/* The agent: section. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent.h"

static const struct cfg_field net_fields[] = {
	{ .key = "cidr", .type = CFG_STRING, .offset = offsetof(struct agent_net_config, cidr),
	  .def = "10.77.0.0/24", .expected = "an IPv4 network like 10.77.0.0/24" },
	{ .key = "range_start", .type = CFG_STRING,
	  .offset = offsetof(struct agent_net_config, range_start), .def = "10.77.0.10" },
	{ .key = "range_end", .type = CFG_STRING,
	  .offset = offsetof(struct agent_net_config, range_end), .def = "10.77.0.250" },
	{ .key = "gateway", .type = CFG_STRING, .offset = offsetof(struct agent_net_config, gateway),
	  .def = "10.77.0.1" },
	{ .key = "dns", .type = CFG_STRLIST, .offset = offsetof(struct agent_net_config, dns) },
	{ .key = "dhcp_hosts_dir", .type = CFG_STRING,
	  .offset = offsetof(struct agent_net_config, dhcp_hosts_dir), .def = "",
	  .expected = "an absolute directory path, or \"\" for no DHCP host entries" },
	{ .key = "dhcp_pid_file", .type = CFG_STRING,
	  .offset = offsetof(struct agent_net_config, dhcp_pid_file), .def = "",
	  .expected = "the pid file of the dnsmasq reading dhcp_hosts_dir, or \"\"" },
	{ .key = "filter", .type = CFG_ENUM,
	  .offset = CFG_ENUM_OFFSET(struct agent_net_config, filter), .names = agent_filter_names,
	  .def = "nftables" },
	{ .key = "nft", .type = CFG_STRING, .offset = offsetof(struct agent_net_config, nft),
	  .def = "nft", .expected = "the nft program" },
	{ .key = "port_mark", .type = CFG_INT,
	  .offset = offsetof(struct agent_net_config, port_mark), .min = 1, .max = 0x7fffffff,
	  .def = "21332" },
	{ 0 },
};

static const struct cfg_field console_fields[] = {
	{ .key = "listen", .type = CFG_STRING,
	  .offset = offsetof(struct agent_console_config, listen), .def = "",
	  .expected = "ADDR:PORT for the console proxy, or \"\" for none" },
	{ .key = "advertise", .type = CFG_STRING,
	  .offset = offsetof(struct agent_console_config, advertise), .def = "",
	  .expected = "HOST:PORT clients reach the proxy at, or \"\" for the listen address" },
	{ .key = "token_ttl", .type = CFG_DURATION,
	  .offset = offsetof(struct agent_console_config, token_ttl_ms), .def = "30s" },
	{ .key = "web_dir", .type = CFG_STRING,
	  .offset = offsetof(struct agent_console_config, web_dir),
	  .def = "/usr/local/share/stratus/console" },
	{ 0 },
};

const struct cfg_field agent_config_fields[] = {
	{ .key = "host", .type = CFG_STRING, .offset = offsetof(struct agent_config, host) },
	{ .key = "availability_zone", .type = CFG_STRING,
	  .offset = offsetof(struct agent_config, availability_zone), .def = "nova" },
	{ .key = "cpu_allocation_ratio", .type = CFG_DOUBLE,
	  .offset = offsetof(struct agent_config, cpu_allocation_ratio), .dmin = 0.1, .dmax = 64,
	  .def = "4.0" },
	{ .key = "ram_allocation_ratio", .type = CFG_DOUBLE,
	  .offset = offsetof(struct agent_config, ram_allocation_ratio), .dmin = 0.1, .dmax = 16,
	  .def = "1.0" },
	{ .key = "reserved_host_memory_mb", .type = CFG_INT,
	  .offset = offsetof(struct agent_config, reserved_host_memory_mb), .min = 0,
	  .max = 1L << 24, .def = "512" },
	{ .key = "reserved_host_cpus", .type = CFG_INT,
	  .offset = offsetof(struct agent_config, reserved_host_cpus), .min = 0, .max = 4096,
	  .def = "0" },
	{ .key = "metadata_address", .type = CFG_STRING,
	  .offset = offsetof(struct agent_config, metadata_address), .def = "169.254.169.254" },
	{ .key = "state_dir", .type = CFG_STRING, .offset = offsetof(struct agent_config, state_dir),
	  .def = "/var/lib/stratus" },
	{ .key = "build_concurrency", .type = CFG_INT,
	  .offset = offsetof(struct agent_config, build_concurrency), .min = 1, .max = 64,
	  .def = "4" },
	{ .key = "report_interval", .type = CFG_DURATION,
	  .offset = offsetof(struct agent_config, report_interval_ms), .def = "10s" },
	{ .key = "reconcile_interval", .type = CFG_DURATION,
	  .offset = offsetof(struct agent_config, reconcile_interval_ms), .def = "60s" },
	{ .key = "metrics_listen", .type = CFG_STRING,
	  .offset = offsetof(struct agent_config, metrics_listen), .def = "127.0.0.1:9180" },
	{ .key = "reap_orphans", .type = CFG_BOOL,
	  .offset = offsetof(struct agent_config, reap_orphans), .def = "false" },
	{ .key = "scheduler_keys", .type = CFG_STRLIST,
	  .offset = offsetof(struct agent_config, scheduler_keys) },
	{ .key = "command_max_age", .type = CFG_DURATION,
	  .offset = offsetof(struct agent_config, command_max_age_ms), .def = "1h" },
	{ .key = "migration_uri", .type = CFG_STRING, .offset = offsetof(struct agent_config, migration_uri),
	  .def = "", .expected = "a libvirt URI like qemu+tcp://10.0.0.12/system" },
	{ .key = "volume_dir", .type = CFG_STRING,
	  .offset = offsetof(struct agent_config, volume_dir), .def = "/var/lib/stratus/volumes",
	  .expected = "a directory" },
	{ .key = "network", .type = CFG_SECTION, .offset = offsetof(struct agent_config, network),
	  .sub = net_fields },
	{ .key = "console", .type = CFG_SECTION, .offset = offsetof(struct agent_config, console),
	  .sub = console_fields },
	{ 0 },
};

static int ip4(const char *key, const void *field, const char *s, uint32_t *out)
{
	struct in_addr a;

	if (!s || inet_pton(AF_INET, s, &a) != 1)
		return err_set(-EINVAL, "%s: agent.network.%s: expected an IPv4 address, got '%s'",
			       cfg_where(field), key, s ? s : "");
	*out = ntohl(a.s_addr);
	return 0;
}

int agent_config_check(struct agent_config *c)
{
	struct agent_net_config *n = &c->network;
	char net[32];
	const char *slash = n->cidr ? strchr(n->cidr, '/') : NULL;
	uint32_t base = 0, mask, gw = 0;
	long plen;
	int r;

	if (!slash || (size_t)(slash - n->cidr) >= sizeof(net) ||
	    parse_long(slash + 1, 8, 30, &plen) < 0)
		return err_set(-EINVAL,
			       "%s: agent.network.cidr: expected an IPv4 network like 10.77.0.0/24 "
			       "(prefix 8 to 30), got '%s'",
			       cfg_where(&n->cidr), n->cidr ? n->cidr : "");
	memcpy(net, n->cidr, (size_t)(slash - n->cidr));
	net[slash - n->cidr] = '\0';
	if ((r = ip4("cidr", &n->cidr, net, &base)) < 0 ||
	    (r = ip4("range_start", &n->range_start, n->range_start, &n->first)) < 0 ||
	    (r = ip4("range_end", &n->range_end, n->range_end, &n->last)) < 0 ||
	    (n->gateway && (r = ip4("gateway", &n->gateway, n->gateway, &gw)) < 0))
		return r;
	mask = plen == 0 ? 0 : ~0u << (32 - plen);
	if ((base & mask) != base)
		return err_set(-EINVAL, "%s: agent.network.cidr: %s has host bits set",
			       cfg_where(&n->cidr), n->cidr);
	if ((n->first & mask) != base || (n->last & mask) != base || n->first > n->last)
		return err_set(-EINVAL,
			       "%s: agent.network.range_end: range %s - %s is not an ascending range "
			       "inside %s",
			       cfg_where(&n->range_end), n->range_start, n->range_end, n->cidr);
	if (n->first == base || n->last == (base | ~mask))
		return err_set(-EINVAL,
			       "%s: agent.network.range_start: the range must not include the network "
			       "or broadcast address",
			       cfg_where(&n->range_start));
	if (n->gateway && gw >= n->first && gw <= n->last)
		return err_set(-EINVAL, "%s: agent.network.gateway: %s lies inside the instance range",
			       cfg_where(&n->gateway), n->gateway);
	for (size_t i = 0; i < n->dns.n; i++) {
		uint32_t d;

		if ((r = ip4("dns", &n->dns, n->dns.v[i], &d)) < 0)
			return r;
	}
	if (n->dhcp_hosts_dir && *n->dhcp_hosts_dir && n->dhcp_hosts_dir[0] != '/')
		return err_set(-EINVAL,
			       "%s: agent.network.dhcp_hosts_dir: expected an absolute directory path "
			       "(or \"\" for none), got '%s'",
			       cfg_where(&n->dhcp_hosts_dir), n->dhcp_hosts_dir);
	if (c->console.listen && *c->console.listen) {
		struct sockaddr_in sa;

		if (net_addr_port_parse(c->console.listen, 1, 65535, 0, &sa) < 0)
			return err_set(-EINVAL, "%s: agent.console.listen: expected ADDR:PORT (an "
				       "IPv4 address, a port from 1 to 65535) or \"\", got '%s'",
				       cfg_where(&c->console.listen), c->console.listen);
	}
	n->prefix = (int)plen;
	if (!c->host) {
		char h[256];

		if (gethostname(h, sizeof(h)) < 0)
			return err_sys(-errno, "gethostname");
		h[sizeof(h) - 1] = '\0';
		c->host = strdup(h);
		if (!c->host)
			return err_set(-ENOMEM, "out of memory");
	}
	for (const char *p = c->host; *p; p++)
		if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '.' || *p == '_'))
			return err_set(-EINVAL, "%s: agent.host: '%s' is not a valid host name",
				       cfg_where(&c->host), c->host);
	return 0;
}

void agent_config_free(struct agent_config *c)
{
	cfg_free(agent_config_fields, c);
}
