/* Logging: one line per event, key=value fields, stderr or syslog. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "core/core.h"

enum log_level log_threshold = LOG_LVL_INFO;

static bool log_to_syslog;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

const char *const log_level_names[LOG_LVL_LAST + 1] = {
	[LOG_LVL_DEBUG] = "debug",
	[LOG_LVL_INFO] = "info",
	[LOG_LVL_WARN] = "warn",
	[LOG_LVL_ERROR] = "error",
	[LOG_LVL_LAST] = NULL,
};

static int syslog_prio(enum log_level lvl)
{
	switch (lvl) {
	case LOG_LVL_DEBUG: return LOG_DEBUG;
	case LOG_LVL_INFO: return LOG_INFO;
	case LOG_LVL_WARN: return LOG_WARNING;
	case LOG_LVL_ERROR: return LOG_ERR;
	case LOG_LVL_LAST: break;
	}
	return LOG_ERR;
}

const char *log_level_name(enum log_level lvl)
{
	return (unsigned)lvl < LOG_LVL_LAST ? log_level_names[lvl] : "?";
}

int log_level_parse(const char *s, enum log_level *out)
{
	for (int i = 0; i < LOG_LVL_LAST; i++) {
		if (strcmp(s, log_level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_init(const char *ident, bool use_syslog, enum log_level threshold)
{
	log_threshold = threshold;
	log_to_syslog = use_syslog;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_vemit(enum log_level lvl, const char *tag, const char *fmt, va_list ap)
{
	char msg[3072];

	if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
		snprintf(msg, sizeof(msg), "(unformattable message)");
	/* one event, one line: fold newlines so a pipeline keeps them whole */
	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	if (log_to_syslog) {
		syslog(syslog_prio(lvl), "level=%s module=%s %s", log_level_name(lvl), tag, msg);
		return;
	}
	char ts[RFC3339_STRLEN];

	time_rfc3339_now(ts);
	pthread_mutex_lock(&log_lock);
	fprintf(stderr, "ts=%s level=%s module=%s %s\n", ts, log_level_name(lvl), tag, msg);
	pthread_mutex_unlock(&log_lock);
}

void log_emit(enum log_level lvl, const char *tag, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(lvl, tag, fmt, ap);
	va_end(ap);
}
