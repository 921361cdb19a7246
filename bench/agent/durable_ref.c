/*
 * The reference for the agent's step time (bench/agent/run.sh): what the
 * disk charges for the durable writes a build makes on its path, done
 * alone, as many at once as the agent's build workers, in the directory
 * the agent writes its instances to. One sequence is the build's:
 *   image  the cache index rewritten (4 KiB: write, fsync, rename),
 *          the qcow2 overlay (256 KiB: write, fsync, rename) and an fsync
 *          of the instances directory;
 *   seed   the seed ISO (256 KiB: write, fsync, rename, fsync of the
 *          instances directory).
 * Prints the p50 and p99 of one sequence's time.
 *
 *   durable_ref DIR [N [JOBS]]      (N sequences in all, default 50, 4 jobs)
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"

#define MAX_N 10000
#define MAX_JOBS 64
#define SMALL (4u << 10)
#define BIG (256u << 10)

struct job {
	const char *dir;
	int id, n;
	int64_t *ns; /* n sequence times */
	int err;
};

/* One build's durable writes; 0 or a negative errno (message set). */
static int sequence(const struct job *j, int i, const char *buf)
{
	char idx[1024], ov[1024], seed[1024];
	int r;

	snprintf(idx, sizeof(idx), "%s/ref-index-%d.json", j->dir, j->id);
	snprintf(ov, sizeof(ov), "%s/ref-%d-%d.qcow2", j->dir, j->id, i);
	snprintf(seed, sizeof(seed), "%s/ref-%d-%d.seed.iso", j->dir, j->id, i);
	r = write_file_atomic(idx, buf, SMALL, 0644);
	if (r == 0)
		r = write_file_atomic(ov, buf, BIG, 0644);
	if (r == 0)
		r = fsync_dir(j->dir);
	if (r == 0)
		r = write_file_durable(seed, buf, BIG, 0644);
	unlink(ov);
	unlink(seed);
	return r;
}

static void *job_main(void *arg)
{
	struct job *j = arg;
	char *buf = calloc(1, BIG);

	if (!buf) {
		j->err = -ENOMEM;
		return NULL;
	}
	memset(buf, 'x', BIG);
	for (int i = 0; i < j->n && !j->err; i++) {
		int64_t t = time_mono_ns();

		j->err = sequence(j, i, buf);
		j->ns[i] = time_mono_ns() - t;
	}
	if (j->err)
		fprintf(stderr, "durable_ref: %s\n", err_msg());
	free(buf);
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	long n = 50, jobs = 4;
	static int64_t ns[MAX_N];
	static struct job j[MAX_JOBS];
	static pthread_t t[MAX_JOBS];
	int total = 0, failed = 0;

	if (argc < 2 || argc > 4 || (argc > 2 && parse_long(argv[2], 1, MAX_N, &n) < 0) ||
	    (argc > 3 && parse_long(argv[3], 1, MAX_JOBS, &jobs) < 0)) {
		fprintf(stderr, "usage: durable_ref DIR [N (1-%d) [JOBS (1-%d)]]\n", MAX_N, MAX_JOBS);
		return 2;
	}
	for (int k = 0; k < jobs; k++) {
		j[k] = (struct job){ .dir = argv[1], .id = k, .n = (int)(n / jobs) };
		if (k < n % jobs)
			j[k].n++;
		j[k].ns = ns + total;
		total += j[k].n;
		pthread_create(&t[k], NULL, job_main, &j[k]);
	}
	for (int k = 0; k < jobs; k++) {
		char idx[1024];

		pthread_join(t[k], NULL);
		failed |= j[k].err != 0;
		snprintf(idx, sizeof(idx), "%s/ref-index-%d.json", argv[1], k);
		unlink(idx);
	}
	if (failed)
		return 1;
	qsort(ns, (size_t)total, sizeof(ns[0]), cmp_i64);
	printf("durable_writes_ms p50=%.2f p99=%.2f n=%d jobs=%ld\n", ns[total / 2] / 1e6,
	       ns[(total * 99) / 100 >= total ? total - 1 : (total * 99) / 100] / 1e6, total, jobs);
	return 0;
}
