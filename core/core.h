/*
 * core: what every Stratus module and daemon shares.
 *
 *   - errors:  one thread-local reporter (err_set / err_msg), libvirt-style;
 *   - logging: levels, module tags, key=value fields, stderr or syslog;
 *   - config:  YAML (libyaml) into typed structs through field tables;
 *              every error names file:line:column, the key and what was
 *              expected; unknown keys are errors;
 *   - misc:    uuid, RFC 3339 time, monotonic clock, strict number parsing,
 *              cleanup helpers, a growable string buffer with a cap,
 *              ADDR:PORT parsing.
 *
 * See docs/core.md for the conventions.
 */
#ifndef STRATUS_CORE_H
#define STRATUS_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define STRATUS_VERSION "0.1.0"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

/* ---- cleanup helpers (systemd style) ---------------------------------- */
void freep(void *p);       /* free(*(void **)p) */
void closep(int *fd);      /* close(*fd) if >= 0 */
void fclosep(void *fp);    /* fclose(*(FILE **)fp) if non-NULL */
#define _cleanup_free_ __attribute__((cleanup(freep)))
#define _cleanup_close_ __attribute__((cleanup(closep)))
#define _cleanup_fclose_ __attribute__((cleanup(fclosep)))

/* ---- errors ------------------------------------------------------------ */
/*
 * Library-style code never prints: it records what failed, on which
 * object and why, and returns a negative errno-style code.
 *
 *     return err_set(-EINVAL, "image %s: checksum mismatch (expected %s, got %s)",
 *                    name, want, got);
 *
 * The caller decides: log_error("%s", err_msg()), an error event, exit 1.
 * The message is per thread and kept until the next err_set().
 */
int err_set(int code, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* err_set() with ": strerror(-code)" appended. */
int err_sys(int code, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Prefix the current message: "ctx: <old message>"; returns code. */
int err_prefix(int code, const char *fmt, ...) PRINTF_LIKE(2, 3);
const char *err_msg(void);
void err_clear(void);

/* ---- logging ----------------------------------------------------------- */
enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR, LOG_LVL_LAST };
extern const char *const log_level_names[]; /* "debug" ... "error", then NULL */

extern enum log_level log_threshold;

/*
 * Messages are a short text then key=value fields:
 *     log_info("instance built instance=%s ms=%ld", uuid, ms);
 * Printed as one line:
 *     ts=2026-11-23T09:15:08.123Z level=info module=agent instance built instance=... ms=...
 * Each .c file may #define LOG_TAG "agent" before including core.h.
 */
#ifndef LOG_TAG
#define LOG_TAG "stratus"
#endif

void log_init(const char *ident, bool use_syslog, enum log_level threshold);
void log_emit(enum log_level lvl, const char *tag, const char *fmt, ...) PRINTF_LIKE(3, 4);
void log_vemit(enum log_level lvl, const char *tag, const char *fmt, va_list ap) PRINTF_LIKE(3, 0);
const char *log_level_name(enum log_level lvl);
/* "debug", "info", "warn", "error"; -EINVAL for anything else. */
int log_level_parse(const char *s, enum log_level *out);

#define log_at(lvl, ...) \
	do { \
		if ((lvl) >= log_threshold) \
			log_emit((lvl), LOG_TAG, __VA_ARGS__); \
	} while (0)
#define log_debug(...) log_at(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_LVL_ERROR, __VA_ARGS__)

/* ---- strict parsing ---------------------------------------------------- */
/* Whole string must be a number in [min, max]; returns 0 or -EINVAL/-ERANGE. */
int parse_long(const char *s, long min, long max, long *out);
int parse_double(const char *s, double *out);
/* "true/false/yes/no/on/off/1/0" */
int parse_bool(const char *s, bool *out);
/* "1024", "64K", "512M", "2G", "1T" (binary units) -> bytes */
int parse_size(const char *s, uint64_t *out);
/* "500ms", "30s", "5m", "1h", plain number = seconds -> milliseconds */
int parse_duration_ms(const char *s, int64_t *out);

/* ---- uuid and time ----------------------------------------------------- */
#define UUID_STRLEN 37 /* 36 + NUL */
/* Random (v4) uuid, lower-case, from getrandom(). */
void uuid_generate_str(char out[UUID_STRLEN]);
/* Time-ordered (v7, RFC 9562) uuid: 48 bits of the wall clock in ms, then
 * 74 random bits. Keys made later sort after: rows keyed by them go to the
 * right edge of a B-tree, not a random leaf each (the instances' uuids). */
void uuid_generate_time_str(char out[UUID_STRLEN]);
bool uuid_valid(const char *s);

#define RFC3339_STRLEN 32
/* Now in UTC with milliseconds: 2026-11-23T09:15:08.123Z */
void time_rfc3339_now(char out[RFC3339_STRLEN]);
bool time_rfc3339_valid(const char *s);
/* Monotonic clock. */
int64_t time_mono_ns(void);
int64_t time_mono_ms(void);
int64_t time_wall_ms(void);

/* ---- strbuf: growable string with a hard cap --------------------------- */
struct strbuf {
	char *buf;
	size_t len, cap, max; /* max = hard cap in bytes (0 = 1 MiB) */
};
/* Append; returns 0, -ENOMEM, or -E2BIG when max would be exceeded. */
int sb_append(struct strbuf *sb, const char *data, size_t n);
int sb_printf(struct strbuf *sb, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Returns the malloc'd NUL-terminated string (caller frees) and resets sb. */
char *sb_steal(struct strbuf *sb);
void sb_free(struct strbuf *sb);

/* Read a whole file (at most max bytes; -E2BIG beyond). *out is malloc'd,
 * NUL-terminated; caller frees. */
int read_file(const char *path, size_t max, char **out, size_t *len);
/* Write a file atomically: a temporary ".NAME.tmp.PID" beside it, fsync,
 * rename. The new name is not yet durable: a crash can bring back the old
 * file (or none); write_file_durable when the name must survive. */
int write_file_atomic(const char *path, const void *data, size_t len, int mode);
/* write_file_atomic, then an fsync of the directory holding path, so that
 * the rename survives a crash too. */
int write_file_durable(const char *path, const void *data, size_t len, int mode);
/* fsync the directory dir (0 or a negative errno, message set). */
int fsync_dir(const char *dir);
/* mkdir -p */
int mkdir_p(const char *path, int mode);

/* ---- base64 ------------------------------------------------------------ */
/* Strict base64 (RFC 4648 alphabet, padding required, no whitespace).
 * Returns 0 and a malloc'd buffer (caller frees; NUL-terminated for
 * convenience), -EINVAL on bad input, -E2BIG when longer than max_out. */
int base64_decode(const char *in, size_t max_out, unsigned char **out, size_t *out_len);
/* Returns a malloc'd NUL-terminated string (caller frees), NULL on ENOMEM. */
char *base64_encode(const unsigned char *in, size_t len);

/* ---- sizes for people -------------------------------------------------- */
/* v bytes as "512 B", "64.0 MiB", "1.5 TiB" (binary units, one decimal
 * above bytes) into buf (truncated to len). */
void human_size(uint64_t v, char *buf, size_t len);

/* ---- network addresses ------------------------------------------------- */
struct sockaddr_in;

#define NET_ADDR_TEXT_MAX 64 /* longest ADDR text accepted, with its NUL */
#define NET_PORT_OPTIONAL 1u /* a bare ADDR is accepted too (port 0) */
/*
 * "ADDR:PORT" (or "ADDR" with NET_PORT_OPTIONAL): ADDR an IPv4 address in
 * dotted form, PORT a number in [port_min, port_max]. The text is split at
 * its last ':'. Checks in this order, each with err_msg() set:
 *   -EINVAL        no ":PORT" where one is required, or ADDR too long;
 *   -ERANGE        PORT not a number in range;
 *   -EADDRNOTAVAIL ADDR not an IPv4 address.
 * Callers with their own wording replace the message. *out is untouched
 * on failure.
 */
int net_addr_port_parse(const char *s, long port_min, long port_max, unsigned flags,
			struct sockaddr_in *out);

/* ---- config ------------------------------------------------------------ */
/*
 * A config struct is described by a table of fields. The loader walks the
 * YAML mapping, finds each key in the table, converts and checks the value,
 * and stores it at the field's offset. Unknown keys, wrong types, values
 * out of range and missing required keys are errors of the form
 *
 *     FILE:LINE:COL: SECTION.KEY: expected an integer from 1 to 65535, got 'abc'
 *
 * Defaults: each field's .def text is parsed like a YAML value and stored
 * before the file is read, so a struct is complete even when its section
 * is absent. Fields without .def keep what the struct held (zero/NULL).
 * CFG_STRING fields own their strings: cfg_free() frees them.
 */
enum cfg_type {
	CFG_STRING,   /* char * (malloc'd, freed by cfg_free) */
	CFG_INT,      /* long, in [min, max] */
	CFG_BOOL,     /* bool */
	CFG_DOUBLE,   /* double, in [dmin, dmax] */
	CFG_ENUM,     /* an enum: names[i] is stored as i (see CFG_ENUM_OFFSET) */
	CFG_SIZE,     /* uint64_t bytes: 1024, 64K, 512M, 2G */
	CFG_DURATION, /* int64_t milliseconds: 500ms, 30s, 5m, 1h */
	CFG_STRLIST,  /* struct cfg_strlist */
	CFG_MAP,      /* struct cfg_map: string -> scalar as string */
	CFG_SECTION,  /* nested struct described by sub[] */
	CFG_CUSTOM,   /* parse(): scalar string -> whatever at offset */
	CFG_TYPE_LAST
};

struct cfg_strlist {
	char **v;
	size_t n;
};

struct cfg_map {
	char **keys;
	char **vals;
	size_t n;
};

struct cfg_field {
	const char *key;
	enum cfg_type type;
	size_t offset;
	bool required;
	long min, max;              /* CFG_INT */
	double dmin, dmax;          /* CFG_DOUBLE */
	const char *const *names;   /* CFG_ENUM: the enum's name table, indexed by
				       the enum and NULL at [X_LAST] */
	const struct cfg_field *sub; /* CFG_SECTION; table ends with key == NULL */
	/* CFG_CUSTOM: parse the scalar into dst; on error return <0 and set
	 * *expected to a static text such as "a CPU list like 0-3,8". */
	int (*parse)(const char *val, void *dst, const char **expected);
	void (*release)(void *dst); /* CFG_CUSTOM: free what parse made */
	const char *expected;       /* CFG_CUSTOM / CFG_STRING: description */
	const char *def;            /* default, written as in YAML; applied
				       before loading (scalars only) */
};

/*
 * .offset of a CFG_ENUM field, whose member is declared with its enum type
 * so that -Wswitch-enum checks the switches over it. The loader stores the
 * index through an int, so a member of another size does not compile:
 *     { .key = "tokens", .type = CFG_ENUM,
 *       .offset = CFG_ENUM_OFFSET(struct md_config, tokens), .names = md_tokens_names },
 */
#define CFG_ENUM_OFFSET(type, member) \
	(offsetof(type, member) + \
	 0 * sizeof(char[sizeof(((type *)0)->member) == sizeof(int) ? 1 : -1]))

/*
 * A config file is a mapping of sections. Each daemon loads the sections
 * it knows (its table) and skips the sections that belong to other
 * daemons (known_sections), so one file can serve a whole host. Any other
 * top-level key is an error.
 */
struct cfg_section {
	const char *name;            /* top-level key, e.g. "agent" */
	const struct cfg_field *fields;
	void *dst;                   /* struct to fill */
	bool required;
};

/* Top-level sections that any daemon recognises (others skip them). */
extern const char *const cfg_known_sections[];

/* Load FILE into the given sections (ending with name == NULL). On error
 * returns <0 with err_msg() holding the full "file:line:col: ..." text. */
int cfg_load_file(const char *path, const struct cfg_section *sections);
/* Same, from a string (name is used in messages). */
int cfg_load_string(const char *name, const char *yaml, size_t len,
		    const struct cfg_section *sections);
/*
 * Where a loaded value came from, for cross-field checks made after
 * loading: "FILE:LINE:COL" for the field at address FIELD (inside a struct
 * the last cfg_load_* filled), or "FILE" when the value is a default.
 * Returns a pointer to a static buffer (config loading is single-threaded).
 */
const char *cfg_where(const void *field);
/* Free the strings, lists and maps that loading stored in dst. */
void cfg_free(const struct cfg_field *fields, void *dst);

void cfg_strlist_free(struct cfg_strlist *l);
void cfg_map_free(struct cfg_map *m);
const char *cfg_map_get(const struct cfg_map *m, const char *key);

/* The log section every daemon has: log: {level: info, syslog: false} */
struct log_config {
	enum log_level level;
	bool syslog;
};
extern const struct cfg_field log_config_fields[];

/* ---- daemon frame ------------------------------------------------------ */
/*
 * Common option handling for the daemons: -c FILE, -n (check config and
 * exit 0/1), -d/--debug, -h/--help, -V/--version. The daemon passes its
 * sections; daemon_setup parses argv up to the first non-option, loads the
 * config (or only defaults when no -c and default_path does not exist), and
 * sets up logging. Returns:
 *   >0 : exit now with (ret - 1) (help, version, -n result, config error)
 *    0 : carry on; *argi is the index of the first unparsed argument.
 */
struct daemon_opts {
	const char *prog;
	const char *summary;        /* one line for --help */
	const char *usage_extra;    /* extra usage lines, may be NULL */
	const char *default_config; /* e.g. /etc/stratus/stratus.yaml */
	const struct cfg_section *sections;
	struct log_config *log;
	/* cross-field checks after loading (may be NULL); <0 with err_msg()
	 * fails like a config error, also under -n */
	int (*validate)(void *ud);
	void *validate_ud;
	/* filled in: */
	const char *config_path;    /* NULL when none was loaded */
	bool check_only;
	bool foreground;
};
int daemon_setup(struct daemon_opts *o, int argc, char **argv, int *argi);


/* ---- single instance --------------------------------------------------- */
/*
 * Take the daemon's pid-file lock: open PATH (O_CREAT, making its
 * directory), flock(LOCK_EX|LOCK_NB), then truncate it and write our pid.
 * Keep *fd open for the life of the process: the lock goes with it (also
 * on kill -9). When another process holds it: -EWOULDBLOCK with err_msg()
 * "PROG: already running as pid 1234 (lock PATH)" and PATH untouched.
 * Other errors: <0 naming PATH. *fd untouched on failure.
 */
int daemon_lock(const char *prog, const char *path, int *fd);
/* Remove PATH and close FD (the lock's owner, at exit). FD < 0: nothing. */
void daemon_unlock(const char *path, int fd);

#endif
