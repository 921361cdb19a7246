/* Network addresses in config values: ADDR:PORT with an IPv4 ADDR. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"

int net_addr_port_parse(const char *s, long port_min, long port_max, unsigned flags,
			struct sockaddr_in *out)
{
	const char *colon = s ? strrchr(s, ':') : NULL;
	size_t host_len;
	char host[NET_ADDR_TEXT_MAX];
	struct sockaddr_in sa = { .sin_family = AF_INET };
	long port = 0;

	if (!s)
		return err_set(-EINVAL, "no address given");
	if (!colon && !(flags & NET_PORT_OPTIONAL))
		return err_set(-EINVAL, "'%s': expected ADDR:PORT", s);
	host_len = colon ? (size_t)(colon - s) : strlen(s);
	if (host_len >= sizeof(host))
		return err_set(-EINVAL, "'%.80s': address too long", s);
	if (colon && parse_long(colon + 1, port_min, port_max, &port) < 0)
		return err_set(-ERANGE, "'%s': port '%s': expected %ld to %ld", s, colon + 1,
			       port_min, port_max);
	memcpy(host, s, host_len);
	host[host_len] = '\0';
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return err_set(-EADDRNOTAVAIL, "'%s': '%s' is not an IPv4 address", s, host);
	sa.sin_port = htons((uint16_t)port);
	*out = sa;
	return 0;
}
