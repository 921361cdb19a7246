/*
 * stratus-scheduler: the central scheduler with quotas.
 *
 *   stratus-scheduler [-c FILE] [-n] [-d]
 *   stratus-scheduler [-c FILE] keys     create the keys if missing, print the public parts
 *
 * Thin: load the config, open the state (scheduler/), then the loop:
 * messages from stratus.api, stratus.events and stratus.metrics go to
 * sched_handle_envelope in batches (group commit); after a batch's commit the
 * messages it produced are sent; after the producer has them delivered the
 * consumer's offsets are committed. A crash anywhere in between replays
 * messages whose effects the handlers recognise (request ids, instance
 * states, reschedule hosts): at least once, never twice in effect.
 */
#define LOG_TAG "scheduler"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"
#include "core/core.h"
#include "scheduler/scheduler.h"

#define OFFSET_COMMIT_MS 200 /* deliver + commit offsets at least this often when busy */
#define TICK_MS 1000

static struct log_config log_cfg;
static struct bus_config bus_cfg;
static struct sched_config sched_cfg;
static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static int validate(void *ud)
{
	return sched_config_check(ud);
}

struct loop {
	struct sched *s;
	struct bus_producer *prod;
	struct bus_consumer *cons;
	struct sched_out out;
	long in_batch;          /* messages in the open batch */
	int64_t batch_start_ms;
	bool offsets_pending;   /* stored offsets not yet committed */
	bool fatal;
	bool warm_started;      /* the warm-up began (the group gave us partitions) */
	uint64_t moves;         /* our consumer's reconnects seen so far */
};

/*
 * Hosts get one heartbeat window to report before they are judged, from
 * the moment we can hear them: when the group gives us our partitions
 * (a restarted member may wait for the dead one's session to time out).
 */
static int warmup(struct loop *l)
{
	int r;

	if (l->warm_started || !bus_consumer_assigned(l->cons))
		return 0;
	l->warm_started = true;
	r = sched_warmup_begin(l->s, time_wall_ms());
	if (r < 0) {
		log_error("%s; stopping", err_msg());
		l->fatal = true;
	}
	return r;
}

/* Our consumer followed the broker to a new address: before the first
 * message from it, hosts are stale until they report again (the producer
 * follows on its own; what we hear is the consumer's). */
static void follow_moves(struct loop *l)
{
	uint64_t m = bus_consumer_reconnects(l->cons);

	if (m == l->moves)
		return;
	l->moves = m;
	sched_broker_moved(l->s, time_wall_ms());
}

/* Send what the handlers produced (after their commit): the commands to
 * hosts signed together, one signature per batch. */
static int send_out(struct loop *l)
{
	_cleanup_free_ struct bus_envelope **v = calloc(l->out.n ? l->out.n : 1, sizeof(*v));
	int r = v ? sched_out_envelopes(l->s, &l->out, v) : err_set(-ENOMEM, "out of memory");

	if (r < 0) { /* a bug of ours, not a reason to stop: say so loudly */
		log_error("not sent: %zu messages: %s", l->out.n, err_msg());
		r = 0;
	}
	for (size_t i = 0; v && i < l->out.n; i++) {
		struct sched_msg *m = &l->out.v[i];

		if (r == 0 && v[i] && (r = bus_produce(l->prod, m->topic, m->key, v[i])) < 0)
			log_error("produce type=%s topic=%s: %s", m->type, m->topic, err_msg());
		bus_envelope_free(v[i]);
	}
	sched_out_clear(&l->out);
	return r;
}

/* Commit the open batch, then send what it produced. */
static int end_batch(struct loop *l)
{
	int r;

	if (!sched_in_batch(l->s))
		return 0;
	r = sched_batch_commit(l->s);
	l->in_batch = 0;
	if (r < 0) {
		/* nothing of the batch is durable and memory is ahead of the
		 * database: stop; the messages come again after a restart */
		log_error("batch commit failed, stopping: %s", err_msg());
		sched_out_clear(&l->out);
		l->fatal = true;
		return r;
	}
	return send_out(l);
}

/* Offsets go to the broker only once what the batches sent is delivered. */
static int commit_offsets(struct loop *l)
{
	int r;

	if (!l->offsets_pending)
		return 0;
	r = bus_producer_flush(l->prod, 10000);
	if (r < 0) {
		log_warn("messages not delivered yet, offsets not committed: %s", err_msg());
		return r;
	}
	/* not waiting: with the broker gone a commit waits for a coordinator
	 * that never comes back (45 s), and the loop must go on to follow it */
	r = bus_consumer_commit_async(l->cons);
	if (r == 0)
		l->offsets_pending = false;
	return r;
}

static int handle(void *opaque, const struct bus_message *m)
{
	struct loop *l = opaque;
	const struct bus_envelope *e = m->env;
	char origin[48];
	int r;

	if (l->fatal || warmup(l) < 0)
		return -EIO;
	follow_moves(l);
	if (!sched_in_batch(l->s)) {
		r = sched_batch_begin(l->s);
		if (r < 0) {
			log_error("%s", err_msg());
			return r;
		}
		l->batch_start_ms = time_mono_ms();
	}
	int64_t t0 = time_mono_ns();

	/* where the message sits: a redelivery of it is no replay (auth.c) */
	snprintf(origin, sizeof(origin), "%d:%lld", (int)m->partition, (long long)m->offset);
	r = sched_handle_envelope(l->s, e, origin, time_wall_ms(), &l->out);
	sched_metrics_handled(e->type, (double)(time_mono_ns() - t0) / 1e9);
	if (r < 0) {
		log_error("state failed type=%s request=%s: %s; stopping", e->type, e->request_id,
			  err_msg());
		l->fatal = true;
		return r;
	}
	l->in_batch++;
	l->offsets_pending = true;
	return 0;
}

/*
 * The consumer's properties: the config's, and unless set there an auto
 * commit interval of a day: stored offsets are committed by us, after the
 * batches they belong to are durable and their messages delivered.
 */
static int consumer_properties(const struct cfg_map *in, struct cfg_map *out)
{
	size_t n = in->n + 1;

	out->keys = calloc(n + 1, sizeof(char *));
	out->vals = calloc(n + 1, sizeof(char *));
	if (!out->keys || !out->vals)
		return -ENOMEM;
	for (size_t i = 0; i < in->n; i++) {
		out->keys[i] = strdup(in->keys[i]);
		out->vals[i] = strdup(in->vals[i]);
		out->n = i + 1;
		if (!out->keys[i] || !out->vals[i])
			return -ENOMEM;
	}
	if (cfg_map_get(in, "auto.commit.interval.ms"))
		return 0;
	out->keys[out->n] = strdup("auto.commit.interval.ms");
	out->vals[out->n] = strdup("86400000");
	out->n++;
	return out->keys[out->n - 1] && out->vals[out->n - 1] ? 0 : -ENOMEM;
}

/*
 * The broker moved (our clients followed it): hosts are stale until they
 * report again. The warm-up over: the boots that waited run, in a batch.
 */
static int recover(struct loop *l)
{
	int64_t now = time_wall_ms();
	int r;

	if (warmup(l) < 0)
		return -EIO;
	follow_moves(l);
	if (!sched_warmup_over(l->s, now) || sched_in_batch(l->s))
		return 0;
	r = sched_batch_begin(l->s);
	if (r == 0)
		r = sched_warmup_end(l->s, now, &l->out);
	if (r < 0) {
		log_error("deferred requests failed, stopping: %s", err_msg());
		l->fatal = true;
		return r;
	}
	return end_batch(l);
}

/* A periodic piece of work in a batch of its own, when DUE says it is due:
 * resizes past scheduler.resize_confirm_window confirmed, migrations whose
 * destination never answered the prepare aborted, snapshots of hosts that
 * went down abandoned. */
static int periodic(struct loop *l, bool (*due)(struct sched *, int64_t),
		    int (*work)(struct sched *, int64_t, struct sched_out *), const char *what)
{
	int64_t now = time_wall_ms();
	int r;

	if (sched_in_batch(l->s) || !due(l->s, now))
		return 0;
	r = sched_batch_begin(l->s);
	if (r == 0)
		r = work(l->s, now, &l->out);
	if (r < 0) {
		log_error("%s failed, stopping: %s", what, err_msg());
		l->fatal = true;
		return r;
	}
	return end_batch(l);
}

static int run(struct sched *s)
{
	static const char *const topics[] = { BUS_TOPIC_API, BUS_TOPIC_EVENTS, BUS_TOPIC_METRICS,
					      NULL };
	struct loop l = { .s = s };
	struct bus_config ccfg;
	struct cfg_map cprops = { 0 };
	struct bus_consumer_opts co = { .group_id = "stratus-scheduler", .topics = topics,
					.source = "stratus-scheduler" };
	int64_t last_tick = 0, last_offsets = time_mono_ms();
	int r;

	if (!bus_cfg.client_id && !(bus_cfg.client_id = strdup("stratus-scheduler")))
		return err_set(-ENOMEM, "out of memory");
	if (consumer_properties(&bus_cfg.properties, &cprops) < 0) {
		cfg_map_free(&cprops);
		return err_set(-ENOMEM, "out of memory");
	}
	ccfg = bus_cfg;
	ccfg.properties = cprops;
	r = bus_producer_new(&bus_cfg, &l.prod);
	if (r < 0)
		goto out;
	co.errors = l.prod;
	r = bus_consumer_new(&ccfg, &co, &l.cons);
	if (r < 0)
		goto out;
	/* builds that were claimed but maybe never sent */
	r = sched_resume(s, &l.out);
	if (r == 0) /* and migrations' prepares */
		r = sched_migration_resume(s, time_wall_ms(), &l.out);
	if (r == 0)
		r = send_out(&l);
	if (r < 0)
		goto out;
	log_info("scheduler running state=%s batch_max=%ld", sched_cfg.state_path,
		 sched_cfg.batch_max);
	while (!stopping && !l.fatal) {
		int64_t now = time_mono_ms();
		int timeout = 200;

		if (sched_in_batch(s)) {
			int64_t left = sched_cfg.batch_window_ms - (now - l.batch_start_ms);

			timeout = left > 0 ? (int)left : 0;
		}
		r = bus_consumer_poll(l.cons, timeout, handle, &l);
		if (r < 0 && !l.fatal) {
			log_warn("consumer: %s", err_msg());
			r = 0;
		}
		now = time_mono_ms();
		if (sched_in_batch(s) && (r == 0 || l.in_batch >= sched_cfg.batch_max ||
					  now - l.batch_start_ms >= sched_cfg.batch_window_ms)) {
			if (end_batch(&l) < 0)
				break;
		}
		if (!sched_in_batch(s) &&
		    (r == 0 || now - last_offsets >= OFFSET_COMMIT_MS)) {
			commit_offsets(&l);
			last_offsets = now;
		}
		if (now - last_tick >= TICK_MS) {
			sched_tick(s, time_wall_ms());
			sched_metrics_sample(s, time_wall_ms(), bus_consumer_lag(l.cons));
			last_tick = now;
			if (periodic(&l, sched_resize_due, sched_resize_autoconfirm,
				     "resize auto-confirm") < 0 ||
			    periodic(&l, sched_migration_overdue, sched_migration_timeouts,
				     "migration timeouts") < 0 ||
			    periodic(&l, sched_snapshot_orphaned, sched_snapshot_abandon,
				     "snapshots of hosts down") < 0)
				break;
		}
		if (recover(&l) < 0)
			break;
	}
	if (!l.fatal && end_batch(&l) == 0)
		commit_offsets(&l);
	r = l.fatal ? -EIO : 0;
out:
	/* a failed batch stays open: sched_close rolls it back */
	sched_out_clear(&l.out);
	free(l.out.v);
	/* a fatal stop must not commit offsets of effects that are not durable */
	if (!l.fatal)
		bus_consumer_free(l.cons);
	bus_producer_free(l.prod);
	cfg_map_free(&cprops);
	return r;
}

int main(int argc, char **argv)
{
	const struct cfg_section sections[] = {
		{ .name = "log", .fields = log_config_fields, .dst = &log_cfg },
		{ .name = "bus", .fields = bus_config_fields, .dst = &bus_cfg },
		{ .name = "scheduler", .fields = sched_config_fields, .dst = &sched_cfg },
		{ 0 },
	};
	struct daemon_opts o = {
		.prog = "stratus-scheduler",
		.summary = "the central scheduler with quotas",
		.usage_extra = "subcommands:\n  keys           create the keys if missing, print their "
			       "public parts\n",
		.default_config = "/etc/stratus/stratus.yaml",
		.sections = sections,
		.log = &log_cfg,
		.validate = validate,
		.validate_ud = &sched_cfg,
	};
	struct sigaction sa = { .sa_handler = on_signal };
	struct sched *s = NULL;
	struct prom_server *metrics = NULL;
	_cleanup_free_ char *lock_path = NULL;
	int argi, r, rc = 1, lock_fd = -1;

	r = daemon_setup(&o, argc, argv, &argi);
	if (r > 0) {
		rc = r - 1;
		goto out;
	}
	if (argi < argc) {
		if (strcmp(argv[argi], "keys") != 0) {
			fprintf(stderr, "stratus-scheduler: unknown subcommand '%s' (known: keys)\n",
				argv[argi]);
			rc = 2;
		} else if (sched_keys_print(&sched_cfg, stdout) < 0) {
			fprintf(stderr, "stratus-scheduler: %s\n", err_msg());
		} else {
			rc = 0;
		}
		goto out;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* one scheduler per database (DESIGN: single instance) */
	if (asprintf(&lock_path, "%s.pid", sched_cfg.state_path) < 0) {
		lock_path = NULL;
		goto out;
	}
	if (daemon_lock(o.prog, lock_path, &lock_fd) < 0) {
		fprintf(stderr, "%s\n", err_msg());
		goto out;
	}
	if (sched_open(&sched_cfg, &s) < 0) {
		log_error("%s", err_msg());
		goto out;
	}
	if (sched_metrics_start(&sched_cfg, &metrics) < 0) {
		log_error("%s", err_msg());
		goto out;
	}
	if (run(s) < 0) {
		log_error("%s", err_msg());
		goto out;
	}
	log_info("scheduler stopped");
	rc = 0;
out:
	sched_metrics_stop(metrics);
	sched_close(s);
	daemon_unlock(lock_path, lock_fd);
	cfg_free(log_config_fields, &log_cfg);
	bus_config_free(&bus_cfg);
	sched_config_free(&sched_cfg);
	return rc;
}
