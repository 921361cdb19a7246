/*
 * The guest CPU: hw:cpu_mode / hw:cpu_model / hw:cpu_model_extra_flags of
 * the flavor over vmm.cpu_* of the host, resolved for the domain type and
 * checked against what the host can give (docs/vmm.md "Guest CPU").
 *
 *   kvm default  host-model: libvirt expands it at start into the named
 *                model closest to the host plus feature flags, and a
 *                migration sends that expansion, so any destination with
 *                those features accepts the guest (host-passthrough shows
 *                the exact host CPU and only migrates between identical
 *                hosts);
 *   TCG default  no <cpu mode>: QEMU's own qemu64, what works under TCG.
 *                host-passthrough and host-model need KVM: refused.
 *   vmx / svm    hardware virtualization for the guest (nested): needs KVM
 *                and kvm_intel (vmx) or kvm_amd (svm) loaded with nested=1.
 */
#define LOG_TAG "vmm"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmm/vmm_priv.h"

static const char *const config_keys[3] = { "vmm.cpu_mode", "vmm.cpu_model",
					    "vmm.cpu_model_extra_flags" };

static bool nested_on(const char *root, const char *module)
{
	_cleanup_free_ char *path = NULL, *s = NULL;

	if (asprintf(&path, "%s/module/%s/parameters/nested", root, module) < 0) {
		path = NULL;
		return false;
	}
	if (read_file(path, 64, &s, NULL) < 0) {
		err_clear();
		return false;
	}
	return s[0] == 'Y' || s[0] == 'y' || s[0] == '1';
}

void vmm_cpu_load_nested(const char *root, struct vmm_topology *t)
{
	t->nested_vmx = nested_on(root, "kvm_intel");
	t->nested_svm = nested_on(root, "kvm_amd");
}

int vmm_cpu_config_parse(const struct vmm_config *cfg, struct model_cpu_choice *out)
{
	return model_cpu_choice_parse("", config_keys, cfg->cpu_mode, cfg->cpu_model,
				      cfg->cpu_model_extra_flags, out);
}

/* The config's choice with the flavor's over it. */
static int merge(const struct vmm_config *cfg, const struct model_flavor_hw *hw,
		 struct model_cpu_choice *out)
{
	struct model_cpu_choice c = { .mode = MODEL_CPU_MODE_DEFAULT };
	int r;

	if (cfg && (r = vmm_cpu_config_parse(cfg, &c)) < 0)
		return r;
	if (hw->cpu_given) {
		if (hw->cpu.mode != MODEL_CPU_MODE_DEFAULT) {
			c.mode = hw->cpu.mode;
			snprintf(c.model, sizeof(c.model), "%s", hw->cpu.model);
		}
		for (int i = 0; i < hw->cpu.n_flags; i++) {
			int k;

			for (k = 0; k < c.n_flags; k++)
				if (strcmp(c.flags[k].name, hw->cpu.flags[i].name) == 0)
					break;
			if (k == c.n_flags && c.n_flags == MODEL_MAX_CPU_FLAGS)
				return err_set(-EINVAL, "more than %d CPU flags from vmm.cpu_model_extra_flags "
					       "and hw:cpu_model_extra_flags", MODEL_MAX_CPU_FLAGS);
			c.flags[k] = hw->cpu.flags[i];
			if (k == c.n_flags)
				c.n_flags++;
		}
	}
	*out = c;
	return 0;
}

int vmm_cpu_fit(const struct vmm_topology *t, const struct vmm_config *cfg, enum vmm_virt virt,
		const struct instance_spec *spec, struct vmm_placement *p)
{
	struct model_flavor_hw hw;
	struct model_cpu_choice c;
	int r;

	if ((r = model_flavor_hw_parse(&spec->flavor, &hw)) < 0 || (r = merge(cfg, &hw, &c)) < 0)
		return r;
	if (c.mode == MODEL_CPU_MODE_DEFAULT && virt == VMM_VIRT_KVM)
		c.mode = MODEL_CPU_MODE_HOST_MODEL;
	if (virt != VMM_VIRT_KVM &&
	    (c.mode == MODEL_CPU_MODE_HOST_PASSTHROUGH || c.mode == MODEL_CPU_MODE_HOST_MODEL))
		return err_set(-ENOSPC, "instance %s (flavor %s): cpu mode %s needs KVM; this host "
			       "runs guests under TCG (domain type qemu)", spec->uuid,
			       spec->flavor.name, model_cpu_mode_names[c.mode]);
	if (c.mode == MODEL_CPU_MODE_DEFAULT && c.n_flags) {
		/* flags need a model: QEMU's own, named */
		c.mode = MODEL_CPU_MODE_CUSTOM;
		snprintf(c.model, sizeof(c.model), "qemu64");
	}
	for (int i = 0; i < c.n_flags; i++) {
		const struct model_cpu_flag *f = &c.flags[i];
		bool vmx = strcmp(f->name, "vmx") == 0, svm = strcmp(f->name, "svm") == 0;

		if (f->disable || (!vmx && !svm))
			continue;
		if (virt != VMM_VIRT_KVM)
			return err_set(-ENOSPC, "instance %s (flavor %s): CPU flag %s (hardware "
				       "virtualization for the guest) needs KVM; this host runs "
				       "guests under TCG", spec->uuid, spec->flavor.name, f->name);
		if ((vmx && !t->nested_vmx) || (svm && !t->nested_svm))
			return err_set(-ENOSPC, "instance %s (flavor %s): CPU flag %s: this host does "
				       "not offer nested virtualization (sysfs module/%s/"
				       "parameters/nested is not Y or 1: no %s CPU, module not "
				       "loaded, or nested=0)", spec->uuid, spec->flavor.name, f->name,
				       vmx ? "kvm_intel" : "kvm_amd", vmx ? "VT-x" : "AMD-V");
	}
	p->cpu = c;
	return 0;
}
