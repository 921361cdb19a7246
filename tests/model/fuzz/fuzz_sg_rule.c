/* libFuzzer: a security group rule as a tenant sends it (secgroup.rule.add's
 * body) through model_sg_rule_parse and back to JSON, which must parse again
 * to the same rule. */
#include <stdint.h>
#include <string.h>

#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *o = json_loadb((const char *)data, size, 0, NULL), *back;
	struct sg_rule r, r2;

	if (!o)
		return 0;
	if (model_sg_rule_parse(o, &r) == 0) {
		back = model_sg_rule_to_json(&r);
		if (!back || model_sg_rule_parse(back, &r2) != 0 || memcmp(&r, &r2, sizeof(r)) != 0)
			__builtin_trap();
		json_decref(back);
	}
	json_decref(o);
	return 0;
}
