/* stratusctl bus: operator commands on the message bus (send, tail). */
#define LOG_TAG "cli"
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/core.h"
#include "core/crypto.h"

static void bus_usage(FILE *f)
{
	fprintf(f,
		"usage: stratusctl bus send TYPE JSON|- [--topic T | --host H] [--key K]\n"
		"                           [--request-id UUID] [--source S]\n"
		"                           [--sign-key FILE [--ts RFC3339]]\n"
		"       stratusctl bus tail [TOPIC...] [--count N] [--timeout S] [--from-beginning]\n\n"
		"send  wraps the JSON body (- reads it from stdin) in an envelope of TYPE,\n"
		"      validates it, sends it and prints the envelope id once the broker has\n"
		"      it. The topic defaults to the one TYPE travels on (--host H for the\n"
		"      commands of stratus.host.H); the key to the design's (project,\n"
		"      instance uuid or host). --sign-key signs the envelope with the\n"
		"      Ed25519 private key in FILE (the scheduler's scheduler-sign.key: acting\n"
		"      as the scheduler towards agents); --ts gives a signed envelope that\n"
		"      time stamp instead of now.\n"
		"tail  prints envelopes as they arrive on TOPIC (default: every stratus.*\n"
		"      topic): a readable line each, or the envelope's JSON with --json.\n"
		"      Stops after N envelopes (--count) or S seconds (--timeout); exits 1\n"
		"      when --count was not reached in time.\n");
}

/* ---- send -------------------------------------------------------------- */

struct sent {
	const char *topic;
	int32_t partition;
	int64_t offset;
};

static void on_delivery(void *opaque, const char *topic, int32_t partition, int64_t offset,
			int err, const char *errstr)
{
	struct sent *s = opaque;

	(void)topic;
	(void)errstr;
	if (err)
		return;
	s->partition = partition;
	s->offset = offset;
}

static int read_body(const struct cli_ctx *ctx, const char *arg, json_t **out)
{
	_cleanup_free_ char *text = NULL;
	json_error_t jerr;
	size_t n;

	if (strcmp(arg, "-") == 0) {
		int r = read_file("/dev/stdin", BUS_MAX_MESSAGE, &text, &n);

		if (r < 0) {
			cli_error(ctx, "body: %s", err_msg());
			return CLI_ERROR;
		}
		arg = text;
	}
	*out = json_loads(arg, JSON_REJECT_DUPLICATES, &jerr);
	if (!*out) {
		cli_error(ctx, "body: not valid JSON (line %d column %d: %s)", jerr.line,
			  jerr.column, jerr.text);
		return CLI_ERROR;
	}
	return CLI_OK;
}

/* --sign-key FILE [--ts TS]: E signed as the scheduler signs commands (for
 * a host topic TOPIC, the host in the body); <0 with the error printed. */
static int sign(const struct cli_ctx *ctx, struct bus_envelope *e, const char *topic,
		const char *key_file, const char *ts)
{
	unsigned char priv[CRYPTO_KEY_LEN], pub[CRYPTO_KEY_LEN];
	int r;

	if (topic && !json_object_get(e->body, "host"))
		json_object_set_new(e->body, "host",
				    json_string(topic + strlen(BUS_TOPIC_HOST_PREFIX)));
	if (ts)
		snprintf(e->ts, sizeof(e->ts), "%s", ts);
	r = crypto_key_load(key_file, priv);
	if (r == 0)
		r = crypto_ed25519_public(priv, pub);
	if (r == 0)
		r = bus_envelope_sign(e, priv, pub);
	explicit_bzero(priv, sizeof(priv));
	if (r < 0)
		cli_error(ctx, "--sign-key %s: %s", key_file, err_msg());
	return r;
}

static int bus_send(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "topic", required_argument, NULL, 't' },
		{ "host", required_argument, NULL, 'H' },
		{ "key", required_argument, NULL, 'k' },
		{ "request-id", required_argument, NULL, 'r' },
		{ "source", required_argument, NULL, 's' },
		{ "sign-key", required_argument, NULL, 'S' },
		{ "ts", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *topic_arg = NULL, *host = NULL, *key = NULL, *rid = NULL;
	const char *sign_key = NULL, *ts = NULL;
	const char *source = "stratusctl";
	_cleanup_free_ char *host_topic = NULL;
	struct bus_producer *p = NULL;
	struct bus_envelope *e = NULL;
	enum bus_topic_class tc;
	struct sent sent = { .partition = -1, .offset = -1 };
	const char *topic;
	json_t *body = NULL;
	int c, r, rc = CLI_ERROR;

	optind = 0; /* 0: glibc re-initialises (permutes options after operands again) */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "t:H:k:r:s:S:T:h", longopts, NULL)) != -1) {
		switch (c) {
		case 't':
			topic_arg = optarg;
			break;
		case 'H':
			host = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'r':
			rid = optarg;
			break;
		case 's':
			source = optarg;
			break;
		case 'S':
			sign_key = optarg;
			break;
		case 'T':
			ts = optarg;
			break;
		case 'h':
			bus_usage(stdout);
			return CLI_OK;
		default:
			cli_error(ctx, "bus send: unknown option or missing argument: %s",
				  argv[optind - 1]);
			bus_usage(stderr);
			return CLI_USAGE;
		}
	}
	if (argc - optind != 2) {
		cli_error(ctx, "bus send: expected TYPE and JSON");
		bus_usage(stderr);
		return CLI_USAGE;
	}
	if (ts && (!sign_key || !time_rfc3339_valid(ts) || strlen(ts) >= RFC3339_STRLEN)) {
		cli_error(ctx, "bus send: --ts needs --sign-key and an RFC 3339 time, got '%s'", ts);
		return CLI_USAGE;
	}
	if (topic_arg && host) {
		cli_error(ctx, "bus send: --topic and --host exclude each other");
		return CLI_USAGE;
	}
	const char *type = argv[optind];

	if (host) {
		host_topic = bus_topic_host(host);
		if (!host_topic) {
			cli_error(ctx, "%s", err_msg());
			return CLI_ERROR;
		}
	}
	topic = topic_arg ? topic_arg : host_topic;
	r = topic ? bus_topic_classify(topic, &tc) : bus_type_topic_class(type, &tc);
	if (r < 0) {
		cli_error(ctx, "%s", err_msg());
		return CLI_ERROR;
	}
	if (!topic && tc == BUS_TC_HOST) {
		cli_error(ctx, "%s travels on %s<host>: give --host HOST or --topic", type,
			  BUS_TOPIC_HOST_PREFIX);
		return CLI_USAGE;
	}
	if (!topic)
		topic = bus_topic_class_name(tc);
	rc = read_body(ctx, argv[optind + 1], &body);
	if (rc != CLI_OK)
		return rc;
	rc = CLI_ERROR;
	/* validate before touching the bus: bad input fails fast, offline */
	r = bus_envelope_new(type, tc, source, rid, body, &e);
	if (r < 0) {
		cli_error(ctx, "%s", err_msg());
		goto out;
	}
	if (sign_key && sign(ctx, e, tc == BUS_TC_HOST ? topic : NULL, sign_key, ts) < 0)
		goto out;
	r = bus_producer_new(&ctx->bus, &p);
	if (r < 0) {
		cli_error(ctx, "%s", err_msg());
		goto out;
	}
	sent.topic = topic;
	bus_producer_set_delivery_cb(p, on_delivery, &sent);
	r = bus_produce(p, topic, key, e);
	if (r >= 0)
		r = bus_producer_flush(p, 15000);
	if (r < 0) {
		cli_error(ctx, "%s", err_msg());
		goto out;
	}
	if (ctx->json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I}", "id", e->id, "request_id",
				      e->request_id, "type", e->type, "topic", topic, "partition",
				      (int)sent.partition, "offset", (json_int_t)sent.offset);
		char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

		if (s)
			printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		printf("%s\n", e->id);
	}
	rc = CLI_OK;
out:
	bus_envelope_free(e);
	bus_producer_free(p);
	return rc;
}

/* ---- tail -------------------------------------------------------------- */

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

struct tail {
	const struct cli_ctx *ctx;
	long seen;
};

static int tail_print(void *opaque, const struct bus_message *m)
{
	struct tail *t = opaque;
	_cleanup_free_ char *json = NULL;
	_cleanup_free_ char *body = NULL;

	if (!m->env) {
		fprintf(stderr, "%s: %s[%d]@%" PRId64 ": invalid message: %s\n", t->ctx->prog,
			m->topic, (int)m->partition, m->offset, m->error);
		return 0;
	}
	if (t->ctx->json) {
		if (bus_envelope_serialize(m->env, &json, NULL) < 0)
			return 0;
		printf("%s\n", json);
	} else {
		body = json_dumps(m->env->body, JSON_COMPACT | JSON_PRESERVE_ORDER);
		printf("%s %s[%d]@%" PRId64 " %s id=%s request=%s source=%s key=%s body=%s\n",
		       m->env->ts, m->topic, (int)m->partition, m->offset, m->env->type,
		       m->env->id, m->env->request_id, m->env->source, m->key ? m->key : "-",
		       body ? body : "{}");
	}
	fflush(stdout);
	t->seen++;
	return 0;
}

static int bus_tail(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "count", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 't' },
		{ "from-beginning", no_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bus_consumer_opts o = { .observe = true, .from_end = true };
	struct bus_consumer *cons = NULL;
	struct tail t = { .ctx = ctx };
	long count = 0;
	int64_t timeout_ms = 0, deadline = 0;
	int c, r, rc = CLI_ERROR;

	optind = 0; /* 0: glibc re-initialises (permutes options after operands again) */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "n:t:Bh", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (parse_long(optarg, 1, 1000000000L, &count) < 0) {
				cli_error(ctx, "bus tail: --count: expected a positive integer, got '%s'",
					  optarg);
				return CLI_USAGE;
			}
			break;
		case 't':
			if (parse_duration_ms(optarg, &timeout_ms) < 0 || timeout_ms <= 0) {
				cli_error(ctx, "bus tail: --timeout: expected seconds (or 500ms, 2m), "
					  "got '%s'", optarg);
				return CLI_USAGE;
			}
			break;
		case 'B':
			o.from_end = false;
			break;
		case 'h':
			bus_usage(stdout);
			return CLI_OK;
		default:
			cli_error(ctx, "bus tail: unknown option or missing argument: %s",
				  argv[optind - 1]);
			bus_usage(stderr);
			return CLI_USAGE;
		}
	}
	for (int i = optind; i < argc; i++) {
		enum bus_topic_class tc;

		if (bus_topic_classify(argv[i], &tc) < 0) {
			cli_error(ctx, "bus tail: %s", err_msg());
			return CLI_USAGE;
		}
	}
	o.topics = optind < argc ? (const char *const *)(argv + optind) : NULL;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (timeout_ms)
		deadline = time_mono_ms() + timeout_ms;
	r = bus_consumer_new(&ctx->bus, &o, &cons);
	if (r < 0) {
		cli_error(ctx, "%s", err_msg());
		goto out;
	}
	while (!stop && (!count || t.seen < count)) {
		int wait = 200;

		if (deadline) {
			int64_t left = deadline - time_mono_ms();

			if (left <= 0)
				break;
			if (left < wait)
				wait = (int)left;
		}
		r = bus_consumer_poll(cons, wait, tail_print, &t);
		if (r < 0) {
			cli_error(ctx, "%s", err_msg());
			goto out;
		}
	}
	if (count && t.seen < count) {
		cli_error(ctx, "bus tail: %s with %ld of %ld envelope(s)",
			  stop ? "interrupted" : "timed out", t.seen, count);
		goto out;
	}
	rc = CLI_OK;
out:
	bus_consumer_free(cons);
	return rc;
}

/* ---- the bus command group ------------------------------------------------ */

static const struct cli_command bus_commands[] = {
	{ "send", "wrap, validate and send one envelope", bus_send },
	{ "tail", "print envelopes as they arrive", bus_tail },
};

int cli_bus(struct cli_ctx *ctx, int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		bus_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? CLI_USAGE : CLI_OK;
	}
	for (size_t i = 0; i < ARRAY_SIZE(bus_commands); i++)
		if (strcmp(bus_commands[i].name, argv[1]) == 0)
			return bus_commands[i].run(ctx, argc - 1, argv + 1);
	cli_error(ctx, "bus: unknown command '%s'", argv[1]);
	bus_usage(stderr);
	return CLI_USAGE;
}
