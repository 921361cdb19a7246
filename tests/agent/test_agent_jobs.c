/*
 * The agent's internals without a daemon: a build job carries the parsed
 * spec (moved in, never JSON), and the one domain builder the build's
 * define step and `stratus-agent render-domain` share.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "agent/agent_priv.h"

#define SPEC_FILE "tests/vmm/data/shared-qemu.json"
#define SPEC_UUID "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d"

/* Just the queue: no store, bus or workers. */
static struct agent *queue_new(void)
{
	struct agent *a = calloc(1, sizeof(*a));

	assert_non_null(a);
	pthread_mutex_init(&a->q_lock, NULL);
	pthread_cond_init(&a->q_cond, NULL);
	pthread_cond_init(&a->q_idle, NULL);
	return a;
}

static void queue_free(struct agent *a)
{
	agent_workers_stop(a); /* no workers: frees what is queued */
	pthread_mutex_destroy(&a->q_lock);
	pthread_cond_destroy(&a->q_cond);
	pthread_cond_destroy(&a->q_idle);
	free(a);
}

static void test_build_job_holds_the_spec(void **state)
{
	struct agent *a = queue_new();
	struct instance_spec spec;
	char *name;

	(void)state;
	assert_int_equal(model_spec_parse_file(SPEC_FILE, &spec), 0);
	name = spec.name;
	assert_int_equal(agent_enqueue_build(a, "req-1", &spec), 0);
	/* moved: the caller's struct is empty, the job owns the same strings */
	assert_null(spec.name);
	assert_null(spec.project);
	assert_non_null(a->q_head);
	assert_string_equal(a->q_head->type, "instance.build");
	assert_string_equal(a->q_head->uuid, SPEC_UUID);
	assert_string_equal(a->q_head->request_id, "req-1");
	assert_non_null(a->q_head->spec);
	assert_ptr_equal(a->q_head->spec->name, name);
	assert_null(a->q_head->reason);

	/* a build cannot be queued without its spec */
	assert_int_equal(agent_enqueue(a, "instance.build", SPEC_UUID, "req-2", NULL), -EINVAL);
	assert_null(a->q_head->next);

	/* other commands carry no spec */
	assert_int_equal(agent_enqueue(a, "instance.sync", SPEC_UUID, NULL, "guest crashed"), 0);
	assert_non_null(a->q_head->next);
	assert_null(a->q_head->next->spec);
	assert_string_equal(a->q_head->next->reason, "guest crashed");
	queue_free(a);

	/* shutting down: the spec is freed, not leaked, and the caller's is empty */
	a = queue_new();
	a->q_closing = true;
	assert_int_equal(model_spec_parse_file(SPEC_FILE, &spec), 0);
	assert_int_equal(agent_enqueue_build(a, "req-3", &spec), -ESHUTDOWN);
	assert_null(spec.name);
	assert_null(a->q_head);
	queue_free(a);
}

struct dom_fixture {
	struct instance_spec spec;
	struct vmm_topology *topo;
	struct vmm_placement pl;
	struct vmm_config vc;
};

static int dom_setup(void **state)
{
	struct dom_fixture *f = calloc(1, sizeof(*f));

	if (!f || model_spec_parse_file(SPEC_FILE, &f->spec) < 0 ||
	    vmm_topology_load("tests/vmm/sysfs/1node", &f->topo) < 0 ||
	    vmm_config_init(&f->vc) < 0 || vmm_fit(f->topo, NULL, NULL, &f->spec, &f->pl) < 0)
		return -1;
	*state = f;
	return 0;
}

static int dom_teardown(void **state)
{
	struct dom_fixture *f = *state;

	vmm_placement_free(&f->pl);
	vmm_topology_free(f->topo);
	model_spec_free(&f->spec);
	vmm_config_free(&f->vc);
	free(f);
	return 0;
}

static char *render(struct dom_fixture *f, const struct agent_domain_files *files)
{
	char *xml = NULL;

	assert_int_equal(agent_domain_xml(&f->spec, &f->pl, &f->vc, VMM_VIRT_QEMU, files, &xml), 0);
	assert_non_null(xml);
	return xml;
}

static void test_domain_files_and_bridge(void **state)
{
	struct dom_fixture *f = *state;
	struct agent_domain_files files = {
		.disk = "/i/" SPEC_UUID ".qcow2",
		.seed = "/i/" SPEC_UUID ".seed.iso",
		.console_log = "/l/" SPEC_UUID ".log",
	};
	char *xml, *p;

	p = agent_instance_file(&f->vc, SPEC_UUID, ".log");
	assert_non_null(strstr(p, f->vc.console_log_dir));
	free(p);
	p = agent_instance_file(&f->vc, SPEC_UUID, ".seed.iso");
	assert_non_null(strstr(p, f->vc.instances_dir));
	free(p);

	xml = render(f, &files);
	assert_non_null(strstr(xml, "/i/" SPEC_UUID ".qcow2"));
	assert_non_null(strstr(xml, "/i/" SPEC_UUID ".seed.iso"));
	assert_non_null(strstr(xml, "/l/" SPEC_UUID ".log"));
	assert_non_null(strstr(xml, "<source bridge=\"stratus0\"/>"));
	free(xml);

	/* vmm.bridge "" is no NIC (docs/agent.md), not a NIC on bridge "" */
	free(f->vc.bridge);
	f->vc.bridge = strdup("");
	files.seed = NULL;
	xml = render(f, &files);
	assert_null(strstr(xml, "<interface"));
	assert_null(strstr(xml, ".seed.iso"));
	free(xml);
}

static void test_domain_kernel_cmdline(void **state)
{
	struct dom_fixture *f = *state;
	struct agent_domain_files files = { .disk = "/i/d.qcow2" };
	char *xml;

	f->spec.image.cmdline = strdup("console=ttyS0 quiet");
	/* the image's cmdline goes with a kernel only */
	xml = render(f, &files);
	assert_null(strstr(xml, "<cmdline>"));
	free(xml);
	files.kernel = "/c/vmlinuz";
	files.initrd = "/c/initrd";
	xml = render(f, &files);
	assert_non_null(strstr(xml, "<kernel>/c/vmlinuz</kernel>"));
	assert_non_null(strstr(xml, "<initrd>/c/initrd</initrd>"));
	assert_non_null(strstr(xml, "<cmdline>console=ttyS0 quiet</cmdline>"));
	free(xml);
}

/* A cold move's source died while performing: every pair of states. The
 * two the old reconcile got wrong: a paused source copy (it marked it
 * active) and a paused copy on the destination (taken as done, not booted). */
static void test_cold_plan(void **state)
{
	enum { R = AGENT_COLD_ROLLBACK, F = AGENT_COLD_FINISH };
	/* rows: here none, running, paused, shut off, crashed, other;
	 * columns: there none, running, paused, shut off, crashed, other */
	static const int want[VMM_POWER_LAST][VMM_POWER_LAST] = {
		[VMM_POWER_NONE] = { R, F, F, F, F, F },
		[VMM_POWER_RUNNING] = { R, R, R, R, R, R },
		[VMM_POWER_PAUSED] = { R, R, R, R, R, R },
		[VMM_POWER_SHUTOFF] = { R, F, F, F, F, F },
		[VMM_POWER_CRASHED] = { R, F, F, F, F, F },
		[VMM_POWER_OTHER] = { R, F, F, F, F, F },
	};

	(void)state;
	for (int src = 0; src < VMM_POWER_LAST; src++)
		for (int dst = 0; dst < VMM_POWER_LAST; dst++) {
			enum agent_cold_plan p = agent_cold_plan((enum vmm_power)src,
								 (enum vmm_power)dst);

			if ((int)p != want[src][dst])
				fail_msg("here %s, there %s: %s, expected %s", vmm_power_names[src],
					 vmm_power_names[dst], agent_cold_plan_names[p],
					 agent_cold_plan_names[want[src][dst]]);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_job_holds_the_spec),
		cmocka_unit_test(test_cold_plan),
		cmocka_unit_test_setup_teardown(test_domain_files_and_bridge, dom_setup, dom_teardown),
		cmocka_unit_test_setup_teardown(test_domain_kernel_cmdline, dom_setup, dom_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
