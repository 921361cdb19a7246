/* The one error reporter: a per-thread message beside a returned code. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"

#define ERR_MAX 2048

static _Thread_local char err_buf[ERR_MAX];

static void err_vset(const char *fmt, va_list ap, int sys_code)
{
	int n = vsnprintf(err_buf, sizeof(err_buf), fmt, ap);

	if (n < 0) {
		snprintf(err_buf, sizeof(err_buf), "(error message could not be formatted)");
		return;
	}
	if (sys_code < 0 && (size_t)n < sizeof(err_buf))
		snprintf(err_buf + n, sizeof(err_buf) - (size_t)n, ": %s", strerror(-sys_code));
}

int err_set(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(fmt, ap, 0);
	va_end(ap);
	return code;
}

int err_sys(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(fmt, ap, code);
	va_end(ap);
	return code;
}

int err_prefix(int code, const char *fmt, ...)
{
	char old[ERR_MAX];
	va_list ap;
	size_t n;

	memcpy(old, err_buf, sizeof(old));
	va_start(ap, fmt);
	err_vset(fmt, ap, 0);
	va_end(ap);
	n = strlen(err_buf);
	if (n < sizeof(err_buf))
		snprintf(err_buf + n, sizeof(err_buf) - n, ": %s", old);
	return code;
}

const char *err_msg(void)
{
	return err_buf[0] ? err_buf : "unknown error";
}

void err_clear(void)
{
	err_buf[0] = '\0';
}
