/*
 * Security group rules: one parser and validator, used by the scheduler
 * (secgroup.rule.add) and by the agent (the rules the scheduler sends),
 * so a rule the scheduler accepts is one the agent compiles.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

const char *const sg_direction_names[] = {
	[SG_INGRESS] = "ingress", [SG_EGRESS] = "egress", [SG_DIRECTION_LAST] = NULL,
};
const char *const sg_ethertype_names[] = {
	[SG_IPV4] = "IPv4", [SG_IPV6] = "IPv6", [SG_ETHERTYPE_LAST] = NULL,
};
const char *const sg_protocol_names[] = {
	[SG_PROTO_ANY] = "any", [SG_PROTO_TCP] = "tcp", [SG_PROTO_UDP] = "udp",
	[SG_PROTO_ICMP] = "icmp", [SG_PROTOCOL_LAST] = NULL,
};

bool model_sg_name_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0;

	if (n < 1 || n > SG_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i]))
			return false;
	return true;
}

/* "tcp, udp, icmp, any": the accepted values of NAMES, from FIRST on. */
static void accepted(const char *const *names, size_t first, size_t n, char *buf, size_t len)
{
	size_t o = 0;

	buf[0] = '\0';
	for (size_t k = 0; k < n; k++) {
		size_t i = (first + k) % n;
		int w = snprintf(buf + o, len - o, "%s%s", k ? ", " : "", names[i]);

		if (w < 0 || (size_t)w >= len - o)
			break;
		o += (size_t)w;
	}
}

/* An enum member of O: absent -> DEF. */
static int get_enum(const json_t *o, const char *key, const char *const *names, size_t n,
		    size_t first, int def, int *out)
{
	const json_t *v = json_object_get(o, key);
	char acc[128];

	if (!v || json_is_null(v)) {
		if (def < 0)
			goto bad;
		*out = def;
		return 0;
	}
	for (size_t i = 0; json_is_string(v) && i < n; i++)
		if (strcmp(json_string_value(v), names[i]) == 0) {
			*out = (int)i;
			return 0;
		}
bad:
	accepted(names, first, n, acc, sizeof(acc));
	if (!v || json_is_null(v))
		return err_set(-EINVAL, "%s: required (accepted: %s)", key, acc);
	return err_set(-EINVAL, "%s: invalid value '%.64s' (accepted: %s)", key,
		       json_is_string(v) ? json_string_value(v) : "(not a string)", acc);
}

/* port_range_min / port_range_max: absent -> -1. */
static int get_port(const json_t *o, const char *key, long *out)
{
	const json_t *v = json_object_get(o, key);

	*out = -1;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 65535)
		return err_set(-EINVAL, "%s: expected an integer from 0 to 65535", key);
	*out = (long)json_integer_value(v);
	return 0;
}

static int check_ports(struct sg_rule *r)
{
	const char *proto = sg_protocol_names[r->protocol];

	switch (r->protocol) {
	case SG_PROTO_ANY:
		if (r->port_min >= 0 || r->port_max >= 0)
			return err_set(-EINVAL, "port_range_min/port_range_max: protocol any has no "
						"ports (give protocol tcp, udp or icmp)");
		return 0;
	case SG_PROTO_TCP:
	case SG_PROTO_UDP:
		if (r->port_min < 0 && r->port_max >= 0)
			return err_set(-EINVAL, "port_range_max: given without port_range_min");
		if (r->port_min == 0 || r->port_max == 0)
			return err_set(-EINVAL, "port_range_min/port_range_max: %s ports are 1 to 65535",
				       proto);
		if (r->port_min >= 0 && r->port_max < 0)
			r->port_max = r->port_min;
		if (r->port_max < r->port_min)
			return err_set(-EINVAL, "port range %ld-%ld: port_range_min is above "
						"port_range_max", r->port_min, r->port_max);
		return 0;
	case SG_PROTO_ICMP:
		/* Neutron: min is the ICMP type, max the code */
		if (r->port_min < 0 && r->port_max >= 0)
			return err_set(-EINVAL, "port_range_max (ICMP code): given without "
						"port_range_min (ICMP type)");
		if (r->port_min > 255 || r->port_max > 255)
			return err_set(-EINVAL, "port_range_min/port_range_max: ICMP type and code "
						"are 0 to 255");
		return 0;
	case SG_PROTOCOL_LAST:
		break;
	}
	return err_set(-EINVAL, "protocol: invalid");
}

/* remote_ip_prefix: a network of the rule's ethertype, host bits zero. */
static int check_prefix(const char *text, enum sg_ethertype et, char *out, size_t len)
{
	int af = et == SG_IPV6 ? AF_INET6 : AF_INET, bits = et == SG_IPV6 ? 128 : 32;
	unsigned char a[16] = { 0 };
	char ip[INET6_ADDRSTRLEN + 1], canon[INET6_ADDRSTRLEN];
	const char *slash = strchr(text, '/');
	size_t alen = slash ? (size_t)(slash - text) : strlen(text);
	long plen = bits;

	if (alen >= sizeof(ip))
		goto bad;
	memcpy(ip, text, alen);
	ip[alen] = '\0';
	if (inet_pton(af, ip, a) != 1 || (slash && parse_long(slash + 1, 0, bits, &plen) < 0))
		goto bad;
	for (int i = (int)plen; i < bits; i++)
		if (a[i / 8] & (0x80 >> (i % 8)))
			return err_set(-EINVAL, "remote_ip_prefix: %s has host bits set (a network "
						"like A.B.C.0/%ld is expected)", text, plen);
	inet_ntop(af, a, canon, sizeof(canon));
	snprintf(out, len, "%s/%ld", canon, plen);
	return 0;
bad:
	return err_set(-EINVAL, "remote_ip_prefix: '%.64s' is not an %s CIDR (expected %s)", text,
		       sg_ethertype_names[et], et == SG_IPV6 ? "like 2001:db8::/64" :
		       "like 10.0.0.0/24");
}

int model_sg_rule_parse(const json_t *o, struct sg_rule *out)
{
	struct sg_rule r = { .port_min = -1, .port_max = -1 };
	const json_t *pfx = json_object_get(o, "remote_ip_prefix");
	const json_t *grp = json_object_get(o, "remote_group"), *id = json_object_get(o, "id");
	int d, e, p, rc;

	if (!json_is_object(o))
		return err_set(-EINVAL, "rule: expected an object");
	if ((rc = get_enum(o, "direction", sg_direction_names, SG_DIRECTION_LAST, 0, -1, &d)) < 0 ||
	    (rc = get_enum(o, "ethertype", sg_ethertype_names, SG_ETHERTYPE_LAST, 0, SG_IPV4, &e)) < 0 ||
	    (rc = get_enum(o, "protocol", sg_protocol_names, SG_PROTOCOL_LAST, 1, SG_PROTO_ANY, &p)) < 0 ||
	    (rc = get_port(o, "port_range_min", &r.port_min)) < 0 ||
	    (rc = get_port(o, "port_range_max", &r.port_max)) < 0)
		return rc;
	r.direction = (enum sg_direction)d;
	r.ethertype = (enum sg_ethertype)e;
	r.protocol = (enum sg_protocol)p;
	if ((rc = check_ports(&r)) < 0)
		return rc;
	if (pfx && !json_is_null(pfx) && grp && !json_is_null(grp))
		return err_set(-EINVAL, "remote_ip_prefix and remote_group: give one or the other");
	if (pfx && !json_is_null(pfx)) {
		if (!json_is_string(pfx))
			return err_set(-EINVAL, "remote_ip_prefix: expected a CIDR string");
		if ((rc = check_prefix(json_string_value(pfx), r.ethertype, r.remote_ip_prefix,
				       sizeof(r.remote_ip_prefix))) < 0)
			return rc;
	}
	if (grp && !json_is_null(grp)) {
		if (!json_is_string(grp) || !model_sg_name_valid(json_string_value(grp)))
			return err_set(-EINVAL, "remote_group: expected a group name (1 to %d of "
						"A-Z a-z 0-9 . _ -)", SG_NAME_MAX);
		snprintf(r.remote_group, sizeof(r.remote_group), "%s", json_string_value(grp));
	}
	if (id && !json_is_null(id)) {
		if (!json_is_string(id) || !uuid_valid(json_string_value(id)))
			return err_set(-EINVAL, "id: expected a rule uuid");
		snprintf(r.id, sizeof(r.id), "%s", json_string_value(id));
	}
	*out = r;
	return 0;
}

json_t *model_sg_rule_to_json(const struct sg_rule *r)
{
	json_t *o = json_pack("{s:s, s:s, s:s}", "direction", sg_direction_names[r->direction],
			      "ethertype", sg_ethertype_names[r->ethertype], "protocol",
			      sg_protocol_names[r->protocol]);

	if (o && r->id[0])
		json_object_set_new(o, "id", json_string(r->id));
	if (o && r->port_min >= 0)
		json_object_set_new(o, "port_range_min", json_integer(r->port_min));
	if (o && r->port_max >= 0)
		json_object_set_new(o, "port_range_max", json_integer(r->port_max));
	if (o && r->remote_ip_prefix[0])
		json_object_set_new(o, "remote_ip_prefix", json_string(r->remote_ip_prefix));
	if (o && r->remote_group[0])
		json_object_set_new(o, "remote_group", json_string(r->remote_group));
	return o;
}
