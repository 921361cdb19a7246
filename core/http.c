/* Start and stop a libmicrohttpd daemon (core/http.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>

#include "core/http.h"

struct http_server {
	struct MHD_Daemon *d;
	int port;
};

int http_server_start(const struct http_server_conf *conf, struct http_server **out)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
	struct MHD_OptionItem opts[12];
	size_t n = 0;
	const union MHD_DaemonInfo *di;
	struct http_server *s;
	char addr[INET_ADDRSTRLEN] = "?";

	if (conf->epoll)
		flags |= MHD_USE_EPOLL | MHD_USE_TURBO;
	if (conf->error_log)
		flags |= MHD_USE_ERROR_LOG;
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_SOCK_ADDR, 0,
					     (void *)(uintptr_t)conf->addr }; /* MHD only reads it */
	if (conf->threads > 1)
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_THREAD_POOL_SIZE,
						     (intptr_t)conf->threads, NULL };
	if (conf->conn_memory)
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_MEMORY_LIMIT,
						     (intptr_t)conf->conn_memory, NULL };
	if (conf->conn_limit)
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_LIMIT,
						     (intptr_t)conf->conn_limit, NULL };
	if (conf->conn_timeout_s)
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_TIMEOUT,
						     (intptr_t)conf->conn_timeout_s, NULL };
	if (conf->completed)
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_NOTIFY_COMPLETED,
						     (intptr_t)conf->completed, conf->completed_cls };
	if (conf->per_ip_limit)
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_PER_IP_CONNECTION_LIMIT,
						     (intptr_t)conf->per_ip_limit, NULL };
	if (conf->notify_connection)
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_NOTIFY_CONNECTION,
						     (intptr_t)conf->notify_connection,
						     conf->notify_connection_cls };
	if (conf->unescape)
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_UNESCAPE_CALLBACK,
						     (intptr_t)conf->unescape, conf->unescape_cls };
	opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };

	s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(-ENOMEM, "out of memory");
	s->d = MHD_start_daemon(flags, 0, NULL, NULL, conf->handler, conf->handler_cls,
				MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	if (!s->d) {
		free(s);
		inet_ntop(AF_INET, &conf->addr->sin_addr, addr, sizeof(addr));
		return err_set(-EADDRNOTAVAIL, "cannot listen on %s:%d", addr,
			       ntohs(conf->addr->sin_port));
	}
	di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	s->port = di ? di->port : ntohs(conf->addr->sin_port);
	*out = s;
	return 0;
}

int http_server_port(const struct http_server *s)
{
	return s->port;
}

void http_server_stop(struct http_server *s)
{
	if (!s)
		return;
	MHD_stop_daemon(s->d);
	free(s);
}
