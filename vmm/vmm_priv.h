/* vmm internals that tests need; not part of the module's API. */
#ifndef STRATUS_VMM_PRIV_H
#define STRATUS_VMM_PRIV_H

#define VIR_ENUM_SENTINELS 1
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "vmm/vmm.h"

/* The value of KEY in /proc/meminfo or node meminfo text, in KiB (0 if absent). */
uint64_t vmm_meminfo_kib(const char *text, const char *key);

/* accel auto, with the probes made explicit for tests. */
enum vmm_virt vmm_accel_resolve_at(enum vmm_accel a, const char *kvm_dev, const char *cpuinfo);

/* /proc/stat's "cpu " line from text. */
int vmm_host_cpu_parse(const char *text, struct vmm_host_cpu *out);

/* One domain's stats out of virConnectGetAllDomainStats' typed parameters. */
void vmm_stats_from_params(const virTypedParameter *params, int n, struct vmm_dom_stats *out);

/* The stats types and flags vmm_stats_collect asks for. */
#define VMM_STATS_TYPES (VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL | \
			 VIR_DOMAIN_STATS_BALLOON | VIR_DOMAIN_STATS_VCPU | \
			 VIR_DOMAIN_STATS_INTERFACE | VIR_DOMAIN_STATS_BLOCK)

/* Reconnect backoff: attempt n (0-based) waits this long, capped. */
int64_t vmm_backoff_ms(unsigned attempt);

/* ---- PCI passthrough (pci.c) ---- */
/* One vmm.pci_alias entry, parsed. */
struct vmm_pci_alias {
	char name[MODEL_ALIAS_MAX];
	bool by_address;
	char address[VMM_PCI_ADDR_LEN];  /* by_address */
	unsigned vendor, product;
	bool any_product;                /* vendor_id alone */
};
/* "0000:3b:00.0" or "3b:00.0" -> "0000:3b:00.0" (lower case). -EINVAL. */
int vmm_pci_address_parse(const char *s, char out[VMM_PCI_ADDR_LEN]);
/* "vendor_id=10de product_id=1eb8" | "vendor_id=8086" | "address=0000:3b:00.0" */
int vmm_pci_alias_parse(const char *name, const char *text, struct vmm_pci_alias *out);
/* Pick p's devices for hw's requests (p's cells chosen already). -ENOSPC
 * with the devices of the alias and why each cannot be taken. */
int vmm_pci_fit(const struct vmm_topology *t, const struct vmm_host_usage *u,
		const struct instance_spec *spec, const struct model_flavor_hw *hw,
		struct vmm_placement *p);
/* Has host node NODE (index) the free devices hw asks for, as the policy
 * allows them on a guest cell there? */
bool vmm_pci_node_has(const struct vmm_topology *t, const struct vmm_host_usage *u,
		      const struct model_flavor_hw *hw, int node);
/* p->pci as placement JSON, and back (devices resolved against t). */
json_t *vmm_pci_picks_json(const struct vmm_placement *p);
int vmm_pci_picks_from_json(json_t *a, const struct vmm_topology *t, struct vmm_placement *p);

/* ---- the guest CPU (cpu.c) ---- */
/* Read module/kvm_intel|kvm_amd/parameters/nested under ROOT into t. */
void vmm_cpu_load_nested(const char *root, struct vmm_topology *t);
/* vmm.cpu_mode, vmm.cpu_model, vmm.cpu_model_extra_flags parsed. */
int vmm_cpu_config_parse(const struct vmm_config *cfg, struct model_cpu_choice *out);
/* conn.c for migrate.c: the domain of uuid (NULL with *r set; close
 * *connp when set), and an intent (the next stop event is ours). */
virDomainPtr vmm_conn_domain(struct vmm_conn *c, const char *uuid, virConnectPtr *connp, int *r);
void vmm_conn_intent(struct vmm_conn *c, const char *uuid);
/* conn.c: libvirt's state of D as ours (-EIO when libvirt cannot say). */
int vmm_power_of(virDomainPtr d, enum vmm_power *out);
/* conn.c: the domain of UUID on a fresh reference of the connection
 * (*connp: virConnectClose it, also when NULL is returned with *r set). */
virDomainPtr vmm_dom_lookup(struct vmm_conn *c, const char *uuid, virConnectPtr *connp, int *r);
/* The live connection with a reference (virConnectClose it), or NULL with
 * err_msg() while reconnecting (vmm/console.c). */
virConnectPtr vmm_conn_get(struct vmm_conn *c);

#endif
