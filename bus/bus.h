/*
 * bus: the Kafka message bus (librdkafka) and the Stratus envelope.
 *
 *   - topics:   the topic names, in one place;
 *   - envelope: {"v":1,"id":UUID,"type":"...","ts":RFC3339,"source":"...",
 *               "request_id":UUID,"body":{...}} built, parsed and validated
 *               against ONE table of message types (bus/types.c);
 *   - client:   an idempotent producer with delivery reports, and a
 *               consumer that stores an offset only once the handler says
 *               the effect is durable (at least once);
 *   - broker:   the single-machine broker of stratus-bus (librdkafka's
 *               mock cluster on loopback).
 *
 * See docs/bus.md.
 */
#ifndef STRATUS_BUS_H
#define STRATUS_BUS_H

#include <jansson.h>

#include "core/core.h"
#include "model/model.h" /* SPEC_USER_DATA_MAX */

/* Where stratus-bus writes its bootstrap address, and where clients look
 * for it when bus.bootstrap_servers is not set. STRATUS_BUS_ADDR_FILE in
 * the environment overrides this default. */
#define BUS_DEFAULT_ADDR_FILE "/run/stratus/bus.addr"
#define BUS_ADDR_FILE_ENV "STRATUS_BUS_ADDR_FILE"

/* The `bus:` section, shared by every daemon and stratusctl. */
struct bus_config {
	char *bootstrap_servers;    /* "host:port,...": a real Kafka cluster */
	char *address_file;         /* else: the file stratus-bus wrote */
	char *client_id;
	char *group_id;             /* consumer group (daemons set their own default) */
	/* the largest message (bytes) that producers send, stratus-bus takes
	 * and consumers hand on; 0 (not loaded) = BUS_MAX_MESSAGE, the ceiling */
	uint64_t max_message_bytes;
	struct cfg_map properties;  /* passed through to librdkafka (SASL/TLS...) */
};
extern const struct cfg_field bus_config_fields[];
void bus_config_free(struct bus_config *c);

/* The `broker:` section of stratus-bus. */
struct broker_config {
	long brokers;               /* mock cluster size */
	long partitions;            /* default partitions per topic */
	char *address_file;
	char *listen;               /* ADDR[:PORT] the brokers listen on and advertise */
	struct cfg_map topics;      /* topic -> partition count */
	char *metrics_listen;       /* ADDR:PORT of /metrics; NULL = none */
	/* not a key: bus.max_message_bytes (stratus-bus copies it), 0 = default */
	uint64_t max_message_bytes;
};
extern const struct cfg_field broker_config_fields[];
void broker_config_free(struct broker_config *c);
/* broker.listen, "ADDR" or "ADDR:PORT" (one IPv4 address, not 0.0.0.0;
 * NULL = 127.0.0.1), as a sockaddr (port 0: the kernel picks); -EINVAL
 * naming file:line. */
struct sockaddr_in;
int broker_listen_addr(const struct broker_config *c, struct sockaddr_in *out);

/* ---- topics ------------------------------------------------------------ */
#define BUS_TOPIC_API "stratus.api"         /* requests, key = project */
#define BUS_TOPIC_EVENTS "stratus.events"   /* state changes, results, key = instance uuid */
#define BUS_TOPIC_METRICS "stratus.metrics" /* host reports, key = host */
#define BUS_TOPIC_HOST_PREFIX "stratus.host." /* + host: commands, key = instance uuid */

/* The classes of topic a message type travels on. */
enum bus_topic_class {
	BUS_TC_API,
	BUS_TC_HOST,
	BUS_TC_EVENTS,
	BUS_TC_METRICS,
	BUS_TC_LAST
};
/* "stratus.api", "stratus.host.<host>", ... */
const char *bus_topic_class_name(enum bus_topic_class tc);
/* The class of a topic name; -EINVAL (with err_msg) for a non-Stratus topic. */
int bus_topic_classify(const char *topic, enum bus_topic_class *out);
/* "stratus.host.<host>": returns a malloc'd string (caller frees), or NULL
 * with err_msg() set when host is not a valid host name. */
char *bus_topic_host(const char *host);

/* ---- envelope ---------------------------------------------------------- */
#define BUS_ENVELOPE_VERSION 1
#define BUS_MAX_MESSAGE (1024 * 1024)  /* bytes of one serialized envelope */
#define BUS_MAX_USER_DATA SPEC_USER_DATA_MAX /* decoded bytes of user_data (model) */
#define BUS_TYPE_MAX 64

struct bus_envelope {
	int v;
	char id[UUID_STRLEN];
	char type[BUS_TYPE_MAX];
	char ts[RFC3339_STRLEN];
	char *source;                 /* malloc'd */
	char request_id[UUID_STRLEN];
	json_t *body;                 /* owned: one reference */
	json_t *auth;                 /* owned; NULL when unsigned: {"credential"|"key": ID,
				       * "sig": ...}, strings only (docs/bus.md) */
	enum bus_topic_class tc;      /* the class its schema row belongs to */
};
#define BUS_AUTH_MAX 1024 /* bytes of the serialized auth object */

/*
 * A new envelope of TYPE carrying BODY (the envelope takes the reference:
 * json_incref() first to keep yours). request_id NULL = a fresh one (a new
 * request); id and ts are always fresh. The body is validated against
 * TYPE's schema for topic class tc (BUS_TC_LAST = the first row of TYPE).
 * On error returns <0, err_msg() names the field, BODY is released.
 * *out is malloc'd: bus_envelope_free().
 */
int bus_envelope_new(const char *type, enum bus_topic_class tc, const char *source,
		     const char *request_id, json_t *body, struct bus_envelope **out);

/*
 * Parse and validate DATA (LEN bytes, not necessarily NUL-terminated) as
 * received on TOPIC (NULL: any topic the type travels on). Rejects, with an
 * error naming the field: more than BUS_MAX_MESSAGE bytes, invalid JSON,
 * missing or mistyped envelope fields, v != 1, unknown type, a body that
 * fails its schema. *out is malloc'd: bus_envelope_free().
 */
int bus_envelope_parse(const void *data, size_t len, const char *topic,
		       struct bus_envelope **out);

/* Compact JSON of E (keys in envelope order). *out is malloc'd, NUL-
 * terminated; -E2BIG when larger than BUS_MAX_MESSAGE. */
int bus_envelope_serialize(const struct bus_envelope *e, char **out, size_t *len);

void bus_envelope_free(struct bus_envelope *e);

/*
 * The canonical bytes a signature covers: the envelope's fields v, id,
 * type, ts, source, request_id and body, without auth, as canonical JSON
 * (bus_canonical_json). *out is malloc'd, NUL-terminated.
 */
int bus_envelope_canonical(const struct bus_envelope *e, char **out, size_t *len);
/*
 * Canonical JSON of V (docs/bus.md, "Canonical form"): keys sorted, no
 * spaces, UTF-8 unescaped but for '"', '\\' and control characters, the
 * same bytes as Python's json.dumps(v, sort_keys=True, separators=(",", ":"),
 * ensure_ascii=False). Real numbers are refused (-EINVAL), as is more than
 * MAX bytes (-E2BIG). *out is malloc'd, NUL-terminated.
 */
int bus_canonical_json(json_t *v, size_t max, char **out, size_t *len);
/* Set (a reference is taken: json_incref first to keep yours) or clear
 * (NULL) E's auth object; -EINVAL when it is no object of strings or
 * larger than BUS_AUTH_MAX. */
int bus_envelope_set_auth(struct bus_envelope *e, json_t *auth);

/* ---- signed commands and sealed fields (bus/sign.c) -------------------- */
#define BUS_KEY_LEN 32    /* Ed25519 / X25519 keys (core/crypto.h CRYPTO_KEY_LEN) */
#define BUS_KEY_ID_LEN 16 /* hex digits of a key id */
#define BUS_SEAL_BUILD "stratus build secrets" /* purpose: instance.build, to a host */
#define BUS_SEAL_BOOT "stratus boot secrets"   /* purpose: instance.boot, to the scheduler */
#define BUS_SEAL_CONSOLE "stratus console key" /* purpose: instance.console, to a host */
/* The spec fields that travel sealed: user_data, ssh_keys, metadata. */
extern const char *const bus_build_secret_fields[];
/* instance.console's sealed fields: result_key, the requester's result key
 * (base64), with which the host seals the console lines (or the console
 * token) it answers; token, the one-time console token of an attach. */
extern const char *const bus_console_secret_fields[];
/* The states of a volume in volume.state events: creating, available,
 * attaching, in-use, detaching, deleting, error, and deleted (gone: its
 * last event). NULL-terminated. */
extern const char *const bus_volume_state_names[];
/* {ok: true, sealed: BASE64(ChaCha20-Poly1305(KEY, aad = RID, JSON of DATA))}:
 * a request.result body only the credential whose result key is KEY opens
 * (DATA taken, also on failure). NULL on failure. */
json_t *bus_result_sealed(const unsigned char key[BUS_KEY_LEN], const char *rid, json_t *data);
/* A key's id: the first 16 hex digits of SHA-256 of the public key. */
void bus_key_id(const unsigned char pub[BUS_KEY_LEN], char out[BUS_KEY_ID_LEN + 1]);
/* Sign E with the Ed25519 key pair PRIV, PUB (PUB names the key: given, not
 * derived, to save a scalar multiplication per message): auth = {"key": ID,
 * "sig": base64 of the signature over bus_envelope_canonical}. */
int bus_envelope_sign(struct bus_envelope *e, const unsigned char priv[BUS_KEY_LEN],
		      const unsigned char pub[BUS_KEY_LEN]);
/*
 * Sign the N envelopes V (a batch the scheduler sends at once) with one
 * Ed25519 signature (docs/bus.md "Signed commands", batch form): the leaf
 * of each is SHA-256(0x00 || its canonical bytes), a node SHA-256(0x01 ||
 * left || right), an odd last node goes up unchanged; the signature covers
 * BUS_BATCH_DOMAIN || 0x00 || N (4 bytes, big endian) || the root. Each
 * envelope's auth = {"key": ID, "sig": ..., "batch": "I/N", "path":
 * base64 of the sibling hashes from the leaf up}. A batch of one is signed
 * as bus_envelope_sign does. More than BUS_BATCH_LEAVES: several batches.
 */
#define BUS_BATCH_DOMAIN "stratus envelope batch v1"
#define BUS_BATCH_LEAVES 256
int bus_envelopes_sign(struct bus_envelope **v, size_t n, const unsigned char priv[BUS_KEY_LEN],
		       const unsigned char pub[BUS_KEY_LEN]);
/* 0 when E is signed (alone or in a batch) by one of the N public KEYS; -EPERM with err_msg()
 * naming the reason: unsigned, unknown key, bad signature. */
int bus_envelope_verify(const struct bus_envelope *e, const unsigned char (*keys)[BUS_KEY_LEN],
			size_t n);
/* E's ts as wall-clock milliseconds since the epoch. */
int bus_envelope_ts_ms(const struct bus_envelope *e, int64_t *out);
/* Move BODY's FIELDS (NULL-terminated) that are present into one box
 * sealed to RPK for purpose INFO: body.sealed = base64(box of their JSON
 * object). Nothing present: BODY unchanged. */
int bus_seal_fields(json_t *body, const char *const *fields, const unsigned char rpk[BUS_KEY_LEN],
		    const char *info);
/* The reverse with the private key RSK: body.sealed opened and merged back
 * (only FIELDS, none also in clear); no "sealed": 0, BODY unchanged. On
 * error (-EBADMSG: tampered or another key) BODY is unchanged. */
/* bus_seal_fields through a sealer (core/crypto.h: one ephemeral pair per
 * epoch, the key to each recipient kept), for its purpose. */
struct crypto_sealer;
int bus_seal_fields_with(json_t *body, const char *const *fields, struct crypto_sealer *sl,
			 const unsigned char rpk[BUS_KEY_LEN]);
int bus_open_sealed(json_t *body, const char *const *fields, const unsigned char rsk[BUS_KEY_LEN],
		    const char *info);

/* Validate BODY as message TYPE on topic class tc (BUS_TC_LAST: accept if
 * any row of TYPE accepts; the error is the first row's). Errors read
 * "instance.build: body.flavor.vcpus: expected a positive integer". */
int bus_validate(const char *type, enum bus_topic_class tc, const json_t *body);

/* True when TYPE is a known message type (on any topic). */
bool bus_type_known(const char *type);
/* The topic class of TYPE's first row; -EINVAL for an unknown type. */
int bus_type_topic_class(const char *type, enum bus_topic_class *out);

/* The partition key the design gives E on its topic class: project for
 * requests, instance uuid for commands and events, host for reports.
 * Returns a pointer into E's body, or NULL when the body lacks it. */
const char *bus_envelope_default_key(const struct bus_envelope *e);

/* The instance.build body check: model_spec_parse (model/model.h) by default;
 * a hook so that tests or tools can put another in. Returns 0 or <0 with
 * err_msg() naming the field relative to the body ("flavor.vcpus: ..."). */
extern int (*bus_instance_spec_validator)(const json_t *body);

/* ---- client ------------------------------------------------------------ */
/*
 * Where the brokers are: bus.bootstrap_servers, else the first line of the
 * address file (bus.address_file, else $STRATUS_BUS_ADDR_FILE, else
 * BUS_DEFAULT_ADDR_FILE). *out is malloc'd.
 */
int bus_bootstrap(const struct bus_config *cfg, char **out);
/* The address file stratus-bus writes / clients read (not malloc'd). */
const char *bus_address_file(const char *configured);

struct bus_producer;

/* Delivery report hook: err == 0 when the broker has the message. */
typedef void (*bus_delivery_fn)(void *opaque, const char *topic, int32_t partition,
				int64_t offset, int err, const char *errstr);

/*
 * An idempotent producer (enable.idempotence=true, acks=all). Every
 * message ends in a delivery report: delivered, or failed (counted,
 * logged with topic and key, passed to on_delivery). *out: bus_producer_free().
 * CFG must outlive the producer. Without bus.bootstrap_servers the
 * producer follows the address file: when stratus-bus comes back on
 * another address, it moves there by itself from its poll paths
 * (bus_produce, _poll, _flush), queuing again what the old broker never
 * acknowledged (their reports then come from the new broker). A delivery
 * callback must not call bus_produce (it may run during that move).
 * Messages over bus.max_message_bytes are refused (-E2BIG).
 */
int bus_producer_new(const struct bus_config *cfg, struct bus_producer **out);
void bus_producer_set_delivery_cb(struct bus_producer *p, bus_delivery_fn fn, void *opaque);
/* Learn TOPIC's partitions and leaders now, so that the first message to it
 * leaves at once (stratusctl: one request per run). */
int bus_producer_prepare(struct bus_producer *p, const char *topic);

/*
 * Queue E for TOPIC (NULL: the topic of E's class when it has one fixed
 * topic) with KEY (NULL: bus_envelope_default_key). Checks that E's type
 * travels on TOPIC. Blocks (serving delivery reports) while the local queue
 * is full. Returns 0 when queued; the outcome comes in the delivery report.
 */
int bus_produce(struct bus_producer *p, const char *topic, const char *key,
		const struct bus_envelope *e);
/* Queue raw bytes (no validation): for tools, tests and benchmarks. */
int bus_produce_raw(struct bus_producer *p, const char *topic, const char *key,
		    const void *data, size_t len);
/* Serve delivery reports for up to timeout_ms. */
void bus_producer_poll(struct bus_producer *p, int timeout_ms);
/*
 * Wait until every queued message has its delivery report. Returns 0 when
 * all were delivered since the last flush, -ETIMEDOUT when some are still
 * in flight, -EIO when some failed (err_msg says how many and why).
 */
int bus_producer_flush(struct bus_producer *p, int timeout_ms);
uint64_t bus_producer_delivered(const struct bus_producer *p);
uint64_t bus_producer_failed(const struct bus_producer *p);
/* Times this producer followed stratus-bus to a new address (see
 * bus_producer_new: the address file is watched). */
uint64_t bus_producer_reconnects(const struct bus_producer *p);
/* Flush (up to 10 s, logging what is left), then destroy. NULL is fine. */
void bus_producer_free(struct bus_producer *p);

/* One message as a handler sees it. */
struct bus_message {
	const char *topic;
	int32_t partition;
	int64_t offset;
	const char *key;              /* NUL-terminated copy, or NULL */
	const void *payload;
	size_t len;
	const struct bus_envelope *env; /* NULL when the message is invalid */
	const char *error;            /* why it is invalid (observe mode only) */
};

/*
 * The handler's verdict: 0 = the effect is durable, store the offset;
 * <0 = not durable: the offset is not stored and the message is delivered
 * again (the partition is rewound to it, after a back-off of 50 ms doubling
 * up to 5 s while failures go on, spent inside bus_consumer_poll).
 */
typedef int (*bus_handler_fn)(void *opaque, const struct bus_message *m);

struct bus_consumer_opts {
	const char *group_id;         /* NULL: cfg->group_id, else "stratus" */
	const char *const *topics;    /* NULL-terminated; may hold "^regex" */
	const char *source;           /* source of error events (NULL: client id) */
	/* observe: no group, no offsets stored, no error events; the handler
	 * sees invalid messages too (env NULL, error set). For tail tools. */
	bool observe;
	bool from_end;                /* observe: start at the end, not the beginning */
	struct bus_producer *errors;  /* producer for error events (NULL: own) */
};

struct bus_consumer;

/* CFG must outlive the consumer. Like the producer it follows the address
 * file: on a new address, a new consumer in the same group on the same
 * topics (from bus_consumer_poll). Fetch sizes derive from
 * bus.max_message_bytes so that a message over it is still fetched and
 * answered as invalid. */
int bus_consumer_new(const struct bus_config *cfg, const struct bus_consumer_opts *o,
		     struct bus_consumer **out);
/*
 * Wait up to timeout_ms for one message and hand it to FN. A message that
 * does not parse is logged, answered with a request.result error event on
 * stratus.events, and its offset stored; FN does not see it (except in
 * observe mode); so is one over bus.max_message_bytes. Returns 1 when a
 * message was handled (or skipped), 0 on
 * timeout, <0 on a consumer error.
 */
int bus_consumer_poll(struct bus_consumer *c, int timeout_ms, bus_handler_fn fn, void *opaque);
/* True once the group gave this consumer partitions (always in observe). */
bool bus_consumer_assigned(struct bus_consumer *c);
/* Commit the stored offsets now (synchronously: while no broker answers,
 * librdkafka waits for a coordinator, 45 s measured). */
int bus_consumer_commit(struct bus_consumer *c);
/* Commit the positions of the assignment as they are now (every message
 * poll returned so far is handled), not waiting for the answer: librdkafka
 * logs a failed one (COMMITFAIL), and the next commit carries its offsets.
 * For loops that must go on while the broker is away. */
int bus_consumer_commit_async(struct bus_consumer *c);
/* Messages skipped as invalid so far. */
uint64_t bus_consumer_rejected(const struct bus_consumer *c);
/* Messages on the assigned partitions not consumed yet (from the last
 * fetched high watermarks, no round trip), -1 when unknown. */
int64_t bus_consumer_lag(struct bus_consumer *c);
/* Times this consumer followed stratus-bus to a new address. */
uint64_t bus_consumer_reconnects(const struct bus_consumer *c);
/* Commit stored offsets, leave the group, destroy. NULL is fine. */
void bus_consumer_free(struct bus_consumer *c);

/* ---- broker (stratus-bus) ---------------------------------------------- */
struct bus_broker;

/* Start the mock cluster: cfg->brokers brokers on loopback, the fixed
 * Stratus topics with cfg->partitions partitions, and each topic of
 * cfg->topics with its own count. */
int bus_broker_start(const struct broker_config *cfg, struct bus_broker **out);
/* "ADDRESS:PORT,..." (broker.listen, default 127.0.0.1; owned by the broker). */
const char *bus_broker_bootstraps(const struct bus_broker *b);
void bus_broker_stop(struct bus_broker *b);

/* stratus-bus's /metrics (bus/metrics.c, docs/bus.md "Metrics"): check
 * broker.metrics_listen (for -n); serve it for the broker at BOOTSTRAPS
 * (nothing when unset: *out NULL); stop (NULL is fine). */
struct bus_metrics;
int bus_metrics_check(const struct broker_config *c);
int bus_metrics_start(const struct broker_config *c, const char *bootstraps,
		      struct bus_metrics **out);
void bus_metrics_stop(struct bus_metrics *m);

#endif
