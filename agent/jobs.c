/*
 * The job queue: bounded concurrency across instances (build_concurrency
 * workers), one job in flight per instance, jobs of one instance run in
 * the order they arrived.
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <string.h>

#include "agent/agent_priv.h"

static const struct {
	const char *type;
	int (*run)(struct agent *a, struct job *j);
} job_table[] = {
	{ "instance.build", agent_do_build },
	{ "instance.rebuild", agent_do_rebuild }, /* issue 18: agent/rebuild.c */
	{ "instance.delete", agent_do_delete },
	{ "instance.stop", agent_do_power },
	{ "instance.start", agent_do_power },
	{ "instance.reboot", agent_do_power },
	{ "instance.sync", agent_do_sync }, /* internal: power drift seen by an event */
	{ "instance.migrate.prepare", agent_do_migrate_prepare },
	{ "instance.migrate.perform", agent_do_migrate_perform },
	{ "instance.migrate.finish", agent_do_migrate_finish },
	{ "instance.resize", agent_do_resize }, /* issue 18: agent/resize.c */
	{ "instance.resize.confirm", agent_do_resize_answer },
	{ "instance.resize.revert", agent_do_resize_answer },
	{ "instance.snapshot", agent_do_snapshot }, /* issue 18: agent/snapshot.c */
};

static void job_free(struct job *j)
{
	if (!j)
		return;
	if (j->spec) {
		model_spec_free(j->spec);
		free(j->spec);
	}
	free(j);
}

/* Append j to the queue (takes it, frees it on failure). */
static int enqueue(struct agent *a, struct job *j)
{
	struct job **tail;

	j->queued_ns = time_mono_ns();
	pthread_mutex_lock(&a->q_lock);
	if (a->q_closing) {
		pthread_mutex_unlock(&a->q_lock);
		job_free(j);
		return err_set(-ESHUTDOWN, "agent is shutting down");
	}
	for (tail = &a->q_head; *tail; tail = &(*tail)->next)
		;
	*tail = j;
	pthread_cond_broadcast(&a->q_cond);
	pthread_mutex_unlock(&a->q_lock);
	return 0;
}

static struct job *job_new(const char *type, const char *uuid, const char *request_id)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	snprintf(j->type, sizeof(j->type), "%s", type);
	snprintf(j->uuid, sizeof(j->uuid), "%s", uuid);
	snprintf(j->request_id, sizeof(j->request_id), "%s", request_id ? request_id : "");
	return j;
}

int agent_enqueue(struct agent *a, const char *type, const char *uuid, const char *request_id,
		  const char *reason)
{
	struct job *j;

	if (strcmp(type, "instance.build") == 0 || strcmp(type, "instance.rebuild") == 0)
		/* only with its spec: agent_enqueue_build / agent_enqueue_rebuild */
		return err_set(-EINVAL, "instance.build queued without its spec instance=%s", uuid);
	j = job_new(type, uuid, request_id);
	if (!j)
		return err_set(-ENOMEM, "out of memory");
	j->reason = reason;
	return enqueue(a, j);
}

int agent_enqueue_reboot(struct agent *a, const char *uuid, const char *request_id, bool hard)
{
	struct job *j = job_new("instance.reboot", uuid, request_id);

	if (!j)
		return err_set(-ENOMEM, "out of memory");
	j->hard = hard;
	return enqueue(a, j);
}

int agent_accept_row(struct agent *a, const struct bus_envelope *e, struct store_instance *row,
		     enum instance_state state, const char *step)
{
	int r;

	free(row->step);
	free(row->request_id);
	row->step = strdup(step);
	row->request_id = strdup(e->request_id);
	row->state = state;
	r = store_instance_put(a->store, row);
	if (r == 0)
		r = store_request_put(a->store, e->request_id, row->uuid, e->type, NULL);
	return r;
}

int agent_enqueue_spec(struct agent *a, const char *type, const char *request_id,
		       struct instance_spec *spec)
{
	struct job *j = job_new(type, spec->uuid, request_id);

	if (j)
		j->spec = malloc(sizeof(*j->spec));
	if (!j || !j->spec) {
		job_free(j);
		model_spec_free(spec);
		memset(spec, 0, sizeof(*spec));
		return err_set(-ENOMEM, "out of memory");
	}
	*j->spec = *spec; /* moved: the job owns it now */
	memset(spec, 0, sizeof(*spec));
	return enqueue(a, j);
}

int agent_enqueue_build(struct agent *a, const char *request_id, struct instance_spec *spec)
{
	return agent_enqueue_spec(a, "instance.build", request_id, spec);
}

int agent_enqueue_rebuild(struct agent *a, const char *request_id, struct instance_spec *spec)
{
	return agent_enqueue_spec(a, "instance.rebuild", request_id, spec);
}

static bool uuid_busy(struct agent *a, const char *uuid)
{
	for (int i = 0; i < a->n_workers; i++)
		if (strcmp(a->busy[i], uuid) == 0)
			return true;
	return false;
}

/* The first job whose instance has nothing in flight and no earlier job
 * waiting. Called with q_lock held. */
static struct job *take_job(struct agent *a)
{
	for (struct job **pp = &a->q_head; *pp; pp = &(*pp)->next) {
		struct job *j = *pp;
		bool earlier = false;

		for (struct job *e = a->q_head; e != j; e = e->next)
			if (strcmp(e->uuid, j->uuid) == 0)
				earlier = true;
		if (earlier || uuid_busy(a, j->uuid))
			continue;
		*pp = j->next;
		j->next = NULL;
		return j;
	}
	return NULL;
}

struct worker_arg {
	struct agent *a;
	int slot;
};

static void run_job(struct agent *a, struct job *j)
{
	for (size_t i = 0; i < ARRAY_SIZE(job_table); i++) {
		if (strcmp(job_table[i].type, j->type) == 0) {
			if (job_table[i].run(a, j) < 0)
				log_warn("%s failed instance=%s request=%s: %s", j->type, j->uuid,
					 j->request_id, err_msg());
			return;
		}
	}
	log_error("no worker for job type=%s instance=%s", j->type, j->uuid);
}

static void *worker_main(void *p)
{
	struct worker_arg *wa = p;
	struct agent *a = wa->a;
	int slot = wa->slot;

	free(wa);
	pthread_mutex_lock(&a->q_lock);
	for (;;) {
		struct job *j = take_job(a);

		if (!j) {
			if (a->q_closing)
				break;
			pthread_cond_wait(&a->q_cond, &a->q_lock);
			continue;
		}
		snprintf(a->busy[slot], UUID_STRLEN, "%s", j->uuid);
		a->n_running++;
		pthread_mutex_unlock(&a->q_lock);

		run_job(a, j);
		job_free(j);

		pthread_mutex_lock(&a->q_lock);
		a->busy[slot][0] = '\0';
		a->n_running--;
		pthread_cond_broadcast(&a->q_cond); /* a job of this instance may be runnable */
		if (!a->q_head && a->n_running == 0)
			pthread_cond_broadcast(&a->q_idle);
	}
	pthread_mutex_unlock(&a->q_lock);
	return NULL;
}

int agent_workers_start(struct agent *a)
{
	int n = (int)a->cfg->build_concurrency;

	if (n > AGENT_MAX_WORKERS)
		n = AGENT_MAX_WORKERS;
	for (int i = 0; i < n; i++) {
		struct worker_arg *wa = malloc(sizeof(*wa));

		if (!wa)
			return err_set(-ENOMEM, "out of memory");
		wa->a = a;
		wa->slot = i;
		if (pthread_create(&a->workers[i], NULL, worker_main, wa) != 0) {
			free(wa);
			return err_set(-EAGAIN, "cannot start worker thread %d", i);
		}
		a->n_workers = i + 1;
	}
	return 0;
}

void agent_drain(struct agent *a)
{
	pthread_mutex_lock(&a->q_lock);
	while (a->q_head || a->n_running > 0)
		pthread_cond_wait(&a->q_idle, &a->q_lock);
	pthread_mutex_unlock(&a->q_lock);
}

/* Finish what is queued and running, then stop the workers. */
void agent_workers_stop(struct agent *a)
{
	pthread_mutex_lock(&a->q_lock);
	a->q_closing = true;
	pthread_cond_broadcast(&a->q_cond);
	pthread_mutex_unlock(&a->q_lock);
	for (int i = 0; i < a->n_workers; i++)
		pthread_join(a->workers[i], NULL);
	a->n_workers = 0;
	/* jobs nobody could take (none, normally): their intent stays in the
	 * store and the next start reconciles it */
	while (a->q_head) {
		struct job *j = a->q_head;

		a->q_head = j->next;
		job_free(j);
	}
}
