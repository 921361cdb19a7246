/*
 * The domain the agent boots: an instance's file names and its
 * vmm_domain_params, built in one place for the build's define step and
 * for `stratus-agent render-domain`, so the golden domain-XML tests
 * (tests/vmm/test_golden.sh) check what the agent really boots.
 */
#define LOG_TAG "agent"
#include <errno.h>
#include <string.h>

#include "agent/agent_priv.h"

char *agent_instance_file(const struct vmm_config *vc, const char *uuid, const char *file)
{
	const char *dir = strcmp(file, ".log") == 0 ? vc->console_log_dir : vc->instances_dir;
	char *p = NULL;

	if (asprintf(&p, "%s/%s%s", dir, uuid, file) < 0)
		return NULL;
	return p;
}

char *agent_instance_path(struct agent *a, const char *uuid, const char *file)
{
	return agent_instance_file(a->vmm_cfg, uuid, file);
}

static void domain_params(const struct instance_spec *spec, const struct vmm_config *vc,
			  enum vmm_virt virt, const struct agent_domain_files *f,
			  const char *tap, struct vmm_domain_params *p)
{
	*p = (struct vmm_domain_params){
		.virt = virt,
		.disk_path = f->disk,
		.disk_format = "qcow2",
		.seed_path = f->seed,
		.seed_format = f->seed ? VMM_SEED_ISO : VMM_SEED_NONE,
		.bridge = vc->bridge && *vc->bridge ? vc->bridge : NULL,
		.tap = tap && *tap ? tap : NULL, /* the port filter's name (netfilter.c) */
		.console_log = f->console_log,
		.kernel = f->kernel,
		.initrd = f->initrd,
		.cmdline = f->kernel ? spec->image.cmdline : NULL,
	};
}

/* The image's machine (its Glance properties): the firmware and devices
 * it asks for, and for UEFI the instance's own NVRAM, <uuid>.nvram beside
 * its disk (agent_cleanup_instance removes it; stop/start and reboot keep
 * it, as they keep the domain). *nvram is malloc'd or NULL. */
static int domain_machine(const struct instance_spec *spec, const struct vmm_config *vc,
			  struct vmm_domain_params *p, char **nvram)
{
	int r = model_image_props_parse(spec->image.name, spec->image.properties,
					spec->image.n_properties, &p->props);

	*nvram = NULL;
	if (r < 0)
		return r;
	if (p->props.firmware != MODEL_FW_UEFI)
		return 0;
	*nvram = agent_instance_file(vc, spec->uuid, ".nvram");
	if (!*nvram)
		return err_set(-ENOMEM, "out of memory");
	p->nvram_path = *nvram;
	return 0;
}

int agent_domain_xml(const struct instance_spec *spec, const struct vmm_placement *pl,
		     const struct vmm_config *vc, enum vmm_virt virt,
		     const struct agent_domain_files *f, char **xml)
{
	struct vmm_domain_params p;
	char tap[AGENT_TAP_LEN] = "";
	_cleanup_free_ char *nvram = NULL, *eph = NULL, *swap = NULL;
	int r;

	if (agent_port_tap(spec->uuid, tap) < 0)
		return err_prefix(-EINVAL, "domain");
	domain_params(spec, vc, virt, f, tap, &p);
	r = domain_machine(spec, vc, &p, &nvram);
	if (r < 0)
		return r;
	/* the flavor's local disks, beside the root (agent/local_disks.c makes them) */
	if (spec->flavor.ephemeral_gb > 0 &&
	    !(eph = agent_instance_file(vc, spec->uuid, AGENT_EPHEMERAL_SUFFIX)))
		return err_set(-ENOMEM, "out of memory");
	if (spec->flavor.swap_mb > 0 && !(swap = agent_instance_file(vc, spec->uuid, AGENT_SWAP_SUFFIX)))
		return err_set(-ENOMEM, "out of memory");
	p.ephemeral_path = eph;
	p.swap_path = swap;
	return vmm_domain_xml(spec, pl, &p, xml);
}
