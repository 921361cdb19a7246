/* The flavor's ephemeral and swap disks: where they are, when they are made
 * and removed (images/local.c makes and formats them). */
#define LOG_TAG "agent"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent_priv.h"

#define GIB ((uint64_t)1 << 30)
#define MIB ((uint64_t)1 << 20)

static const struct {
	const char *suffix;
	enum img_local_kind kind;
} local_disks[] = {
	{ AGENT_EPHEMERAL_SUFFIX, IMG_LOCAL_EPHEMERAL },
	{ AGENT_SWAP_SUFFIX, IMG_LOCAL_SWAP },
};

static uint64_t disk_bytes(const struct spec_flavor *f, enum img_local_kind kind)
{
	if (kind == IMG_LOCAL_EPHEMERAL)
		return f->ephemeral_gb > 0 ? (uint64_t)f->ephemeral_gb * GIB : 0;
	return f->swap_mb > 0 ? (uint64_t)f->swap_mb * MIB : 0;
}

int agent_local_disks_create(struct agent *a, const struct instance_spec *spec, bool fresh)
{
	for (size_t i = 0; i < sizeof(local_disks) / sizeof(local_disks[0]); i++) {
		uint64_t bytes = disk_bytes(&spec->flavor, local_disks[i].kind);
		char *p;
		int r;

		if (!bytes && !fresh)
			continue;
		p = agent_instance_path(a, spec->uuid, local_disks[i].suffix);
		if (!p)
			return err_set(-ENOMEM, "out of memory");
		if (fresh && unlink(p) < 0 && errno != ENOENT) {
			r = err_sys(-errno, "instance %s: remove %s", spec->uuid, p);
			free(p);
			return r;
		}
		r = bytes ? img_local_disk_create(a->images, spec->uuid, p, bytes,
						  local_disks[i].kind)
			  : 0;
		free(p);
		if (r < 0)
			return r;
	}
	return 0;
}

void agent_local_disks_remove(struct agent *a, const char *uuid)
{
	for (size_t i = 0; i < sizeof(local_disks) / sizeof(local_disks[0]); i++) {
		char *p = agent_instance_path(a, uuid, local_disks[i].suffix);

		if (p && unlink(p) < 0 && errno != ENOENT)
			log_warn("%s disk not removed instance=%s path=%s: %s",
				 img_local_kind_names[local_disks[i].kind], uuid, p, strerror(errno));
		free(p);
	}
}
