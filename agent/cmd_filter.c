/*
 * stratus-agent port-filter render [--bridge BR] [--mark N] SPEC.json
 * stratus-agent port-filter drops [--bridge BR] [--nft PATH] UUID
 *
 * render: the nft script the agent runs for the instance's port (its table
 * and base chains, then its port chain): what tests/agent/test_netfilter.sh
 * compares with golden files. drops: the port's drop counters, one
 * "REASON PACKETS" line per rule, from the kernel.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent_priv.h"
#include "agent/commands.h"

static void filter_usage(FILE *f)
{
	fprintf(f, "usage: stratus-agent port-filter render [--bridge BR] [--mark N] SPEC.json\n"
		   "       stratus-agent port-filter drops [--bridge BR] [--nft PATH] UUID\n"
		   "  render: the nftables script of the instance's port filter (spec.network\n"
		   "  gives its MAC and address); drops: its drop counters per reason.\n"
		   "  Defaults: --bridge stratus0, --mark 21332 (0x5354), --nft nft.\n");
}

static int render(const char *bridge, long mark, const char *spec_path)
{
	char table[AGENT_FILTER_TABLE_MAX];
	struct instance_spec spec;
	struct strbuf sb = { 0 };
	struct agent_port p;
	int r;

	if (agent_filter_table(bridge, table, sizeof(table)) < 0)
		return err_prefix(-EINVAL, "--bridge");
	if ((r = model_spec_parse_file(spec_path, &spec)) < 0)
		return r;
	if (!spec.network.present)
		r = err_set(-EINVAL, "instance %s: the spec has no network (mac, address)", spec.uuid);
	else
		r = agent_port_parse(spec.uuid, spec.network.mac, spec.network.address, &p);
	if (r == 0)
		r = agent_filter_base_script(table, &sb);
	if (r == 0)
		r = agent_filter_port_script(table, &p, (uint32_t)mark, &sb);
	if (r == 0)
		fputs(sb.buf, stdout);
	sb_free(&sb);
	model_spec_free(&spec);
	return r;
}

static int drops(const char *bridge, const char *nft, const char *uuid)
{
	char table[AGENT_FILTER_TABLE_MAX], tap[AGENT_TAP_LEN], why[32];
	struct agent_filter_state st;
	int r;

	if (agent_filter_table(bridge, table, sizeof(table)) < 0)
		return err_prefix(-EINVAL, "--bridge");
	if ((r = agent_port_tap(uuid, tap)) < 0 ||
	    (r = agent_filter_state_read(nft, table, &st)) < 0)
		return r;
	if (!agent_filter_port_ok(&st, tap))
		r = err_set(-ENOENT, "instance %s: port %s has no complete filter in table bridge %s",
			    uuid, tap, table);
	for (size_t i = 0; r == 0 && i < agent_filter_port_rule_count(); i++) {
		uint64_t n;

		if (agent_filter_port_rule_comment(i, why, sizeof(why)) == 0 &&
		    agent_filter_drops(&st, tap, why, &n) == 0)
			printf("%s %llu\n", why, (unsigned long long)n);
	}
	err_clear();
	agent_filter_state_free(&st);
	return r;
}

int agent_cmd_port_filter(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "bridge", required_argument, NULL, 'b' },
		{ "mark", required_argument, NULL, 'm' },
		{ "nft", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *bridge = "stratus0", *nft = "nft", *what;
	long mark = 21332;
	int c, r;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+b:m:n:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'b':
			bridge = optarg;
			break;
		case 'm':
			if (parse_long(optarg, 1, 0x7fffffff, &mark) < 0) {
				fprintf(stderr, "stratus-agent port-filter: --mark: expected 1 to "
						"2147483647, got '%s'\n", optarg);
				return 2;
			}
			break;
		case 'n':
			nft = optarg;
			break;
		case 'h':
			filter_usage(stdout);
			return 0;
		default:
			fprintf(stderr, "stratus-agent port-filter: unknown option or missing "
					"argument: %s\n", argv[optind - 1]);
			filter_usage(stderr);
			return 2;
		}
	}
	if (argc - optind < 2) {
		filter_usage(stderr);
		return 2;
	}
	what = argv[optind];
	/* options may follow the action too */
	argv += optind;
	argc -= optind;
	optind = 1;
	while ((c = getopt_long(argc, argv, "b:m:n:", longopts, NULL)) != -1) {
		if (c == 'b')
			bridge = optarg;
		else if (c == 'n')
			nft = optarg;
		else if (c != 'm' || parse_long(optarg, 1, 0x7fffffff, &mark) < 0) {
			filter_usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		filter_usage(stderr);
		return 2;
	}
	if (strcmp(what, "render") == 0)
		r = render(bridge, mark, argv[optind]);
	else if (strcmp(what, "drops") == 0)
		r = drops(bridge, nft, argv[optind]);
	else {
		fprintf(stderr, "stratus-agent port-filter: unknown action '%s'\n", what);
		filter_usage(stderr);
		return 2;
	}
	if (r < 0)
		fprintf(stderr, "stratus-agent port-filter: %s\n", err_msg());
	return r < 0 ? 1 : 0;
}
