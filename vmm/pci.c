/*
 * PCI passthrough (VFIO), as Nova does it:
 *   - the operator declares devices by alias in vmm.pci_alias, by vendor
 *     and product id or by address;
 *   - the scan reads ROOT/bus/pci/devices/<address>/{vendor,device,
 *     numa_node,iommu_group,driver} and ROOT/kernel/iommu_groups/<n>/devices:
 *     a device is usable only when its IOMMU group is whole, i.e. every
 *     other device of the group is declared too or bound to vfio-pci (VFIO
 *     hands a guest whole groups, and a host driver on a group member
 *     would share DMA with the guest);
 *   - the fit picks free usable devices per pci_passthrough:alias request
 *     on the guest's NUMA nodes as hw:pci_numa_affinity_policy says.
 */
#define LOG_TAG "vmm"
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/vmm_priv.h"

#define SYS_SMALL 4096

/* ---- aliases ---------------------------------------------------------------- */

int vmm_pci_address_parse(const char *s, char out[VMM_PCI_ADDR_LEN])
{
	unsigned dom = 0, bus, slot, fn;
	char tail;

	if (sscanf(s, "%4x:%2x:%2x.%1x%c", &dom, &bus, &slot, &fn, &tail) == 4) {
		if (strlen(s) != 12)
			return -EINVAL;
	} else if (sscanf(s, "%2x:%2x.%1x%c", &bus, &slot, &fn, &tail) == 3) {
		if (strlen(s) != 7)
			return -EINVAL;
		dom = 0;
	} else {
		return -EINVAL;
	}
	if (slot > 0x1f || fn > 7)
		return -EINVAL;
	snprintf(out, VMM_PCI_ADDR_LEN, "%04x:%02x:%02x.%x", dom, bus, slot, fn);
	return 0;
}

static int hex_id(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	if (!isxdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 16);
	if (errno || *end || v > 0xffff || strlen(s) > 6)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int vmm_pci_alias_parse(const char *name, const char *text, struct vmm_pci_alias *out)
{
	struct vmm_pci_alias a = { .any_product = true };
	_cleanup_free_ char *copy = strdup(text);
	char *save = NULL;
	bool vendor = false, product = false;

	if (!copy)
		return err_set(-ENOMEM, "out of memory");
	if (!model_alias_valid(name))
		return err_set(-EINVAL, "vmm.pci_alias: invalid alias name '%.64s' (accepted: 1 to 31 "
			       "of A-Z a-z 0-9 _ -)", name);
	snprintf(a.name, sizeof(a.name), "%s", name);
	for (char *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(w, '=');
		const char *v = eq ? eq + 1 : "";

		if (eq)
			*eq = '\0';
		if (strcmp(w, "vendor_id") == 0 && hex_id(v, &a.vendor) == 0) {
			vendor = true;
		} else if (strcmp(w, "product_id") == 0 && hex_id(v, &a.product) == 0) {
			product = true;
			a.any_product = false;
		} else if (strcmp(w, "address") == 0 && vmm_pci_address_parse(v, a.address) == 0) {
			a.by_address = true;
		} else {
			return err_set(-EINVAL, "vmm.pci_alias.%s: invalid '%s%s%.64s' (accepted: "
				       "vendor_id=HEX [product_id=HEX], or address=DDDD:BB:SS.F)",
				       name, w, eq ? "=" : "", v);
		}
	}
	if (a.by_address == vendor || (product && !vendor))
		return err_set(-EINVAL, "vmm.pci_alias.%s: expected vendor_id=HEX [product_id=HEX] "
			       "or address=DDDD:BB:SS.F, got '%.128s'", name, text);
	*out = a;
	return 0;
}

static bool alias_matches(const struct vmm_pci_alias *a, const char *addr, unsigned vendor,
			  unsigned product)
{
	if (a->by_address)
		return strcmp(a->address, addr) == 0;
	return a->vendor == vendor && (a->any_product || a->product == product);
}

/* ---- sysfs ------------------------------------------------------------------ */

static int read_hex(const char *root, const char *addr, const char *file, unsigned *out)
{
	_cleanup_free_ char *path = NULL, *s = NULL;
	int r;

	if (asprintf(&path, "%s/bus/pci/devices/%s/%s", root, addr, file) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	r = read_file(path, SYS_SMALL, &s, NULL);
	if (r < 0) {
		err_clear();
		return r;
	}
	s[strcspn(s, "\n")] = '\0';
	return hex_id(strncmp(s, "0x", 2) == 0 ? s + 2 : s, out);
}

/* The last path element of the symlink ROOT/bus/pci/devices/ADDR/LINK, "" if none. */
static void link_base(const char *root, const char *addr, const char *link, char *out, size_t n)
{
	_cleanup_free_ char *path = NULL;
	char target[512];
	ssize_t len;
	const char *slash, *base;

	out[0] = '\0';
	if (asprintf(&path, "%s/bus/pci/devices/%s/%s", root, addr, link) < 0) {
		path = NULL;
		return;
	}
	len = readlink(path, target, sizeof(target) - 1);
	if (len <= 0)
		return;
	target[len] = '\0';
	slash = strrchr(target, '/');
	base = slash ? slash + 1 : target;
	if (strlen(base) < n)
		memcpy(out, base, strlen(base) + 1);
}

static int numa_node_of(const char *root, const char *addr)
{
	_cleanup_free_ char *path = NULL, *s = NULL;
	long v;

	if (asprintf(&path, "%s/bus/pci/devices/%s/numa_node", root, addr) < 0) {
		path = NULL;
		return -1;
	}
	if (read_file(path, SYS_SMALL, &s, NULL) < 0) {
		err_clear();
		return -1;
	}
	s[strcspn(s, "\n")] = '\0';
	return parse_long(s, -1, VMM_MAX_CPUS, &v) < 0 ? -1 : (int)v;
}

struct scan {
	const char *root;
	struct vmm_pci_alias *aliases;
	size_t n_aliases;
};

/* The alias that declares the device at ADDR, or NULL. */
static const struct vmm_pci_alias *declared(const struct scan *s, const char *addr)
{
	unsigned vendor = 0, product = 0;
	bool ids = read_hex(s->root, addr, "vendor", &vendor) == 0 &&
		   read_hex(s->root, addr, "device", &product) == 0;

	for (size_t i = 0; i < s->n_aliases; i++) {
		if (s->aliases[i].by_address ? alias_matches(&s->aliases[i], addr, 0, 0)
					     : ids && alias_matches(&s->aliases[i], addr, vendor, product))
			return &s->aliases[i];
	}
	return NULL;
}

/* Usable when every other member of the device's IOMMU group is declared
 * or bound to vfio-pci; else d->reason. */
static void check_group(const struct scan *s, struct vmm_pci_dev *d)
{
	_cleanup_free_ char *dir = NULL;
	DIR *dh;
	struct dirent *e;

	d->usable = false;
	if (d->iommu_group < 0) {
		snprintf(d->reason, sizeof(d->reason), "no IOMMU group (the IOMMU is off or absent: a "
			 "VT-d/AMD-Vi host boots with intel_iommu=on or amd_iommu=on)");
		return;
	}
	if (asprintf(&dir, "%s/kernel/iommu_groups/%d/devices", s->root, d->iommu_group) < 0) {
		dir = NULL;
		snprintf(d->reason, sizeof(d->reason), "out of memory");
		return;
	}
	dh = opendir(dir);
	if (!dh) {
		snprintf(d->reason, sizeof(d->reason), "IOMMU group %d: cannot list %s: %s",
			 d->iommu_group, dir, strerror(errno));
		return;
	}
	d->usable = true;
	while ((e = readdir(dh))) {
		char drv[32];

		if (e->d_name[0] == '.' || strcmp(e->d_name, d->address) == 0)
			continue;
		if (declared(s, e->d_name))
			continue;
		link_base(s->root, e->d_name, "driver", drv, sizeof(drv));
		if (strcmp(drv, "vfio-pci") == 0)
			continue;
		d->usable = false;
		snprintf(d->reason, sizeof(d->reason), "IOMMU group %d is not whole: it also holds "
			 "%.16s (driver %s), which is neither in vmm.pci_alias nor bound to vfio-pci",
			 d->iommu_group, e->d_name, drv[0] ? drv : "none");
		break;
	}
	closedir(dh);
}

static int dev_cmp(const void *a, const void *b)
{
	return strcmp(((const struct vmm_pci_dev *)a)->address,
		      ((const struct vmm_pci_dev *)b)->address);
}

/* Append the device at ADDR if an alias declares it. */
static int scan_one(const struct scan *s, const char *addr, const struct vmm_topology *t,
		    struct vmm_pci_dev **devs, int *n)
{
	const struct vmm_pci_alias *a = declared(s, addr);
	struct vmm_pci_dev d = { .node = -1, .iommu_group = -1 };
	struct vmm_pci_dev *nd;
	char group[32];
	long g;

	if (!a || strlen(addr) >= sizeof(d.address))
		return 0;
	if (*n >= 4096)
		return err_set(-E2BIG, "vmm.pci_alias: more than 4096 devices declared");
	memcpy(d.address, addr, strlen(addr) + 1);
	snprintf(d.alias, sizeof(d.alias), "%s", a->name);
	if (read_hex(s->root, addr, "vendor", &d.vendor) < 0 ||
	    read_hex(s->root, addr, "device", &d.product) < 0)
		return err_set(-EINVAL, "PCI device %s: cannot read %s/bus/pci/devices/%s/vendor and "
			       "device", addr, s->root, addr);
	d.node_id = numa_node_of(s->root, addr);
	for (int i = 0; d.node_id >= 0 && i < t->n_nodes; i++)
		if (t->nodes[i].id == d.node_id)
			d.node = i;
	link_base(s->root, addr, "iommu_group", group, sizeof(group));
	if (group[0] && parse_long(group, 0, INT_MAX, &g) == 0)
		d.iommu_group = (int)g;
	link_base(s->root, addr, "driver", d.driver, sizeof(d.driver));
	check_group(s, &d);
	nd = realloc(*devs, (size_t)(*n + 1) * sizeof(*nd));
	if (!nd)
		return err_set(-ENOMEM, "out of memory");
	nd[(*n)++] = d;
	*devs = nd;
	return 0;
}

int vmm_pci_scan(const char *sysfs_root, const struct vmm_config *cfg, struct vmm_topology *t)
{
	struct scan s = { .root = sysfs_root ? sysfs_root : "/sys" };
	_cleanup_free_ char *dir = NULL;
	struct vmm_pci_dev *devs = NULL;
	DIR *dh = NULL;
	struct dirent *e;
	int n = 0, r = 0;

	s.n_aliases = cfg ? cfg->pci_alias.n : 0;
	if (s.n_aliases) {
		s.aliases = calloc(s.n_aliases, sizeof(*s.aliases));
		if (!s.aliases)
			return err_set(-ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < s.n_aliases; i++)
		if ((r = vmm_pci_alias_parse(cfg->pci_alias.keys[i], cfg->pci_alias.vals[i],
					     &s.aliases[i])) < 0)
			goto out;
	if (s.n_aliases) {
		if (asprintf(&dir, "%s/bus/pci/devices", s.root) < 0) {
			dir = NULL;
			r = err_set(-ENOMEM, "out of memory");
			goto out;
		}
		dh = opendir(dir);
		if (!dh) {
			r = err_sys(-errno, "vmm.pci_alias: %s", dir);
			goto out;
		}
		while ((e = readdir(dh)) && r == 0)
			if (e->d_name[0] != '.')
				r = scan_one(&s, e->d_name, t, &devs, &n);
		if (r < 0)
			goto out;
		if (n)
			qsort(devs, (size_t)n, sizeof(*devs), dev_cmp);
	}
	free(t->pci);
	t->pci = devs;
	t->n_pci = n;
	devs = NULL;
out:
	if (dh)
		closedir(dh);
	free(devs);
	free(s.aliases);
	return r;
}

json_t *vmm_pci_to_json(const struct vmm_topology *t, const struct vmm_host_usage *u)
{
	json_t *a = json_array();

	for (int i = 0; a && i < t->n_pci; i++) {
		const struct vmm_pci_dev *d = &t->pci[i];
		char vendor[8], product[8];
		json_t *o;

		snprintf(vendor, sizeof(vendor), "%04x", d->vendor);
		snprintf(product, sizeof(product), "%04x", d->product);
		o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:b}", "address", d->address,
			      "alias", d->alias, "vendor_id", vendor, "product_id", product,
			      "numa_node", d->node_id, "iommu_group", d->iommu_group, "driver",
			      d->driver, "usable", d->usable);
		if (!o)
			continue;
		if (!d->usable)
			json_object_set_new(o, "reason", json_string(d->reason));
		if (u && i < u->n_pci && u->pci_owner[i][0])
			json_object_set_new(o, "instance", json_string(u->pci_owner[i]));
		json_array_append_new(a, o);
	}
	return a;
}

/* ---- fitting ----------------------------------------------------------------- */

static bool dev_free(const struct vmm_host_usage *u, int i)
{
	return !u || i >= u->n_pci || u->pci_owner[i][0] == '\0';
}

static bool in_cells(const struct vmm_placement *p, int node)
{
	for (int i = 0; i < p->n_cells; i++)
		if (p->cells[i].node == node)
			return true;
	return false;
}

static bool picked(const struct vmm_placement *p, int dev)
{
	for (int i = 0; i < p->n_pci; i++)
		if (p->pci[i].dev == dev)
			return true;
	return false;
}

/* May device d go to a guest on p's nodes: 0 on a cell's node (or the
 * guest has no NUMA topology), 1 elsewhere but allowed, -1 not at all. */
static int affinity(const struct vmm_pci_dev *d, const struct vmm_placement *p,
		    enum model_pci_numa pol)
{
	if (p->n_cells == 0 || (d->node >= 0 && in_cells(p, d->node)))
		return 0;
	switch (pol) {
	case MODEL_PCI_NUMA_REQUIRED:
		return -1;
	case MODEL_PCI_NUMA_LEGACY:
		return d->node < 0 ? 0 : -1; /* no NUMA information: anywhere */
	case MODEL_PCI_NUMA_PREFERRED:
		return 1;
	case MODEL_PCI_NUMA_LAST:
		break;
	}
	return -1;
}

bool vmm_pci_node_has(const struct vmm_topology *t, const struct vmm_host_usage *u,
		      const struct model_flavor_hw *hw, int node)
{
	struct vmm_placement one = { .n_cells = 1 };

	one.cells[0].node = node;
	for (int r = 0; r < hw->n_pci; r++) {
		int have = 0;

		for (int i = 0; i < t->n_pci; i++)
			if (t->pci[i].usable && dev_free(u, i) &&
			    strcmp(t->pci[i].alias, hw->pci[r].alias) == 0 &&
			    affinity(&t->pci[i], &one, hw->pci_numa) >= 0)
				have++;
		if (have < hw->pci[r].count)
			return false;
	}
	return true;
}

/* "no device with alias gpu" / "1 of 2 devices with alias gpu (...)" */
static int pci_no_fit(const struct vmm_topology *t, const struct vmm_host_usage *u,
		      const struct instance_spec *spec, const struct model_flavor_hw *hw,
		      const struct model_pci_request *req, int got)
{
	struct strbuf sb = { .max = 4096 };
	int r, n = 0;

	for (int i = 0; i < t->n_pci; i++) {
		const struct vmm_pci_dev *d = &t->pci[i];

		if (strcmp(d->alias, req->alias) != 0)
			continue;
		if (d->node_id >= 0)
			sb_printf(&sb, "%s%s node%d ", n++ ? "; " : "", d->address, d->node_id);
		else
			sb_printf(&sb, "%s%s (no NUMA node) ", n++ ? "; " : "", d->address);
		if (!d->usable)
			sb_printf(&sb, "unusable: %s", d->reason);
		else if (!dev_free(u, i))
			sb_printf(&sb, "in use by instance %s", u->pci_owner[i]);
		else
			sb_printf(&sb, "free");
	}
	if (n == 0) {
		struct strbuf al = { .max = 1024 };

		for (int i = 0; i < t->n_pci; i++) {
			bool seen = false;

			for (int k = 0; k < i; k++)
				seen = seen || strcmp(t->pci[k].alias, t->pci[i].alias) == 0;
			if (!seen)
				sb_printf(&al, "%s%s", al.buf ? ", " : "", t->pci[i].alias);
		}
		r = err_set(-ENOSPC, "instance %s (flavor %s): pci_passthrough:alias %s: this host "
			    "has no device with that alias (its devices' aliases: %s)", spec->uuid,
			    spec->flavor.name, req->alias, al.buf ? al.buf : "none");
		sb_free(&al);
		sb_free(&sb);
		return r;
	}
	r = err_set(-ENOSPC, "instance %s (flavor %s): pci_passthrough:alias %s:%d: only %d free "
		    "usable device%s %s(hw:pci_numa_affinity_policy=%s; %s)", spec->uuid,
		    spec->flavor.name, req->alias, req->count, got, got == 1 ? "" : "s",
		    hw->pci_numa == MODEL_PCI_NUMA_PREFERRED ? "" : "on the guest's NUMA nodes ",
		    model_pci_numa_names[hw->pci_numa], sb.buf ? sb.buf : "");
	sb_free(&sb);
	return r;
}

int vmm_pci_fit(const struct vmm_topology *t, const struct vmm_host_usage *u,
		const struct instance_spec *spec, const struct model_flavor_hw *hw,
		struct vmm_placement *p)
{
	p->n_pci = 0;
	for (int r = 0; r < hw->n_pci; r++) {
		const struct model_pci_request *req = &hw->pci[r];
		int got = 0;

		/* pass 0: devices on the guest's nodes; pass 1: elsewhere, if allowed */
		for (int pass = 0; pass < 2 && got < req->count; pass++) {
			for (int i = 0; i < t->n_pci && got < req->count; i++) {
				const struct vmm_pci_dev *d = &t->pci[i];
				struct vmm_pci_pick *pk;

				if (!d->usable || !dev_free(u, i) || picked(p, i) ||
				    strcmp(d->alias, req->alias) != 0 || affinity(d, p, hw->pci_numa) != pass)
					continue;
				pk = &p->pci[p->n_pci++];
				pk->dev = i;
				pk->node_id = d->node_id;
				snprintf(pk->address, sizeof(pk->address), "%s", d->address);
				snprintf(pk->alias, sizeof(pk->alias), "%s", d->alias);
				got++;
			}
		}
		if (got < req->count) {
			int e = pci_no_fit(t, u, spec, hw, req, got);

			p->n_pci = 0;
			return e;
		}
	}
	return 0;
}

/* ---- placement JSON and claims ---------------------------------------------- */

json_t *vmm_pci_picks_json(const struct vmm_placement *p)
{
	json_t *a = json_array();

	for (int i = 0; a && i < p->n_pci; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:i}", "address", p->pci[i].address,
						   "alias", p->pci[i].alias, "node", p->pci[i].node_id));
	return a;
}

int vmm_pci_picks_from_json(json_t *a, const struct vmm_topology *t, struct vmm_placement *p)
{
	json_t *v;
	size_t i;

	p->n_pci = 0;
	if (!a)
		return 0;
	if (!json_is_array(a) || json_array_size(a) > MODEL_MAX_PCI_DEVICES)
		return err_set(-EINVAL, "placement %s: pci: expected at most %d devices", p->uuid,
			       MODEL_MAX_PCI_DEVICES);
	json_array_foreach(a, i, v) {
		struct vmm_pci_pick *pk = &p->pci[p->n_pci];
		const char *addr = json_string_value(json_object_get(v, "address"));
		const char *alias = json_string_value(json_object_get(v, "alias"));

		if (!addr || !alias || vmm_pci_address_parse(addr, pk->address) < 0)
			return err_set(-EINVAL, "placement %s: pci[%zu]: expected address and alias",
				       p->uuid, i);
		snprintf(pk->alias, sizeof(pk->alias), "%s", alias);
		pk->node_id = (int)json_integer_value(json_object_get(v, "node"));
		pk->dev = -1; /* no longer declared: nothing to claim */
		for (int d = 0; d < t->n_pci; d++)
			if (strcmp(t->pci[d].address, pk->address) == 0)
				pk->dev = d;
		p->n_pci++;
	}
	return 0;
}
