/* Host topology from sysfs: CPUs, hyperthread siblings, NUMA nodes, hugepages. */
#define LOG_TAG "vmm"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmm/vmm_priv.h"

const char *const vmm_page_names[] = {
	[VMM_PAGE_4K] = "4K", [VMM_PAGE_2M] = "2M", [VMM_PAGE_1G] = "1G", [VMM_PAGE_LAST] = NULL,
};
const uint64_t vmm_page_kib[] = {
	[VMM_PAGE_4K] = 4, [VMM_PAGE_2M] = 2048, [VMM_PAGE_1G] = 1048576, [VMM_PAGE_LAST] = 0,
};

#define SYSFS_FILE_MAX (64 * 1024)

/* Read ROOT/REL (printf-style) into a malloc'd string. -ENOENT when absent. */
static int read_sys(char **out, const char *root, const char *fmt, ...) PRINTF_LIKE(3, 4);

static int read_sys(char **out, const char *root, const char *fmt, ...)
{
	_cleanup_free_ char *rel = NULL, *path = NULL;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&rel, fmt, ap);
	va_end(ap);
	if (r < 0)
		return err_set(-ENOMEM, "out of memory");
	if (asprintf(&path, "%s/%s", root, rel) < 0) {
		path = NULL;
		return err_set(-ENOMEM, "out of memory");
	}
	r = read_file(path, SYSFS_FILE_MAX, out, NULL);
	if (r < 0)
		return err_sys(r, "%s", path);
	return 0;
}

static int read_cpuset(const char *root, const char *rel, struct vmm_cpuset *out)
{
	_cleanup_free_ char *s = NULL;
	int r = read_sys(&s, root, "%s", rel);

	if (r < 0)
		return r;
	r = vmm_cpuset_parse(s, out);
	return r < 0 ? err_prefix(r, "%s/%s", root, rel) : 0;
}

/* An unsigned number in the one-line file ROOT/REL; -ENOENT when absent. */
static int read_u64(const char *root, uint64_t *out, const char *fmt, ...) PRINTF_LIKE(3, 4);

static int read_u64(const char *root, uint64_t *out, const char *fmt, ...)
{
	_cleanup_free_ char *rel = NULL, *s = NULL;
	va_list ap;
	long v;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&rel, fmt, ap);
	va_end(ap);
	if (r < 0) {
		rel = NULL;
		return err_set(-ENOMEM, "out of memory");
	}
	r = read_sys(&s, root, "%s", rel);
	if (r < 0)
		return r;
	s[strcspn(s, "\n")] = '\0';
	r = parse_long(s, 0, INT64_MAX, &v);
	if (r < 0)
		return err_set(r, "%s/%s: expected a number, got '%.40s'", root, rel, s);
	*out = (uint64_t)v;
	return 0;
}

/* "Node 0 MemTotal:  4942028 kB" lines (also plain /proc/meminfo lines). */
uint64_t vmm_meminfo_kib(const char *text, const char *key)
{
	size_t kl = strlen(key);

	for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		const char *p = line;

		if (strncmp(p, "Node ", 5) == 0) {
			p += 5;
			while (*p >= '0' && *p <= '9')
				p++;
			while (*p == ' ')
				p++;
		}
		if (strncmp(p, key, kl) == 0 && p[kl] == ':')
			return strtoull(p + kl + 1, NULL, 10);
	}
	return 0;
}

static const char *const huge_dirs[] = {
	[VMM_PAGE_4K] = NULL,
	[VMM_PAGE_2M] = "hugepages-2048kB",
	[VMM_PAGE_1G] = "hugepages-1048576kB",
	[VMM_PAGE_LAST] = NULL,
};

static int load_node(const char *root, int id, const struct vmm_cpuset *online, struct vmm_node *n)
{
	_cleanup_free_ char *cpulist = NULL, *meminfo = NULL;
	uint64_t huge_kib = 0;
	int r;

	n->id = id;
	r = read_sys(&cpulist, root, "devices/system/node/node%d/cpulist", id);
	if (r < 0)
		return r;
	r = vmm_cpuset_parse(cpulist, &n->cpus);
	if (r < 0)
		return err_prefix(r, "%s/devices/system/node/node%d/cpulist", root, id);
	vmm_cpuset_and(&n->cpus, online);
	r = read_sys(&meminfo, root, "devices/system/node/node%d/meminfo", id);
	if (r < 0)
		return r;
	n->mem_total_kib = vmm_meminfo_kib(meminfo, "MemTotal");
	n->mem_free_kib = vmm_meminfo_kib(meminfo, "MemFree");
	for (int p = VMM_PAGE_2M; p < VMM_PAGE_LAST; p++) {
		r = read_u64(root, &n->pool[p].total, "devices/system/node/node%d/hugepages/%s/nr_hugepages",
			     id, huge_dirs[p]);
		if (r == -ENOENT) {
			err_clear();
			continue;
		}
		if (r < 0)
			return r;
		r = read_u64(root, &n->pool[p].free,
			     "devices/system/node/node%d/hugepages/%s/free_hugepages", id, huge_dirs[p]);
		if (r < 0)
			return r;
		huge_kib += n->pool[p].total * vmm_page_kib[p];
	}
	n->pool[VMM_PAGE_4K].total =
		n->mem_total_kib > huge_kib ? (n->mem_total_kib - huge_kib) / 4 : 0;
	n->pool[VMM_PAGE_4K].free = n->mem_free_kib / 4;
	return 0;
}

/* A kernel without NUMA: one node 0 with every CPU, memory from /proc. */
static int load_flat_node(const char *root, const struct vmm_cpuset *online, struct vmm_node *n)
{
	_cleanup_free_ char *meminfo = NULL;
	uint64_t huge_kib = 0;
	int r;

	n->id = 0;
	n->cpus = *online;
	r = read_file("/proc/meminfo", SYSFS_FILE_MAX, &meminfo, NULL);
	if (r < 0)
		return err_sys(r, "/proc/meminfo");
	n->mem_total_kib = vmm_meminfo_kib(meminfo, "MemTotal");
	n->mem_free_kib = vmm_meminfo_kib(meminfo, "MemFree");
	for (int p = VMM_PAGE_2M; p < VMM_PAGE_LAST; p++) {
		r = read_u64(root, &n->pool[p].total, "kernel/mm/hugepages/%s/nr_hugepages", huge_dirs[p]);
		if (r < 0) {
			err_clear();
			continue;
		}
		r = read_u64(root, &n->pool[p].free, "kernel/mm/hugepages/%s/free_hugepages", huge_dirs[p]);
		if (r < 0)
			return r;
		huge_kib += n->pool[p].total * vmm_page_kib[p];
	}
	n->pool[VMM_PAGE_4K].total =
		n->mem_total_kib > huge_kib ? (n->mem_total_kib - huge_kib) / 4 : 0;
	n->pool[VMM_PAGE_4K].free = n->mem_free_kib / 4;
	return 0;
}

static int load_cpu(const char *root, int id, struct vmm_cpu *c)
{
	_cleanup_free_ char *rel = NULL;
	uint64_t v;
	int r;

	c->online = true;
	c->socket = 0;
	c->core = id;
	vmm_cpuset_set(&c->siblings, id);
	r = read_u64(root, &v, "devices/system/cpu/cpu%d/topology/%s", id, "physical_package_id");
	if (r == 0)
		c->socket = (int)v;
	else if (r != -ENOENT)
		return r;
	r = read_u64(root, &v, "devices/system/cpu/cpu%d/topology/%s", id, "core_id");
	if (r == 0)
		c->core = (int)v;
	else if (r != -ENOENT)
		return r;
	if (asprintf(&rel, "devices/system/cpu/cpu%d/topology/thread_siblings_list", id) < 0) {
		rel = NULL;
		return err_set(-ENOMEM, "out of memory");
	}
	r = read_cpuset(root, rel, &c->siblings);
	if (r == -ENOENT) {
		vmm_cpuset_set(&c->siblings, id);
		r = 0;
	}
	if (r < 0)
		return r;
	vmm_cpuset_set(&c->siblings, id);
	err_clear();
	return 0;
}

int vmm_topology_load(const char *sysfs_root, struct vmm_topology **out)
{
	const char *root = sysfs_root ? sysfs_root : "/sys";
	struct vmm_topology *t = calloc(1, sizeof(*t));
	struct vmm_cpuset nodes;
	_cleanup_free_ char *nodes_s = NULL;
	int r;

	if (!t)
		return err_set(-ENOMEM, "out of memory");
	r = read_cpuset(root, "devices/system/cpu/online", &t->online);
	if (r < 0)
		goto fail;
	for (int c = 0; c < VMM_MAX_CPUS; c++)
		if (vmm_cpuset_has(&t->online, c))
			t->n_cpus = c + 1;
	if (t->n_cpus == 0) {
		r = err_set(-ENODEV, "%s: no online CPUs", root);
		goto fail;
	}
	t->cpus = calloc((size_t)t->n_cpus, sizeof(*t->cpus));
	if (!t->cpus) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	for (int c = 0; c < t->n_cpus; c++) {
		if (!vmm_cpuset_has(&t->online, c))
			continue;
		r = load_cpu(root, c, &t->cpus[c]);
		if (r < 0)
			goto fail;
		vmm_cpuset_and(&t->cpus[c].siblings, &t->online);
		if (vmm_cpuset_count(&t->cpus[c].siblings) > 1)
			t->smt = true;
	}

	r = read_sys(&nodes_s, root, "devices/system/node/online");
	if (r == 0) {
		r = vmm_cpuset_parse(nodes_s, &nodes);
		if (r < 0) {
			err_prefix(r, "%s/devices/system/node/online", root);
			goto fail;
		}
		t->n_nodes = vmm_cpuset_count(&nodes);
	} else if (r == -ENOENT) {
		err_clear();
		t->n_nodes = 0;
	} else {
		goto fail;
	}
	t->nodes = calloc(t->n_nodes ? (size_t)t->n_nodes : 1, sizeof(*t->nodes));
	if (!t->nodes) {
		r = err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	if (t->n_nodes == 0) {
		t->n_nodes = 1;
		r = load_flat_node(root, &t->online, &t->nodes[0]);
		if (r < 0)
			goto fail;
	} else {
		int i = 0;

		for (int id = 0; id < VMM_MAX_CPUS; id++) {
			if (!vmm_cpuset_has(&nodes, id))
				continue;
			r = load_node(root, id, &t->online, &t->nodes[i++]);
			if (r < 0)
				goto fail;
		}
	}
	for (int c = 0; c < t->n_cpus; c++)
		for (int i = 0; i < t->n_nodes; i++)
			if (vmm_cpuset_has(&t->nodes[i].cpus, c))
				t->cpus[c].node = i;
	vmm_cpu_load_nested(root, t);
	*out = t;
	return 0;
fail:
	vmm_topology_free(t);
	return r;
}

void vmm_topology_free(struct vmm_topology *t)
{
	if (!t)
		return;
	free(t->cpus);
	free(t->nodes);
	free(t->pci);
	free(t);
}

static json_t *cpuset_json(const struct vmm_cpuset *s)
{
	char *f = vmm_cpuset_format(s);
	json_t *j = f ? json_string(f) : NULL;

	free(f);
	return j;
}

json_t *vmm_topology_to_json(const struct vmm_topology *t)
{
	json_t *root = json_object(), *nodes = json_array(), *cpus = json_array();

	if (!root || !nodes || !cpus)
		goto fail;
	json_object_set_new(root, "cpus_online", cpuset_json(&t->online));
	json_object_set_new(root, "smt", json_boolean(t->smt));
	for (int i = 0; i < t->n_nodes; i++) {
		const struct vmm_node *n = &t->nodes[i];
		json_t *jn = json_object(), *hp = json_object();

		if (!jn || !hp) {
			json_decref(jn);
			json_decref(hp);
			goto fail;
		}
		json_object_set_new(jn, "id", json_integer(n->id));
		json_object_set_new(jn, "cpus", cpuset_json(&n->cpus));
		json_object_set_new(jn, "memory_mib", json_integer((json_int_t)(n->mem_total_kib / 1024)));
		json_object_set_new(jn, "memory_free_mib",
				    json_integer((json_int_t)(n->mem_free_kib / 1024)));
		for (int p = VMM_PAGE_2M; p < VMM_PAGE_LAST; p++) {
			json_object_set_new(hp, vmm_page_names[p],
					    json_pack("{sI sI}", "total", (json_int_t)n->pool[p].total,
						      "free", (json_int_t)n->pool[p].free));
		}
		json_object_set_new(jn, "hugepages", hp);
		json_array_append_new(nodes, jn);
	}
	for (int c = 0; c < t->n_cpus; c++) {
		const struct vmm_cpu *cp = &t->cpus[c];

		if (!cp->online)
			continue;
		json_array_append_new(cpus, json_pack("{si si si si so}", "id", c, "node",
						      t->nodes[cp->node].id, "socket", cp->socket,
						      "core", cp->core, "siblings",
						      cpuset_json(&cp->siblings)));
	}
	json_object_set_new(root, "nodes", nodes);
	json_object_set_new(root, "cpus", cpus);
	json_object_set_new(root, "nested_virtualization",
			    json_pack("{s:b, s:b}", "vmx", t->nested_vmx, "svm", t->nested_svm));
	if (t->pci)
		json_object_set_new(root, "pci_devices", vmm_pci_to_json(t, NULL));
	return root;
fail:
	json_decref(root);
	json_decref(nodes);
	json_decref(cpus);
	return NULL;
}
