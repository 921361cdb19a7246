/*
 * bench/netiso/sg_bench: a security group rule change on N ports of one
 * host, through the agent's code (run it in a network namespace of its own:
 * it creates table bridge stratus-BRIDGE there).
 *   change:  a rule added to the group of N ports: agent_sg_compile of the
 *            project's inputs and one nft transaction (what secgroup.apply
 *            does on the agent: every port's chains re-applied);
 *   members: one address added to the remote group's set (a boot elsewhere):
 *            the members-only transaction;
 *   nft:     the reference, measured in the same run: one `nft -f` of the
 *            same change script, without the agent's compile.
 * Prints "change_ms=X members_ms=Y nft_ms=Z ports=N".
 */
#include <stdio.h>
#include <string.h>

#include "agent/agent_priv.h"

#define GID "5e000001-0000-4000-8000-000000000001"

static json_t *inputs(long n, int rules, int members)
{
	json_t *ports = json_array(), *rl = json_array(), *mem = json_array();

	for (long i = 0; i < n; i++) {
		char uuid[64];

		snprintf(uuid, sizeof(uuid), "be0c%04x-0000-4000-8000-%012d", (int)i, (int)i);
		json_array_append_new(ports, json_pack("{s:s, s:[s]}", "uuid", uuid, "groups", GID));
	}
	json_array_append_new(rl, json_pack("{s:s}", "direction", "egress"));
	json_array_append_new(rl, json_pack("{s:s, s:s}", "direction", "ingress", "remote_group", GID));
	for (int k = 0; k < rules; k++)
		json_array_append_new(rl, json_pack("{s:s, s:s, s:i, s:s}", "direction", "ingress",
						    "protocol", "tcp", "port_range_min", 8000 + k,
						    "remote_ip_prefix", "0.0.0.0/0"));
	for (int k = 0; k < members; k++) {
		char ip[32];

		snprintf(ip, sizeof(ip), "10.100.%d.%d", k / 250, k % 250 + 1);
		json_array_append_new(mem, json_string(ip));
	}
	return json_pack("{s:{s:s, s:o, s:[{s:s, s:s, s:o}], s:{s:o}}}", "bench", "project", "bench",
			 "ports", ports, "groups", "id", GID, "name", "default", "rules", rl,
			 "members", GID, mem);
}

static int compile(const char *table, json_t *in, struct strbuf *chains, struct strbuf *sets)
{
	char (*taps)[AGENT_TAP_LEN] = NULL;
	char **names = NULL;
	size_t nt = 0, nn = 0;
	int r = agent_sg_compile(table, in, chains, sets, &taps, &nt, &names, &nn);

	free(taps);
	for (size_t i = 0; i < nn; i++)
		free(names[i]);
	free(names);
	return r;
}

int main(int argc, char **argv)
{
	const char *bridge = argc > 1 ? argv[1] : "sg-bench0";
	long n = 100;
	char table[AGENT_FILTER_TABLE_MAX];
	struct strbuf c0 = { .max = 64u << 20 }, s0 = { .max = 64u << 20 };
	struct strbuf c1 = { .max = 64u << 20 }, s1 = { .max = 64u << 20 };
	struct strbuf c2 = { .max = 64u << 20 }, s2 = { .max = 64u << 20 };
	struct strbuf script = { .max = 64u << 20 };
	json_t *before, *after, *joined;
	int64_t t0, t_change, t_members, t_nft;

	if (argc > 2 && parse_long(argv[2], 1, 4000, &n) < 0) {
		fprintf(stderr, "sg_bench: N: expected 1 to 4000, got '%s'\n", argv[2]);
		return 2;
	}
	if (agent_filter_table(bridge, table, sizeof(table)) < 0)
		goto fail;
	before = inputs(n, 1, 100);
	after = inputs(n, 2, 100);
	joined = inputs(n, 2, 101);
	/* the state before: the group with one rule on N ports */
	if (compile(table, before, &c0, &s0) < 0 || sb_append(&c0, s0.buf, s0.len) < 0 ||
	    agent_filter_run("nft", c0.buf) < 0)
		goto fail;
	/* a rule added: compile + one transaction */
	t0 = time_mono_ns();
	if (compile(table, after, &c1, &s1) < 0 || sb_append(&script, c1.buf, c1.len) < 0 ||
	    sb_append(&script, s1.buf, s1.len) < 0 || agent_filter_run("nft", script.buf) < 0)
		goto fail;
	t_change = time_mono_ns() - t0;
	/* a member joins: only the sets (the chains compile the same) */
	t0 = time_mono_ns();
	if (compile(table, joined, &c2, &s2) < 0 || strcmp(c2.buf, c1.buf) != 0 ||
	    agent_filter_run("nft", s2.buf) < 0)
		goto fail;
	t_members = time_mono_ns() - t0;
	/* the reference: nft alone on the same change script */
	t0 = time_mono_ns();
	if (agent_filter_run("nft", script.buf) < 0)
		goto fail;
	t_nft = time_mono_ns() - t0;
	printf("change_ms=%.1f members_ms=%.1f nft_ms=%.1f ports=%ld script_bytes=%zu\n",
	       (double)t_change / 1e6, (double)t_members / 1e6, (double)t_nft / 1e6, n, script.len);
	return 0;
fail:
	fprintf(stderr, "sg_bench: %s\n", err_msg());
	return 1;
}
