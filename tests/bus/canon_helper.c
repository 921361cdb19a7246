/*
 * Canonical JSON of each line of stdin (one JSON value a line), one line
 * out each, or "error: ..." for a value that has none. For
 * tests/bus/test_canonical.sh, which compares it with Python's json.dumps.
 */
#define LOG_TAG "helper"
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"

int main(void)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	while ((n = getline(&line, &cap, stdin)) > 0) {
		json_error_t je;
		json_t *v = json_loadb(line, (size_t)n, JSON_DECODE_ANY, &je);
		char *out = NULL;
		size_t len;

		if (!v) {
			printf("error: not JSON: %s\n", je.text);
			continue;
		}
		if (bus_canonical_json(v, 1 << 20, &out, &len) < 0)
			printf("error: %s\n", err_msg());
		else
			printf("%s\n", out);
		free(out);
		json_decref(v);
	}
	free(line);
	return 0;
}
