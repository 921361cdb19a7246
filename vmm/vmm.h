/*
 * vmm: from an instance spec to a running libvirt domain, and a watch on it.
 *
 *   topology  host CPUs, NUMA nodes, hyperthread siblings and hugepage
 *             pools read from sysfs (the root is configurable for tests);
 *   fitting   a flavor's extra specs (Nova's names) + the host config +
 *             what is in use -> a placement (pCPU per vCPU, emulator
 *             pCPUs, NUMA nodes, page size), or the reason it cannot fit;
 *   XML       the libvirt domain XML, built with libxml2's writer;
 *   lifecycle define/start/stop/reboot/undefine through the libvirt API,
 *             an event loop thread, reconnect with backoff;
 *   stats     bulk domain stats, per-vCPU delay and host steal, as rates.
 *
 * See docs/vmm.md. Every function that can fail returns 0 or a negative
 * errno-style code with err_msg() set; outputs are untouched on failure.
 */
#ifndef STRATUS_VMM_H
#define STRATUS_VMM_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"
#include "core/core.h"

/* ---- CPU sets ------------------------------------------------------------ */
#define VMM_MAX_CPUS 1024

struct vmm_cpuset {
	uint64_t bits[VMM_MAX_CPUS / 64];
};

/* Linux CPU list syntax: "0-3,8,10-11", with exclusions "0-7,^2" (applied
 * after the inclusions). "" is the empty set. */
int vmm_cpuset_parse(const char *s, struct vmm_cpuset *out);
/* "0-3,8" (empty set: ""); returns a malloc'd string (caller frees), NULL on ENOMEM. */
char *vmm_cpuset_format(const struct vmm_cpuset *s);
void vmm_cpuset_set(struct vmm_cpuset *s, int cpu);
void vmm_cpuset_clear(struct vmm_cpuset *s, int cpu);
bool vmm_cpuset_has(const struct vmm_cpuset *s, int cpu);
int vmm_cpuset_count(const struct vmm_cpuset *s);
bool vmm_cpuset_empty(const struct vmm_cpuset *s);
void vmm_cpuset_and(struct vmm_cpuset *dst, const struct vmm_cpuset *other);
void vmm_cpuset_or(struct vmm_cpuset *dst, const struct vmm_cpuset *other);
void vmm_cpuset_andnot(struct vmm_cpuset *dst, const struct vmm_cpuset *other);

/* ---- page sizes ----------------------------------------------------------- */
enum vmm_page { VMM_PAGE_4K, VMM_PAGE_2M, VMM_PAGE_1G, VMM_PAGE_LAST };
extern const char *const vmm_page_names[];  /* "4K", "2M", "1G" */
extern const uint64_t vmm_page_kib[];       /* 4, 2048, 1048576 */

/* ---- host topology --------------------------------------------------------- */
struct vmm_pool {
	uint64_t total; /* pages */
	uint64_t free;
};

struct vmm_node {
	int id;                          /* node<id> in sysfs */
	struct vmm_cpuset cpus;          /* online CPUs of the node */
	uint64_t mem_total_kib, mem_free_kib;
	struct vmm_pool pool[VMM_PAGE_LAST]; /* [4K]: memory not in hugepages */
};

struct vmm_cpu {
	bool online;
	int node;                        /* index into topology nodes[] */
	int socket, core;
	struct vmm_cpuset siblings;      /* hyperthreads of the core, itself included */
};

struct vmm_pci_dev;

struct vmm_topology {
	struct vmm_cpuset online;
	int n_cpus;                      /* highest CPU id + 1; cpus[] indexed by id */
	struct vmm_cpu *cpus;
	int n_nodes;
	struct vmm_node *nodes;          /* sorted by id */
	bool smt;                        /* some core has more than one thread */
	/* nested virtualization the host's KVM offers guests (sysfs
	 * module/kvm_intel|kvm_amd/parameters/nested is Y or 1) */
	bool nested_vmx, nested_svm;
	/* PCI devices the config declares (vmm_pci_scan); NULL until scanned */
	int n_pci;
	struct vmm_pci_dev *pci;
};

/* Read the topology under a sysfs root ("/sys" when NULL): cpu/online,
 * cpuN/topology/, node/nodeN/{cpulist,meminfo,hugepages/}. A kernel
 * without NUMA nodes is one node 0. *out is malloc'd; vmm_topology_free(). */
int vmm_topology_load(const char *sysfs_root, struct vmm_topology **out);
void vmm_topology_free(struct vmm_topology *t);
/* The topology as JSON (what `stratus-agent host-info` prints). New reference. */
json_t *vmm_topology_to_json(const struct vmm_topology *t);

/* ---- config (the `vmm:` section of the host config) ---------------------- */
enum vmm_accel { VMM_ACCEL_AUTO, VMM_ACCEL_KVM, VMM_ACCEL_QEMU, VMM_ACCEL_LAST };
extern const char *const vmm_accel_names[];     /* "auto", "kvm", "qemu" */
/* The libvirt domain type. */
enum vmm_virt { VMM_VIRT_KVM, VMM_VIRT_QEMU, VMM_VIRT_LAST };
extern const char *const vmm_virt_names[];      /* "kvm", "qemu" */

struct vmm_cpuset_opt {
	bool set;                        /* given in the config */
	struct vmm_cpuset cpus;
};

struct vmm_config {
	char *uri;                       /* libvirt URI, default qemu:///system */
	enum vmm_accel accel;
	struct vmm_cpuset_opt cpu_dedicated_set; /* pCPUs for hw:cpu_policy=dedicated */
	struct vmm_cpuset_opt cpu_shared_set;    /* where shared vCPUs float */
	unsigned hugepage_pools;         /* bit (1 << enum vmm_page) per usable size */
	char *bridge;                    /* host bridge for guest NICs */
	char *console_log_dir;           /* <dir>/<uuid>.log: serial console */
	char *instances_dir;             /* <dir>/<uuid>/{disk.qcow2,seed.iso} */
	int64_t shutdown_timeout_ms;     /* graceful shutdown, then destroy */
	int64_t reboot_timeout_ms;       /* soft reboot, then reset (vmm_reboot) */
	char *sysfs_root;                /* default /sys */
	/* the guest CPU (vmm/cpu.c): "" = host-model on kvm, QEMU's own under TCG */
	char *cpu_mode, *cpu_model, *cpu_model_extra_flags;
	/* PCI passthrough: alias -> "vendor_id=10de product_id=1eb8" or
	 * "address=0000:3b:00.0" (vmm/pci.c) */
	struct cfg_map pci_alias;
};
extern const struct cfg_field vmm_config_fields[];
/* Defaults only (what a config without a vmm: section gives). */
int vmm_config_init(struct vmm_config *c);
void vmm_config_free(struct vmm_config *c);
/* What the fields cannot check alone: the CPU choice and the PCI aliases.
 * -EINVAL with "FILE: vmm.KEY: ..." (the agent's -n runs it). */
int vmm_config_check(const struct vmm_config *c);

/* The libvirt domain type for an accel setting: auto = kvm only where
 * /dev/kvm opens and /proc/cpuinfo's flags have vmx or svm. */
enum vmm_virt vmm_accel_resolve(enum vmm_accel a);

/* ---- fitting --------------------------------------------------------------- */
/* The flavor's extra specs, parsed (Nova's names and values). */
enum vmm_cpu_policy { VMM_CPU_SHARED, VMM_CPU_DEDICATED, VMM_CPU_POLICY_LAST };
enum vmm_thread_policy { VMM_THREAD_PREFER, VMM_THREAD_ISOLATE, VMM_THREAD_REQUIRE,
			 VMM_THREAD_POLICY_LAST };
enum vmm_emu_policy { VMM_EMU_SHARE, VMM_EMU_ISOLATE, VMM_EMU_POLICY_LAST };
enum vmm_page_req { VMM_PAGE_REQ_NONE, VMM_PAGE_REQ_SMALL, VMM_PAGE_REQ_LARGE, VMM_PAGE_REQ_ANY,
		    VMM_PAGE_REQ_2MB, VMM_PAGE_REQ_1GB, VMM_PAGE_REQ_LAST };

#define VMM_MAX_CELLS 8

struct vmm_policy {
	enum vmm_cpu_policy cpu;
	enum vmm_thread_policy thread;
	enum vmm_emu_policy emu;
	enum vmm_page_req page;
	int numa_nodes;                  /* 0 = not given */
};
/* Read hw:cpu_policy, hw:cpu_thread_policy, hw:emulator_threads_policy,
 * hw:mem_page_size and hw:numa_nodes. An invalid value fails with the
 * accepted values: "flavor m1.x: hw:cpu_policy: invalid value 'fast'
 * (accepted: shared, dedicated)". Other keys are ignored. */
int vmm_policy_from_spec(const struct instance_spec *spec, struct vmm_policy *out);

/* One guest NUMA cell on one host node. */
struct vmm_cell {
	int node;                        /* host node index (topology nodes[]) */
	int node_id;                     /* its id (sysfs node<id>, libvirt nodeset) */
	int first_vcpu, n_vcpus;
	long mem_mib;
};

struct vmm_placement {
	char uuid[UUID_STRLEN];          /* the owner */
	int vcpus;
	long ram_mib;
	bool pinned;                     /* one pCPU per vCPU */
	int *pcpu;                       /* [vcpus] pCPU of each vCPU when pinned (malloc'd) */
	struct vmm_cpuset vcpu_set;      /* unpinned: where the vCPUs float */
	struct vmm_cpuset emulator;      /* emulator threads */
	struct vmm_cpuset claimed;       /* dedicated pCPUs taken (vCPUs, isolated
					    siblings, isolated emulator) */
	enum vmm_page page;              /* backing page size */
	bool hugepages;                  /* page is a hugepage size */
	int n_cells;                     /* 0: no guest NUMA topology */
	struct vmm_cell cells[VMM_MAX_CELLS];
	/* PCI devices given to the guest (vmm/pci.c) */
	int n_pci;
	struct vmm_pci_pick {
		int dev;                 /* index into topology pci[] */
		char address[16];        /* 0000:3b:00.0 */
		char alias[MODEL_ALIAS_MAX];
		int node_id;             /* host NUMA node id, -1 unknown */
	} pci[MODEL_MAX_PCI_DEVICES];
	/* the guest CPU, resolved by vmm_cpu_fit (not stored: re-resolved) */
	struct model_cpu_choice cpu;
};

/* What Stratus already placed on the host: pCPU owners and pages used per
 * node per size. The agent keeps one, claims and releases placements. */
struct vmm_host_usage {
	int n_cpus;
	char (*cpu_owner)[UUID_STRLEN];  /* "" = free */
	int n_nodes;
	uint64_t (*pages)[VMM_PAGE_LAST]; /* [node index][size] pages in use */
	int n_pci;
	char (*pci_owner)[UUID_STRLEN];  /* [topology pci index] "" = free */
};
int vmm_usage_init(struct vmm_host_usage *u, const struct vmm_topology *t);
void vmm_usage_free(struct vmm_host_usage *u);
/* Take what p needs; -EBUSY (nothing taken) if a pCPU is owned by another
 * instance or a page pool would go negative. Claiming the same uuid twice
 * is an error too: release first. */
int vmm_usage_claim(struct vmm_host_usage *u, const struct vmm_topology *t,
		    const struct vmm_placement *p);
/* Give back what p took (pCPUs owned by p->uuid, its pages). */
void vmm_usage_release(struct vmm_host_usage *u, const struct vmm_placement *p);

/*
 * Place spec on the host. cfg NULL: every online CPU is both dedicated and
 * shared, every hugepage pool usable. usage NULL: nothing in use. Does not
 * claim: call vmm_usage_claim() with the result. A fit that cannot be made
 * returns -ENOSPC with the reason; invalid extra specs -EINVAL.
 * Free *out with vmm_placement_free().
 */
int vmm_fit(const struct vmm_topology *t, const struct vmm_config *cfg,
	    const struct vmm_host_usage *usage, const struct instance_spec *spec,
	    struct vmm_placement *out);
void vmm_placement_free(struct vmm_placement *p);
/* For the agent's store and host reports. New reference. */
json_t *vmm_placement_to_json(const struct vmm_placement *p, const struct vmm_topology *t);
/* Back from vmm_placement_to_json (node ids resolved against t). */
int vmm_placement_from_json(json_t *j, const struct vmm_topology *t, struct vmm_placement *out);


/* ---- PCI passthrough (vmm/pci.c) ------------------------------------------- */
#define VMM_PCI_ADDR_LEN 16

/* One device a vmm.pci_alias entry matches, as sysfs shows it. */
struct vmm_pci_dev {
	char address[VMM_PCI_ADDR_LEN];  /* 0000:3b:00.0 */
	char alias[MODEL_ALIAS_MAX];
	unsigned vendor, product;
	int node;                        /* topology nodes[] index, -1 unknown */
	int node_id;                     /* sysfs numa_node, -1 unknown */
	int iommu_group;                 /* -1: none (no IOMMU) */
	char driver[32];                 /* bound driver, "" none */
	bool usable;                     /* its IOMMU group is whole */
	char reason[256];                /* why not usable */
};

/* Scan ROOT/bus/pci/devices (ROOT: "/sys" when NULL) for the devices
 * cfg->pci_alias declares and store them in t (n_pci, pci; replaces an
 * earlier scan). A device is usable when it has an IOMMU group and every
 * other device of the group is declared too or bound to vfio-pci; else
 * its reason says why. A bad alias entry fails with -EINVAL. */
int vmm_pci_scan(const char *sysfs_root, const struct vmm_config *cfg, struct vmm_topology *t);
/* t->pci as a JSON array (host-info and the host report). New reference. */
json_t *vmm_pci_to_json(const struct vmm_topology *t, const struct vmm_host_usage *u);

/* ---- the guest CPU (vmm/cpu.c) ---------------------------------------------- */
/* The flavor's hw:cpu_* over vmm.cpu_* (flags: the config's, then the
 * flavor's, which win), the default for the domain type (kvm: host-model,
 * which libvirt turns into a named model plus features that a migration
 * destination must have; TCG: QEMU's own CPU), then what the host can
 * give: host-passthrough and host-model need KVM, vmx/svm need KVM with
 * nested on (t->nested_vmx/svm). -ENOSPC with the reason, else p->cpu. */
int vmm_cpu_fit(const struct vmm_topology *t, const struct vmm_config *cfg, enum vmm_virt virt,
		const struct instance_spec *spec, struct vmm_placement *p);

/* ---- domain XML ------------------------------------------------------------ */
enum vmm_seed_format { VMM_SEED_NONE, VMM_SEED_ISO, VMM_SEED_RAW, VMM_SEED_LAST };

/* What the caller made for the instance (paths are used as given). */
struct vmm_domain_params {
	enum vmm_virt virt;
	const char *disk_path;           /* root disk: a qcow2 overlay */
	const char *disk_format;         /* "qcow2" (default) or "raw" */
	const char *backing_path;        /* optional: the overlay's base, */
	const char *backing_format;      /* with its format (explicit, never probed) */
	const char *seed_path;           /* cloud-init seed, attached read-only */
	enum vmm_seed_format seed_format; /* ISO: IDE cdrom; RAW: virtio disk */
	const char *bridge;              /* NULL: no NIC */
	const char *tap;                 /* the NIC's host device name; NULL: libvirt's vnetN */
	const char *console_log;         /* serial console file; NULL: pty only */
	const char *kernel, *initrd, *cmdline; /* optional direct kernel boot */
	/* the image's machine (model_image_props_parse): firmware, machine
	 * type, disk bus, NIC model, guest agent, OS type */
	struct model_image_props props;
	const char *nvram_path;          /* UEFI: the instance's NVRAM (libvirt
					    copies OVMF's template there once) */
	/* the flavor's ephemeral and swap disks (qcow2, NULL: none), after the
	 * root on its bus: model_local_disk_devs names them */
	const char *ephemeral_path, *swap_path;
};

/* The domain name of an instance: "stratus-<uuid>". */
#define VMM_DOMAIN_PREFIX "stratus-"
#define VMM_XMLNS "https://stratus.dev/xmlns/libvirt/instance/1"

/* The libvirt domain XML. Returns a malloc'd string in *out (caller frees). */
int vmm_domain_xml(const struct instance_spec *spec, const struct vmm_placement *p,
		   const struct vmm_domain_params *params, char **out);

/* ---- lifecycle --------------------------------------------------------------- */
enum vmm_event {
	VMM_EV_STARTED,    /* running (boot, resume, restore) */
	VMM_EV_STOPPED,    /* shut off because we asked (shutdown/destroy of ours) */
	VMM_EV_SHUTDOWN,   /* the guest powered itself off, nobody asked */
	VMM_EV_CRASHED,    /* QEMU died or the guest crashed, or killed behind our back */
	VMM_EV_REBOOTED,
	VMM_EV_DEFINED,
	VMM_EV_UNDEFINED,
	VMM_EV_DISCONNECTED, /* lost libvirtd; reconnecting */
	VMM_EV_RECONNECTED,
	VMM_EV_LAST
};
extern const char *const vmm_event_names[];

/* Called from the event thread: keep it short. uuid is "" for connection events. */
typedef void (*vmm_event_fn)(enum vmm_event ev, const char *uuid, const char *detail, void *opaque);

struct vmm_conn;

/* Open uri (NULL: qemu:///system) and start the event loop thread. cb may
 * be NULL. The connection reconnects by itself with backoff (100 ms up to
 * max_backoff_ms) when libvirtd goes away. *out: vmm_close(). */
int vmm_open(const char *uri, vmm_event_fn cb, void *opaque, struct vmm_conn **out);
void vmm_close(struct vmm_conn *c);
bool vmm_connected(struct vmm_conn *c);
/* How many times the connection was re-established. */
unsigned vmm_reconnects(struct vmm_conn *c);

/* Define (persistent) from XML; an existing domain of the same uuid is
 * redefined. */
int vmm_define(struct vmm_conn *c, const char *xml);
int vmm_start(struct vmm_conn *c, const char *uuid);
/* ACPI shutdown, wait up to timeout_ms for shut off, then destroy.
 * *forced (may be NULL) tells whether destroy was needed. Already off: 0. */
int vmm_stop(struct vmm_conn *c, const char *uuid, int64_t timeout_ms, bool *forced);
int vmm_destroy(struct vmm_conn *c, const char *uuid);

/* What vmm_reboot did. */
enum vmm_reboot_how {
	VMM_REBOOT_SOFT,         /* the guest rebooted when asked (libvirt's reboot event) */
	VMM_REBOOT_HARD_TIMEOUT, /* no guest reboot within the timeout: reset */
	VMM_REBOOT_HARD_REFUSED, /* libvirt refused the soft request: reset at once */
	VMM_REBOOT_HARD_POWEROFF, /* the guest powered off during the wait: started again */
	VMM_REBOOT_HARD,         /* asked hard: reset, no soft step */
	VMM_REBOOT_LAST
};
extern const char *const vmm_reboot_how_names[];

/*
 * Reboot a running domain. Soft (hard false): virDomainReboot (ACPI or the
 * guest agent, libvirt's choice), then wait up to timeout_ms for the
 * domain's reboot event (the guest reset itself); none by then, or the
 * request refused: a hard reboot. Hard: virDomainReset, or, where the
 * driver has no reset, destroy + start of the same persistent definition;
 * both keep the definition, its NVRAM and its disks. The caller's thread
 * waits (the libvirt event thread does not). *how (may be NULL) says what
 * happened. Not running: -EINVAL.
 */
int vmm_reboot(struct vmm_conn *c, const char *uuid, bool hard, int64_t timeout_ms,
	       enum vmm_reboot_how *how);
/* Stop if running (destroy), then undefine with its managed save, snapshot
 * metadata and NVRAM. Not defined: 0. */
int vmm_undefine(struct vmm_conn *c, const char *uuid);

/* A point-in-time copy of a running domain's disk (snapshots): freeze or
 * thaw its filesystems through the QEMU guest agent (the domain needs the
 * agent channel and the guest qemu-guest-agent), or pause / resume its
 * vCPUs. <0 with err_msg() naming the instance and libvirt's reason. */
enum vmm_quiesce_op { VMM_FS_FREEZE, VMM_FS_THAW, VMM_PAUSE, VMM_RESUME, VMM_QUIESCE_LAST };
int vmm_quiesce(struct vmm_conn *c, const char *uuid, enum vmm_quiesce_op op);

enum vmm_power { VMM_POWER_NONE, VMM_POWER_RUNNING, VMM_POWER_PAUSED, VMM_POWER_SHUTOFF,
		 VMM_POWER_CRASHED, VMM_POWER_OTHER, VMM_POWER_LAST };
extern const char *const vmm_power_names[];
/* VMM_POWER_NONE when not defined. */
int vmm_power_state(struct vmm_conn *c, const char *uuid, enum vmm_power *out);

struct vmm_domain_info {
	char uuid[UUID_STRLEN];
	char *name;                      /* libvirt name */
	char *project, *flavor;          /* from our metadata element */
	enum vmm_power power;
};
/* The domains that carry our metadata element. *out is malloc'd
 * (vmm_domain_list_free). */
int vmm_list_ours(struct vmm_conn *c, struct vmm_domain_info **out, size_t *n);
void vmm_domain_list_free(struct vmm_domain_info *l, size_t n);

/* ---- live migration (migrate.c, issue 15) ------------------------------------ */
/* What a migration that does not complete in time does (Nova's
 * live_migration_timeout_action; postcopy is Nova's force_complete with
 * post-copy permitted). */
enum vmm_migrate_action { VMM_MIG_ABORT, VMM_MIG_PAUSE, VMM_MIG_POSTCOPY, VMM_MIG_ACTION_LAST };
extern const char *const vmm_migrate_action_names[]; /* "abort", "pause", "postcopy" */

#define VMM_MAX_DOWNTIME_STEPS 64
/* From at_ms after the start, the maximum downtime is downtime_ms. */
struct vmm_downtime_step {
	int64_t at_ms;
	long downtime_ms;
};
/* Nova's steps: steps + 1 of them, from max/steps at 0 up to max at
 * steps x delay_ms. Returns how many were written (at most max_out). */
size_t vmm_downtime_steps(long max_ms, int steps, int64_t delay_ms, struct vmm_downtime_step *out,
			  size_t max_out);

struct vmm_migrate_progress {
	int64_t elapsed_ms;
	uint64_t mem_processed, mem_remaining, mem_total;    /* bytes */
	uint64_t disk_processed, disk_remaining, disk_total; /* bytes */
	long downtime_limit_ms;                               /* the current step's */
};

struct vmm_migrate_opts {
	const char *dest_uri;          /* the destination libvirtd, e.g. qemu+tcp://h2/system */
	const char *dest_xml;          /* VIR_MIGRATE_PARAM_DEST_XML; NULL: the source's */
	bool copy_storage;             /* NON_SHARED_INC: local disks copied */
	long downtime_ms;              /* the maximum downtime, reached in steps */
	int downtime_steps;
	int64_t downtime_delay_ms;     /* between steps */
	int64_t completion_timeout_ms; /* 0: none */
	enum vmm_migrate_action timeout_action;
	bool auto_converge;
	int64_t progress_interval_ms;  /* default 500 */
	int64_t shutdown_timeout_ms;   /* vmm_migrate_cold: graceful shutdown, then destroy */
	/* called from the monitor thread: keep it short */
	void (*progress)(const struct vmm_migrate_progress *p, void *opaque);
	void *opaque;
};

struct vmm_migrate_result {
	int64_t total_ms;              /* libvirt's time elapsed */
	int64_t downtime_ms;           /* libvirt's measured downtime (VIR_DOMAIN_JOB_DOWNTIME) */
	bool have_downtime;
	uint64_t mem_bytes, disk_bytes;
	bool timed_out;                /* the completion timeout fired; action: what was done */
	enum vmm_migrate_action action;
	long downtime_limit_ms;        /* the last step applied */
	bool cold;                     /* vmm_migrate_cold: downtime_ms is stop -> start */
	bool was_running;              /* cold: it ran here, so it was booted there */
};

/* Migrate the running domain of uuid live, peer to peer, to o->dest_uri
 * (persistent there, left defined and shut off here: undefine it after).
 * Blocks until libvirt is done; on failure the guest keeps running here
 * (-ETIMEDOUT when the completion timeout aborted it). */
int vmm_migrate(struct vmm_conn *c, const char *uuid, const struct vmm_migrate_opts *o,
		struct vmm_migrate_result *out);
/*
 * Cold migration of the domain of uuid to o->dest_uri: stopped here when it
 * runs (ACPI, o->shutdown_timeout_ms, then destroy), started paused here,
 * migrated non-live peer to peer with its local disks (NON_SHARED_INC,
 * PERSIST_DEST, PAUSED: the RAM of a guest that never ran moves, not the
 * guest's), then destroyed there and booted fresh there when it ran here
 * (left shut off there when it was off). Left defined and shut off here on
 * success (undefine it after). On failure (<0, err_msg() names the step:
 * stop, start-paused, copy, boot) the destination's copy is destroyed and
 * undefined and the guest runs here again as before (or stays off).
 * Progress as vmm_migrate; the downtime and timeout settings do not apply
 * except completion_timeout_ms (action: abort).
 */
int vmm_migrate_cold(struct vmm_conn *c, const char *uuid, const struct vmm_migrate_opts *o,
		     struct vmm_migrate_result *out);
/* The power state of uuid on the libvirtd at URI (a migration's
 * destination, asked by its source after a restart; VMM_POWER_NONE when it
 * is not defined there); -ENOTCONN when URI cannot be reached. */
int vmm_remote_power(const char *uri, const char *uuid, enum vmm_power *out);
/*
 * The end of a cold move interrupted by the source agent's death, decided
 * by agent_migrate_reconcile from both hosts' states:
 *   vmm_migrate_cold_finish: the copy reached dest_uri: its paused copy is
 *     destroyed and the definition there booted fresh (boot) or left shut
 *     off (a stopped instance's move); the source's paused copy, if any, is
 *     destroyed (the caller then cleans the source)
 *   vmm_migrate_cold_rollback: the destination's copy (if any) destroyed and
 *     undefined, the source's paused copy destroyed and the guest started
 *     again here when it ran (was_running), as vmm_migrate_cold's failure
 * Both are idempotent: a second restart in the middle does the rest.
 */
int vmm_migrate_cold_finish(struct vmm_conn *c, const char *dest_uri, const char *uuid, bool boot);
int vmm_migrate_cold_rollback(struct vmm_conn *c, const char *dest_uri, const char *uuid,
			      bool was_running);
/* virDomainAbortJob: no job is fine. */
int vmm_migrate_abort(struct vmm_conn *c, const char *uuid);
/* ---- volumes: disks hot-plugged into a domain (vmm/disk.c) --------------------- */

#define VMM_SERIAL_MAX 20 /* virtio-blk's serial: /dev/disk/by-id/virtio-<serial> */

/*
 * Attach the file PATH (FORMAT "raw" or "qcow2") to the domain UUID as a
 * virtio disk with SERIAL (at most VMM_SERIAL_MAX characters), on the first
 * free vdX: live and in the persistent definition when the domain runs
 * (virDomainAttachDeviceFlags LIVE|CONFIG), in the definition only when it
 * does not. A driver without device hot-plug (the test driver) gets the
 * definition edited and redefined when the domain is not running. *live
 * (may be NULL): attached to the running guest too. A disk of that serial
 * present already: 0, nothing done.
 */
int vmm_disk_attach(struct vmm_conn *c, const char *uuid, const char *path, const char *format,
		    const char *serial, bool *live);
/* Detach the disk of SERIAL (live and config, as attach; the running guest
 * gets 20 s to release it, -ETIMEDOUT after, the definition unchanged).
 * Absent: 0. */
int vmm_disk_detach(struct vmm_conn *c, const char *uuid, const char *serial);
/* Whether the persistent definition (*config) and the running domain
 * (*live, false when not running) hold a disk of SERIAL. */
int vmm_disk_find(struct vmm_conn *c, const char *uuid, const char *serial, bool *config,
		  bool *live);
/* ---- serial console ------------------------------------------------------- */
/* The guest's serial console (virDomainOpenConsole) as one end of a
 * socketpair in *fd (blocking; the caller closes it, which ends the
 * console session): bytes written go to the guest's serial, its output
 * arrives to be read; end of file when the console closes. libvirt allows
 * one console session per domain at a time (vmm/console.c). */
int vmm_console_open(struct vmm_conn *c, const char *uuid, int *fd);

/* ---- stats and steal ------------------------------------------------------------ */
#define VMM_MAX_VCPU_STATS 64
#define VMM_MAX_DEV_STATS 8

struct vmm_dom_stats {
	char uuid[UUID_STRLEN];
	int64_t ts_ns;                   /* monotonic, when collected */
	bool running;
	uint64_t cpu_time_ns, cpu_user_ns, cpu_system_ns;
	int n_vcpus;
	uint64_t vcpu_time_ns[VMM_MAX_VCPU_STATS];
	uint64_t vcpu_delay_ns[VMM_MAX_VCPU_STATS]; /* run-queue wait: the guest's steal */
	bool have_delay;
	uint64_t mem_actual_kib, mem_rss_kib, mem_available_kib, mem_unused_kib;
	uint64_t rd_bytes, wr_bytes, rd_reqs, wr_reqs; /* summed over disks */
	uint64_t rx_bytes, tx_bytes, rx_pkts, tx_pkts; /* summed over NICs */
};

/* Bulk stats of our domains (virConnectGetAllDomainStats). *out malloc'd. */
int vmm_stats_collect(struct vmm_conn *c, struct vmm_dom_stats **out, size_t *n);

/* Per-instance rates over an interval between two samples of one domain. */
struct vmm_dom_rates {
	double interval_s;
	double cpu_pct;                  /* of one pCPU */
	double steal_pct;                /* sum of vCPU delay / (vcpus * interval) */
	double vcpu_steal_pct[VMM_MAX_VCPU_STATS];
	double rd_bps, wr_bps, rx_bps, tx_bps;
};
int vmm_dom_rates(const struct vmm_dom_stats *a, const struct vmm_dom_stats *b,
		  struct vmm_dom_rates *out);

/* Host CPU time from /proc/stat's "cpu" line (USER_HZ ticks). */
struct vmm_host_cpu {
	uint64_t user, nice, system, idle, iowait, irq, softirq, steal;
	uint64_t total;
};
/* proc_root: "/proc" when NULL. */
int vmm_host_cpu_read(const char *proc_root, struct vmm_host_cpu *out);
/* steal % of all CPU time between two samples. */
double vmm_host_steal_pct(const struct vmm_host_cpu *a, const struct vmm_host_cpu *b);

#endif
