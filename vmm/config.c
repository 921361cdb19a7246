/* The vmm: config section and the accel choice. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vmm/vmm_priv.h"

const char *const vmm_accel_names[] = {
	[VMM_ACCEL_AUTO] = "auto", [VMM_ACCEL_KVM] = "kvm", [VMM_ACCEL_QEMU] = "qemu",
	[VMM_ACCEL_LAST] = NULL,
};
const char *const vmm_virt_names[] = {
	[VMM_VIRT_KVM] = "kvm", [VMM_VIRT_QEMU] = "qemu", [VMM_VIRT_LAST] = NULL,
};

static int parse_cpuset_opt(const char *val, void *dst, const char **expected)
{
	struct vmm_cpuset_opt *o = dst;
	struct vmm_cpuset s;

	if (vmm_cpuset_parse(val, &s) < 0) {
		err_clear();
		*expected = "a CPU list like 0-3,8,^2";
		return -EINVAL;
	}
	o->set = true;
	o->cpus = s;
	return 0;
}

/* "2M,1G", "2M", "none", "all" */
static int parse_pools(const char *val, void *dst, const char **expected)
{
	unsigned m = 0;
	_cleanup_free_ char *copy = strdup(val);
	char *save = NULL;

	*expected = "page sizes like 2M,1G (or all, none)";
	if (!copy)
		return -ENOMEM;
	if (strcmp(val, "all") == 0) {
		*(unsigned *)dst = (1u << VMM_PAGE_2M) | (1u << VMM_PAGE_1G);
		return 0;
	}
	if (strcmp(val, "none") == 0) {
		*(unsigned *)dst = 0;
		return 0;
	}
	for (char *w = strtok_r(copy, ", ", &save); w; w = strtok_r(NULL, ", ", &save)) {
		int p;

		for (p = VMM_PAGE_2M; p < VMM_PAGE_LAST; p++)
			if (strcasecmp(w, vmm_page_names[p]) == 0)
				break;
		if (p == VMM_PAGE_LAST)
			return -EINVAL;
		m |= 1u << p;
	}
	if (!m)
		return -EINVAL;
	*(unsigned *)dst = m;
	return 0;
}

#define F(k) offsetof(struct vmm_config, k)
const struct cfg_field vmm_config_fields[] = {
	{ .key = "uri", .type = CFG_STRING, .offset = F(uri), .def = "qemu:///system",
	  .expected = "a libvirt URI like qemu:///system" },
	{ .key = "accel", .type = CFG_ENUM, .offset = CFG_ENUM_OFFSET(struct vmm_config, accel),
	  .names = vmm_accel_names, .def = "auto" },
	{ .key = "cpu_dedicated_set", .type = CFG_CUSTOM, .offset = F(cpu_dedicated_set),
	  .parse = parse_cpuset_opt, .expected = "a CPU list like 0-3,8,^2" },
	{ .key = "cpu_shared_set", .type = CFG_CUSTOM, .offset = F(cpu_shared_set),
	  .parse = parse_cpuset_opt, .expected = "a CPU list like 0-3,8,^2" },
	{ .key = "hugepage_pools", .type = CFG_CUSTOM, .offset = F(hugepage_pools),
	  .parse = parse_pools, .expected = "page sizes like 2M,1G (or all, none)", .def = "all" },
	{ .key = "bridge", .type = CFG_STRING, .offset = F(bridge), .def = "stratus0",
	  .expected = "a bridge name" },
	{ .key = "console_log_dir", .type = CFG_STRING, .offset = F(console_log_dir),
	  .def = "/var/log/stratus/console", .expected = "a directory" },
	{ .key = "instances_dir", .type = CFG_STRING, .offset = F(instances_dir),
	  .def = "/var/lib/stratus/instances", .expected = "a directory" },
	{ .key = "shutdown_timeout", .type = CFG_DURATION, .offset = F(shutdown_timeout_ms),
	  .def = "60s" },
	{ .key = "reboot_timeout", .type = CFG_DURATION, .offset = F(reboot_timeout_ms),
	  .def = "120s" },
	{ .key = "sysfs_root", .type = CFG_STRING, .offset = F(sysfs_root), .def = "/sys",
	  .expected = "a directory" },
	{ .key = "cpu_mode", .type = CFG_STRING, .offset = F(cpu_mode), .def = "",
	  .expected = "host-passthrough, host-model or custom" },
	{ .key = "cpu_model", .type = CFG_STRING, .offset = F(cpu_model), .def = "",
	  .expected = "a libvirt CPU model name" },
	{ .key = "cpu_model_extra_flags", .type = CFG_STRING, .offset = F(cpu_model_extra_flags),
	  .def = "", .expected = "CPU flags like vmx,+pcid,-hle" },
	{ .key = "pci_alias", .type = CFG_MAP, .offset = F(pci_alias) },
	{ 0 },
};
#undef F

int vmm_config_init(struct vmm_config *c)
{
	struct vmm_config n = { 0 };
	const struct cfg_section sections[] = {
		{ .name = "vmm", .fields = vmm_config_fields, .dst = &n },
		{ 0 },
	};
	int r;

	r = cfg_load_string("defaults", "{}", 2, sections);
	if (r < 0) {
		vmm_config_free(&n);
		return r;
	}
	*c = n;
	return 0;
}

void vmm_config_free(struct vmm_config *c)
{
	if (c)
		cfg_free(vmm_config_fields, c);
}

int vmm_config_check(const struct vmm_config *c)
{
	struct model_cpu_choice cpu;
	struct vmm_pci_alias a;
	int r;

	if ((r = vmm_cpu_config_parse(c, &cpu)) < 0) {
		/* the line of the key the message names */
		const void *at = &c->cpu_mode;

		if (strstr(err_msg(), "vmm.cpu_model_extra_flags"))
			at = &c->cpu_model_extra_flags;
		else if (strstr(err_msg(), "vmm.cpu_model:"))
			at = &c->cpu_model;

		return err_prefix(r, "%s", cfg_where(at));
	}
	for (size_t i = 0; i < c->pci_alias.n; i++)
		if ((r = vmm_pci_alias_parse(c->pci_alias.keys[i], c->pci_alias.vals[i], &a)) < 0)
			return err_prefix(r, "%s", cfg_where(&c->pci_alias));
	return 0;
}

enum vmm_virt vmm_accel_resolve_at(enum vmm_accel a, const char *kvm_dev, const char *cpuinfo)
{
	_cleanup_free_ char *text = NULL;
	int fd;
	bool flags = false;

	switch (a) {
	case VMM_ACCEL_KVM:
		return VMM_VIRT_KVM;
	case VMM_ACCEL_QEMU:
	case VMM_ACCEL_LAST:
		return VMM_VIRT_QEMU;
	case VMM_ACCEL_AUTO:
		break;
	}
	fd = open(kvm_dev, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return VMM_VIRT_QEMU;
	close(fd);
	if (read_file(cpuinfo, 16 * 1024 * 1024, &text, NULL) < 0) {
		err_clear();
		return VMM_VIRT_QEMU;
	}
	/* the "flags : ..." lines: a whole word vmx or svm */
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');

		if (nl)
			*nl = '\0';
		if (strncmp(line, "flags", 5) == 0 && (strstr(line, " vmx") || strstr(line, " svm"))) {
			const char *w = strstr(line, " vmx") ? strstr(line, " vmx") : strstr(line, " svm");

			if (w[4] == ' ' || w[4] == '\0')
				flags = true;
		}
		line = nl ? nl + 1 : NULL;
	}
	return flags ? VMM_VIRT_KVM : VMM_VIRT_QEMU;
}

enum vmm_virt vmm_accel_resolve(enum vmm_accel a)
{
	return vmm_accel_resolve_at(a, "/dev/kvm", "/proc/cpuinfo");
}
