/*
 * Glance image properties: the names and values Stratus accepts, and what
 * they ask of the guest's machine (vmm writes the domain from the result).
 * One table: a property's name, its accepted values, where it goes.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

const char *const model_image_prop_keys[] = {
	[MODEL_PROP_FIRMWARE] = "hw_firmware_type",
	[MODEL_PROP_SECURE_BOOT] = "os_secure_boot",
	[MODEL_PROP_MACHINE] = "hw_machine_type",
	[MODEL_PROP_DISK_BUS] = "hw_disk_bus",
	[MODEL_PROP_VIF_MODEL] = "hw_vif_model",
	[MODEL_PROP_GUEST_AGENT] = "hw_qemu_guest_agent",
	[MODEL_PROP_OS_TYPE] = "os_type",
	[MODEL_PROP_LAST] = NULL,
};

static const char *const firmware_names[] = { "bios", "uefi", NULL };
static const char *const secure_boot_names[] = { "disabled", "required", NULL };
static const char *const machine_names[] = { "pc", "q35", NULL };
static const char *const disk_bus_names[] = { "virtio", "scsi", NULL };
static const char *const vif_model_names[] = { "virtio", "e1000", NULL };
static const char *const yes_no_names[] = { "no", "yes", NULL };
static const char *const os_type_names[] = { "linux", "windows", NULL };

const char *const *const model_image_prop_values[] = {
	[MODEL_PROP_FIRMWARE] = firmware_names,
	[MODEL_PROP_SECURE_BOOT] = secure_boot_names,
	[MODEL_PROP_MACHINE] = machine_names,
	[MODEL_PROP_DISK_BUS] = disk_bus_names,
	[MODEL_PROP_VIF_MODEL] = vif_model_names,
	[MODEL_PROP_GUEST_AGENT] = yes_no_names,
	[MODEL_PROP_OS_TYPE] = os_type_names,
	[MODEL_PROP_LAST] = NULL,
};

/* "a, b, c" into buf */
static void join(char *buf, size_t size, const char *const *names)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; names[i] && off < size; i++)
		off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? ", " : "", names[i]);
}

static int prop_index(const char *key)
{
	for (int i = 0; i < MODEL_PROP_LAST; i++)
		if (strcmp(key, model_image_prop_keys[i]) == 0)
			return i;
	return -1;
}

static int value_index(enum model_image_prop p, const char *v)
{
	const char *const *names = model_image_prop_values[p];

	for (int i = 0; names[i]; i++)
		if (strcmp(v, names[i]) == 0)
			return i;
	return -1;
}

static void props_set(struct model_image_props *p, enum model_image_prop key, int v)
{
	switch (key) {
	case MODEL_PROP_FIRMWARE:
		p->firmware = (enum model_firmware)v;
		break;
	case MODEL_PROP_SECURE_BOOT:
		p->secure_boot = (enum model_secure_boot)v;
		break;
	case MODEL_PROP_MACHINE:
		p->machine = (enum model_machine)v;
		break;
	case MODEL_PROP_DISK_BUS:
		p->disk_bus = (enum model_disk_bus)v;
		break;
	case MODEL_PROP_VIF_MODEL:
		p->vif_model = (enum model_vif_model)v;
		break;
	case MODEL_PROP_GUEST_AGENT:
		p->guest_agent = v == 1;
		break;
	case MODEL_PROP_OS_TYPE:
		p->os_type = (enum model_os_type)v;
		break;
	case MODEL_PROP_LAST:
		break;
	}
}

int model_image_props_parse(const char *image, const struct spec_kv *kv, size_t n,
			    struct model_image_props *out)
{
	struct model_image_props p = { 0 };
	bool machine_given = false;
	char list[256];

	if (!image)
		image = "(unnamed)";
	for (size_t i = 0; i < n; i++) {
		int k = prop_index(kv[i].key), v;

		if (k < 0) {
			join(list, sizeof(list), model_image_prop_keys);
			return err_set(-EINVAL, "image %s: unknown property '%.64s' (accepted: %s)",
				       image, kv[i].key, list);
		}
		v = value_index((enum model_image_prop)k, kv[i].val);
		if (v < 0) {
			join(list, sizeof(list), model_image_prop_values[k]);
			return err_set(-EINVAL, "image %s: %s: invalid value '%.64s' (accepted: %s)",
				       image, kv[i].key, kv[i].val, list);
		}
		props_set(&p, (enum model_image_prop)k, v);
		machine_given |= k == MODEL_PROP_MACHINE;
	}
	if (p.secure_boot == MODEL_SB_REQUIRED) {
		/* OVMF's secure-boot build runs only with SMM, which needs q35 */
		if (p.firmware != MODEL_FW_UEFI)
			return err_set(-EINVAL, "image %s: os_secure_boot=required needs "
				       "hw_firmware_type=uefi", image);
		if (machine_given && p.machine != MODEL_MACHINE_Q35)
			return err_set(-EINVAL, "image %s: os_secure_boot=required needs "
				       "hw_machine_type=q35", image);
		p.machine = MODEL_MACHINE_Q35;
	}
	*out = p;
	return 0;
}

int model_local_disk_devs(const struct spec_flavor *f, enum model_disk_bus bus,
			  char ephemeral[MODEL_DEV_LEN], char swap[MODEL_DEV_LEN])
{
	const char *prefix = bus == MODEL_BUS_SCSI ? "sd" : "vd";
	char letter = 'b';
	int n = 0;

	ephemeral[0] = swap[0] = '\0';
	if (f->ephemeral_gb > 0) {
		snprintf(ephemeral, MODEL_DEV_LEN, "%s%c", prefix, letter++);
		n++;
	}
	if (f->swap_mb > 0) {
		snprintf(swap, MODEL_DEV_LEN, "%s%c", prefix, letter);
		n++;
	}
	return n;
}
