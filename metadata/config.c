/* The `metadata:` config section: its fields table and cross-field checks. */
#include <netinet/in.h>
#include <errno.h>
#include <string.h>

#include "metadata/metadata_priv.h"

const char *const md_tokens_names[] = {
	[MD_TOKENS_OPTIONAL] = "optional",
	[MD_TOKENS_REQUIRED] = "required",
	[MD_TOKENS_LAST] = NULL,
};

const struct cfg_field md_config_fields[] = {
	{ .key = "listen", .type = CFG_STRING, .offset = offsetof(struct md_config, listen),
	  .expected = "ADDR:PORT", .def = "169.254.169.254:80" },
	{ .key = "tokens", .type = CFG_ENUM, .offset = CFG_ENUM_OFFSET(struct md_config, tokens),
	  .names = md_tokens_names, .def = "optional" },
	{ .key = "proxy", .type = CFG_BOOL, .offset = offsetof(struct md_config, proxy),
	  .def = "false" },
	{ .key = "shared_secret", .type = CFG_STRING,
	  .offset = offsetof(struct md_config, shared_secret), .expected = "a secret string" },
	{ .key = "rate_limit", .type = CFG_INT, .offset = offsetof(struct md_config, rate_limit),
	  .min = 0, .max = 1000000, .def = "100" },
	{ .key = "rate_burst", .type = CFG_INT, .offset = offsetof(struct md_config, rate_burst),
	  .min = 1, .max = 1000000, .def = "200" },
	{ .key = "threads", .type = CFG_INT, .offset = offsetof(struct md_config, threads),
	  .min = 1, .max = 256, .def = "2" },
	{ .key = "instances", .type = CFG_STRING, .offset = offsetof(struct md_config, instances),
	  .expected = "a path to a JSON array of instance specs" },
	{ .key = "store", .type = CFG_STRING, .offset = offsetof(struct md_config, store),
	  .expected = "the path of the agent's store.db" },
	{ .key = "metrics_listen", .type = CFG_STRING,
	  .offset = offsetof(struct md_config, metrics_listen), .expected = "ADDR:PORT" },
	{ .key = "port_mark", .type = CFG_INT, .offset = offsetof(struct md_config, port_mark),
	  .min = 0, .max = 0x7fffffff, .def = "21332" },
	{ .key = "header_timeout", .type = CFG_DURATION,
	  .offset = offsetof(struct md_config, header_timeout_ms), .def = "10s" },
	{ .key = "per_source_limit", .type = CFG_INT,
	  .offset = offsetof(struct md_config, per_source_limit), .min = 1, .max = 65536,
	  .def = "32" },
	{ 0 },
};

int md_listen_parse(const char *listen, struct sockaddr_in *sa)
{
	if (net_addr_port_parse(listen, 0, 65535, 0, sa) < 0)
		return err_set(-EINVAL, "listen: expected IPV4ADDR:PORT, got '%s'", listen);
	return 0;
}

int md_config_check(const struct md_config *c)
{
	struct sockaddr_in sa;

	if (c->listen && md_listen_parse(c->listen, &sa) < 0)
		return err_set(-EINVAL, "%s: metadata.listen: expected IPV4ADDR:PORT, got '%s'",
			       cfg_where(&c->listen), c->listen);
	if (c->proxy && (!c->shared_secret || strlen(c->shared_secret) < 16))
		return err_set(-EINVAL, "%s: metadata.shared_secret: proxy mode needs a shared "
					"secret of at least 16 characters",
			       cfg_where(c->shared_secret ? (const void *)&c->shared_secret
							  : (const void *)&c->proxy));
	if (c->header_timeout_ms < 0 || c->header_timeout_ms > 300000)
		return err_set(-EINVAL, "%s: metadata.header_timeout: expected 0s (off) to 300s, "
					"got %lldms",
			       cfg_where(&c->header_timeout_ms), (long long)c->header_timeout_ms);
	if (c->instances && c->store)
		return err_set(-EINVAL, "%s: metadata.store: give instances or store, not both",
			       cfg_where(&c->store));
	return md_metrics_check(c);
}
