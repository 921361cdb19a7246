/*
 * The libvirt domain XML of an instance, written with libxml2's writer:
 * every name and path from the spec goes through the writer's escaping,
 * so no input can add markup. Element by element, see docs/vmm.md.
 */
#include <errno.h>
#include <libxml/xmlwriter.h>
#include <stdio.h>
#include <string.h>

#include "vmm/vmm_priv.h"

struct xw {
	xmlTextWriterPtr w;
	int err;                         /* first writer failure */
};

static const xmlChar *X(const char *s)
{
	return (const xmlChar *)s;
}

/* Text for XML 1.0: control characters (which XML cannot carry) become
 * '?'; with one_line, newlines too. malloc'd. */
static char *clean_text(const char *s, bool one_line)
{
	char *c = strdup(s ? s : "");

	for (unsigned char *p = (unsigned char *)c; c && *p; p++)
		if ((*p < 0x20 && *p != '\t' && (one_line || (*p != '\n' && *p != '\r'))) || *p == 0x7f)
			*p = '?';
	return c;
}

static void start(struct xw *x, const char *name)
{
	if (!x->err && xmlTextWriterStartElement(x->w, X(name)) < 0)
		x->err = -EIO;
}

static void end(struct xw *x)
{
	if (!x->err && xmlTextWriterEndElement(x->w) < 0)
		x->err = -EIO;
}

static void attr(struct xw *x, const char *name, const char *val)
{
	_cleanup_free_ char *c = clean_text(val, false);

	if (!c)
		x->err = -ENOMEM;
	if (!x->err && xmlTextWriterWriteAttribute(x->w, X(name), X(c)) < 0)
		x->err = -EIO;
}

static void attrf(struct xw *x, const char *name, const char *fmt, ...) PRINTF_LIKE(3, 4);

static void attrf(struct xw *x, const char *name, const char *fmt, ...)
{
	char buf[64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	attr(x, name, buf);
}

static void text(struct xw *x, const char *s)
{
	_cleanup_free_ char *c = clean_text(s, false);

	if (!c)
		x->err = -ENOMEM;
	if (!x->err && xmlTextWriterWriteString(x->w, X(c)) < 0)
		x->err = -EIO;
}

/* <name>text</name> */
static void elem(struct xw *x, const char *name, const char *s)
{
	start(x, name);
	text(x, s);
	end(x);
}

static void attr_set(struct xw *x, const char *name, const struct vmm_cpuset *s)
{
	_cleanup_free_ char *f = vmm_cpuset_format(s);

	if (!f)
		x->err = -ENOMEM;
	else
		attr(x, name, f);
}

static void write_metadata(struct xw *x, const struct instance_spec *spec)
{
	start(x, "metadata");
	if (!x->err && xmlTextWriterStartElementNS(x->w, X("stratus"), X("instance"), X(VMM_XMLNS)) < 0)
		x->err = -EIO;
	start(x, "stratus:name");
	text(x, spec->name);
	end(x);
	elem(x, "stratus:project", spec->project);
	start(x, "stratus:flavor");
	attr(x, "name", spec->flavor.name);
	attrf(x, "vcpus", "%ld", spec->flavor.vcpus);
	attrf(x, "ram_mb", "%ld", spec->flavor.ram_mb);
	attrf(x, "disk_gb", "%ld", spec->flavor.disk_gb);
	end(x);
	start(x, "stratus:image");
	if (spec->image.name)
		attr(x, "name", spec->image.name);
	attr(x, "format", spec->image.disk_format);
	end(x);
	elem(x, "stratus:version", STRATUS_VERSION);
	end(x); /* stratus:instance */
	end(x);
}

/* ---- the guest CPU model (vmm/cpu.c resolved it into p->cpu) ---- */

/* <cpu>'s mode attributes and <model>. */
static void write_cpu_mode(struct xw *x, const struct model_cpu_choice *c)
{
	switch (c->mode) {
	case MODEL_CPU_MODE_HOST_PASSTHROUGH:
		attr(x, "mode", "host-passthrough");
		attr(x, "check", "none");
		break;
	case MODEL_CPU_MODE_HOST_MODEL:
		attr(x, "mode", "host-model");
		attr(x, "check", "partial");
		break;
	case MODEL_CPU_MODE_CUSTOM:
		attr(x, "mode", "custom");
		attr(x, "match", "exact");
		attr(x, "check", "partial");
		start(x, "model");
		attr(x, "fallback", "forbid");
		text(x, c->model);
		end(x);
		break;
	case MODEL_CPU_MODE_DEFAULT:
	case MODEL_CPU_MODE_LAST:
		break; /* QEMU's own CPU (TCG) */
	}
}

/* <feature policy='require|disable' name='vmx'/> per extra flag. */
static void write_cpu_features(struct xw *x, const struct model_cpu_choice *c)
{
	for (int i = 0; i < c->n_flags; i++) {
		start(x, "feature");
		attr(x, "policy", c->flags[i].disable ? "disable" : "require");
		attr(x, "name", c->flags[i].name);
		end(x);
	}
}

static void write_cpu_numa(struct xw *x, const struct vmm_placement *p, enum vmm_virt virt)
{
	int sockets = p->n_cells ? p->n_cells : 1;

	(void)virt;
	start(x, "cpu");
	write_cpu_mode(x, &p->cpu);
	start(x, "topology");
	attrf(x, "sockets", "%d", sockets);
	attr(x, "dies", "1");
	attrf(x, "cores", "%d", p->vcpus / sockets);
	attr(x, "threads", "1");
	end(x);
	write_cpu_features(x, &p->cpu);
	if (p->n_cells) {
		start(x, "numa");
		for (int i = 0; i < p->n_cells; i++) {
			const struct vmm_cell *c = &p->cells[i];

			start(x, "cell");
			attrf(x, "id", "%d", i);
			if (c->n_vcpus == 1)
				attrf(x, "cpus", "%d", c->first_vcpu);
			else
				attrf(x, "cpus", "%d-%d", c->first_vcpu, c->first_vcpu + c->n_vcpus - 1);
			attrf(x, "memory", "%ld", c->mem_mib);
			attr(x, "unit", "MiB");
			end(x);
		}
		end(x);
	}
	end(x);
}

static void write_tuning(struct xw *x, const struct vmm_placement *p)
{
	if (p->hugepages) {
		start(x, "memoryBacking");
		start(x, "hugepages");
		start(x, "page");
		attrf(x, "size", "%llu", (unsigned long long)vmm_page_kib[p->page]);
		attr(x, "unit", "KiB");
		if (p->n_cells == 1)
			attr(x, "nodeset", "0");
		else
			attrf(x, "nodeset", "0-%d", p->n_cells - 1);
		end(x);
		end(x);
		end(x);
	}
	start(x, "vcpu");
	attr(x, "placement", "static");
	if (!p->pinned)
		attr_set(x, "cpuset", &p->vcpu_set);
	text(x, "");
	if (!x->err && xmlTextWriterWriteFormatString(x->w, "%d", p->vcpus) < 0)
		x->err = -EIO;
	end(x);
	if (p->pinned) {
		start(x, "cputune");
		for (int v = 0; v < p->vcpus; v++) {
			start(x, "vcpupin");
			attrf(x, "vcpu", "%d", v);
			attrf(x, "cpuset", "%d", p->pcpu[v]);
			end(x);
		}
		start(x, "emulatorpin");
		attr_set(x, "cpuset", &p->emulator);
		end(x);
		end(x);
	}
	if (p->n_cells) {
		struct vmm_cpuset nodes = { { 0 } };

		for (int i = 0; i < p->n_cells; i++)
			vmm_cpuset_set(&nodes, p->cells[i].node_id);
		start(x, "numatune");
		start(x, "memory");
		attr(x, "mode", "strict");
		attr_set(x, "nodeset", &nodes);
		end(x);
		for (int i = 0; i < p->n_cells; i++) {
			start(x, "memnode");
			attrf(x, "cellid", "%d", i);
			attr(x, "mode", "strict");
			attrf(x, "nodeset", "%d", p->cells[i].node_id);
			end(x);
		}
		end(x);
	}
}

static void write_sysinfo(struct xw *x, const struct instance_spec *spec)
{
	static const char *const keys[] = { "manufacturer", "product", "version", "serial", "uuid",
					     "family" };
	const char *vals[] = { "Stratus", "OpenStack Nova", STRATUS_VERSION, spec->uuid, spec->uuid,
			       "Virtual Machine" };

	start(x, "sysinfo");
	attr(x, "type", "smbios");
	start(x, "system");
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		start(x, "entry");
		attr(x, "name", keys[i]);
		text(x, vals[i]);
		end(x);
	}
	end(x);
	end(x);
}

/* ---- the image's machine: firmware, machine type, buses, models ----------- */

static const char *const machine_types[MODEL_MACHINE_LAST] = {
	[MODEL_MACHINE_PC] = "pc",
	[MODEL_MACHINE_Q35] = "q35",
};

/* UEFI: OVMF picked by libvirt from QEMU's firmware descriptors by the
 * features asked; unsigned GRUB needs secure boot off (and no Microsoft
 * keys enrolled), os_secure_boot=required asks for both. */
static void write_firmware(struct xw *x, const struct vmm_domain_params *pp)
{
	const char *sb = pp->props.secure_boot == MODEL_SB_REQUIRED ? "yes" : "no";

	if (pp->props.firmware != MODEL_FW_UEFI)
		return;
	start(x, "firmware");
	start(x, "feature");
	attr(x, "enabled", sb);
	attr(x, "name", "enrolled-keys");
	end(x);
	start(x, "feature");
	attr(x, "enabled", sb);
	attr(x, "name", "secure-boot");
	end(x);
	end(x);
	/* no <loader>: libvirt refuses its attributes beside autoselection */
	if (pp->nvram_path)
		elem(x, "nvram", pp->nvram_path);
}

/* <features>: ACPI, APIC; SMM for secure boot; Hyper-V enlightenments
 * for Windows (as Nova sets them). */
static void write_features(struct xw *x, const struct vmm_domain_params *pp)
{
	start(x, "features");
	start(x, "acpi");
	end(x);
	start(x, "apic");
	end(x);
	if (pp->props.os_type == MODEL_OS_WINDOWS) {
		static const char *const hv[] = { "relaxed", "vapic", "spinlocks" };

		start(x, "hyperv");
		attr(x, "mode", "custom");
		for (size_t i = 0; i < ARRAY_SIZE(hv); i++) {
			start(x, hv[i]);
			attr(x, "state", "on");
			if (strcmp(hv[i], "spinlocks") == 0)
				attr(x, "retries", "8191");
			end(x);
		}
		end(x);
	}
	if (pp->props.secure_boot == MODEL_SB_REQUIRED) {
		start(x, "smm");
		attr(x, "state", "on");
		end(x);
	}
	end(x);
}

/* Windows keeps its clock in local time. */
static void write_clock(struct xw *x, const struct vmm_domain_params *pp)
{
	start(x, "clock");
	attr(x, "offset", pp->props.os_type == MODEL_OS_WINDOWS ? "localtime" : "utc");
	end(x);
}

/* hw_qemu_guest_agent=yes: the virtio-serial channel qemu-guest-agent
 * listens on (libvirt picks the host socket). */
static void write_guest_agent(struct xw *x, const struct vmm_domain_params *pp)
{
	if (!pp->props.guest_agent)
		return;
	start(x, "channel");
	attr(x, "type", "unix");
	start(x, "target");
	attr(x, "type", "virtio");
	attr(x, "name", "org.qemu.guest_agent.0");
	end(x);
	end(x);
}

/* hw_disk_bus=scsi: one virtio-scsi controller for the root disk. */
static void write_scsi_controller(struct xw *x, const struct vmm_domain_params *pp)
{
	if (pp->props.disk_bus != MODEL_BUS_SCSI)
		return;
	start(x, "controller");
	attr(x, "type", "scsi");
	attr(x, "index", "0");
	attr(x, "model", "virtio-scsi");
	end(x);
}

/* The root disk's target: vda on virtio-blk, sda on virtio-scsi. */
static void write_root_target(struct xw *x, const struct vmm_domain_params *pp)
{
	bool scsi = pp->props.disk_bus == MODEL_BUS_SCSI;

	start(x, "target");
	attr(x, "dev", scsi ? "sda" : "vda");
	attr(x, "bus", scsi ? "scsi" : "virtio");
	end(x);
}

static const char *vif_model(const struct vmm_domain_params *pp)
{
	return pp->props.vif_model == MODEL_VIF_E1000 ? "e1000" : "virtio";
}

/* OVMF on pc with the seed cdrom on IDE: OVMF connects only the devices
 * in the boot order, and the guest's ata_piix then finds no device on
 * the PIIX IDE channels (it skips a channel whose enable bit the firmware
 * left clear; SeaBIOS sets them): cloud-init sees no cidata and disables
 * itself. In the boot order after the root disk, OVMF brings the cdrom
 * up and the guest sees it (QEMU 7.2, OVMF 2023.x; 2026-12-02). q35's
 * SATA (AHCI) needs no firmware and keeps <os><boot dev='hd'/>. */
static bool seed_in_boot_order(const struct vmm_domain_params *pp)
{
	return pp->props.firmware == MODEL_FW_UEFI && pp->props.machine != MODEL_MACHINE_Q35 &&
	       pp->seed_path && pp->seed_format == VMM_SEED_ISO;
}

/* <boot order='N'/> of a device (libvirt refuses it beside <os><boot>) */
static void write_boot_order(struct xw *x, const char *order)
{
	start(x, "boot");
	attr(x, "order", order);
	end(x);
}

/* ---- end of the image's machine ------------------------------------------ */

static void write_os(struct xw *x, const struct vmm_domain_params *pp)
{
	enum model_machine m = pp->props.machine < MODEL_MACHINE_LAST ? pp->props.machine
								      : MODEL_MACHINE_PC;

	start(x, "os");
	if (pp->props.firmware == MODEL_FW_UEFI)
		attr(x, "firmware", "efi");
	start(x, "type");
	attr(x, "arch", "x86_64");
	attr(x, "machine", machine_types[m]);
	text(x, "hvm");
	end(x);
	write_firmware(x, pp);
	if (pp->kernel) {
		elem(x, "kernel", pp->kernel);
		if (pp->initrd)
			elem(x, "initrd", pp->initrd);
		if (pp->cmdline)
			elem(x, "cmdline", pp->cmdline);
	}
	if (!seed_in_boot_order(pp)) {
		start(x, "boot");
		attr(x, "dev", "hd");
		end(x);
	}
	start(x, "smbios");
	attr(x, "mode", "sysinfo");
	end(x);
	end(x);
}

/* Where each seed format is attached; all are read-only raw images.
 * VMM_SEED_NONE has no entry (device NULL): no seed disk. */
static const struct seed_disk {
	const char *device, *dev, *bus;
} seed_disks[VMM_SEED_LAST] = {
	[VMM_SEED_ISO] = { "cdrom", "hda", "ide" },
	[VMM_SEED_RAW] = { "disk", "vdb", "virtio" },
};
/* q35 has no IDE: its seed cdrom is on SATA (sdb: sda may be the root). */
static const struct seed_disk seed_q35_cdrom = { "cdrom", "sdb", "sata" };

static void write_seed(struct xw *x, const char *path, const struct seed_disk *d, bool boots)
{
	start(x, "disk");
	attr(x, "type", "file");
	attr(x, "device", d->device);
	start(x, "driver");
	attr(x, "name", "qemu");
	attr(x, "type", "raw");
	end(x);
	start(x, "source");
	attr(x, "file", path);
	end(x);
	start(x, "target");
	attr(x, "dev", d->dev);
	attr(x, "bus", d->bus);
	end(x);
	if (boots)
		write_boot_order(x, "2");
	start(x, "readonly");
	end(x);
	end(x);
}

/* An ephemeral or swap disk: a plain qcow2 (no backing file) on the root's bus. */
static void write_local_disk(struct xw *x, const char *path, const char *dev,
			     const struct vmm_domain_params *pp)
{
	start(x, "disk");
	attr(x, "type", "file");
	attr(x, "device", "disk");
	start(x, "driver");
	attr(x, "name", "qemu");
	attr(x, "type", "qcow2");
	attr(x, "discard", "unmap");
	end(x);
	start(x, "source");
	attr(x, "file", path);
	end(x);
	start(x, "backingStore");
	end(x);
	start(x, "target");
	attr(x, "dev", dev);
	attr(x, "bus", pp->props.disk_bus == MODEL_BUS_SCSI ? "scsi" : "virtio");
	end(x);
	end(x);
}

static void write_disks(struct xw *x, const struct instance_spec *spec,
			const struct vmm_domain_params *pp)
{
	char eph[MODEL_DEV_LEN], swap[MODEL_DEV_LEN];
	int n_local = model_local_disk_devs(&spec->flavor, pp->props.disk_bus, eph, swap);
	const char *fmt = pp->disk_format ? pp->disk_format : "qcow2";

	start(x, "disk");
	attr(x, "type", "file");
	attr(x, "device", "disk");
	start(x, "driver");
	attr(x, "name", "qemu");
	attr(x, "type", fmt);
	attr(x, "discard", "unmap");
	end(x);
	start(x, "source");
	attr(x, "file", pp->disk_path);
	end(x);
	if (pp->backing_path) {
		/* the chain spelled out: libvirt and QEMU never probe a format */
		start(x, "backingStore");
		attr(x, "type", "file");
		start(x, "format");
		attr(x, "type", pp->backing_format ? pp->backing_format : "raw");
		end(x);
		start(x, "source");
		attr(x, "file", pp->backing_path);
		end(x);
		start(x, "backingStore");
		end(x);
		end(x);
	}
	write_root_target(x, pp);
	if (seed_in_boot_order(pp))
		write_boot_order(x, "1");
	end(x);
	if (pp->ephemeral_path && *eph)
		write_local_disk(x, pp->ephemeral_path, eph, pp);
	if (pp->swap_path && *swap)
		write_local_disk(x, pp->swap_path, swap, pp);

	if (pp->seed_path && (unsigned)pp->seed_format < VMM_SEED_LAST &&
	    seed_disks[pp->seed_format].device) {
		const struct seed_disk *d = &seed_disks[pp->seed_format];
		struct seed_disk moved;
		char dev[MODEL_DEV_LEN];

		if (pp->seed_format == VMM_SEED_ISO && pp->props.machine == MODEL_MACHINE_Q35)
			d = &seed_q35_cdrom;
		/* after the local disks of the same name space (vdb, sdb taken) */
		if (n_local && (d->dev[0] == 'v' || (d->dev[0] == 's' &&
						     pp->props.disk_bus == MODEL_BUS_SCSI))) {
			snprintf(dev, sizeof(dev), "%.2s%c", d->dev, d->dev[2] + n_local);
			moved = (struct seed_disk){ d->device, dev, d->bus };
			d = &moved;
		}
		write_seed(x, pp->seed_path, d, seed_in_boot_order(pp));
	}
	write_scsi_controller(x, pp);
}

/* ---- PCI passthrough (vmm/pci.c picked p->pci) ---- */

/* <hostdev mode='subsystem' type='pci' managed='yes'>: libvirt detaches
 * the device from its host driver, binds it to vfio-pci at start and
 * gives it back at stop. */
static void write_hostdevs(struct xw *x, const struct vmm_placement *p)
{
	for (int i = 0; i < p->n_pci; i++) {
		unsigned dom, bus, slot, fn;

		if (sscanf(p->pci[i].address, "%4x:%2x:%2x.%1x", &dom, &bus, &slot, &fn) != 4) {
			x->err = -EINVAL;
			return;
		}
		start(x, "hostdev");
		attr(x, "mode", "subsystem");
		attr(x, "type", "pci");
		attr(x, "managed", "yes");
		start(x, "source");
		start(x, "address");
		attrf(x, "domain", "0x%04x", dom);
		attrf(x, "bus", "0x%02x", bus);
		attrf(x, "slot", "0x%02x", slot);
		attrf(x, "function", "0x%x", fn);
		end(x);
		end(x);
		end(x);
	}
}

static void write_devices(struct xw *x, const struct instance_spec *spec,
			  const struct vmm_placement *p, const struct vmm_domain_params *pp)
{
	start(x, "devices");
	write_disks(x, spec, pp);
	write_hostdevs(x, p);
	if (pp->bridge) {
		start(x, "interface");
		attr(x, "type", "bridge");
		if (spec->network.present && spec->network.mac) {
			start(x, "mac");
			attr(x, "address", spec->network.mac);
			end(x);
		}
		start(x, "source");
		attr(x, "bridge", pp->bridge);
		end(x);
		if (pp->tap) {
			start(x, "target");
			attr(x, "dev", pp->tap);
			end(x);
		}
		start(x, "model");
		attr(x, "type", vif_model(pp));
		end(x);
		end(x);
	}
	write_guest_agent(x, pp);
	start(x, "serial");
	attr(x, "type", "pty");
	if (pp->console_log) {
		start(x, "log");
		attr(x, "file", pp->console_log);
		attr(x, "append", "on");
		end(x);
	}
	start(x, "target");
	attr(x, "port", "0");
	end(x);
	end(x);
	start(x, "console");
	attr(x, "type", "pty");
	start(x, "target");
	attr(x, "type", "serial");
	attr(x, "port", "0");
	end(x);
	end(x);
	start(x, "memballoon");
	attr(x, "model", "virtio");
	start(x, "stats");
	attr(x, "period", "10");
	end(x);
	end(x);
	start(x, "rng");
	attr(x, "model", "virtio");
	start(x, "backend");
	attr(x, "model", "random");
	text(x, "/dev/urandom");
	end(x);
	end(x);
	end(x);
}

int vmm_domain_xml(const struct instance_spec *spec, const struct vmm_placement *p,
		   const struct vmm_domain_params *pp, char **out)
{
	xmlBufferPtr buf = xmlBufferCreate();
	struct xw x = { 0 };
	_cleanup_free_ char *title = NULL;
	char name[sizeof(VMM_DOMAIN_PREFIX) + UUID_STRLEN];
	int r = 0;

	if (!pp->disk_path) {
		r = err_set(-EINVAL, "instance %s: no root disk path", spec->uuid);
		goto out;
	}
	if (!buf || !(x.w = xmlNewTextWriterMemory(buf, 0))) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	xmlTextWriterSetIndent(x.w, 1);
	xmlTextWriterSetIndentString(x.w, X("  "));
	snprintf(name, sizeof(name), VMM_DOMAIN_PREFIX "%s", spec->uuid);
	title = clean_text(spec->name, true);

	start(&x, "domain");
	attr(&x, "type", vmm_virt_names[pp->virt < VMM_VIRT_LAST ? pp->virt : VMM_VIRT_QEMU]);
	elem(&x, "name", name);
	elem(&x, "uuid", spec->uuid);
	elem(&x, "title", title);
	write_metadata(&x, spec);
	start(&x, "memory");
	attr(&x, "unit", "MiB");
	text(&x, "");
	if (!x.err && xmlTextWriterWriteFormatString(x.w, "%ld", p->ram_mib) < 0)
		x.err = -EIO;
	end(&x);
	start(&x, "currentMemory");
	attr(&x, "unit", "MiB");
	text(&x, "");
	if (!x.err && xmlTextWriterWriteFormatString(x.w, "%ld", p->ram_mib) < 0)
		x.err = -EIO;
	end(&x);
	write_tuning(&x, p);
	write_sysinfo(&x, spec);
	write_os(&x, pp);
	write_features(&x, pp);
	write_cpu_numa(&x, p, pp->virt);
	write_clock(&x, pp);
	elem(&x, "on_poweroff", "destroy");
	elem(&x, "on_reboot", "restart");
	elem(&x, "on_crash", "destroy");
	write_devices(&x, spec, p, pp);
	end(&x); /* domain */
	if (!x.err && xmlTextWriterEndDocument(x.w) < 0)
		x.err = -EIO;
	if (x.err) {
		r = err_set(x.err, "instance %s: writing the domain XML failed", spec->uuid);
		goto out;
	}
	xmlFreeTextWriter(x.w); /* flushes into buf */
	x.w = NULL;
	*out = strndup((const char *)xmlBufferContent(buf), (size_t)xmlBufferLength(buf));
	r = *out ? 0 : err_set(-ENOMEM, "out of memory");
out:
	if (x.w)
		xmlFreeTextWriter(x.w);
	if (buf)
		xmlBufferFree(buf);
	return r;
}
