/*
 * The instance spec (DESIGN.md "The instance spec"): the body of
 * instance.build and the input of the agent's operator subcommands
 * (render-domain, seed). Parsed and validated once here; vmm, images,
 * metadata and agent read the struct.
 */
#ifndef STRATUS_MODEL_MODEL_H
#define STRATUS_MODEL_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/core.h"

#define SPEC_USER_DATA_MAX (64 * 1024) /* decoded bytes, like Nova */
#define SPEC_MAX_KEYS 64
#define SPEC_MAX_META 128
#define SPEC_EPHEMERAL_GB_MAX (1L << 16) /* as disk_gb */
#define SPEC_SWAP_MB_MAX (1L << 20)      /* 1 TiB, as Nova's flavor API allows */

struct spec_kv {
	char *key;
	char *val;
};

struct spec_flavor {
	char *name;
	long vcpus;
	long ram_mb;
	long disk_gb;
	long ephemeral_gb; /* Nova's: a second, blank disk (ext4, label ephemeral0); 0: none */
	long swap_mb;      /* Nova's: a swap disk (mkswap); 0: none */
	struct spec_kv *extra_specs;
	size_t n_extra_specs;
};

/* A file that goes with an image (Nova's kernel_id/ramdisk_id): fetched
 * and verified like the image itself. */
struct spec_blob {
	char *url;
	char *checksum;
};

struct spec_image {
	char *name;        /* may be NULL */
	char *url;         /* http, https or file */
	char *checksum;    /* "sha256:HEX" or "sha512:HEX", lower-case hex */
	char *disk_format; /* "qcow2" or "raw" */
	long min_disk_gb;
	/* optional direct kernel boot, for images that are a bare root file
	 * system: all NULL, or kernel (+ initrd, cmdline) set */
	struct spec_blob kernel, initrd;
	char *cmdline;
	/* Glance image properties (hw_firmware_type=uefi ...), as given;
	 * validated by model_image_props_parse() */
	struct spec_kv *properties;
	size_t n_properties;
};

struct spec_ssh_key {
	char *name;
	char *key;
};

struct spec_network {
	bool present;
	char *mac;      /* 52:54:00:12:34:56 */
	char *address;  /* 10.0.0.5/24 */
	char *gateway;  /* 10.0.0.1, may be NULL */
	char **dns;     /* NULL-terminated */
	size_t n_dns;
};

enum spec_seed { SPEC_SEED_NOCLOUD, SPEC_SEED_CONFIGDRIVE, SPEC_SEED_NONE, SPEC_SEED_LAST };
extern const char *const spec_seed_names[]; /* NULL-terminated, by enum value */

/* Instance lifecycle (DESIGN.md): scheduling -> building -> active <-> stopped,
 * active -> rebooting -> active, * -> deleting -> deleted, * -> error,
 * active -> migrating -> active (on the same or another host),
 * active|stopped -> resizing -> verify_resize -> active|stopped (confirm)
 * or -> reverting -> active|stopped (revert; issue 18).
 * Names are what events, stratusctl and the stores use. */
enum instance_state {
	INST_SCHEDULING,
	INST_BUILDING,
	INST_ACTIVE,
	INST_STOPPED,
	INST_REBOOTING,
	INST_DELETING,
	INST_DELETED,
	INST_ERROR,
	INST_REBUILDING, /* issue 18: root disk replaced, the agent's (docs/agent.md) */
	INST_MIGRATING, /* moving to another host (issue 15) */
	INST_RESIZING, /* issue 18: redefined with a new flavor (agent/resize.c) */
	INST_VERIFY_RESIZE, /* resized, the old flavor kept until confirm or revert */
	INST_REVERTING, /* a resize being reverted to the old flavor */
	INST_STATE_LAST
};
extern const char *const instance_state_names[]; /* NULL-terminated */
/* Returns 0, or -EINVAL for an unknown name. */
int instance_state_parse(const char *name, enum instance_state *out);

struct instance_spec {
	char uuid[UUID_STRLEN];
	char *name;              /* free text, may hold any character */
	char *hostname;          /* RFC 1123; derived from name when absent */
	char *project;
	char *availability_zone; /* default "nova" */
	long launch_index;
	struct spec_flavor flavor;
	struct spec_image image;
	unsigned char *user_data; /* decoded; NULL when none */
	size_t user_data_len;
	struct spec_ssh_key *ssh_keys;
	size_t n_ssh_keys;
	struct spec_kv *metadata;
	size_t n_metadata;
	enum spec_seed seed;
	struct spec_network network;
	/* rebuilds so far: the instance-id the guest sees changes with it
	 * (model_instance_id), so cloud-init runs again; 0 = never rebuilt */
	long generation;
};

/* The instance-id every datasource reports: the uuid, then "-rN" after the
 * Nth rebuild. Into buf (at least MODEL_INSTANCE_ID_LEN). */
#define MODEL_INSTANCE_ID_LEN (UUID_STRLEN + 24)
const char *model_instance_id(const struct instance_spec *s, char *buf, size_t len);

/*
 * Parse and validate a spec from a JSON object. Unknown keys are ignored
 * (instance.build carries request fields beside the spec). On error returns
 * -EINVAL with err_msg() naming the field: "flavor.vcpus: expected an
 * integer from 1 to 1024". *out is untouched on failure; on success the
 * caller frees it with model_spec_free().
 */
int model_spec_parse(json_t *obj, struct instance_spec *out);
/* Same, from a JSON file (at most 1 MiB). */
int model_spec_parse_file(const char *path, struct instance_spec *out);
/* Same, from JSON text (a stored spec; NULL or bad JSON: -EINVAL). */
int model_spec_parse_text(const char *text, struct instance_spec *out);
/* Back to JSON (user_data base64-encoded); returns a new reference. */
json_t *model_spec_to_json(const struct instance_spec *s);
void model_spec_free(struct instance_spec *s);
/* The value of a flavor extra spec, or NULL. */
const char *model_spec_extra(const struct instance_spec *s, const char *key);

/* ---- flavor extra specs (Nova's names and values) ---------------------- */

/* The extra specs that shape placement and the guest, by enum value. */
enum model_flavor_spec {
	MODEL_SPEC_CPU_POLICY,        /* hw:cpu_policy */
	MODEL_SPEC_THREAD_POLICY,     /* hw:cpu_thread_policy */
	MODEL_SPEC_EMULATOR_POLICY,   /* hw:emulator_threads_policy */
	MODEL_SPEC_MEM_PAGE_SIZE,     /* hw:mem_page_size */
	MODEL_SPEC_NUMA_NODES,        /* hw:numa_nodes */
	MODEL_SPEC_LAST
};
extern const char *const model_flavor_spec_keys[]; /* NULL-terminated, by enum value */

enum model_cpu_policy { MODEL_CPU_SHARED, MODEL_CPU_DEDICATED, MODEL_CPU_POLICY_LAST };
extern const char *const model_cpu_policy_names[];
enum model_thread_policy { MODEL_THREAD_PREFER, MODEL_THREAD_ISOLATE, MODEL_THREAD_REQUIRE,
			   MODEL_THREAD_POLICY_LAST };
extern const char *const model_thread_policy_names[];
enum model_emu_policy { MODEL_EMU_SHARE, MODEL_EMU_ISOLATE, MODEL_EMU_POLICY_LAST };
extern const char *const model_emu_policy_names[];
/* hw:mem_page_size; NONE is the absent key (its name is ""). Besides the
 * names, 2M and 2048 mean 2MB, 1G and 1048576 mean 1GB. */
enum model_page_req { MODEL_PAGE_REQ_NONE, MODEL_PAGE_REQ_SMALL, MODEL_PAGE_REQ_LARGE,
		      MODEL_PAGE_REQ_ANY, MODEL_PAGE_REQ_2MB, MODEL_PAGE_REQ_1GB,
		      MODEL_PAGE_REQ_LAST };
extern const char *const model_page_req_names[];

#define MODEL_MAX_NUMA_NODES 8 /* hw:numa_nodes */

struct model_flavor_policy {
	enum model_cpu_policy cpu;       /* default shared */
	enum model_thread_policy thread; /* default prefer */
	enum model_emu_policy emu;       /* default share */
	enum model_page_req page;        /* default NONE */
	int numa_nodes;                  /* 0 = not given */
};

/*
 * Read F's hw:cpu_policy, hw:cpu_thread_policy, hw:emulator_threads_policy,
 * hw:mem_page_size and hw:numa_nodes (other keys are ignored). An invalid
 * value fails with -EINVAL and the accepted values: "flavor m1.x:
 * hw:cpu_policy: invalid value 'fast' (accepted: shared, dedicated)";
 * thread and emulator isolate policies need hw:cpu_policy=dedicated. On
 * failure *out is untouched and, when BAD is not NULL, *BAD names the
 * extra spec at fault (for callers that word the error their own way).
 */
int model_flavor_policy_parse(const struct spec_flavor *f, struct model_flavor_policy *out,
			      enum model_flavor_spec *bad);


/* ---- PCI passthrough and the guest CPU model (model/flavor_hw.c) -------- */

#define MODEL_ALIAS_MAX 32          /* a PCI alias name, NUL included */
#define MODEL_MAX_PCI_REQUESTS 8    /* aliases in pci_passthrough:alias */
#define MODEL_MAX_PCI_DEVICES 8     /* devices in all, per instance */
#define MODEL_CPU_NAME_MAX 48       /* hw:cpu_model, NUL included */
#define MODEL_CPU_FLAG_MAX 24       /* one CPU flag name, NUL included */
#define MODEL_MAX_CPU_FLAGS 8

/* Is NAME a PCI alias name: 1 to 31 of A-Z a-z 0-9 _ - ? */
bool model_alias_valid(const char *name);

/* hw:pci_numa_affinity_policy (Nova's names; legacy is the default). */
enum model_pci_numa { MODEL_PCI_NUMA_LEGACY, MODEL_PCI_NUMA_REQUIRED, MODEL_PCI_NUMA_PREFERRED,
		      MODEL_PCI_NUMA_LAST };
extern const char *const model_pci_numa_names[];

struct model_pci_request {
	char alias[MODEL_ALIAS_MAX];
	int count;
};

/* hw:cpu_mode; DEFAULT is the absent key (its name is ""). */
enum model_cpu_mode { MODEL_CPU_MODE_DEFAULT, MODEL_CPU_MODE_HOST_PASSTHROUGH,
		      MODEL_CPU_MODE_HOST_MODEL, MODEL_CPU_MODE_CUSTOM, MODEL_CPU_MODE_LAST };
extern const char *const model_cpu_mode_names[];

struct model_cpu_flag {
	char name[MODEL_CPU_FLAG_MAX];  /* lower case, like vmx */
	bool disable;                   /* given as -name */
};

/* A guest CPU: mode, model (custom only) and extra flags. */
struct model_cpu_choice {
	enum model_cpu_mode mode;
	char model[MODEL_CPU_NAME_MAX]; /* "" unless custom */
	int n_flags;
	struct model_cpu_flag flags[MODEL_MAX_CPU_FLAGS];
};

/* Parse a CPU choice from its three texts (any may be NULL or ""): MODE
 * one of host-passthrough, host-model, custom; MODEL a libvirt CPU model
 * name (1 to 47 of A-Z a-z 0-9 _ . -), which implies custom and is
 * refused with another mode; custom needs a model; FLAGS "vmx,+pcid,-hle"
 * (at most 8, no repeats). WHAT names the owner in errors ("flavor
 * m1.x", "vmm") and KEYS the three keys' names. */
int model_cpu_choice_parse(const char *what, const char *const keys[3], const char *mode,
			   const char *model, const char *flags, struct model_cpu_choice *out);

/* What a flavor asks of devices and of the guest CPU. */
struct model_flavor_hw {
	int n_pci;                      /* pci_passthrough:alias=NAME:COUNT[,NAME:COUNT] */
	struct model_pci_request pci[MODEL_MAX_PCI_REQUESTS];
	enum model_pci_numa pci_numa;   /* hw:pci_numa_affinity_policy */
	bool cpu_given;                 /* any of the three hw:cpu_* keys */
	struct model_cpu_choice cpu;    /* hw:cpu_mode, hw:cpu_model, hw:cpu_model_extra_flags */
};

/* Read F's pci_passthrough:alias, hw:pci_numa_affinity_policy, hw:cpu_mode,
 * hw:cpu_model and hw:cpu_model_extra_flags. A bad value fails with -EINVAL
 * naming the flavor, the key and what is accepted: "flavor m1.gpu:
 * pci_passthrough:alias: 'gpu:0': expected NAME:COUNT with COUNT from 1 to
 * 16". *out is untouched on failure. */
int model_flavor_hw_parse(const struct spec_flavor *f, struct model_flavor_hw *out);
/* ---- security group rules (Neutron's model; model/secgroup.c) ---------- */

#define SG_NAME_MAX 64 /* a group name: 1-64 of [A-Za-z0-9._-] */

enum sg_direction { SG_INGRESS, SG_EGRESS, SG_DIRECTION_LAST };
enum sg_ethertype { SG_IPV4, SG_IPV6, SG_ETHERTYPE_LAST };
enum sg_protocol { SG_PROTO_ANY, SG_PROTO_TCP, SG_PROTO_UDP, SG_PROTO_ICMP, SG_PROTOCOL_LAST };
extern const char *const sg_direction_names[]; /* NULL-terminated, by enum value */
extern const char *const sg_ethertype_names[];
extern const char *const sg_protocol_names[];

/* One rule. port_min/port_max: tcp/udp ports, or for icmp the type and the
 * code; -1 = not given. At most one of remote_ip_prefix (canonical text,
 * "" = none) and remote_group ("" = none: a group name in requests, a
 * group id in what the scheduler sends to hosts). */
struct sg_rule {
	char id[UUID_STRLEN]; /* "" when not yet given one */
	enum sg_direction direction;
	enum sg_ethertype ethertype;
	enum sg_protocol protocol;
	long port_min, port_max;
	char remote_ip_prefix[64];
	char remote_group[UUID_STRLEN > SG_NAME_MAX + 1 ? UUID_STRLEN : SG_NAME_MAX + 1];
};

/* A group name is 1-64 of [A-Za-z0-9._-] (names appear in nft comments). */
bool model_sg_name_valid(const char *name);
/*
 * Parse and validate a rule from {direction, ethertype?, protocol?,
 * port_range_min?, port_range_max?, remote_ip_prefix?, remote_group?, id?}
 * (defaults: IPv4, any). -EINVAL with the field and the accepted values:
 * "protocol: invalid value 'gre' (accepted: tcp, udp, icmp, any)". *out is
 * untouched on failure.
 */
int model_sg_rule_parse(const json_t *o, struct sg_rule *out);
/* The rule as JSON (absent fields left out); a new reference, NULL on ENOMEM. */
json_t *model_sg_rule_to_json(const struct sg_rule *r);
/* ---- image properties (Glance's names and values) ---------------------- */

/* The properties that shape the guest's machine, by enum value. */
enum model_image_prop {
	MODEL_PROP_FIRMWARE,          /* hw_firmware_type: bios, uefi */
	MODEL_PROP_SECURE_BOOT,       /* os_secure_boot: disabled, required */
	MODEL_PROP_MACHINE,           /* hw_machine_type: pc, q35 */
	MODEL_PROP_DISK_BUS,          /* hw_disk_bus: virtio, scsi */
	MODEL_PROP_VIF_MODEL,         /* hw_vif_model: virtio, e1000 */
	MODEL_PROP_GUEST_AGENT,       /* hw_qemu_guest_agent: no, yes */
	MODEL_PROP_OS_TYPE,           /* os_type: linux, windows */
	MODEL_PROP_LAST
};
extern const char *const model_image_prop_keys[]; /* NULL-terminated, by enum value */
/* The accepted values of each property, by enum value; NULL-terminated lists. */
extern const char *const *const model_image_prop_values[];

enum model_firmware { MODEL_FW_BIOS, MODEL_FW_UEFI, MODEL_FW_LAST };
enum model_secure_boot { MODEL_SB_DISABLED, MODEL_SB_REQUIRED, MODEL_SB_LAST };
enum model_machine { MODEL_MACHINE_PC, MODEL_MACHINE_Q35, MODEL_MACHINE_LAST };
enum model_disk_bus { MODEL_BUS_VIRTIO, MODEL_BUS_SCSI, MODEL_BUS_LAST };
enum model_vif_model { MODEL_VIF_VIRTIO, MODEL_VIF_E1000, MODEL_VIF_LAST };
enum model_os_type { MODEL_OS_LINUX, MODEL_OS_WINDOWS, MODEL_OS_LAST };

/* What an image's properties ask of the domain; every field defaults to
 * its first value (bios, disabled, pc, virtio, virtio, no agent, linux),
 * except that os_secure_boot=required defaults the machine to q35. */
struct model_image_props {
	enum model_firmware firmware;
	enum model_secure_boot secure_boot;
	enum model_machine machine;
	enum model_disk_bus disk_bus;
	enum model_vif_model vif_model;
	bool guest_agent;
	enum model_os_type os_type;
};

/*
 * Read N properties KV of image IMAGE (its name, for messages). An unknown
 * name or a bad value fails with -EINVAL and the accepted list: "image
 * deb: hw_firmware_type: invalid value 'efi' (accepted: bios, uefi)",
 * "image deb: unknown property 'hw_foo' (accepted: hw_firmware_type, ...)";
 * os_secure_boot=required needs hw_firmware_type=uefi and a q35 machine.
 * *out is untouched on failure.
 */
int model_image_props_parse(const char *image, const struct spec_kv *kv, size_t n,
			    struct model_image_props *out);

/*
 * The flavor's local disks after the root (Nova's order: root, ephemeral,
 * swap), one name space for the domain XML and the metadata's
 * block-device-mapping: on BUS virtio vdb then vdc, on scsi sdb then sdc;
 * swap takes the first free letter when there is no ephemeral disk.
 * A disk the flavor does not have gets "". Returns how many there are.
 */
#define MODEL_DEV_LEN 8
int model_local_disk_devs(const struct spec_flavor *f, enum model_disk_bus bus,
			  char ephemeral[MODEL_DEV_LEN], char swap[MODEL_DEV_LEN]);

#endif
