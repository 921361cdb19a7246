/*
 * The librdkafka client's configuration: the bootstrap (bus.bootstrap_servers
 * or stratus-bus's address file), librdkafka properties, the message size
 * limit, and following the address file when stratus-bus moves.
 */
#define LOG_TAG "bus"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "bus/bus.h"
#include "bus/bus_priv.h"

#define ADDR_FILE_MAX 4096

/* ---- configuration ----------------------------------------------------- */

const char *bus_address_file(const char *configured)
{
	const char *env = getenv(BUS_ADDR_FILE_ENV);

	if (configured && *configured)
		return configured;
	if (env && *env)
		return env;
	return BUS_DEFAULT_ADDR_FILE;
}

static bool bootstrap_configured(const struct bus_config *cfg)
{
	return cfg && cfg->bootstrap_servers && *cfg->bootstrap_servers;
}

int bus_bootstrap(const struct bus_config *cfg, char **out)
{
	_cleanup_free_ char *text = NULL;
	const char *path;
	char *s;
	size_t n;
	int r;

	if (bootstrap_configured(cfg)) {
		s = strdup(cfg->bootstrap_servers);
		if (!s)
			return err_set(-ENOMEM, "out of memory");
		*out = s;
		return 0;
	}
	path = bus_address_file(cfg ? cfg->address_file : NULL);
	r = read_file(path, ADDR_FILE_MAX, &text, &n);
	if (r < 0)
		return err_prefix(r, "bus: no bootstrap servers: bus.bootstrap_servers is not set "
			"and the address file of stratus-bus cannot be read (is stratus-bus running?)");
	n = strcspn(text, "\r\n");
	text[n] = '\0';
	if (n == 0)
		return err_set(-EINVAL, "bus: %s: empty address file", path);
	*out = strndup(text, n);
	if (!*out)
		return err_set(-ENOMEM, "out of memory");
	return 0;
}

int bus_conf_set(rd_kafka_conf_t *conf, const char *key, const char *val)
{
	char errstr[256];

	if (rd_kafka_conf_set(conf, key, val, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		return err_set(-EINVAL, "bus: librdkafka property %s: %s", key, errstr);
	return 0;
}


void bus_rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	enum log_level lvl = level <= LOG_ERR ? LOG_LVL_ERROR :
			     level <= LOG_WARNING ? LOG_LVL_WARN :
			     level <= LOG_INFO ? LOG_LVL_INFO : LOG_LVL_DEBUG;

	log_at(lvl, "librdkafka client=%s facility=%s %s", rd_kafka_name(rk), fac, buf);
}

/* bus.properties that only a consumer understands: a producer skips them
 * (librdkafka would warn on every start that it ignores them). */
static bool consumer_only(const char *key)
{
	static const char *const prefixes[] = {
		"fetch.", "group.", "session.timeout.ms", "heartbeat.interval.ms",
		"auto.offset.reset", "enable.auto.", "auto.commit.", "max.poll.interval.ms",
		"isolation.level", "partition.assignment.strategy", "queued.", "check.crcs",
		"coordinator.query.interval.ms", "consume.callback.max.messages",
	};

	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
		if (strncmp(key, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

int bus_message_limit(uint64_t configured, size_t *out)
{
	if (configured == 0)
		configured = BUS_MAX_MESSAGE;
	if (configured < 1024 || configured > BUS_MAX_MESSAGE)
		return err_set(-EINVAL, "bus.max_message_bytes: expected 1K to %d bytes, got %" PRIu64,
			       BUS_MAX_MESSAGE, configured);
	*out = (size_t)configured;
	return 0;
}

/* bus_rdkafka_conf() on a bootstrap already known */
int bus_rdkafka_conf_at(const struct bus_config *cfg, const char *bootstrap,
			   const char *const *defaults, bool producer, rd_kafka_conf_t **out)
{
	rd_kafka_conf_t *conf;
	int r;

	conf = rd_kafka_conf_new();
	if (!conf)
		return err_set(-ENOMEM, "out of memory");
	rd_kafka_conf_set_log_cb(conf, bus_rdkafka_log);
	if ((r = bus_conf_set(conf, "bootstrap.servers", bootstrap)) < 0 ||
	    (r = bus_conf_set(conf, "client.id",
			      cfg && cfg->client_id ? cfg->client_id : "stratus")) < 0)
		goto fail;
	for (size_t i = 0; defaults && defaults[i]; i += 2)
		if ((r = bus_conf_set(conf, defaults[i], defaults[i + 1])) < 0)
			goto fail;
	for (size_t i = 0; cfg && i < cfg->properties.n; i++) {
		if (producer && consumer_only(cfg->properties.keys[i]))
			continue;
		r = bus_conf_set(conf, cfg->properties.keys[i], cfg->properties.vals[i]);
		if (r < 0) {
			r = err_prefix(r, "bus.properties.%s", cfg->properties.keys[i]);
			goto fail;
		}
	}
	*out = conf;
	return 0;
fail:
	rd_kafka_conf_destroy(conf);
	return r;
}

int bus_rdkafka_conf(const struct bus_config *cfg, const char *const *defaults, bool producer,
		     rd_kafka_conf_t **out)
{
	_cleanup_free_ char *bootstrap = NULL;
	int r;

	r = bus_bootstrap(cfg, &bootstrap);
	if (r < 0)
		return r;
	return bus_rdkafka_conf_at(cfg, bootstrap, defaults, producer, out);
}

int bus_conf_set_size(rd_kafka_conf_t *conf, const char *key, size_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%zu", v);
	return bus_conf_set(conf, key, buf);
}

/* ---- following the address file (bus_priv.h says how) ------------------- */

int bus_follow_init(struct bus_follow *f, const struct bus_config *cfg, char **bootstrap)
{
	int r = bus_bootstrap(cfg, bootstrap);

	if (r < 0)
		return r;
	if (bootstrap_configured(cfg))
		return 0;
	f->path = strdup(bus_address_file(cfg ? cfg->address_file : NULL));
	f->addr = strdup(*bootstrap);
	if (!f->path || !f->addr) {
		free(*bootstrap);
		*bootstrap = NULL;
		return err_set(-ENOMEM, "out of memory");
	}
	f->next_ms = time_mono_ms() + 1000;
	return 0;
}

void bus_follow_free(struct bus_follow *f)
{
	free(f->path);
	free(f->addr);
}

/* 1 with *to (malloc'd) when the address file names another bootstrap now */
int bus_follow_moved(struct bus_follow *f, char **to)
{
	_cleanup_free_ char *text = NULL;
	int64_t now;
	size_t n;

	if (!f->path)
		return 0;
	now = time_mono_ms();
	if (now < f->next_ms)
		return 0;
	f->next_ms = now + (__atomic_exchange_n(&f->down, 0, __ATOMIC_SEQ_CST) ? 250 : 1000);
	/* gone or unreadable (stratus-bus stopped): keep trying the old one */
	if (read_file(f->path, ADDR_FILE_MAX, &text, &n) < 0)
		return 0;
	n = strcspn(text, "\r\n");
	text[n] = '\0';
	if (n == 0 || strcmp(text, f->addr) == 0)
		return 0;
	*to = strndup(text, n);
	return *to ? 1 : 0;
}

/* One log line per move of the broker, whatever the number of clients. */
void bus_follow_log_move(const char *from, const char *to)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static char last[ADDR_FILE_MAX];
	bool first;

	pthread_mutex_lock(&mu);
	first = strcmp(last, to) != 0;
	if (first)
		snprintf(last, sizeof(last), "%s", to);
	pthread_mutex_unlock(&mu);
	if (first)
		log_info("bus: broker moved from %s to %s, reconnecting", from, to);
	else
		log_debug("bus: broker moved from %s to %s, reconnecting", from, to);
}

void bus_client_error(rd_kafka_t *rk, int err, const char *reason, struct bus_follow *f)
{
	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		char buf[256];

		rd_kafka_fatal_error(rk, buf, sizeof(buf));
		log_error("bus client fatal error client=%s error=\"%s\"", rd_kafka_name(rk), buf);
		return;
	}
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && f)
		__atomic_store_n(&f->down, 1, __ATOMIC_SEQ_CST);
	/* transport errors while a broker is away: librdkafka retries */
	log_warn("bus client error client=%s error=\"%s\" reason=\"%s\"", rd_kafka_name(rk),
		 rd_kafka_err2str(err), reason);
}

