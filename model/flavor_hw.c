/*
 * Flavor extra specs for devices and the guest CPU (Nova's names):
 *   pci_passthrough:alias=gpu:2[,nic:1]   PCI devices by operator alias
 *   hw:pci_numa_affinity_policy=required|preferred|legacy
 *   hw:cpu_mode=host-passthrough|host-model|custom
 *   hw:cpu_model=Skylake-Server           (custom; implies it)
 *   hw:cpu_model_extra_flags=vmx,+pcid,-hle
 * Syntax only: whether a host has the devices or the CPU features is
 * vmm's question (vmm/pci.c, vmm/cpu.c).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

const char *const model_pci_numa_names[] = {
	[MODEL_PCI_NUMA_LEGACY] = "legacy", [MODEL_PCI_NUMA_REQUIRED] = "required",
	[MODEL_PCI_NUMA_PREFERRED] = "preferred", [MODEL_PCI_NUMA_LAST] = NULL,
};

const char *const model_cpu_mode_names[] = {
	[MODEL_CPU_MODE_DEFAULT] = "", [MODEL_CPU_MODE_HOST_PASSTHROUGH] = "host-passthrough",
	[MODEL_CPU_MODE_HOST_MODEL] = "host-model", [MODEL_CPU_MODE_CUSTOM] = "custom",
	[MODEL_CPU_MODE_LAST] = NULL,
};

static const char *const flavor_cpu_keys[3] = { "hw:cpu_mode", "hw:cpu_model",
						"hw:cpu_model_extra_flags" };

bool model_alias_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n >= MODEL_ALIAS_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-')
			return false;
	return true;
}

/* "flavor m1.x" + ": ", or nothing for the config's messages (what = "") */
#define SEP(what) (*(what) ? ": " : "")

static bool cpu_model_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= MODEL_CPU_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]))
			return false;
	return true;
}

static bool cpu_flag_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= MODEL_CPU_FLAG_MAX || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) ||
		      strchr("_.-", s[i])))
			return false;
	return true;
}

/* "vmx,+pcid,-hle" into c->flags. */
static int parse_flags(const char *what, const char *key, const char *text,
		       struct model_cpu_choice *c)
{
	_cleanup_free_ char *copy = strdup(text);
	char *save = NULL;

	if (!copy)
		return err_set(-ENOMEM, "out of memory");
	for (char *w = strtok_r(copy, ", ", &save); w; w = strtok_r(NULL, ", ", &save)) {
		struct model_cpu_flag fl = { .disable = w[0] == '-' };
		const char *name = (w[0] == '-' || w[0] == '+') ? w + 1 : w;
		char lower[MODEL_CPU_FLAG_MAX];
		size_t i;

		for (i = 0; name[i] && i + 1 < sizeof(lower); i++)
			lower[i] = (char)tolower((unsigned char)name[i]);
		lower[i] = '\0';
		if (name[i] || !cpu_flag_valid(lower))
			return err_set(-EINVAL, "%s%s%s: invalid flag '%.64s' (accepted: CPU flag names "
				       "like vmx, svm, pcid, each optionally prefixed + or -)",
				       what, SEP(what), key, w);
		if (c->n_flags == MODEL_MAX_CPU_FLAGS)
			return err_set(-EINVAL, "%s%s%s: more than %d flags", what, SEP(what), key,
				       MODEL_MAX_CPU_FLAGS);
		for (int k = 0; k < c->n_flags; k++)
			if (strcmp(c->flags[k].name, lower) == 0)
				return err_set(-EINVAL, "%s%s%s: flag %s given twice", what, SEP(what), key, lower);
		snprintf(fl.name, sizeof(fl.name), "%s", lower);
		c->flags[c->n_flags++] = fl;
	}
	return 0;
}

int model_cpu_choice_parse(const char *what, const char *const keys[3], const char *mode,
			   const char *model, const char *flags, struct model_cpu_choice *out)
{
	struct model_cpu_choice c = { .mode = MODEL_CPU_MODE_DEFAULT };
	int r;

	if (mode && *mode) {
		int i;

		for (i = 1; i < MODEL_CPU_MODE_LAST; i++)
			if (strcmp(mode, model_cpu_mode_names[i]) == 0)
				break;
		if (i == MODEL_CPU_MODE_LAST)
			return err_set(-EINVAL, "%s%s%s: invalid value '%.64s' (accepted: "
				       "host-passthrough, host-model, custom)", what, SEP(what), keys[0], mode);
		c.mode = (enum model_cpu_mode)i;
	}
	if (model && *model) {
		if (!cpu_model_valid(model))
			return err_set(-EINVAL, "%s%s%s: invalid value '%.64s' (accepted: a libvirt CPU "
				       "model name like Skylake-Server or EPYC, 1 to 47 of A-Z a-z "
				       "0-9 _ . -)", what, SEP(what), keys[1], model);
		if (c.mode != MODEL_CPU_MODE_DEFAULT && c.mode != MODEL_CPU_MODE_CUSTOM)
			return err_set(-EINVAL, "%s%s%s=%s needs %s=custom, not %s", what, SEP(what), keys[1],
				       model, keys[0], model_cpu_mode_names[c.mode]);
		c.mode = MODEL_CPU_MODE_CUSTOM;
		snprintf(c.model, sizeof(c.model), "%s", model);
	} else if (c.mode == MODEL_CPU_MODE_CUSTOM) {
		return err_set(-EINVAL, "%s%s%s=custom needs %s (a libvirt CPU model name like "
			       "Skylake-Server)", what, SEP(what), keys[0], keys[1]);
	}
	if (flags && *flags && (r = parse_flags(what, keys[2], flags, &c)) < 0)
		return r;
	*out = c;
	return 0;
}

static const char *extra(const struct spec_flavor *f, const char *key)
{
	for (size_t i = 0; i < f->n_extra_specs; i++)
		if (strcmp(f->extra_specs[i].key, key) == 0)
			return f->extra_specs[i].val;
	return NULL;
}

/* "gpu:2,nic:1" into hw->pci. */
static int parse_pci(const struct spec_flavor *f, const char *text, struct model_flavor_hw *hw)
{
	static const char key[] = "pci_passthrough:alias";
	_cleanup_free_ char *copy = strdup(text);
	char *save = NULL;
	int total = 0;

	if (!copy)
		return err_set(-ENOMEM, "out of memory");
	for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
		char *colon;
		long n;

		while (*w == ' ')
			w++;
		colon = strrchr(w, ':');
		if (!colon || parse_long(colon + 1, 1, MODEL_MAX_PCI_DEVICES, &n) < 0)
			return err_set(-EINVAL, "flavor %s: %s: '%.64s': expected NAME:COUNT with "
				       "COUNT from 1 to %d", f->name, key, w, MODEL_MAX_PCI_DEVICES);
		*colon = '\0';
		if (!model_alias_valid(w))
			return err_set(-EINVAL, "flavor %s: %s: invalid alias name '%.64s' (accepted: "
				       "1 to 31 of A-Z a-z 0-9 _ -)", f->name, key, w);
		for (int i = 0; i < hw->n_pci; i++)
			if (strcmp(hw->pci[i].alias, w) == 0)
				return err_set(-EINVAL, "flavor %s: %s: alias %s given twice", f->name,
					       key, w);
		if (hw->n_pci == MODEL_MAX_PCI_REQUESTS)
			return err_set(-EINVAL, "flavor %s: %s: more than %d aliases", f->name, key,
				       MODEL_MAX_PCI_REQUESTS);
		total += (int)n;
		if (total > MODEL_MAX_PCI_DEVICES)
			return err_set(-EINVAL, "flavor %s: %s: more than %d devices in all", f->name,
				       key, MODEL_MAX_PCI_DEVICES);
		snprintf(hw->pci[hw->n_pci].alias, MODEL_ALIAS_MAX, "%s", w);
		hw->pci[hw->n_pci++].count = (int)n;
	}
	if (hw->n_pci == 0)
		return err_set(-EINVAL, "flavor %s: %s: expected NAME:COUNT[,NAME:COUNT...], got '%.64s'",
			       f->name, key, text);
	return 0;
}

int model_flavor_hw_parse(const struct spec_flavor *f, struct model_flavor_hw *out)
{
	struct model_flavor_hw hw = { .pci_numa = MODEL_PCI_NUMA_LEGACY };
	_cleanup_free_ char *what = NULL;
	const char *v, *mode, *model, *flags;
	int r;

	if ((v = extra(f, "pci_passthrough:alias")) && (r = parse_pci(f, v, &hw)) < 0)
		return r;
	if ((v = extra(f, "hw:pci_numa_affinity_policy"))) {
		int i;

		for (i = 0; i < MODEL_PCI_NUMA_LAST; i++)
			if (strcmp(v, model_pci_numa_names[i]) == 0)
				break;
		if (i == MODEL_PCI_NUMA_LAST)
			return err_set(-EINVAL, "flavor %s: hw:pci_numa_affinity_policy: invalid value "
				       "'%.64s' (accepted: legacy, required, preferred)", f->name, v);
		hw.pci_numa = (enum model_pci_numa)i;
	}
	mode = extra(f, flavor_cpu_keys[0]);
	model = extra(f, flavor_cpu_keys[1]);
	flags = extra(f, flavor_cpu_keys[2]);
	hw.cpu_given = mode || model || flags;
	if (asprintf(&what, "flavor %s", f->name) < 0) {
		what = NULL;
		return err_set(-ENOMEM, "out of memory");
	}
	if ((r = model_cpu_choice_parse(what, flavor_cpu_keys, mode, model, flags, &hw.cpu)) < 0)
		return r;
	*out = hw;
	return 0;
}
