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

#endif
