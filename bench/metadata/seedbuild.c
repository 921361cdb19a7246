/*
 * Seed ISO build time in process, as the agent builds seeds: parse the
 * spec, render, write the ISO with libisofs, write the file (tmp + fsync +
 * rename). Prints ms per ISO.
 *
 *   seedbuild SPEC.json nocloud|configdrive OUT.iso RUNS
 */
#include <stdio.h>

#include "metadata/metadata.h"

int main(int argc, char **argv)
{
	enum md_seed_format fmt;
	long runs;

	if (argc != 5 || md_seed_format_parse(argv[2], &fmt) < 0 ||
	    parse_long(argv[4], 1, 100000, &runs) < 0) {
		fprintf(stderr, "usage: seedbuild SPEC.json nocloud|configdrive OUT.iso RUNS\n");
		return 2;
	}
	int64_t t0 = time_mono_ns();

	for (long i = 0; i < runs; i++) {
		struct instance_spec s;

		if (model_spec_parse_file(argv[1], &s) < 0 || md_seed_write(&s, fmt, argv[3]) < 0) {
			fprintf(stderr, "seedbuild: %s\n", err_msg());
			return 1;
		}
		model_spec_free(&s);
	}
	printf("%.3f\n", (double)(time_mono_ns() - t0) / 1e6 / (double)runs);
	return 0;
}
