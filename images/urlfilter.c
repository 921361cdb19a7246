/*
 * The image URL filter (docs/images.md "URL filter"), as Glance's import
 * filtering: an image URL is a request the cloud makes on the tenant's
 * behalf, so it must not reach what only the cloud can reach.
 *
 * A URL passes when its scheme is allowed (default http, https), its host
 * is not denied by name, and its port is not denied (always 9092, Kafka,
 * and 9180, the agents' metrics, besides deny_ports); then every address
 * it resolves to (and, at download time, every address curl connects to,
 * after redirects too) must not be loopback, link-local, unspecified,
 * multicast, one of this host's own addresses, or in deny_hosts' CIDRs.
 * allow_hosts exempts named hosts or addresses from the address rules (the
 * dev cloud and the tests serve images from 127.0.0.1): an explicit,
 * documented choice of the operator, never a default.
 */
#define LOG_TAG "images"
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "images/images.h"

static const long builtin_deny_ports[] = { 9092, 9180 };

const struct cfg_field img_url_filter_fields[] = {
	{ .key = "enforce", .type = CFG_BOOL, .offset = offsetof(struct img_url_filter, enforce),
	  .def = "false" },
	{ .key = "schemes", .type = CFG_STRLIST, .offset = offsetof(struct img_url_filter, schemes) },
	{ .key = "allow_hosts", .type = CFG_STRLIST,
	  .offset = offsetof(struct img_url_filter, allow_hosts) },
	{ .key = "deny_hosts", .type = CFG_STRLIST,
	  .offset = offsetof(struct img_url_filter, deny_hosts) },
	{ .key = "deny_ports", .type = CFG_STRLIST,
	  .offset = offsetof(struct img_url_filter, deny_ports) },
	{ 0 },
};

static bool in_list(const struct cfg_strlist *l, const char *s)
{
	for (size_t i = 0; s && i < l->n; i++)
		if (strcasecmp(l->v[i], s) == 0)
			return true;
	return false;
}

static bool scheme_allowed(const struct img_url_filter *f, const char *scheme)
{
	if (f->schemes.n == 0)
		return strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0;
	return in_list(&f->schemes, scheme);
}

static bool port_denied(const struct img_url_filter *f, long port)
{
	for (size_t i = 0; i < ARRAY_SIZE(builtin_deny_ports); i++)
		if (builtin_deny_ports[i] == port)
			return true;
	for (size_t i = 0; i < f->deny_ports.n; i++) {
		long p;

		if (parse_long(f->deny_ports.v[i], 1, 65535, &p) == 0 && p == port)
			return true;
	}
	return false;
}

/* Address A (16 bytes; IPv4 as ::ffff:a.b.c.d) inside NET/BITS. */
static bool in_prefix(const unsigned char *a, const unsigned char *net, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, net, (size_t)full) != 0)
		return false;
	return rest == 0 || ((a[full] ^ net[full]) & (0xff << (8 - rest))) == 0;
}

/* "10.0.0.0/8", "fd00::/8" or one address into a v6-mapped prefix. */
static int parse_cidr(const char *text, unsigned char net[16], int *bits)
{
	char buf[INET6_ADDRSTRLEN + 8];
	char *slash;
	struct in_addr v4;
	long b = -1;

	snprintf(buf, sizeof(buf), "%s", text);
	slash = strchr(buf, '/');
	if (slash) {
		*slash = '\0';
		if (parse_long(slash + 1, 0, 128, &b) < 0)
			return -EINVAL;
	}
	memset(net, 0, 16);
	if (inet_pton(AF_INET, buf, &v4) == 1) {
		net[10] = net[11] = 0xff;
		memcpy(net + 12, &v4, 4);
		if (b > 32)
			return -EINVAL;
		*bits = b < 0 ? 128 : 96 + (int)b;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, net) == 1) {
		*bits = b < 0 ? 128 : (int)b;
		return 0;
	}
	return -EINVAL;
}

static void to_v6(const struct sockaddr *sa, unsigned char out[16])
{
	memset(out, 0, 16);
	if (sa->sa_family == AF_INET) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else {
		memcpy(out, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
	}
}

/* Why address A is denied by the built-in rules, or NULL. */
static const char *builtin_reason(const unsigned char a[16])
{
	static const struct {
		const char *net;
		const char *why;
	} rules[] = {
		{ "127.0.0.0/8", "a loopback address" },     { "::1", "a loopback address" },
		{ "169.254.0.0/16", "a link-local address" }, { "fe80::/10", "a link-local address" },
		{ "0.0.0.0/8", "an unspecified address" },   { "::", "an unspecified address" },
		{ "224.0.0.0/4", "a multicast address" },    { "ff00::/8", "a multicast address" },
	};
	unsigned char net[16];
	int bits;

	for (size_t i = 0; i < ARRAY_SIZE(rules); i++)
		if (parse_cidr(rules[i].net, net, &bits) == 0 && in_prefix(a, net, bits))
			return rules[i].why;
	return NULL;
}

static bool own_address(const unsigned char a[16])
{
	struct ifaddrs *ifs = NULL;
	bool mine = false;

	if (getifaddrs(&ifs) < 0)
		return false;
	for (struct ifaddrs *i = ifs; i && !mine; i = i->ifa_next) {
		unsigned char b[16];

		if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET &&
				     i->ifa_addr->sa_family != AF_INET6))
			continue;
		to_v6(i->ifa_addr, b);
		mine = memcmp(a, b, 16) == 0;
	}
	freeifaddrs(ifs);
	return mine;
}

int img_url_check_addr(const struct img_url_filter *f, const char *url, const char *host,
		       const struct sockaddr *sa)
{
	unsigned char a[16], net[16];
	char text[INET6_ADDRSTRLEN] = "?";
	const char *why = NULL;
	long port;
	int bits;

	if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
		return err_set(-EACCES, "image URL %s: not an IP connection: refused by the URL "
			       "filter", url);
	to_v6(sa, a);
	port = ntohs(sa->sa_family == AF_INET
			     ? ((const struct sockaddr_in *)(const void *)sa)->sin_port
			     : ((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
	inet_ntop(sa->sa_family,
		  sa->sa_family == AF_INET
			  ? (const void *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr
			  : (const void *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		  text, sizeof(text));
	if (port && port_denied(f, port))
		return err_set(-EACCES, "image URL %s: port %ld is denied by the URL filter", url,
			       port);
	if (in_list(&f->allow_hosts, text) || in_list(&f->allow_hosts, host))
		return 0;
	why = builtin_reason(a);
	if (!why && own_address(a))
		why = "one of this host's own addresses";
	for (size_t i = 0; !why && i < f->deny_hosts.n; i++)
		if (parse_cidr(f->deny_hosts.v[i], net, &bits) == 0 && in_prefix(a, net, bits))
			why = "in images.url_filter.deny_hosts";
	if (why)
		return err_set(-EACCES, "image URL %s: %s resolves to %s, %s: denied by the URL "
			       "filter (allow_hosts exempts it)", url, host ? host : "the host", text,
			       why);
	return 0;
}

int img_url_check(const struct img_url_filter *f, const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	long pnum = 0;
	int r = 0, gr;

	if (!u)
		return err_set(-ENOMEM, "out of memory");
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
		r = err_set(-EINVAL, "image URL %s: not a URL", url);
		goto out;
	}
	if (!scheme_allowed(f, scheme)) {
		r = err_set(-EACCES, "image URL %s: scheme %s is not allowed by the URL filter "
			    "(allowed: %s)", url, scheme, f->schemes.n ? "images.url_filter.schemes"
								    : "http, https");
		goto out;
	}
	if (strcasecmp(scheme, "file") == 0)
		goto out; /* allowed explicitly: no host */
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host) {
		r = err_set(-EINVAL, "image URL %s: no host", url);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
	    parse_long(port, 1, 65535, &pnum) < 0) {
		r = err_set(-EINVAL, "image URL %s: bad port", url);
		goto out;
	}
	if (port_denied(f, pnum)) {
		r = err_set(-EACCES, "image URL %s: port %ld is denied by the URL filter", url, pnum);
		goto out;
	}
	if (in_list(&f->deny_hosts, host)) {
		r = err_set(-EACCES, "image URL %s: host %s is denied by the URL filter", url, host);
		goto out;
	}
	if (in_list(&f->allow_hosts, host))
		goto out;
	{
		/* curl keeps IPv6 literals in brackets */
		size_t hl = strlen(host);
		char *h = host[0] == '[' && hl > 2 ? host + 1 : host;

		if (h != host)
			host[hl - 1] = '\0';
		gr = getaddrinfo(h, NULL, &hints, &res);
		if (gr != 0) {
			r = err_set(-EHOSTUNREACH, "image URL %s: cannot resolve %s: %s", url, h,
				    gai_strerror(gr));
			goto out;
		}
		for (struct addrinfo *ai = res; ai && r == 0; ai = ai->ai_next)
			r = img_url_check_addr(f, url, h, ai->ai_addr);
	}
out:
	if (res)
		freeaddrinfo(res);
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return r;
}

static int list_copy(struct cfg_strlist *dst, const struct cfg_strlist *src)
{
	/* NULL-terminated, as the config loader makes them (cfg_strlist_free) */
	dst->n = 0;
	dst->v = src->n ? calloc(src->n + 1, sizeof(char *)) : NULL;
	if (src->n && !dst->v)
		return -ENOMEM;
	for (size_t i = 0; i < src->n; i++) {
		dst->v[i] = strdup(src->v[i]);
		if (!dst->v[i])
			return -ENOMEM;
		dst->n = i + 1;
	}
	return 0;
}

int img_url_filter_copy(struct img_url_filter *dst, const struct img_url_filter *src)
{
	struct cfg_strlist *d[] = { &dst->schemes, &dst->allow_hosts, &dst->deny_hosts,
				    &dst->deny_ports };
	const struct cfg_strlist *s[] = { &src->schemes, &src->allow_hosts, &src->deny_hosts,
					  &src->deny_ports };
	int r = 0;

	dst->enforce = src->enforce;
	for (size_t i = 0; i < ARRAY_SIZE(d); i++)
		if (list_copy(d[i], s[i]) < 0)
			r = -ENOMEM;
	return r;
}

void img_url_filter_free(struct img_url_filter *f)
{
	if (f)
		cfg_free(img_url_filter_fields, f);
}
