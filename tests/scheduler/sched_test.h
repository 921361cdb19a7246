/* Helpers for the scheduler tests: a state in a temporary directory,
 * host reports, requests and the messages they produce. */
#ifndef SCHED_TEST_H
#define SCHED_TEST_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "scheduler/sched_priv.h"

struct env {
	char dir[64];
	char *yaml;
	struct sched_config cfg;
	struct sched *s;
	struct sched_out out;
	int64_t now;
};

static const char base_yaml[] =
	"scheduler:\n"
	"  state_path: %s/state.db\n"
	"  heartbeat_interval: 10s\n"
	"  missed_heartbeats: 3\n"
	"  max_attempts: 3\n"
	"  flavors:\n"
	"    m1.small: vcpus=1 ram_mb=1024 disk_gb=5\n"
	"    m1.large: vcpus=4 ram_mb=8192 disk_gb=20\n"
	"    m1.pinned: vcpus=2 ram_mb=2048 disk_gb=5 hw:cpu_policy=dedicated hw:mem_page_size=2MB\n"
	"  images:\n"
	"    debian: url=http://127.0.0.1/d.qcow2 checksum=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef disk_format=qcow2 min_disk_gb=2\n"
	"  default_quotas:\n"
	"    instances: 10\n"
	"    cores: 20\n"
	"%s";

static __attribute__((noinline, unused)) void env_load(struct env *e)
{
	const struct cfg_section sec[] = {
		{ .name = "scheduler", .fields = sched_config_fields, .dst = &e->cfg },
		{ 0 },
	};

	memset(&e->cfg, 0, sizeof(e->cfg));
	if (cfg_load_string("test.yaml", e->yaml, strlen(e->yaml), sec) < 0)
		fail_msg("config: %s", err_msg());
	if (sched_open(&e->cfg, &e->s) < 0)
		fail_msg("open: %s", err_msg());
}

static __attribute__((noinline, unused)) void env_open(struct env *e, const char *extra)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "/tmp/sched-test-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	assert_true(asprintf(&e->yaml, base_yaml, e->dir, extra ? extra : "") > 0);
	e->now = 1700000000000LL;
	env_load(e);
}

static __attribute__((noinline, unused)) void env_close_state(struct env *e)
{
	sched_out_clear(&e->out);
	sched_close(e->s);
	e->s = NULL;
	sched_config_free(&e->cfg);
}

static __attribute__((noinline, unused)) void env_reopen(struct env *e)
{
	env_close_state(e);
	env_load(e);
}

static __attribute__((noinline, unused)) void env_close(struct env *e)
{
	char cmd[128];

	env_close_state(e);
	free(e->out.v);
	free(e->yaml);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
	assert_int_equal(system(cmd), 0);
}

/* Handle one message; the outcome event (request.result) or NULL. */
static __attribute__((noinline, unused)) json_t *env_send(struct env *e, const char *type, const char *rid, const char *json)
{
	json_error_t jerr;
	json_t *body = json_loads(json, 0, &jerr);

	if (!body)
		fail_msg("bad test JSON %s: %s", json, jerr.text);
	sched_out_clear(&e->out);
	if (sched_handle(e->s, type, rid, body, e->now, &e->out) != 0)
		fail_msg("%s: %s", type, err_msg());
	json_decref(body);
	for (size_t i = 0; i < e->out.n; i++)
		if (strcmp(e->out.v[i].type, "request.result") == 0)
			return e->out.v[i].body;
	return NULL;
}

/* A request with a fresh request id; asserts there is exactly one outcome. */
static __attribute__((noinline, unused)) json_t *env_req(struct env *e, const char *type, const char *json)
{
	char rid[UUID_STRLEN];
	json_t *res;
	size_t n = 0;

	uuid_generate_str(rid);
	res = env_send(e, type, rid, json);
	for (size_t i = 0; i < e->out.n; i++)
		if (strcmp(e->out.v[i].type, "request.result") == 0) {
			assert_string_equal(e->out.v[i].request_id, rid);
			n++;
		}
	if (n != 1)
		fail_msg("%s: %zu outcomes", type, n);
	return res;
}

static __attribute__((noinline, unused)) bool res_ok(const json_t *res)
{
	return json_is_true(json_object_get(res, "ok"));
}

static __attribute__((noinline, unused)) const char *res_error(const json_t *res)
{
	const char *s = json_string_value(json_object_get(res, "error"));

	return s ? s : "";
}

/* The Nth message of TYPE in the last output, or NULL. */
static __attribute__((noinline, unused)) struct sched_msg *env_msg(struct env *e, const char *type, size_t nth)
{
	for (size_t i = 0; i < e->out.n; i++)
		if (strcmp(e->out.v[i].type, type) == 0 && nth-- == 0)
			return &e->out.v[i];
	return NULL;
}

/* The X25519 key pair of every test host: its reports carry the public
 * part, tests open the builds' sealed secrets with the private one. */
#define TEST_HOST_BOX_PUB "4LfY9mqpKOK+zTUIYGi0iPyCTcQhVvXiGRXKMFzKJkg="
#define TEST_HOST_BOX_PRIV "KEkv/18UPx0oSPRAO6pXRNyt6sK3eLQxLRZ+BonS6Ew="

/* Host report: 4 shared CPUs x4, 4 pCPUs on two nodes, 16 GB, 100 GB;
 * 2MB pages on node 1 when pages. */
static __attribute__((noinline, unused)) void env_report(struct env *e, const char *host, bool pages, double steal)
{
	char json[1024];

	snprintf(json, sizeof(json),
		 "{\"host\":\"%s\",\"availability_zone\":\"az1\",\"inventory\":{"
		 "\"VCPU\":{\"total\":4,\"allocation_ratio\":4.0},\"PCPU\":{\"total\":4},"
		 "\"MEMORY_MB\":{\"total\":16384,\"reserved\":512},\"DISK_GB\":{\"total\":100},"
		 "\"numa\":[{\"node\":0,\"pcpus\":2,\"memory_mb\":8192},"
		 "{\"node\":1,\"pcpus\":2,\"memory_mb\":8192%s}]},\"steal_pct\":%g,"
		 "\"box_key\":\"" TEST_HOST_BOX_PUB "\"}",
		 host, pages ? ",\"hugepages\":{\"2048\":{\"total\":2048,\"free\":2048}}" : "", steal);
	assert_null(env_send(e, "host.report", NULL, json));
}

static __attribute__((noinline, unused)) const char *build_host(struct env *e, size_t nth)
{
	struct sched_msg *m = env_msg(e, "instance.build", nth);

	if (!m)
		return NULL;
	assert_true(strncmp(m->topic, "stratus.host.", 13) == 0);
	return m->topic + 13;
}

#endif
