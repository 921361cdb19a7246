/*
 * A guest's serial console as a file descriptor: virDomainOpenConsole on a
 * non-blocking virStream, relayed to one end of a socketpair by the
 * connection's event thread (the loop vmm/conn.c runs), so callers read and
 * write plain bytes and poll() the other end beside their own sockets.
 *
 * The relay holds at most one buffer each way; while a buffer waits, the
 * side that fills it is not read (back-pressure instead of loss). Either
 * side closing, or the stream ending or failing, ends the relay: the
 * stream is aborted and the relay's end of the pair closed, so the caller
 * reads end of file.
 */
#define LOG_TAG "vmm"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmm/vmm_priv.h"

#define RELAY_BUF 16384

struct relay {
	char uuid[UUID_STRLEN];
	virConnectPtr conn;
	virStreamPtr st;     /* NULL once shut */
	int fd;              /* the relay's end of the pair */
	int watch;           /* its event handle */
	char in[RELAY_BUF];  /* from fd, waiting for the stream */
	size_t in_len;
	char out[RELAY_BUF]; /* from the stream, waiting for fd */
	size_t out_off, out_len;
};

static void relay_free(void *opaque)
{
	struct relay *r = opaque;

	if (r->fd >= 0)
		close(r->fd);
	if (r->conn)
		virConnectClose(r->conn);
	free(r);
}

/* Runs on the event thread; the handle's free function frees the relay
 * once libvirt is done with it. */
static void relay_shut(struct relay *r, const char *why)
{
	if (!r->st)
		return;
	log_debug("console relay closed instance=%s reason=%s", r->uuid, why);
	virStreamEventRemoveCallback(r->st);
	virStreamAbort(r->st);
	virStreamFree(r->st);
	r->st = NULL;
	virEventRemoveHandle(r->watch);
}

static void relay_update(struct relay *r)
{
	int sev = (r->out_len == 0 ? VIR_STREAM_EVENT_READABLE : 0) |
		  (r->in_len > 0 ? VIR_STREAM_EVENT_WRITABLE : 0);
	int fev = (r->in_len == 0 ? VIR_EVENT_HANDLE_READABLE : 0) |
		  (r->out_len > 0 ? VIR_EVENT_HANDLE_WRITABLE : 0);

	if (!r->st)
		return;
	virStreamEventUpdateCallback(r->st, sev);
	virEventUpdateHandle(r->watch, fev);
}

/* Push what waits in in[] to the stream. <0: the stream failed. */
static int flush_in(struct relay *r)
{
	while (r->in_len > 0) {
		int n = virStreamSend(r->st, r->in, r->in_len);

		if (n == -2)
			return 0;
		if (n < 0)
			return -1;
		memmove(r->in, r->in + n, r->in_len - (size_t)n);
		r->in_len -= (size_t)n;
	}
	return 0;
}

/* Push what waits in out[] to fd. <0: the caller's end went away. */
static int flush_out(struct relay *r)
{
	while (r->out_len > 0) {
		ssize_t n = send(r->fd, r->out + r->out_off, r->out_len, MSG_NOSIGNAL);

		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		r->out_off += (size_t)n;
		r->out_len -= (size_t)n;
	}
	r->out_off = 0;
	return 0;
}

static void on_stream(virStreamPtr st, int events, void *opaque)
{
	struct relay *r = opaque;

	(void)st;
	if (!r->st)
		return;
	if ((events & VIR_STREAM_EVENT_READABLE) && r->out_len == 0) {
		int n = virStreamRecv(r->st, r->out, sizeof(r->out));

		if (n == 0 || (n < 0 && n != -2))
			return relay_shut(r, n == 0 ? "console closed" : "stream error");
		if (n > 0) {
			r->out_off = 0;
			r->out_len = (size_t)n;
			if (flush_out(r) < 0)
				return relay_shut(r, "peer gone");
		}
	}
	if ((events & VIR_STREAM_EVENT_WRITABLE) && flush_in(r) < 0)
		return relay_shut(r, "stream send failed");
	if (events & (VIR_STREAM_EVENT_ERROR | VIR_STREAM_EVENT_HANGUP))
		return relay_shut(r, "stream hangup");
	relay_update(r);
}

static void on_fd(int watch, int fd, int events, void *opaque)
{
	struct relay *r = opaque;

	(void)watch;
	(void)fd;
	if (!r->st)
		return;
	if ((events & VIR_EVENT_HANDLE_WRITABLE) && flush_out(r) < 0)
		return relay_shut(r, "peer gone");
	if ((events & VIR_EVENT_HANDLE_READABLE) && r->in_len == 0) {
		ssize_t n = recv(r->fd, r->in, sizeof(r->in), 0);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return relay_shut(r, "peer closed");
		if (n > 0) {
			r->in_len = (size_t)n;
			if (flush_in(r) < 0)
				return relay_shut(r, "stream send failed");
		}
	} else if (events & (VIR_EVENT_HANDLE_HANGUP | VIR_EVENT_HANDLE_ERROR)) {
		return relay_shut(r, "peer hangup");
	}
	relay_update(r);
}

int vmm_console_open(struct vmm_conn *c, const char *uuid, int *fd_out)
{
	struct relay *r = calloc(1, sizeof(*r));
	virDomainPtr d = NULL;
	int sv[2] = { -1, -1 }, rc = 0;

	if (!r)
		return err_set(-ENOMEM, "out of memory");
	r->fd = -1;
	r->watch = -1;
	snprintf(r->uuid, sizeof(r->uuid), "%s", uuid);
	r->conn = vmm_conn_get(c);
	if (!r->conn) {
		rc = -ENOTCONN;
		goto fail;
	}
	d = virDomainLookupByUUIDString(r->conn, uuid);
	if (!d) {
		virErrorPtr e = virGetLastError();

		rc = e && e->code == VIR_ERR_NO_DOMAIN
			     ? err_set(-ENOENT, "instance %s: no such domain", uuid)
			     : err_set(-EIO, "instance %s: lookup: %s", uuid,
				       virGetLastErrorMessage());
		goto fail;
	}
	r->st = virStreamNew(r->conn, VIR_STREAM_NONBLOCK);
	if (!r->st || virDomainOpenConsole(d, NULL, r->st, 0) < 0) {
		rc = err_set(-EIO, "instance %s: open console: %s", uuid, virGetLastErrorMessage());
		goto fail;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
		rc = err_sys(-errno, "instance %s: console socketpair", uuid);
		goto fail;
	}
	/* the caller's end blocks; ours never does */
	fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) & ~O_NONBLOCK);
	r->fd = sv[0];
	if (virStreamEventAddCallback(r->st, VIR_STREAM_EVENT_READABLE, on_stream, r, NULL) < 0) {
		rc = err_set(-EIO, "instance %s: console stream events: %s", uuid,
			     virGetLastErrorMessage());
		goto fail;
	}
	r->watch = virEventAddHandle(r->fd, VIR_EVENT_HANDLE_READABLE, on_fd, r, relay_free);
	if (r->watch < 0) {
		virStreamEventRemoveCallback(r->st);
		rc = err_set(-EIO, "instance %s: console relay: cannot watch its socket", uuid);
		goto fail;
	}
	virDomainFree(d);
	*fd_out = sv[1];
	return 0;
fail:
	if (r->st) {
		virStreamAbort(r->st);
		virStreamFree(r->st);
	}
	if (d)
		virDomainFree(d);
	if (sv[1] >= 0)
		close(sv[1]);
	relay_free(r);
	return rc;
}
