/*
 * core's HTTP server helper: one way to start and stop a libmicrohttpd
 * daemon on an IPv4 address, for the modules that serve HTTP (the metadata
 * service, the agent's /metrics). The request handlers stay with their
 * module and use the MHD API directly.
 *
 * A header of its own, beside core/core.h, so that only the files that
 * serve HTTP include <microhttpd.h>.
 */
#ifndef STRATUS_CORE_HTTP_H
#define STRATUS_CORE_HTTP_H

#include <microhttpd.h>
#include <netinet/in.h>

#include "core/core.h"

struct http_server;

/* How to run the daemon: each caller's settings, nothing implied. */
struct http_server_conf {
	const struct sockaddr_in *addr;         /* port 0: the kernel picks one */
	MHD_AccessHandlerCallback handler;
	void *handler_cls;
	MHD_RequestCompletedCallback completed; /* may be NULL */
	void *completed_cls;
	/* Thread model: one internal polling thread, or a pool of threads
	 * threads > 1; with epoll, MHD's epoll mode and "turbo" (no
	 * per-connection syscalls beyond need). */
	unsigned threads;
	bool epoll;
	bool error_log;             /* MHD prints its own errors to stderr */
	unsigned conn_limit;        /* open connections at most; 0: MHD's default */
	unsigned conn_timeout_s;    /* idle connections closed after; 0: MHD's default */
	size_t conn_memory;         /* per connection (bounds a request head); 0: default */
	unsigned per_ip_limit;      /* open connections per client address; 0: no cap */
	/* called when a connection starts and closes (MHD_OPTION_NOTIFY_CONNECTION) */
	MHD_NotifyConnectionCallback notify_connection; /* may be NULL */
	void *notify_connection_cls;
	/* percent-decoding of the URL (MHD_OPTION_UNESCAPE_CALLBACK); NULL: MHD's */
	size_t (*unescape)(void *cls, struct MHD_Connection *c, char *s);
	void *unescape_cls;
};

/*
 * Start the daemon. Returns 0 and *out (free with http_server_stop), or
 * -EADDRNOTAVAIL when MHD cannot start (address in use or not this
 * machine's), -ENOMEM; err_msg() names the address.
 */
int http_server_start(const struct http_server_conf *conf, struct http_server **out);
/* The port it listens on (the kernel's choice when addr had port 0). */
int http_server_port(const struct http_server *s);
/* Stop serving and free; accepts NULL. */
void http_server_stop(struct http_server *s);

#endif
