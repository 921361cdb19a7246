/*
 * overlay_bench CACHE_DIR INSTANCES_DIR NAME URL CHECKSUM [NAME URL CHECKSUM ...]
 *
 * For each image: acquire it into the cache (a file:// URL or one already
 * cached), then time img_overlay_create() for 20 instances — the time to
 * make an instance disk from a cached image — and delete them again.
 * Prints one line per image: median, min and max in milliseconds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "images/images.h"

#define ROUNDS 20

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	struct img_config cfg = { 0 };
	struct img_cache *c = NULL;
	int rc = 0;

	if (argc < 6 || (argc - 3) % 3 != 0) {
		fprintf(stderr, "usage: overlay_bench CACHE_DIR INSTANCES_DIR NAME URL CHECKSUM...\n");
		return 2;
	}
	log_init("overlay_bench", false, LOG_LVL_WARN);
	if (img_config_defaults(&cfg) < 0)
		return 1;
	free(cfg.cache_dir);
	cfg.cache_dir = strdup(argv[1]);
	cfg.budget = 0;
	cfg.allow_file_urls = true;
	if (img_cache_open(&cfg, &c) < 0) {
		fprintf(stderr, "%s\n", err_msg());
		return 1;
	}
	for (int a = 3; a + 2 < argc; a += 3) {
		struct img_ref ref = { .name = argv[a], .url = argv[a + 1], .checksum = argv[a + 2],
				       .format = IMG_FMT_RAW };
		double ms[ROUNDS];
		char *base = NULL;

		if (img_acquire(c, &ref, NULL, NULL, &base) < 0) {
			fprintf(stderr, "%s\n", err_msg());
			rc = 1;
			break;
		}
		for (int i = 0; i < ROUNDS; i++) {
			char uuid[UUID_STRLEN], *ov = NULL;
			int64_t t0;

			uuid_generate_str(uuid);
			t0 = time_mono_ns();
			if (img_overlay_create(c, &ref, uuid, 20, argv[2], &ov) < 0) {
				fprintf(stderr, "%s\n", err_msg());
				rc = 1;
				break;
			}
			ms[i] = (double)(time_mono_ns() - t0) / 1e6;
			img_overlay_delete(c, uuid);
			free(ov);
		}
		img_release(c, ref.checksum);
		free(base);
		if (rc)
			break;
		qsort(ms, ROUNDS, sizeof(ms[0]), cmp_double);
		printf("instance disk from cached %-8s image: median %.1f ms (min %.1f, max %.1f, %d runs)\n",
		       argv[a], ms[ROUNDS / 2], ms[0], ms[ROUNDS - 1], ROUNDS);
	}
	img_cache_close(c);
	img_config_free(&cfg);
	return rc;
}
