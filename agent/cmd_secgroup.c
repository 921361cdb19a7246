/*
 * stratus-agent secgroup render [--bridge BR] INPUTS.json
 *
 * The nft script the agent runs for security groups: INPUTS.json is one
 * project's secgroup.apply body (or an array of them, one per project), as
 * the scheduler sends it. What tests/agent/test_secgroup.sh compares with
 * golden files; bad inputs are refused with the field at fault.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent_priv.h"
#include "agent/commands.h"

static void sg_usage(FILE *f)
{
	fprintf(f, "usage: stratus-agent secgroup render [--bridge BR] INPUTS.json\n"
		   "  the nftables script of the security groups of INPUTS.json (a\n"
		   "  secgroup.apply body, or an array of them). Default: --bridge stratus0.\n");
}

static int render(const char *bridge, const char *path)
{
	char table[AGENT_FILTER_TABLE_MAX];
	struct strbuf sb = { .max = 32u << 20 };
	json_error_t je;
	json_t *in, *projects = json_object(), *it;
	size_t i;
	int r = 0;

	if (agent_filter_table(bridge, table, sizeof(table)) < 0)
		return err_prefix(-EINVAL, "--bridge");
	in = json_load_file(path, 0, &je);
	if (!in) {
		json_decref(projects);
		return err_set(-EINVAL, "%s: line %d: %s", path, je.line, je.text);
	}
	if (json_is_object(in)) {
		json_t *a = json_array();

		json_array_append(a, in);
		json_decref(in);
		in = a;
	}
	json_array_foreach(in, i, it) {
		const char *p = json_string_value(json_object_get(it, "project"));

		if (!p || !*p) {
			r = err_set(-EINVAL, "%s: entry %zu: project: required", path, i);
			break;
		}
		json_object_set(projects, p, it);
	}
	if (r == 0)
		r = agent_sg_script(table, projects, &sb);
	if (r == 0)
		fputs(sb.buf, stdout);
	sb_free(&sb);
	json_decref(in);
	json_decref(projects);
	return r;
}

int agent_cmd_secgroup(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "bridge", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *bridge = "stratus0";
	int c, r;

	optind = 0; /* a full re-init: options may follow the action */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "b:h", longopts, NULL)) != -1) {
		if (c == 'b') {
			bridge = optarg;
		} else if (c == 'h') {
			sg_usage(stdout);
			return 0;
		} else {
			sg_usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 2 || strcmp(argv[optind], "render") != 0) {
		sg_usage(stderr);
		return 2;
	}
	r = render(bridge, argv[optind + 1]);
	if (r < 0)
		fprintf(stderr, "stratus-agent secgroup: %s\n", err_msg());
	return r < 0 ? 1 : 0;
}
