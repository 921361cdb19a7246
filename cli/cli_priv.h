/*
 * cli: what the tenant command files share (cli/tenant.c implements it;
 * cli/instance.c and cli/catalog.c use it). See docs/stratusctl.md.
 */
#ifndef STRATUS_CLI_PRIV_H
#define STRATUS_CLI_PRIV_H

#include <getopt.h>
#include <jansson.h>
#include <stdint.h>

#include "cli/tenant.h"
#include "core/core.h"

/* The options every tenant command takes (CLI_COMMON_OPTS). */
struct cli_common {
	const char *project;
	long timeout_s;
	bool no_wait;
};

enum { CLI_OPT_PROJECT = 1000, CLI_OPT_TIMEOUT, CLI_OPT_NO_WAIT, CLI_OPT_HELP, CLI_OPT_LINES,
       CLI_OPT_ATTACH, CLI_OPT_URL, CLI_OPT_HARD };

/* ---- the credential (cli/credential.c) ---------------------------------- */

struct cli_credential {
	char id[UUID_STRLEN];
	char project[128];
	char role[16];
	unsigned char sign_key[32];   /* HKDF(secret, "stratus request signing") */
	unsigned char result_key[32]; /* HKDF(secret, "stratus result") */
};
/* Find and read the credential (--credential / $STRATUS_CREDENTIAL, then
 * ~/.config/stratus/credential, /etc/stratus/credential); -EPERM when group
 * or others may read it. err_msg() names the file and the reason. */
int cli_credential_load(struct cli_credential *out);
/* Set E's auth: {credential: id, sig: hex HMAC-SHA256 of its canonical bytes}. */
int cli_credential_sign(const struct cli_credential *cred, struct bus_envelope *e);
/* Open a result's "sealed" member (request RID) into *out (new reference). */
int cli_credential_open(const struct cli_credential *cred, const char *rid, const char *sealed,
			json_t **out);

/* ---- the interactive console (cli/console.c) ---------------------------- */
/* Attach the terminal to the console proxy named in data (the host's
 * sealed answer: uuid, address, token) until Ctrl-]. Returns an exit code. */
int cli_console_attach(struct cli_ctx *ctx, const char *name, const json_t *data);

/* ---- a session with the scheduler --------------------------------------- */

struct cli_watch {
	char last_rid[UUID_STRLEN]; /* the last request sent: a later error for it counts */
	json_t *late_error;    /* a request.result ok=false for last_rid after the first */
	const char *rid;
	json_t *result;        /* the request.result body, once seen */
	json_t *states;        /* instance.state bodies of watched uuids, each with
				* its envelope's request_id added */
	json_t *uuids;         /* object: uuid -> true */
	json_t *migrations;    /* instance.migration bodies (when want_migrations) */
	bool want_migrations;  /* migrate, host drain: every one, filtered by the caller */
	json_t *snapshots;     /* image.snapshot bodies (when the caller sets an array) */
	const struct cli_credential *cred; /* opens sealed results */
};

struct cli_session {
	struct cli_ctx *ctx;
	struct bus_producer *prod;
	struct bus_consumer *obs;
	struct cli_watch w;
	int64_t deadline_ms;
	struct cli_credential cred; /* signs every request, opens sealed results */
};

/* $STRATUS_PROJECT, else the credential's project, else "default". */
const char *cli_default_project(void);
/* A producer and an observer of stratus.events (from its end); every
 * request of the session must be answered before now + timeout_s.
 * CLI_OK, or CLI_ERROR with the error printed. */
int cli_session_open(struct cli_session *ss, struct cli_ctx *ctx, long timeout_s);
/* Accepts a session whose open failed. */
void cli_session_close(struct cli_session *ss);
/* Read stratus.events for up to timeout_ms into ss->w. */
void cli_session_poll(struct cli_session *ss, int timeout_ms);
/*
 * Send TYPE with BODY (a reference is kept by the caller) and wait for its
 * outcome. CLI_OK with *data (new reference, may be NULL) when ok; the
 * error printed and CLI_ERROR when not; CLI_TIMEOUT.
 */
int cli_request(struct cli_session *ss, const char *type, json_t *body, json_t **data);
/* One session, one request of TYPE with BODY (consumed), its data printed:
 * a table (cols/heads; none when cols is NULL) or JSON. */
int cli_request_print(struct cli_ctx *ctx, const struct cli_common *co, const char *type,
		      json_t *body, const char *const *cols, const char *const *heads);

/* cli/instance.c: follow instance UUID (shown as NAME, STATE on HOST now
 * when STATE is not NULL) until a state of WANT ("active|stopped": any of
 * them); progress printed unless --json. CLI_OK, CLI_ERROR (error, or a
 * rolled_back state: printed), CLI_TIMEOUT. */
int cli_follow(struct cli_session *ss, const char *project, const char *uuid, const char *name,
	       const char *state, const char *host, const char *want);
/* STATE is WANT or one of WANT's "a|b" names. */
bool cli_state_wanted(const char *state, const char *want);

/* cli/migrate.c: host drain NAME: the request, then each migration's end. */
int cli_host_drain(struct cli_ctx *ctx, const struct cli_common *co, const char *host);
/* host evacuate NAME (down): the request, then each instance active or failed. */
int cli_host_evacuate(struct cli_ctx *ctx, const struct cli_common *co, const char *host);

/* ---- output -------------------------------------------------------------- */

void cli_print_json(const json_t *v);
/* o[key] as text ("-" when absent); buf holds numbers. */
const char *cli_field_text(const json_t *o, const char *key, char *buf, size_t len);
/* A table of ROWS (objects) with the given columns: header, then rows. */
void cli_print_table(const json_t *rows, const char *const *cols, const char *const *heads);

/* ---- option parsing shared by the commands ------------------------------ */

#define CLI_COMMON_OPTS                                                  \
	{ "project", required_argument, NULL, CLI_OPT_PROJECT },         \
	{ "timeout", required_argument, NULL, CLI_OPT_TIMEOUT },         \
	{ "help", no_argument, NULL, CLI_OPT_HELP }

/* 0 handled, 1 not a common option, <0 bad value (printed) */
int cli_common_opt(struct cli_ctx *ctx, int c, struct cli_common *co);
/* Parse the common options only; returns the index of the first operand,
 * or <0 (the exit code negated; -CLI_OK - 100 after --help). */
int cli_common_only(struct cli_ctx *ctx, int argc, char **argv, const char *usage,
		    struct cli_common *co);
/* "usage: stratusctl USAGE" on stderr; returns CLI_USAGE. */
int cli_usage_only(struct cli_ctx *ctx, const char *usage);
/* "stratusctl: MESSAGE", then the usage; returns CLI_USAGE. */
int cli_usage_error(struct cli_ctx *ctx, const char *usage, const char *fmt, ...)
	PRINTF_LIKE(3, 4);

#endif
