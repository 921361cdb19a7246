/*
 * bench/netiso/filter_bench: the agent's port-filter code path on N ports
 * of one host (run it in a network namespace of its own: it creates table
 * bridge stratus-BRIDGE there).
 *   batch: the table and N ports in one nft transaction, as reconcile does
 *          after a host restart (agent_filter_base_script + N port scripts);
 *   each:  N ports one after the other, as N builds do (per port: list the
 *          base chain, run the port's script: agent_filter_apply's calls).
 * Prints "batch_ms=X each_ms=Y ports=N".
 */
#include <stdio.h>
#include <string.h>

#include "agent/agent_priv.h"

int main(int argc, char **argv)
{
	const char *bridge = argc > 1 ? argv[1] : "nia-bench0";
	long n = 100;
	char table[AGENT_FILTER_TABLE_MAX], uuid[64], mac[32], addr[48];
	struct strbuf sb = { 0 };
	int64_t t0, t_batch, t_each;

	if (argc > 2 && parse_long(argv[2], 1, 4000, &n) < 0) {
		fprintf(stderr, "filter_bench: N: expected 1 to 4000, got '%s'\n", argv[2]);
		return 2;
	}
	if (agent_filter_table(bridge, table, sizeof(table)) < 0) {
		fprintf(stderr, "filter_bench: %s\n", err_msg());
		return 1;
	}
	/* batch: one transaction */
	t0 = time_mono_ns();
	if (agent_filter_base_script(table, &sb) < 0)
		return 1;
	for (long i = 0; i < n; i++) {
		struct agent_port p;

		snprintf(uuid, sizeof(uuid), "be0c%04x-0000-4000-8000-%012d", (int)i, (int)i);
		snprintf(mac, sizeof(mac), "52:54:00:be:%02lx:%02lx", (i >> 8) & 255, i & 255);
		snprintf(addr, sizeof(addr), "10.%ld.%ld.%ld/8", 100 + i / 65536, (i / 256) % 256,
			 i % 256 + 1 > 254 ? 254 : i % 256 + 1);
		if (agent_port_parse(uuid, mac, addr, &p) < 0 ||
		    agent_filter_port_script(table, &p, 21332, &sb) < 0) {
			fprintf(stderr, "filter_bench: %s\n", err_msg());
			return 1;
		}
	}
	if (agent_filter_run("nft", sb.buf) < 0) {
		fprintf(stderr, "filter_bench: %s\n", err_msg());
		return 1;
	}
	t_batch = time_mono_ns() - t0;
	sb_free(&sb);

	/* each: the table exists; N ports one by one, with the build's check */
	t0 = time_mono_ns();
	for (long i = 0; i < n; i++) {
		struct agent_port p;
		struct strbuf one = { 0 };

		snprintf(uuid, sizeof(uuid), "be0d%04x-0000-4000-8000-%012d", (int)i, (int)i);
		snprintf(mac, sizeof(mac), "52:54:00:bf:%02lx:%02lx", (i >> 8) & 255, i & 255);
		snprintf(addr, sizeof(addr), "10.%ld.%ld.%ld/8", 200 + i / 65536, (i / 256) % 256,
			 i % 256 + 1 > 254 ? 254 : i % 256 + 1);
		if (agent_port_parse(uuid, mac, addr, &p) < 0 ||
		    !agent_filter_base_quick_ok("nft", table) ||
		    agent_filter_port_script(table, &p, 21332, &one) < 0 ||
		    agent_filter_run("nft", one.buf) < 0) {
			fprintf(stderr, "filter_bench: port %ld: %s\n", i, err_msg());
			return 1;
		}
		sb_free(&one);
	}
	t_each = time_mono_ns() - t0;
	printf("batch_ms=%.1f each_ms=%.1f ports=%ld\n", (double)t_batch / 1e6,
	       (double)t_each / 1e6, n);
	return 0;
}
