/*
 * cfg_keys: print every config key the daemons know, one per line as
 * "section.key[.sub]<TAB>type<TAB>default", walked from the same cfg_field
 * tables the daemons load with. tests/ops/test_man.sh checks each appears
 * in stratus.yaml(5).
 */
#include <stdio.h>

#include "agent/agent.h"
#include "bus/bus.h"
#include "core/core.h"
#include "images/images.h"
#include "metadata/metadata.h"
#include "scheduler/scheduler.h"
#include "vmm/vmm.h"

static const char *const type_names[] = {
	[CFG_STRING] = "string", [CFG_INT] = "integer",   [CFG_BOOL] = "boolean",
	[CFG_DOUBLE] = "number", [CFG_ENUM] = "enum",     [CFG_SIZE] = "size",
	[CFG_DURATION] = "duration", [CFG_STRLIST] = "list", [CFG_MAP] = "map",
	[CFG_SECTION] = "section", [CFG_CUSTOM] = "custom", [CFG_TYPE_LAST] = NULL,
};

static void walk(const char *prefix, const struct cfg_field *f)
{
	for (; f->key; f++) {
		char name[256];

		if (snprintf(name, sizeof(name), "%s.%s", prefix, f->key) >= (int)sizeof(name))
			continue;
		printf("%s\t%s\t%s\n", name, type_names[f->type], f->def ? f->def : "");
		if (f->type == CFG_SECTION && f->sub)
			walk(name, f->sub);
	}
}

int main(void)
{
	static const struct {
		const char *section;
		const struct cfg_field *fields;
	} tables[] = {
		{ "log", log_config_fields },      { "bus", bus_config_fields },
		{ "broker", broker_config_fields }, { "agent", agent_config_fields },
		{ "vmm", vmm_config_fields },      { "images", img_config_fields },
		{ "scheduler", sched_config_fields }, { "metadata", md_config_fields },
	};

	for (size_t i = 0; i < ARRAY_SIZE(tables); i++)
		walk(tables[i].section, tables[i].fields);
	return 0;
}
