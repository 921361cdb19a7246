/*
 * Scheduler benchmark: N simulated hosts report, then M boot requests go
 * through sched_handle (request in -> quota check and claim committed to
 * SQLite -> instance.build out). Prints decisions/s and the p50/p99
 * decision latency, beside two references measured in the same run:
 *   - the same decisions with a full scan of every host (candidates: 0);
 *   - one SQLite claim transaction alone (BEGIN IMMEDIATE, quota claim,
 *     allocation insert, COMMIT), the floor of any durable decision
 *     without group commit;
 *   - the same decisions signed: each request an envelope signed with the
 *     run's admin credential (canonical bytes, HMAC-SHA256) and verified
 *     by sched_handle_envelope (credential, signature, window, replay
 *     record), the cost of signatures beside the unsigned figure
 *     (target: at most 10 % fewer decisions/s).
 * Targets (issue 17): decisions/s at least 1.5x the claim transaction's
 * rate, p99 <= 5 ms, every request placed. Exit status 3: a target missed.
 *
 *   bench_sched [HOSTS [DECISIONS [FULLSCAN_DECISIONS]]]
 *   BATCH_MAX=N BATCH_WINDOW=DURATION: scheduler.batch_max and batch_window
 *   (default: theirs, 64 and 1ms)
 *   REPS=N (default 5, at most 51): the decisions split into N repetitions,
 *   interleaved (claim reference, decisions, full scan, signed, and again),
 *   every figure the median over them: on a shared machine both sides of a
 *   ratio see the same load. CLAIMS=N (default 5000): claim transactions
 *   per repetition.
 */
#define LOG_TAG "bench"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/crypto.h"
#include "scheduler/sched_priv.h"

static const char yaml_fmt[] =
	"scheduler:\n"
	"  state_path: %s/%s.db\n"
	"  admin_credential: %s/%s.credential\n"
	"  candidates: %ld\n"
	"  batch_max: %ld\n"
	"  batch_window: %s\n"
	"  heartbeat_interval: 1h\n"
	"  flavors:\n"
	"    m1.small: vcpus=1 ram_mb=1024 disk_gb=5\n"
	"    m1.medium: vcpus=2 ram_mb=2048 disk_gb=10\n"
	"    m1.pinned: vcpus=2 ram_mb=2048 disk_gb=10 hw:cpu_policy=dedicated hw:mem_page_size=2MB\n"
	"  images:\n"
	"    debian: url=http://127.0.0.1/d.qcow2 checksum=sha256:"
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef disk_format=qcow2\n"
	"  default_quotas: {instances: -1, cores: -1, ram_mb: -1, pcpus: -1, hugepages_mb: -1}\n";

struct run {
	struct sched_config cfg;
	struct sched *s;
	struct sched_out out;
	char *yaml;
};

static long batch_max = 64;
static const char *batch_window = "1ms"; /* the default (stratus.yaml(5)) */

static int run_open(struct run *r, const char *dir, const char *name, long candidates)
{
	const struct cfg_section sec[] = {
		{ .name = "scheduler", .fields = sched_config_fields, .dst = &r->cfg },
		{ 0 },
	};

	memset(r, 0, sizeof(*r));
	if (asprintf(&r->yaml, yaml_fmt, dir, name, dir, name, candidates, batch_max,
		     batch_window) < 0)
		return -ENOMEM;
	if (cfg_load_string("bench", r->yaml, strlen(r->yaml), sec) < 0 ||
	    sched_open(&r->cfg, &r->s) < 0) {
		fprintf(stderr, "bench: %s\n", err_msg());
		return -1;
	}
	return 0;
}

static void run_close(struct run *r)
{
	sched_out_clear(&r->out);
	free(r->out.v);
	sched_close(r->s);
	sched_config_free(&r->cfg);
	free(r->yaml);
}

static int report_hosts(struct run *r, long hosts, int64_t now)
{
	for (long i = 0; i < hosts; i++) {
		char name[32];
		json_t *b;

		snprintf(name, sizeof(name), "host-%05ld", i);
		b = json_pack("{s:s, s:s, s:{s:{s:i, s:f}, s:{s:i}, s:{s:i, s:i}, s:{s:i}, "
			      "s:[{s:i, s:i, s:i}, {s:i, s:i, s:i, s:{s:{s:i}}}]}, s:f}",
			      "host", name, "availability_zone", i % 2 ? "az1" : "az2", "inventory",
			      "VCPU", "total", 16, "allocation_ratio", 4.0, "PCPU", "total", 8,
			      "MEMORY_MB", "total", 131072, "reserved", 1024, "DISK_GB", "total",
			      2000, "numa", "node", 0, "pcpus", 4, "memory_mb", 65536, "node", 1,
			      "pcpus", 4, "memory_mb", 65536, "hugepages", "2048", "total", 8192,
			      "steal_pct", (double)(i % 7));
		/* a host's X25519 key: the builds' secrets are sealed to it */
		json_object_set_new(b, "box_key", json_string("4LfY9mqpKOK+zTUIYGi0iPyCTcQhVvXiGRXKMFzKJkg="));
		if (sched_handle(r->s, "host.report", NULL, b, now, &r->out) < 0) {
			fprintf(stderr, "bench: report: %s\n", err_msg());
			json_decref(b);
			return -1;
		}
		json_decref(b);
		sched_out_clear(&r->out);
	}
	return 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

struct result {
	double per_s;
	double p50_ms, p99_ms, max_ms;
	long ok, failed;
	double scanned_avg;
	double sign_us; /* per decision: the builds' envelopes signed, as the daemon sends them */
	long batches;   /* commits */
};

/* A client's signer: the run's admin credential file. */
struct signer {
	char id[UUID_STRLEN];
	unsigned char key[32];
};

static int signer_load(struct signer *sg, const char *path)
{
	_cleanup_free_ char *text = NULL;
	unsigned char secret[32], rk[32];
	json_t *o;
	const char *hex, *id;
	size_t len;
	int r = read_file(path, 4096, &text, &len);

	if (r < 0)
		return r;
	o = json_loads(text, 0, NULL);
	hex = json_string_value(json_object_get(o, "secret"));
	id = json_string_value(json_object_get(o, "id"));
	r = hex && id && strlen(hex) == 64 ? 0 : -EINVAL;
	for (size_t i = 0; r == 0 && i < 32; i++)
		r = sscanf(hex + 2 * i, "%2hhx", &secret[i]) == 1 ? 0 : -EINVAL;
	if (r == 0)
		r = sched_cred_keys(secret, sizeof(secret), sg->key, rk);
	if (r == 0)
		snprintf(sg->id, sizeof(sg->id), "%s", id);
	json_decref(o);
	return r;
}

/* What stratusctl does per request: envelope, canonical bytes, HMAC. */
static int sign_envelope(const struct signer *sg, struct bus_envelope *e)
{
	_cleanup_free_ char *canon = NULL;
	unsigned char mac[CRYPTO_MAC_LEN];
	char hex[2 * CRYPTO_MAC_LEN + 1];
	size_t len;
	int r = bus_envelope_canonical(e, &canon, &len);

	if (r == 0)
		r = crypto_hmac_sha256(sg->key, sizeof(sg->key), canon, len, mac);
	if (r < 0)
		return r;
	for (size_t i = 0; i < sizeof(mac); i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
	return bus_envelope_set_auth(e, json_pack("{s:s, s:s}", "credential", sg->id, "sig", hex));
}

/* One boot request: in-process, or (SG) signed and through the bus's entry. */
static int handle_boot(struct run *r, const struct signer *sg, const char *rid, json_t *b,
		       long i, int64_t now)
{
	struct bus_envelope *e = NULL;
	char origin[32];
	int rc;

	if (!sg) {
		rc = sched_handle(r->s, "instance.boot", rid, b, now, &r->out);
		json_decref(b);
		return rc;
	}
	rc = bus_envelope_new("instance.boot", BUS_TC_API, "bench", rid, b, &e);
	if (rc == 0)
		rc = sign_envelope(sg, e);
	snprintf(origin, sizeof(origin), "0:%ld", i);
	if (rc == 0)
		rc = sched_handle_envelope(r->s, e, origin, time_wall_ms(), &r->out);
	bus_envelope_free(e);
	return rc;
}

/* What the daemon's send_out does before producing; *SIGN_NS += the signing. */
static int send_envelopes(struct run *r, int64_t *sign_ns)
{
	size_t n = r->out.n;
	struct bus_envelope **v = calloc(n ? n : 1, sizeof(*v));
	bool *sign = calloc(n ? n : 1, sizeof(*sign));
	int64_t t0;
	int rc = v && sign ? sched_out_envelopes_new(&r->out, v, sign) : -ENOMEM;

	for (size_t k = 0; rc == 0 && k < n; k++)
		rc = v[k] ? 0 : -EIO;
	if (rc == 0) {
		t0 = time_mono_ns();
		rc = sched_envelopes_sign(r->s, v, sign, n);
		*sign_ns += time_mono_ns() - t0;
	}
	for (size_t k = 0; v && k < n; k++)
		bus_envelope_free(v[k]);
	free(v);
	free(sign);
	return rc;
}

/* N boot decisions, the requests numbered FROM on (names and bus offsets
 * stay unique over repetitions on the same state). */
static int decide(struct run *r, const struct signer *sg, long from, long n, int64_t now,
		  struct result *res)
{
	static const char *const flavors[] = { "m1.small", "m1.small", "m1.medium", "m1.small",
					       "m1.medium", "m1.small", "m1.small", "m1.medium",
					       "m1.small", "m1.pinned" };
	int64_t *lat = calloc((size_t)n, sizeof(*lat));
	int64_t t0, total, sign_ns = 0;
	struct sched_stats before, after;

	if (!lat)
		return -ENOMEM;
	memset(res, 0, sizeof(*res));
	sched_get_stats(r->s, now, &before);
	t0 = time_mono_ns();
	/* the daemon's loop: requests in batches of batch_max (or batch_window),
	 * one commit per batch; a request is decided when its batch is on disk
	 * and its build can be sent */
	for (long i = 0, first = 0; i < n; i++) {
		char rid[UUID_STRLEN], name[32], project[16];
		json_t *b;

		if (!sched_in_batch(r->s)) {
			if (sched_batch_begin(r->s) < 0)
				goto fail;
			first = i;
		}
		uuid_generate_time_str(rid); /* as stratusctl does (cli_request) */
		snprintf(name, sizeof(name), "vm-%ld", from + i);
		snprintf(project, sizeof(project), "p%ld", (from + i) % 100);
		b = json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "project", project, "name", name,
			      "flavor", flavors[(from + i) % 10], "image", "debian", "metadata", "bench",
			      "yes");
		lat[i] = time_mono_ns();
		if (handle_boot(r, sg, rid, b, from + i, now) < 0)
			goto fail;
		if (i - first + 1 >= r->cfg.batch_max || i == n - 1 ||
		    (time_mono_ns() - lat[first]) / 1000000 >= r->cfg.batch_window_ms) {
			int64_t done;

			if (sched_batch_commit(r->s) < 0)
				goto fail;
			res->batches++;
			done = time_mono_ns();
			for (long k = first; k <= i; k++)
				lat[k] = done - lat[k];
			for (size_t k = 0; k < r->out.n; k++)
				if (strcmp(r->out.v[k].type, "instance.build") == 0)
					res->ok++;
			/* the daemon's send (sched_out_envelopes): the envelopes,
			 * then those to hosts and our instance.state events signed
			 * together (timed: the signing) */
			if (send_envelopes(r, &sign_ns) < 0)
				goto fail;
			sched_out_clear(&r->out);
		}
	}
	total = time_mono_ns() - t0;
	sched_get_stats(r->s, now, &after);
	qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
	res->failed = n - res->ok;
	res->per_s = (double)n / ((double)total / 1e9);
	res->sign_us = (double)sign_ns / 1e3 / (double)n;
	res->p50_ms = (double)lat[n / 2] / 1e6;
	res->p99_ms = (double)lat[(n * 99) / 100] / 1e6;
	res->max_ms = (double)lat[n - 1] / 1e6;
	res->scanned_avg = (double)(after.hosts_scanned - before.hosts_scanned) / (double)n;
	free(lat);
	return 0;
fail:
	fprintf(stderr, "bench: boot: %s\n", err_msg());
	free(lat);
	return -1;
}

/* One claim transaction alone, on the same kind of database: BEGIN
 * IMMEDIATE, the quota claim, the allocation insert, COMMIT, its INSERT
 * prepared once as the scheduler's own statements are (a fair, efficient
 * reference). Returns us per transaction, or -1. */
static double claim_alone_us(struct run *r, long n)
{
	struct quota_amounts one;
	sqlite3_stmt *q = NULL;
	int64_t t0;
	double us = -1;

	quota_amounts_for(&one, 1, 1024, false, false);
	if (sqlite3_prepare_v3(r->s->db,
			       "INSERT INTO allocations(uuid, project, host, instances, cores, "
			       "ram_mb, pcpus, hugepages_mb) VALUES (?1, 'claim', 'h', 1, 1, "
			       "1024, 0, 0)", -1, SQLITE_PREPARE_PERSISTENT, &q, NULL) != SQLITE_OK) {
		fprintf(stderr, "bench: claim reference: %s\n", sqlite3_errmsg(r->s->db));
		return -1;
	}
	t0 = time_mono_ns();
	for (long i = 0; i < n; i++) {
		char uuid[UUID_STRLEN];
		int rc;

		uuid_generate_str(uuid);
		if (sched_tx_begin(r->s) < 0 || quota_claim(r->s->quotas, "claim", &one, NULL) < 0)
			goto out;
		sqlite3_bind_text(q, 1, uuid, -1, SQLITE_STATIC);
		rc = sqlite3_step(q);
		sqlite3_reset(q);
		if (rc != SQLITE_DONE || sched_tx_commit(r->s) < 0)
			goto out;
	}
	us = (double)(time_mono_ns() - t0) / 1e3 / (double)n;
out:
	if (us < 0)
		fprintf(stderr, "bench: claim reference: %s\n", err_msg());
	sqlite3_finalize(q);
	return us;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The median of V[0..N) (sorts V). */
static double median(double *v, long n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static long arg(int argc, char **argv, int i, long def)
{
	long v;

	if (argc <= i)
		return def;
	if (parse_long(argv[i], 1, 100000000, &v) < 0) {
		fprintf(stderr, "bench: bad number '%s'\n", argv[i]);
		exit(2);
	}
	return v;
}

#define REPS_MAX 51

/* Every figure of one repetition, and their medians over the repetitions. */
enum fig {
	F_PER_S, F_P50, F_P99, F_MAX, F_PER_BATCH, F_SIGN_US, F_SIGN_PCT, F_CLAIM_US,
	F_CLAIM_PER_S, F_RATIO, F_FULL_PER_S, F_FULL_P99, F_SIGNED_PER_S, F_SIGNED_PCT,
	F_SIGNED_P99, F_LAST
};

static double figs[F_LAST][REPS_MAX];

int main(int argc, char **argv)
{
	long hosts = arg(argc, argv, 1, 10000), n = arg(argc, argv, 2, 100000);
	long n_full = arg(argc, argv, 3, 2000), reps = 5, n_claim = 5000;
	const char *base = getenv("BENCH_DIR") ? getenv("BENCH_DIR") : "/var/tmp";
	_cleanup_free_ char *dir = NULL;
	struct run fast, full, sig;
	struct result rf, rs, rg;
	struct signer sg;
	_cleanup_free_ char *cred = NULL;
	int64_t now = time_wall_ms(), t0;
	double report_s, med[F_LAST], scanned = 0, scanned_full = 0;
	long ok = 0, failed = 0, ok_signed = 0, failed_signed = 0, nr, nr_full;
	char cmd[256];
	int rc = 1;

	log_threshold = LOG_LVL_WARN;
	if (getenv("BATCH_MAX") && parse_long(getenv("BATCH_MAX"), 1, 10000, &batch_max) < 0) {
		fprintf(stderr, "bench: BATCH_MAX: a number from 1 to 10000\n");
		return 2;
	}
	if (getenv("REPS") && parse_long(getenv("REPS"), 1, REPS_MAX, &reps) < 0) {
		fprintf(stderr, "bench: REPS: a number from 1 to %d\n", REPS_MAX);
		return 2;
	}
	if (getenv("CLAIMS") && parse_long(getenv("CLAIMS"), 1, 10000000, &n_claim) < 0) {
		fprintf(stderr, "bench: CLAIMS: a number from 1 to 10000000\n");
		return 2;
	}
	nr = n / reps;
	nr_full = n_full / reps;
	if (nr < 1 || nr_full < 1) {
		fprintf(stderr, "bench: %ld decisions and %ld full-scan decisions cannot be split "
			"into %ld repetitions\n", n, n_full, reps);
		return 2;
	}
	if (getenv("BATCH_WINDOW"))
		batch_window = getenv("BATCH_WINDOW");
	if (asprintf(&dir, "%s/sched-bench-XXXXXX", base) < 0 || !mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	if (run_open(&fast, dir, "fast", 50) < 0 || run_open(&full, dir, "full", 0) < 0 ||
	    run_open(&sig, dir, "signed", 50) < 0 || asprintf(&cred, "%s/signed.credential", dir) < 0)
		return 1;
	if (signer_load(&sg, cred) < 0) {
		fprintf(stderr, "bench: credential %s: %s\n", cred, err_msg());
		return 1;
	}
	t0 = time_mono_ns();
	if (report_hosts(&fast, hosts, now) < 0 || report_hosts(&full, hosts, now) < 0)
		goto out;
	report_s = (double)(time_mono_ns() - t0) / 1e9 / 2;
	if (report_hosts(&sig, hosts, now) < 0)
		goto out;
	printf("state database: %s (synchronous=NORMAL, WAL)\n", dir);
	printf("hosts reporting: %ld in %.2f s (%.0f reports/s, each stored in SQLite)\n", hosts,
	       report_s, (double)hosts / report_s);
	/* interleaved: each repetition runs the reference, then the scheduler,
	 * the full scan and the signed requests, so that every side sees the
	 * same load of this shared machine; the figures are the medians */
	printf("\nrepetitions (claim reference, then %ld decisions, %ld full scan, %ld signed):\n",
	       nr, nr_full, nr);
	for (long k = 0; k < reps; k++) {
		double claim_us = claim_alone_us(&fast, n_claim);

		if (claim_us < 0 || decide(&fast, NULL, k * nr, nr, now, &rf) < 0 ||
		    decide(&full, NULL, k * nr_full, nr_full, now, &rs) < 0 ||
		    decide(&sig, &sg, k * nr, nr, now, &rg) < 0)
			goto out;
		figs[F_PER_S][k] = rf.per_s;
		figs[F_P50][k] = rf.p50_ms;
		figs[F_P99][k] = rf.p99_ms;
		figs[F_MAX][k] = rf.max_ms;
		figs[F_PER_BATCH][k] = (double)nr / (double)(rf.batches ? rf.batches : 1);
		figs[F_SIGN_US][k] = rf.sign_us;
		figs[F_SIGN_PCT][k] = rf.sign_us * rf.per_s / 1e4;
		figs[F_CLAIM_US][k] = claim_us;
		figs[F_CLAIM_PER_S][k] = 1e6 / claim_us;
		figs[F_RATIO][k] = rf.per_s * claim_us / 1e6;
		figs[F_FULL_PER_S][k] = rs.per_s;
		figs[F_FULL_P99][k] = rs.p99_ms;
		figs[F_SIGNED_PER_S][k] = rg.per_s;
		figs[F_SIGNED_PCT][k] = 100.0 * rg.per_s / rf.per_s;
		figs[F_SIGNED_P99][k] = rg.p99_ms;
		ok += rf.ok;
		failed += rf.failed;
		ok_signed += rg.ok;
		failed_signed += rg.failed;
		scanned += rf.scanned_avg / (double)reps;
		scanned_full += rs.scanned_avg / (double)reps;
		printf("  %2ld: claim %7.1f us (%6.0f/s)   decisions/s %7.0f = %.2fx   p99 %7.3f ms   "
		       "per batch %5.1f   signing %5.1f%%   signed %5.1f%% of unsigned\n", k + 1,
		       claim_us, 1e6 / claim_us, rf.per_s, figs[F_RATIO][k], rf.p99_ms,
		       figs[F_PER_BATCH][k], figs[F_SIGN_PCT][k], figs[F_SIGNED_PCT][k]);
		fflush(stdout);
	}
	for (int f = 0; f < F_LAST; f++)
		med[f] = median(figs[f], reps);
	printf("\nscheduler, %ld hosts, %ld boot decisions (candidates: 50, spread, group commit "
	       "of up to %ld requests or %lld ms), medians of %ld interleaved repetitions:\n",
	       hosts, nr * reps, fast.cfg.batch_max, (long long)fast.cfg.batch_window_ms, reps);
	printf("  decisions/s:   %10.0f   (target >= 1.5x one claim transaction's rate: %.0f; "
	       "median of the repetitions' ratios %.2fx)\n",
	       med[F_PER_S], 1.5 * med[F_CLAIM_PER_S], med[F_RATIO]);
	printf("  p99 latency:   %10.3f ms (target <= 5 ms)   p50 %.3f ms   max %.3f ms\n",
	       med[F_P99], med[F_P50], med[F_MAX]);
	printf("  placed:        %10ld   no valid host: %ld   hosts filtered per decision: %.1f\n",
	       ok, failed, scanned);
	printf("  batches:       %10.1f decisions per commit and per signature\n",
	       med[F_PER_BATCH]);
	printf("  signing:       %10.1f us per decision (the build's and state's envelopes, one "
	       "Ed25519 signature per batch) = %.1f%% of a decision (target <= 10%%); the "
	       "secrets' box is sealed inside the decision\n",
	       med[F_SIGN_US], med[F_SIGN_PCT]);
	printf("reference, same run:\n");
	printf("  full scan of every host (candidates: 0), %ld decisions: %.0f decisions/s, "
	       "p99 %.3f ms, %.0f hosts filtered per decision\n",
	       nr_full * reps, med[F_FULL_PER_S], med[F_FULL_P99], scanned_full);
	printf("  one SQLite claim transaction alone (BEGIN IMMEDIATE, quota, insert, COMMIT; "
	       "%ld per repetition): %.1f us = at most %.0f decisions/s\n", n_claim,
	       med[F_CLAIM_US], med[F_CLAIM_PER_S]);
	printf("  signed requests (sign + verify + replay record), %ld decisions: %.0f decisions/s "
	       "= %.1f %% of unsigned (target >= 90 %%), p99 %.3f ms, placed %ld\n", nr * reps,
	       med[F_SIGNED_PER_S], med[F_SIGNED_PCT], med[F_SIGNED_P99], ok_signed);
	rc = med[F_PER_S] >= 1.5 * med[F_CLAIM_PER_S] && med[F_P99] <= 5.0 && failed == 0 &&
		     med[F_SIGNED_PER_S] >= 0.9 * med[F_PER_S] && failed_signed == 0 ? 0 : 3;
	printf("\nverdict: %s\n", rc == 0 ? "target met" : "TARGET MISSED");
out:
	run_close(&fast);
	run_close(&full);
	run_close(&sig);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench: could not remove %s\n", dir);
	return rc;
}
