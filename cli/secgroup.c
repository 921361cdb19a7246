/*
 * stratusctl secgroup: the project's security groups (Neutron's names).
 *   secgroup list | show G | create G [--description D] | delete G
 *   secgroup rule add G --direction ingress|egress [--ethertype IPv4|IPv6]
 *       [--protocol tcp|udp|icmp|any] [--port N[:M]] [--remote-ip CIDR |
 *       --remote-group G2]
 *   secgroup rule delete RULE_ID
 * One signed request each (secgroup.*), its answer printed.
 */
#define LOG_TAG "cli"
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli_priv.h"
#include "core/core.h"

static const char sg_usage[] =
	"secgroup list | secgroup show G | secgroup create G [--description D] | "
	"secgroup delete G |\n"
	"       secgroup rule add G --direction ingress|egress [--ethertype IPv4|IPv6]\n"
	"       [--protocol tcp|udp|icmp|any] [--port N[:M]] [--remote-ip CIDR | --remote-group G2] |\n"
	"       secgroup rule delete RULE_ID   [--project P] [--timeout S]";

enum { S_DESC = 5000, S_DIR, S_ETH, S_PROTO, S_PORT, S_RIP, S_RGROUP };

/* --port N or N:M into BODY (for icmp: the type and the code). */
static int port_opt(struct cli_ctx *ctx, const char *arg, json_t *body)
{
	const char *colon = strchr(arg, ':');
	char lo[16];
	long a, b = -1;

	if (strlen(arg) > 12 || (colon && (size_t)(colon - arg) >= sizeof(lo)))
		goto bad;
	snprintf(lo, sizeof(lo), "%.*s", colon ? (int)(colon - arg) : (int)strlen(arg), arg);
	if (parse_long(lo, 0, 65535, &a) < 0 || (colon && parse_long(colon + 1, 0, 65535, &b) < 0))
		goto bad;
	json_object_set_new(body, "port_range_min", json_integer(a));
	if (b >= 0)
		json_object_set_new(body, "port_range_max", json_integer(b));
	return 0;
bad:
	cli_error(ctx, "--port: expected N or N:M (0 to 65535; icmp: TYPE[:CODE]), got '%s'", arg);
	return -1;
}

static void print_group(const json_t *g)
{
	static const char *const cols[] = { "id", "direction", "ethertype", "protocol",
					    "port_range_min", "port_range_max", "remote_ip_prefix",
					    "remote_group", NULL };
	static const char *const heads[] = { "RULE", "DIRECTION", "ETHERTYPE", "PROTOCOL",
					     "PORT_MIN", "PORT_MAX", "REMOTE_IP", "REMOTE_GROUP" };

	printf("name:        %s\nid:          %s\nproject:     %s\ndescription: %s\n"
	       "instances:   %lld\n\n",
	       json_string_value(json_object_get(g, "name")),
	       json_string_value(json_object_get(g, "id")),
	       json_string_value(json_object_get(g, "project")),
	       json_string_value(json_object_get(g, "description")),
	       (long long)json_integer_value(json_object_get(g, "instances")));
	cli_print_table(json_object_get(g, "rules"), cols, heads);
}

int cli_secgroup(struct cli_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "description", required_argument, NULL, S_DESC },
		{ "direction", required_argument, NULL, S_DIR },
		{ "ethertype", required_argument, NULL, S_ETH },
		{ "protocol", required_argument, NULL, S_PROTO },
		{ "port", required_argument, NULL, S_PORT },
		{ "remote-ip", required_argument, NULL, S_RIP },
		{ "remote-group", required_argument, NULL, S_RGROUP },
		CLI_COMMON_OPTS,
		{ 0 },
	};
	static const char *const keys[] = { "description", "direction", "ethertype", "protocol",
					    NULL, "remote_ip_prefix", "remote_group" };
	static const char *const lcols[] = { "name", "id", "instances", "description", NULL };
	static const char *const lheads[] = { "NAME", "ID", "INSTANCES", "DESCRIPTION" };
	struct cli_common co = { .project = cli_default_project(), .timeout_s = 30 };
	json_t *opt = json_object(), *body = NULL;
	const char *type = NULL, *sub;
	int c, n, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = cli_common_opt(ctx, c, &co);

		if (r < 0)
			goto usage;
		if (r == 0)
			continue;
		if (c == CLI_OPT_HELP) {
			printf("usage: %s %s\n", ctx->prog, sg_usage);
			json_decref(opt);
			return CLI_OK;
		}
		if (c == S_PORT) {
			if (port_opt(ctx, optarg, opt) < 0)
				goto usage;
		} else if (c >= S_DESC && c <= S_RGROUP) {
			json_object_set_new(opt, keys[c - S_DESC], json_string(optarg));
		} else {
			goto usage;
		}
	}
	n = argc - optind;
	sub = n > 0 ? argv[optind] : "";
	if (n == 1 && strcmp(sub, "list") == 0) {
		type = "secgroup.list";
		body = json_object();
	} else if (n == 2 && (strcmp(sub, "show") == 0 || strcmp(sub, "delete") == 0)) {
		type = sub[0] == 's' ? "secgroup.show" : "secgroup.delete";
		body = json_pack("{s:s}", "group", argv[optind + 1]);
	} else if (n == 2 && strcmp(sub, "create") == 0) {
		type = "secgroup.create";
		body = json_pack("{s:s}", "name", argv[optind + 1]);
		if (json_object_get(opt, "description"))
			json_object_set(body, "description", json_object_get(opt, "description"));
	} else if (n == 3 && strcmp(sub, "rule") == 0 && strcmp(argv[optind + 1], "add") == 0) {
		type = "secgroup.rule.add";
		body = json_deep_copy(opt);
		json_object_del(body, "description");
		json_object_set_new(body, "group", json_string(argv[optind + 2]));
		if (!json_object_get(body, "direction")) {
			json_decref(body);
			json_decref(opt);
			return cli_usage_error(ctx, sg_usage, "secgroup rule add: --direction ingress|"
					       "egress is required");
		}
	} else if (n == 3 && strcmp(sub, "rule") == 0 && strcmp(argv[optind + 1], "delete") == 0) {
		type = "secgroup.rule.delete";
		body = json_pack("{s:s}", "id", argv[optind + 2]);
	} else {
		goto usage;
	}
	json_decref(opt);
	json_object_set_new(body, "project", json_string(co.project));
	if (strcmp(type, "secgroup.show") == 0 && !ctx->json) {
		struct cli_session ss;
		json_t *data = NULL;

		rc = cli_session_open(&ss, ctx, co.timeout_s);
		if (rc == CLI_OK)
			rc = cli_request(&ss, type, body, &data);
		if (rc == CLI_OK)
			print_group(data);
		cli_session_close(&ss);
		json_decref(data);
		json_decref(body);
		return rc;
	}
	if (strcmp(type, "secgroup.list") == 0)
		return cli_request_print(ctx, &co, type, body, lcols, lheads);
	if (strcmp(type, "secgroup.rule.add") == 0) {
		static const char *const rcols[] = { "id", "group", "direction", "ethertype",
						     "protocol", "port_range_min", "port_range_max",
						     "remote_ip_prefix", "remote_group", NULL };
		static const char *const rheads[] = { "RULE", "GROUP", "DIRECTION", "ETHERTYPE",
						      "PROTOCOL", "PORT_MIN", "PORT_MAX", "REMOTE_IP",
						      "REMOTE_GROUP" };

		return cli_request_print(ctx, &co, type, body, rcols, rheads);
	}
	rc = cli_request_print(ctx, &co, type, body, NULL, NULL);
	if (rc == CLI_OK && !ctx->json)
		printf("%s done\n", type);
	return rc;
usage:
	json_decref(opt);
	return cli_usage_only(ctx, sg_usage);
}
