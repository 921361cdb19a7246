/*
 * Fitting: a flavor's extra specs + the host config + what is in use ->
 * a placement. Rules (Nova's, see docs/vmm.md):
 *   - a guest NUMA topology exists when hw:cpu_policy=dedicated,
 *     hw:mem_page_size or hw:numa_nodes is given; it has hw:numa_nodes
 *     cells (default 1), each on its own host node with vcpus/N vCPUs and
 *     ram/N MiB, the memory from that node in the chosen page size;
 *   - dedicated: one pCPU of cpu_dedicated_set per vCPU, never shared;
 *     thread policy prefer packs siblings, isolate takes whole free cores
 *     (one vCPU each), require places vCPUs on sibling threads of whole
 *     free cores; emulator isolate takes one more dedicated pCPU;
 *   - shared: vCPUs float over cpu_shared_set (of the cells' nodes).
 */
#define LOG_TAG "vmm"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmm/vmm_priv.h"

/* ---- extra specs ---------------------------------------------------------- */
/* The parser is model's (model_flavor_policy_parse); vmm's enums are the
 * same values under vmm's names. */
_Static_assert((int)VMM_CPU_POLICY_LAST == (int)MODEL_CPU_POLICY_LAST &&
		       (int)VMM_CPU_DEDICATED == (int)MODEL_CPU_DEDICATED,
	       "vmm_cpu_policy follows model_cpu_policy");
_Static_assert((int)VMM_THREAD_POLICY_LAST == (int)MODEL_THREAD_POLICY_LAST &&
		       (int)VMM_THREAD_ISOLATE == (int)MODEL_THREAD_ISOLATE &&
		       (int)VMM_THREAD_REQUIRE == (int)MODEL_THREAD_REQUIRE,
	       "vmm_thread_policy follows model_thread_policy");
_Static_assert((int)VMM_EMU_POLICY_LAST == (int)MODEL_EMU_POLICY_LAST &&
		       (int)VMM_EMU_ISOLATE == (int)MODEL_EMU_ISOLATE,
	       "vmm_emu_policy follows model_emu_policy");
_Static_assert((int)VMM_PAGE_REQ_LAST == (int)MODEL_PAGE_REQ_LAST &&
		       (int)VMM_PAGE_REQ_SMALL == (int)MODEL_PAGE_REQ_SMALL &&
		       (int)VMM_PAGE_REQ_LARGE == (int)MODEL_PAGE_REQ_LARGE &&
		       (int)VMM_PAGE_REQ_ANY == (int)MODEL_PAGE_REQ_ANY &&
		       (int)VMM_PAGE_REQ_2MB == (int)MODEL_PAGE_REQ_2MB &&
		       (int)VMM_PAGE_REQ_1GB == (int)MODEL_PAGE_REQ_1GB,
	       "vmm_page_req follows model_page_req");
_Static_assert(VMM_MAX_CELLS >= MODEL_MAX_NUMA_NODES, "a cell per hw:numa_nodes");

int vmm_policy_from_spec(const struct instance_spec *spec, struct vmm_policy *out)
{
	struct model_flavor_policy mp;
	int r = model_flavor_policy_parse(&spec->flavor, &mp, NULL);

	if (r < 0)
		return r;
	out->cpu = (enum vmm_cpu_policy)mp.cpu;
	out->thread = (enum vmm_thread_policy)mp.thread;
	out->emu = (enum vmm_emu_policy)mp.emu;
	out->page = (enum vmm_page_req)mp.page;
	out->numa_nodes = mp.numa_nodes;
	return 0;
}

/* ---- host usage ----------------------------------------------------------- */
int vmm_usage_init(struct vmm_host_usage *u, const struct vmm_topology *t)
{
	struct vmm_host_usage n = { .n_cpus = t->n_cpus, .n_nodes = t->n_nodes };

	n.cpu_owner = calloc((size_t)t->n_cpus, sizeof(*n.cpu_owner));
	n.pages = calloc((size_t)t->n_nodes, sizeof(*n.pages));
	n.n_pci = t->n_pci;
	n.pci_owner = calloc(t->n_pci ? (size_t)t->n_pci : 1, sizeof(*n.pci_owner));
	if (!n.cpu_owner || !n.pages || !n.pci_owner) {
		vmm_usage_free(&n);
		return err_set(-ENOMEM, "out of memory");
	}
	*u = n;
	return 0;
}

void vmm_usage_free(struct vmm_host_usage *u)
{
	if (!u)
		return;
	free(u->cpu_owner);
	free(u->pages);
	free(u->pci_owner);
	u->cpu_owner = NULL;
	u->pages = NULL;
	u->pci_owner = NULL;
	u->n_cpus = u->n_nodes = u->n_pci = 0;
}

static bool cpu_free(const struct vmm_host_usage *u, int cpu)
{
	return !u || cpu >= u->n_cpus || u->cpu_owner[cpu][0] == '\0';
}

static uint64_t pages_used(const struct vmm_host_usage *u, int node, enum vmm_page p)
{
	return u && node < u->n_nodes ? u->pages[node][p] : 0;
}

static uint64_t cell_pages(const struct vmm_cell *c, enum vmm_page p)
{
	return (uint64_t)c->mem_mib * 1024 / vmm_page_kib[p];
}

int vmm_usage_claim(struct vmm_host_usage *u, const struct vmm_topology *t,
		    const struct vmm_placement *p)
{
	(void)t;
	for (int c = 0; c < VMM_MAX_CPUS; c++) {
		if (!vmm_cpuset_has(&p->claimed, c))
			continue;
		if (c >= u->n_cpus)
			return err_set(-EBUSY, "instance %s: pCPU %d is not on this host", p->uuid, c);
		if (u->cpu_owner[c][0])
			return err_set(-EBUSY, "instance %s: pCPU %d is taken by instance %s", p->uuid,
				       c, u->cpu_owner[c]);
	}
	for (int i = 0; i < p->n_cells; i++) {
		const struct vmm_cell *c = &p->cells[i];
		const struct vmm_pool *pool;

		if (c->node < 0 || c->node >= u->n_nodes)
			return err_set(-EBUSY, "instance %s: NUMA node index %d is not on this host",
				       p->uuid, c->node);
		pool = &t->nodes[c->node].pool[p->page];
		if (u->pages[c->node][p->page] + cell_pages(c, p->page) > pool->total)
			return err_set(-EBUSY, "instance %s: node%d has too few %s pages left", p->uuid,
				       t->nodes[c->node].id, vmm_page_names[p->page]);
	}
	for (int i = 0; i < p->n_pci; i++) {
		int d = p->pci[i].dev;

		if (d >= 0 && d < u->n_pci && u->pci_owner[d][0])
			return err_set(-EBUSY, "instance %s: PCI device %s is taken by instance %s",
				       p->uuid, p->pci[i].address, u->pci_owner[d]);
	}
	for (int i = 0; i < p->n_pci; i++)
		if (p->pci[i].dev >= 0 && p->pci[i].dev < u->n_pci)
			snprintf(u->pci_owner[p->pci[i].dev], UUID_STRLEN, "%s", p->uuid);
	for (int c = 0; c < VMM_MAX_CPUS; c++)
		if (vmm_cpuset_has(&p->claimed, c))
			snprintf(u->cpu_owner[c], UUID_STRLEN, "%s", p->uuid);
	for (int i = 0; i < p->n_cells; i++)
		u->pages[p->cells[i].node][p->page] += cell_pages(&p->cells[i], p->page);
	return 0;
}

void vmm_usage_release(struct vmm_host_usage *u, const struct vmm_placement *p)
{
	for (int c = 0; c < u->n_cpus; c++)
		if (vmm_cpuset_has(&p->claimed, c) && strcmp(u->cpu_owner[c], p->uuid) == 0)
			u->cpu_owner[c][0] = '\0';
	for (int i = 0; i < p->n_pci; i++) {
		int d = p->pci[i].dev;

		if (d >= 0 && d < u->n_pci && strcmp(u->pci_owner[d], p->uuid) == 0)
			u->pci_owner[d][0] = '\0';
	}
	for (int i = 0; i < p->n_cells; i++) {
		const struct vmm_cell *c = &p->cells[i];
		uint64_t n = cell_pages(c, p->page);

		if (c->node < 0 || c->node >= u->n_nodes)
			continue;
		u->pages[c->node][p->page] = u->pages[c->node][p->page] > n
						     ? u->pages[c->node][p->page] - n : 0;
	}
}

/* ---- fitting ---------------------------------------------------------------- */
/* A vCPU slot on a node: the pCPU it runs on and the pCPUs it keeps from others. */
struct slot {
	int cpu;
	struct vmm_cpuset claim;
};

struct fit_ctx {
	const struct vmm_topology *t;
	const struct vmm_host_usage *u;
	struct vmm_policy pol;
	struct model_flavor_hw hw;       /* PCI requests (vmm/pci.c) */
	bool cpu_only;                   /* node_fits ignores the devices */
	struct vmm_cpuset dedicated, shared;
	unsigned pools;
	int vcpus, ncells, per_cell_vcpus;
	long ram_mib, per_cell_mib;
	struct slot *slots;              /* scratch: VMM_MAX_CPUS */
};

/* Is every thread of cpu's core free and dedicated? */
static bool core_free(const struct fit_ctx *f, int cpu)
{
	const struct vmm_cpuset *sib = &f->t->cpus[cpu].siblings;

	for (int c = 0; c < f->t->n_cpus; c++)
		if (vmm_cpuset_has(sib, c) && (!vmm_cpuset_has(&f->dedicated, c) || !cpu_free(f->u, c)))
			return false;
	return true;
}

/* The vCPU slots a node offers under the thread policy, best first. */
static int node_slots(const struct fit_ctx *f, int node)
{
	const struct vmm_topology *t = f->t;
	struct vmm_cpuset avail = t->nodes[node].cpus, done = { { 0 } };
	int n = 0;

	vmm_cpuset_and(&avail, &f->dedicated);
	for (int c = 0; c < t->n_cpus; c++)
		if (vmm_cpuset_has(&avail, c) && !cpu_free(f->u, c))
			vmm_cpuset_clear(&avail, c);

	/* Two passes for prefer: whole free cores first (siblings packed),
	 * then the leftover threads of partly used cores. */
	for (int pass = 0; pass < 2; pass++) {
		for (int c = 0; c < t->n_cpus; c++) {
			const struct vmm_cpuset *sib = &t->cpus[c].siblings;
			bool whole;

			if (!vmm_cpuset_has(&avail, c) || vmm_cpuset_has(&done, c))
				continue;
			whole = core_free(f, c);
			if (pass == 0 && !whole)
				continue;
			switch (f->pol.thread) {
			case VMM_THREAD_PREFER:
				for (int s = 0; s < t->n_cpus; s++) {
					if (!vmm_cpuset_has(sib, s) || !vmm_cpuset_has(&avail, s) ||
					    vmm_cpuset_has(&done, s))
						continue;
					f->slots[n].cpu = s;
					memset(&f->slots[n].claim, 0, sizeof(struct vmm_cpuset));
					vmm_cpuset_set(&f->slots[n].claim, s);
					vmm_cpuset_set(&done, s);
					n++;
				}
				break;
			case VMM_THREAD_ISOLATE:
				if (whole) {
					f->slots[n].cpu = c;
					f->slots[n].claim = *sib;
					n++;
				}
				vmm_cpuset_or(&done, sib);
				break;
			case VMM_THREAD_REQUIRE:
				if (whole) {
					for (int s = 0; s < t->n_cpus; s++) {
						if (!vmm_cpuset_has(sib, s))
							continue;
						f->slots[n].cpu = s;
						f->slots[n].claim = *sib;
						n++;
					}
				}
				vmm_cpuset_or(&done, sib);
				break;
			case VMM_THREAD_POLICY_LAST:
				break;
			}
		}
	}
	return n;
}

/* Pages of size p a node can still give, in MiB. */
static long node_mib(const struct fit_ctx *f, int node, enum vmm_page p)
{
	const struct vmm_pool *pool = &f->t->nodes[node].pool[p];
	uint64_t used = pages_used(f->u, node, p);
	uint64_t avail = pool->total > used ? pool->total - used : 0;

	if (p != VMM_PAGE_4K && pool->free < avail)
		avail = pool->free;
	return (long)(avail * vmm_page_kib[p] / 1024);
}

static int node_shared(const struct fit_ctx *f, int node)
{
	struct vmm_cpuset s = f->t->nodes[node].cpus;

	vmm_cpuset_and(&s, &f->shared);
	return vmm_cpuset_count(&s);
}

/* How many vCPU slots the cell needs on a node (emulator isolate: +1 on the first). */
static int cell_cpu_need(const struct fit_ctx *f, int cell)
{
	return f->per_cell_vcpus + (cell == 0 && f->pol.emu == VMM_EMU_ISOLATE ? 1 : 0);
}

static bool node_fits(const struct fit_ctx *f, int node, int cell, enum vmm_page p)
{
	if (node_mib(f, node, p) < f->per_cell_mib)
		return false;
	/* one cell: a node without the devices its policy wants there is no fit */
	if (!f->cpu_only && f->ncells == 1 && f->hw.n_pci &&
	    f->hw.pci_numa != MODEL_PCI_NUMA_PREFERRED &&
	    !vmm_pci_node_has(f->t, f->u, &f->hw, node))
		return false;
	if (f->pol.cpu == VMM_CPU_DEDICATED)
		return node_slots(f, node) >= cell_cpu_need(f, cell);
	return node_shared(f, node) > 0;
}

static const char *page_words(enum vmm_page p)
{
	switch (p) {
	case VMM_PAGE_4K:
		return "memory";
	case VMM_PAGE_2M:
		return "2MB pages";
	case VMM_PAGE_1G:
		return "1GB pages";
	case VMM_PAGE_LAST:
		break;
	}
	return "?";
}

static const char *slot_words(enum vmm_thread_policy tp)
{
	switch (tp) {
	case VMM_THREAD_PREFER:
		return "free dedicated pCPUs";
	case VMM_THREAD_ISOLATE:
		return "free dedicated cores (hw:cpu_thread_policy=isolate)";
	case VMM_THREAD_REQUIRE:
		return "free dedicated pCPUs on whole free cores (hw:cpu_thread_policy=require)";
	case VMM_THREAD_POLICY_LAST:
		break;
	}
	return "?";
}

/* "no NUMA node has 4 free dedicated pCPUs and 2048 MiB of 2MB pages (node0: ...)" */
static int no_fit(const struct fit_ctx *f, const struct instance_spec *spec, enum vmm_page p)
{
	struct strbuf sb = { 0 };
	int r;

	if (f->ncells == 1)
		sb_printf(&sb, "no NUMA node has ");
	else
		sb_printf(&sb, "no %d NUMA nodes each have ", f->ncells);
	if (f->pol.cpu == VMM_CPU_DEDICATED) {
		sb_printf(&sb, "%d %s", f->per_cell_vcpus, slot_words(f->pol.thread));
		if (f->pol.emu == VMM_EMU_ISOLATE)
			sb_printf(&sb, " (+1 for isolated emulator threads)");
	} else {
		sb_printf(&sb, "a shared pCPU");
	}
	sb_printf(&sb, " and %ld MiB of %s (", f->per_cell_mib, page_words(p));
	for (int i = 0; i < f->t->n_nodes; i++) {
		sb_printf(&sb, "%snode%d: ", i ? "; " : "", f->t->nodes[i].id);
		if (f->pol.cpu == VMM_CPU_DEDICATED)
			sb_printf(&sb, "%d %s, ", node_slots(f, i),
				  f->pol.thread == VMM_THREAD_ISOLATE ? "free cores" : "pCPUs");
		else
			sb_printf(&sb, "%d shared pCPUs, ", node_shared(f, i));
		sb_printf(&sb, "%ld MiB", node_mib(f, i, p));
	}
	sb_printf(&sb, ")");
	r = err_set(-ENOSPC, "instance %s (flavor %s): %s", spec->uuid, spec->flavor.name,
		    sb.buf ? sb.buf : "no fit");
	sb_free(&sb);
	return r;
}

/* Try one page size; on success fill out (cells, pCPUs). */
static int fit_pages(struct fit_ctx *f, enum vmm_page p, struct vmm_placement *out)
{
	int cells[VMM_MAX_CELLS], n = 0;

	for (int node = 0; node < f->t->n_nodes && n < f->ncells; node++)
		if (node_fits(f, node, n, p))
			cells[n++] = node;
	/* emulator isolate needs the +1 on the first cell: a later node may
	 * carry it when the first does not */
	if (n < f->ncells)
		return -ENOSPC;

	out->page = p;
	out->hugepages = p != VMM_PAGE_4K;
	out->n_cells = f->ncells;
	for (int i = 0; i < f->ncells; i++) {
		struct vmm_cell *c = &out->cells[i];

		c->node = cells[i];
		c->node_id = f->t->nodes[cells[i]].id;
		c->first_vcpu = i * f->per_cell_vcpus;
		c->n_vcpus = f->per_cell_vcpus;
		c->mem_mib = f->per_cell_mib;
		if (f->pol.cpu == VMM_CPU_DEDICATED) {
			int ns = node_slots(f, c->node);

			(void)ns;
			for (int v = 0; v < c->n_vcpus; v++) {
				out->pcpu[c->first_vcpu + v] = f->slots[v].cpu;
				vmm_cpuset_or(&out->claimed, &f->slots[v].claim);
			}
			if (i == 0 && f->pol.emu == VMM_EMU_ISOLATE) {
				vmm_cpuset_set(&out->emulator, f->slots[c->n_vcpus].cpu);
				vmm_cpuset_or(&out->claimed, &f->slots[c->n_vcpus].claim);
			}
		} else {
			struct vmm_cpuset s = f->t->nodes[c->node].cpus;

			vmm_cpuset_and(&s, &f->shared);
			vmm_cpuset_or(&out->vcpu_set, &s);
		}
	}
	if (f->pol.cpu == VMM_CPU_DEDICATED) {
		for (int v = 0; v < f->vcpus; v++)
			vmm_cpuset_set(&out->vcpu_set, out->pcpu[v]);
		if (f->pol.emu == VMM_EMU_SHARE)
			out->emulator = vmm_cpuset_empty(&f->shared) ? out->vcpu_set : f->shared;
	} else {
		out->emulator = out->vcpu_set;
	}
	return 0;
}

/* No fit with devices: when the CPUs and memory fit without them, the
 * devices are why (their error, <0); else 1 (the CPU/memory reason). */
static int devices_why(struct fit_ctx *f, const struct instance_spec *spec,
		       const struct vmm_placement *p, const enum vmm_page *order, int n_order)
{
	struct vmm_placement try = *p;
	int r = -ENOSPC;

	f->cpu_only = true;
	for (int i = 0; i < n_order && r < 0; i++)
		r = fit_pages(f, order[i], &try);
	f->cpu_only = false;
	if (r < 0) {
		err_clear();
		return 1;
	}
	r = vmm_pci_fit(f->t, f->u, spec, &f->hw, &try);
	return r < 0 ? r : err_set(-ENOSPC, "instance %s: no fit", spec->uuid);
}

static int fit(const struct vmm_topology *t, const struct vmm_config *cfg,
	       const struct vmm_host_usage *usage, const struct instance_spec *spec,
	       struct vmm_placement *out, struct vmm_placement *p)
{
	struct fit_ctx f = { .t = t, .u = usage };
	struct vmm_placement *try = NULL;
	enum vmm_page order[VMM_PAGE_LAST];
	int n_order = 0, r;
	bool numa;

	r = vmm_policy_from_spec(spec, &f.pol);
	if (r < 0)
		return r;
	r = model_flavor_hw_parse(&spec->flavor, &f.hw);
	if (r < 0)
		return r;
	f.pools = (1u << VMM_PAGE_LAST) - 1;
	f.dedicated = f.shared = t->online;
	if (cfg) {
		f.pools = cfg->hugepage_pools | (1u << VMM_PAGE_4K);
		memset(&f.dedicated, 0, sizeof(f.dedicated));
		if (cfg->cpu_dedicated_set.set)
			f.dedicated = cfg->cpu_dedicated_set.cpus;
		if (cfg->cpu_shared_set.set) {
			f.shared = cfg->cpu_shared_set.cpus;
		} else {
			f.shared = t->online;
			vmm_cpuset_andnot(&f.shared, &f.dedicated);
		}
		vmm_cpuset_and(&f.dedicated, &t->online);
		vmm_cpuset_and(&f.shared, &t->online);
	}
	f.vcpus = (int)spec->flavor.vcpus;
	f.ram_mib = spec->flavor.ram_mb;
	numa = f.pol.cpu == VMM_CPU_DEDICATED || f.pol.page != VMM_PAGE_REQ_NONE ||
	       f.pol.numa_nodes > 0;
	f.ncells = numa ? (f.pol.numa_nodes ? f.pol.numa_nodes : 1) : 0;

	snprintf(p->uuid, sizeof(p->uuid), "%s", spec->uuid);
	p->vcpus = f.vcpus;
	p->ram_mib = f.ram_mib;
	p->pinned = f.pol.cpu == VMM_CPU_DEDICATED;
	p->page = VMM_PAGE_4K;

	if (f.pol.cpu == VMM_CPU_DEDICATED && vmm_cpuset_empty(&f.dedicated))
		return err_set(-ENOSPC, "instance %s (flavor %s): hw:cpu_policy=dedicated but this "
				"host has no cpu_dedicated_set", spec->uuid, spec->flavor.name);
	if (f.pol.cpu == VMM_CPU_SHARED && vmm_cpuset_empty(&f.shared))
		return err_set(-ENOSPC, "instance %s (flavor %s): shared vCPUs but this host has "
				"no cpu_shared_set", spec->uuid, spec->flavor.name);
	if (f.pol.cpu == VMM_CPU_DEDICATED && f.pol.thread == VMM_THREAD_REQUIRE && !t->smt)
		return err_set(-ENOSPC, "instance %s (flavor %s): hw:cpu_thread_policy=require but "
				"this host has no hyperthreads", spec->uuid, spec->flavor.name);
	if (f.vcpus > VMM_MAX_CPUS)
		return err_set(-EINVAL, "flavor %s: %d vCPUs: at most %d", spec->flavor.name,
			       f.vcpus, VMM_MAX_CPUS);
	if (!numa) {
		p->vcpu_set = p->emulator = f.shared;
		r = vmm_pci_fit(t, usage, spec, &f.hw, p);
		if (r < 0)
			return r;
		*out = *p;
		return 0;
	}
	if (f.ncells > t->n_nodes)
		return err_set(-ENOSPC, "instance %s (flavor %s): hw:numa_nodes=%d but this host "
				"has %d NUMA node%s", spec->uuid, spec->flavor.name, f.ncells,
			       t->n_nodes, t->n_nodes == 1 ? "" : "s");
	if (f.vcpus % f.ncells || f.ram_mib % f.ncells)
		return err_set(-EINVAL, "flavor %s: %d vCPUs and %ld MiB do not split evenly over "
				"hw:numa_nodes=%d", spec->flavor.name, f.vcpus, f.ram_mib,
			       f.ncells);
	f.per_cell_vcpus = f.vcpus / f.ncells;
	f.per_cell_mib = f.ram_mib / f.ncells;

	switch (f.pol.page) {
	case VMM_PAGE_REQ_NONE:
	case VMM_PAGE_REQ_SMALL:
		order[n_order++] = VMM_PAGE_4K;
		break;
	case VMM_PAGE_REQ_2MB:
		order[n_order++] = VMM_PAGE_2M;
		break;
	case VMM_PAGE_REQ_1GB:
		order[n_order++] = VMM_PAGE_1G;
		break;
	case VMM_PAGE_REQ_LARGE:
	case VMM_PAGE_REQ_ANY:
		order[n_order++] = VMM_PAGE_1G;
		order[n_order++] = VMM_PAGE_2M;
		if (f.pol.page == VMM_PAGE_REQ_ANY)
			order[n_order++] = VMM_PAGE_4K;
		break;
	case VMM_PAGE_REQ_LAST:
		break;
	}
	/* drop sizes the host does not offer or that do not divide the memory */
	{
		int k = 0;
		enum vmm_page explicit_page = order[0];

		for (int i = 0; i < n_order; i++) {
			enum vmm_page pg = order[i];

			if (!(f.pools & (1u << pg)))
				continue;
			if ((uint64_t)f.per_cell_mib * 1024 % vmm_page_kib[pg])
				continue;
			order[k++] = pg;
		}
		if (k == 0) {
			if (n_order == 1 && !(f.pools & (1u << explicit_page)))
				return err_set(-ENOSPC, "instance %s (flavor %s): hw:mem_page_size=%s but "
						"the %s pool is not in vmm.hugepage_pools",
					       spec->uuid, spec->flavor.name,
					       model_page_req_names[f.pol.page], vmm_page_names[explicit_page]);
			return err_set(-EINVAL, "flavor %s: %ld MiB per NUMA node is not a multiple "
					"of the page size hw:mem_page_size=%s asks for",
				       spec->flavor.name, f.per_cell_mib, model_page_req_names[f.pol.page]);
		}
		n_order = k;
	}

	f.slots = calloc(VMM_MAX_CPUS + 1, sizeof(*f.slots));
	try = malloc(sizeof(*try));
	if (p->pinned)
		p->pcpu = calloc((size_t)f.vcpus, sizeof(*p->pcpu));
	if (!f.slots || !try || (p->pinned && !p->pcpu)) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	r = -ENOSPC;
	for (int i = 0; i < n_order && r < 0; i++) {
		*try = *p;
		r = fit_pages(&f, order[i], try);
		if (r == 0)
			*p = *try;
	}
	if (r < 0 && f.hw.n_pci && devices_why(&f, spec, p, order, n_order) < 0)
		goto out; /* r: -ENOSPC, the devices' reason */
	if (r < 0) {
		r = no_fit(&f, spec, order[n_order - 1]);
		goto out;
	}
	r = vmm_pci_fit(t, usage, spec, &f.hw, p);
	if (r < 0)
		goto out;
	*out = *p;
	p->pcpu = NULL;
out:
	free(try);
	free(p->pcpu);
	free(f.slots);
	return r;
}

/* The placements live on the heap: two of them and the context overflow the
 * frame limit (-Wframe-larger-than, under the sanitizers). */
int vmm_fit(const struct vmm_topology *t, const struct vmm_config *cfg,
	    const struct vmm_host_usage *usage, const struct instance_spec *spec,
	    struct vmm_placement *out)
{
	struct vmm_placement *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return err_set(-ENOMEM, "out of memory");
	r = fit(t, cfg, usage, spec, out, p);
	free(p);
	return r;
}

void vmm_placement_free(struct vmm_placement *p)
{
	if (!p)
		return;
	free(p->pcpu);
	p->pcpu = NULL;
}

static json_t *set_json(const struct vmm_cpuset *s)
{
	char *f = vmm_cpuset_format(s);
	json_t *j = f ? json_string(f) : NULL;

	free(f);
	return j;
}

json_t *vmm_placement_to_json(const struct vmm_placement *p, const struct vmm_topology *t)
{
	json_t *j = json_object(), *pcpus = json_array(), *cells = json_array();

	if (!j || !pcpus || !cells) {
		json_decref(j);
		json_decref(pcpus);
		json_decref(cells);
		return NULL;
	}
	json_object_set_new(j, "uuid", json_string(p->uuid));
	json_object_set_new(j, "vcpus", json_integer(p->vcpus));
	json_object_set_new(j, "ram_mib", json_integer(p->ram_mib));
	json_object_set_new(j, "pinned", json_boolean(p->pinned));
	for (int v = 0; p->pinned && v < p->vcpus; v++)
		json_array_append_new(pcpus, json_integer(p->pcpu[v]));
	json_object_set_new(j, "pcpus", pcpus);
	json_object_set_new(j, "vcpu_set", set_json(&p->vcpu_set));
	json_object_set_new(j, "emulator", set_json(&p->emulator));
	json_object_set_new(j, "claimed", set_json(&p->claimed));
	json_object_set_new(j, "page", json_string(vmm_page_names[p->page]));
	for (int i = 0; i < p->n_cells; i++) {
		const struct vmm_cell *c = &p->cells[i];

		json_array_append_new(cells, json_pack("{si si si sI}", "node", t->nodes[c->node].id,
						       "first_vcpu", c->first_vcpu, "vcpus",
						       c->n_vcpus, "mem_mib", (json_int_t)c->mem_mib));
	}
	json_object_set_new(j, "cells", cells);
	if (p->n_pci)
		json_object_set_new(j, "pci", vmm_pci_picks_json(p));
	return j;
}

static int json_set(json_t *j, const char *key, struct vmm_cpuset *out)
{
	const char *s = json_string_value(json_object_get(j, key));

	if (!s)
		return err_set(-EINVAL, "placement: %s: expected a CPU list", key);
	return vmm_cpuset_parse(s, out) < 0 ? err_prefix(-EINVAL, "placement: %s", key) : 0;
}

int vmm_placement_from_json(json_t *j, const struct vmm_topology *t, struct vmm_placement *out)
{
	struct vmm_placement p = { 0 };
	json_t *pcpus, *cells, *v;
	const char *s, *page;
	size_t i;
	int r = -EINVAL;

	s = json_string_value(json_object_get(j, "uuid"));
	page = json_string_value(json_object_get(j, "page"));
	pcpus = json_object_get(j, "pcpus");
	cells = json_object_get(j, "cells");
	if (!s || !page || !json_is_array(pcpus) || !json_is_array(cells) ||
	    json_array_size(cells) > VMM_MAX_CELLS)
		return err_set(-EINVAL, "placement: expected uuid, page, pcpus and cells");
	snprintf(p.uuid, sizeof(p.uuid), "%s", s);
	p.vcpus = (int)json_integer_value(json_object_get(j, "vcpus"));
	p.ram_mib = (long)json_integer_value(json_object_get(j, "ram_mib"));
	p.pinned = json_is_true(json_object_get(j, "pinned"));
	if (p.vcpus < 1 || p.vcpus > VMM_MAX_CPUS)
		return err_set(-EINVAL, "placement %s: bad vcpus", p.uuid);
	p.page = VMM_PAGE_LAST;
	for (int k = 0; k < VMM_PAGE_LAST; k++)
		if (strcmp(page, vmm_page_names[k]) == 0)
			p.page = (enum vmm_page)k;
	if (p.page == VMM_PAGE_LAST)
		return err_set(-EINVAL, "placement %s: bad page size '%s'", p.uuid, page);
	p.hugepages = p.page != VMM_PAGE_4K;
	if ((r = json_set(j, "vcpu_set", &p.vcpu_set)) < 0 ||
	    (r = json_set(j, "emulator", &p.emulator)) < 0 ||
	    (r = json_set(j, "claimed", &p.claimed)) < 0)
		return r;
	if (p.pinned) {
		if (json_array_size(pcpus) != (size_t)p.vcpus)
			return err_set(-EINVAL, "placement %s: pcpus does not have one entry per vCPU",
				       p.uuid);
		p.pcpu = calloc((size_t)p.vcpus, sizeof(*p.pcpu));
		if (!p.pcpu)
			return err_set(-ENOMEM, "out of memory");
		json_array_foreach(pcpus, i, v)
			p.pcpu[i] = (int)json_integer_value(v);
	}
	json_array_foreach(cells, i, v) {
		struct vmm_cell *c = &p.cells[i];
		int id = (int)json_integer_value(json_object_get(v, "node"));

		c->node = -1;
		for (int n = 0; n < t->n_nodes; n++)
			if (t->nodes[n].id == id)
				c->node = n;
		c->node_id = id;
		if (c->node < 0) {
			free(p.pcpu);
			return err_set(-EINVAL, "placement %s: NUMA node %d is not on this host",
				       p.uuid, id);
		}
		c->first_vcpu = (int)json_integer_value(json_object_get(v, "first_vcpu"));
		c->n_vcpus = (int)json_integer_value(json_object_get(v, "vcpus"));
		c->mem_mib = (long)json_integer_value(json_object_get(v, "mem_mib"));
	}
	p.n_cells = (int)json_array_size(cells);
	r = vmm_pci_picks_from_json(json_object_get(j, "pci"), t, &p);
	if (r < 0) {
		free(p.pcpu);
		return r;
	}
	*out = p;
	return 0;
}
