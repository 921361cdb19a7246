/*
 * libFuzzer harness over the renderer: any JSON the spec parser accepts
 * must render (every document, every listing) without a crash, and the
 * JSON documents must parse back. Input: a JSON instance spec.
 */
#include <stdint.h>
#include <string.h>

#include "metadata/metadata.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t je;
	json_t *j = json_loadb((const char *)data, size, 0, &je);
	struct instance_spec s;
	struct md_tree *t = NULL;

	if (!j)
		return 0;
	if (model_spec_parse(j, &s) < 0) {
		json_decref(j);
		return 0;
	}
	json_decref(j);
	if (md_render(&s, &t) < 0)
		abort(); /* a valid spec always renders */
	for (size_t i = 0; i < t->n; i++) {
		const struct md_file *f = &t->files[i];
		size_t n = strlen(f->path);
		char *l = NULL;
		size_t len;

		if (n > 5 && strcmp(f->path + n - 5, ".json") == 0) {
			json_t *back = json_loadb((const char *)f->data, f->len, 0, &je);

			if (!back)
				abort();
			json_decref(back);
		}
		char *dir = strndup(f->path, strrchr(f->path, '/') ? (size_t)(strrchr(f->path, '/') - f->path) : 0);

		if (md_tree_list(t, dir, MD_VIEW_HTTP | MD_VIEW_CONFIGDRIVE | MD_VIEW_NOCLOUD, &l,
				 &len) != 0)
			abort(); /* every file's directory lists */
		free(l);
		free(dir);
	}
	md_tree_free(t);
	model_spec_free(&s);
	return 0;
}
