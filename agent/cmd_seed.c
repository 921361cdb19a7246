/*
 * stratus-agent seed --instance SPEC.json [--format nocloud|configdrive] -o FILE
 *
 * Writes the instance's cloud-init seed disk (metadata module). Without
 * --format, the spec's "seed" field decides.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "agent/commands.h"
#include "model/model.h"
#include "core/core.h"
#include "metadata/metadata.h"

static void seed_usage(FILE *f)
{
	fprintf(f, "usage: stratus-agent seed --instance SPEC.json [--format nocloud|configdrive] -o FILE\n"
		   "  Writes the cloud-init seed ISO of the instance: NoCloud (label cidata)\n"
		   "  or config drive (label config-2). Default format: the spec's \"seed\".\n");
}

int agent_cmd_seed(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "instance", required_argument, NULL, 'i' },
		{ "format", required_argument, NULL, 'f' },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *spec_path = NULL, *format = NULL, *out = NULL;
	struct instance_spec spec;
	enum md_seed_format fmt = MD_SEED_NOCLOUD;
	int c, r;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "i:f:o:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			spec_path = optarg;
			break;
		case 'f':
			format = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'h':
			seed_usage(stdout);
			return 0;
		default:
			fprintf(stderr, "stratus-agent seed: unknown option or missing argument: %s\n",
				argv[optind - 1]);
			seed_usage(stderr);
			return 2;
		}
	}
	if (!spec_path || !out || optind != argc) {
		seed_usage(stderr);
		return 2;
	}
	if (format && md_seed_format_parse(format, &fmt) < 0) {
		fprintf(stderr, "stratus-agent seed: %s\n", err_msg());
		return 2;
	}
	if (model_spec_parse_file(spec_path, &spec) < 0) {
		fprintf(stderr, "stratus-agent seed: %s\n", err_msg());
		return 1;
	}
	if (!format) {
		if (md_seed_format_of_spec(&spec, &fmt) < 0) {
			fprintf(stderr, "stratus-agent seed: %s: the spec says seed \"none\"; "
					"give --format nocloud or configdrive\n", spec_path);
			model_spec_free(&spec);
			return 2;
		}
	}
	r = md_seed_write(&spec, fmt, out);
	if (r < 0)
		fprintf(stderr, "stratus-agent seed: instance %s: %s\n", spec.uuid, err_msg());
	model_spec_free(&spec);
	return r < 0 ? 1 : 0;
}
