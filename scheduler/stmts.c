/*
 * Prepared statements kept for the life of the scheduler, looked up by the
 * address of their SQL text: the statements a decision runs with SQL of
 * their own module (security groups) are compiled once, not once per
 * request (issue 17: sqlite3_prepare was a fifth of a decision).
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <string.h>

#include "scheduler/sched_priv.h"

#define STMT_CACHE_MAX 64 /* distinct SQL texts; beyond, statements are not kept */

struct sched_stmts {
	const char *sql[STMT_CACHE_MAX];
	sqlite3_stmt *q[STMT_CACHE_MAX];
	size_t n;
};

int sched_stmt(struct sched *s, const char *sql, sqlite3_stmt **out)
{
	struct sched_stmts *c = s->stmts;
	size_t i;

	if (!c && (c = s->stmts = calloc(1, sizeof(*c))) == NULL)
		return err_set(-ENOMEM, "out of memory");
	for (i = 0; i < c->n && c->sql[i] != sql; i++)
		;
	/* kept and not in use by an outer loop: reuse it */
	if (i < c->n && !sqlite3_stmt_busy(c->q[i])) {
		*out = c->q[i];
		return 0;
	}
	if (i == c->n && c->n < STMT_CACHE_MAX) {
		if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->q[i], NULL) !=
		    SQLITE_OK)
			return err_set(-EIO, "scheduler state: %s", sqlite3_errmsg(s->db));
		c->sql[i] = sql;
		c->n++;
		*out = c->q[i];
		return 0;
	}
	/* nested use of the same SQL, or a full cache: a statement of its own */
	if (sqlite3_prepare_v2(s->db, sql, -1, out, NULL) != SQLITE_OK)
		return err_set(-EIO, "scheduler state: %s", sqlite3_errmsg(s->db));
	return 0;
}

void sched_stmt_done(struct sched *s, sqlite3_stmt *q)
{
	const struct sched_stmts *c = s->stmts;

	if (!q)
		return;
	for (size_t i = 0; c && i < c->n; i++)
		if (c->q[i] == q) {
			sqlite3_reset(q);
			sqlite3_clear_bindings(q);
			return;
		}
	sqlite3_finalize(q);
}

void sched_stmts_close(struct sched *s)
{
	struct sched_stmts *c = s->stmts;

	for (size_t i = 0; c && i < c->n; i++)
		sqlite3_finalize(c->q[i]);
	free(c);
	s->stmts = NULL;
}
