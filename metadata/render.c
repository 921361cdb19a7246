/*
 * The renderer: an instance spec -> every document of the NoCloud,
 * OpenStack and EC2 datasources, in one sorted tree that both presenters
 * (seed disks, HTTP service) read. The documents are three tables of
 * {path, views, render function} below; a render function emits zero files
 * (the document does not apply: no user-data, no network), one, or a few
 * (EC2 public-keys).
 *
 * JSON is built with jansson, YAML with libyaml's emitter: names, keys and
 * metadata values may hold any character.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "metadata/metadata.h"
#include "metadata/metadata_priv.h"

const char *const md_openstack_versions[] = {
	"2012-08-10", /* FOLSOM: meta_data.json, user_data */
	"2013-10-17", /* HAVANA: + vendor_data.json */
	"2015-10-15", /* LIBERTY: + network_data.json */
	"2016-10-06", /* NEWTON_TWO: + vendor_data2.json */
	"latest",
	NULL,
};
enum { OS_FOLSOM, OS_HAVANA, OS_LIBERTY, OS_NEWTON_TWO, OS_LATEST };

const char *const md_ec2_versions[] = { "2009-04-04", "latest", NULL };

/* ---- the emitter: collects files ------------------------------------- */

struct md_emit {
	struct md_file *files;
	size_t n, cap;
	unsigned views; /* of the document being rendered */
};

/* Add PATH with DATA (taken over: freed on failure too). */
static int emit_take(struct md_emit *e, const char *path, unsigned char *data, size_t len)
{
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		struct md_file *f = realloc(e->files, cap * sizeof(*f));

		if (!f) {
			free(data);
			return err_set(-ENOMEM, "out of memory");
		}
		e->files = f;
		e->cap = cap;
	}
	char *p = strdup(path);

	if (!p) {
		free(data);
		return err_set(-ENOMEM, "out of memory");
	}
	e->files[e->n++] = (struct md_file){ .path = p, .data = data, .len = len, .views = e->views };
	return 0;
}

static int emit_copy(struct md_emit *e, const char *path, const void *data, size_t len)
{
	unsigned char *d = malloc(len + 1);

	if (!d)
		return err_set(-ENOMEM, "out of memory");
	if (len)
		memcpy(d, data, len);
	d[len] = '\0';
	return emit_take(e, path, d, len);
}

static int emit_str(struct md_emit *e, const char *path, const char *s)
{
	return emit_copy(e, path, s, strlen(s));
}

/* Emit a JSON document (J is stolen). */
static int emit_json(struct md_emit *e, const char *path, json_t *j)
{
	char *text;

	if (!j)
		return err_set(-ENOMEM, "%s: out of memory", path);
	text = json_dumps(j, JSON_SORT_KEYS);
	json_decref(j);
	if (!text)
		return err_set(-ENOMEM, "%s: out of memory", path);
	return emit_take(e, path, (unsigned char *)text, strlen(text));
}

/* ---- YAML through libyaml's emitter ------------------------------------ */

struct yw {
	yaml_emitter_t em;
	struct strbuf sb;
	bool ok;
};

static int yw_write(void *data, unsigned char *buf, size_t size)
{
	struct yw *w = data;

	return sb_append(&w->sb, (const char *)buf, size) == 0;
}

static void yw_event(struct yw *w, yaml_event_t *ev, int made)
{
	if (!w->ok)
		return;
	if (!made || !yaml_emitter_emit(&w->em, ev))
		w->ok = false;
}

static void yw_begin(struct yw *w)
{
	yaml_event_t ev;

	memset(w, 0, sizeof(*w));
	w->ok = yaml_emitter_initialize(&w->em) != 0;
	if (!w->ok)
		return;
	w->sb.max = 1u << 20;
	yaml_emitter_set_output(&w->em, yw_write, w);
	yaml_emitter_set_unicode(&w->em, 1);
	yaml_emitter_set_width(&w->em, -1);
	yw_event(w, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
	yw_event(w, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1));
}

/*
 * A plain scalar that a YAML 1.1 reader (PyYAML, as cloud-init uses) would
 * resolve to something other than a string (a number, a bool, null) must be
 * quoted: an instance called "yes" or "0123" stays a string.
 */
static bool yaml_needs_quotes(const char *s)
{
	static const char *const words[] = {
		"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~", NULL,
	};

	if (!*s || strchr("-+.0123456789", *s))
		return true;
	for (size_t i = 0; words[i]; i++)
		if (strcasecmp(s, words[i]) == 0)
			return true;
	return false;
}

static void yw_str(struct yw *w, const char *s)
{
	yaml_event_t ev;
	yaml_scalar_style_t st = yaml_needs_quotes(s) ? YAML_DOUBLE_QUOTED_SCALAR_STYLE
						      : YAML_ANY_SCALAR_STYLE;

	yw_event(w, &ev, yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)(uintptr_t)s,
							(int)strlen(s), 1, 1, st));
}

/* A scalar meant as a number (version: 2). */
static void yw_raw(struct yw *w, const char *s)
{
	yaml_event_t ev;

	yw_event(w, &ev, yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)(uintptr_t)s,
							(int)strlen(s), 1, 0,
							YAML_PLAIN_SCALAR_STYLE));
}

static void yw_map(struct yw *w, bool start)
{
	yaml_event_t ev;

	if (start)
		yw_event(w, &ev, yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
								      YAML_BLOCK_MAPPING_STYLE));
	else
		yw_event(w, &ev, yaml_mapping_end_event_initialize(&ev));
}

static void yw_seq(struct yw *w, bool start)
{
	yaml_event_t ev;

	if (start)
		yw_event(w, &ev, yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
								       YAML_BLOCK_SEQUENCE_STYLE));
	else
		yw_event(w, &ev, yaml_sequence_end_event_initialize(&ev));
}

/* Finish the document and emit it as PATH, after the line PREFIX (or none). */
static int yw_finish_after(struct yw *w, struct md_emit *e, const char *path,
			   const char *prefix)
{
	yaml_event_t ev;
	int r;

	yw_event(w, &ev, yaml_document_end_event_initialize(&ev, 1));
	yw_event(w, &ev, yaml_stream_end_event_initialize(&ev));
	if (w->ok && !yaml_emitter_flush(&w->em))
		w->ok = false;
	yaml_emitter_delete(&w->em);
	if (!w->ok) {
		sb_free(&w->sb);
		return err_set(-EINVAL, "%s: YAML emitter failed", path);
	}
	if (prefix) {
		struct strbuf all = { .max = w->sb.max + 64 };

		if (sb_printf(&all, "%s\n", prefix) < 0 ||
		    sb_append(&all, w->sb.buf ? w->sb.buf : "", w->sb.len) < 0) {
			sb_free(&all);
			sb_free(&w->sb);
			return err_set(-ENOMEM, "out of memory");
		}
		sb_free(&w->sb);
		w->sb = all;
	}
	size_t len = w->sb.len;
	char *text = sb_steal(&w->sb);

	if (!text)
		return err_set(-ENOMEM, "out of memory");
	r = emit_take(e, path, (unsigned char *)text, len);
	return r;
}

static int yw_finish(struct yw *w, struct md_emit *e, const char *path)
{
	return yw_finish_after(w, e, path, NULL);
}

/* ---- facts derived from the spec (shared by all three datasources) ----- */

/* "10.0.0.5/24" -> "10.0.0.5" and 24. */
static int split_cidr(const char *cidr, char addr[INET_ADDRSTRLEN], int *prefix)
{
	const char *slash = strchr(cidr, '/');
	long p;

	if (!slash || (size_t)(slash - cidr) >= INET_ADDRSTRLEN)
		return err_set(-EINVAL, "network.address: bad address '%s'", cidr);
	memcpy(addr, cidr, (size_t)(slash - cidr));
	addr[slash - cidr] = '\0';
	if (parse_long(slash + 1, 0, 32, &p) < 0)
		return err_set(-EINVAL, "network.address: bad prefix '%s'", cidr);
	*prefix = (int)p;
	return 0;
}

static void prefix_to_netmask(int prefix, char out[INET_ADDRSTRLEN])
{
	struct in_addr a;

	a.s_addr = htonl(prefix ? 0xffffffffu << (32 - prefix) : 0);
	inet_ntop(AF_INET, &a, out, INET_ADDRSTRLEN);
}

int md_guest_address(const struct instance_spec *s, char out[INET_ADDRSTRLEN])
{
	int prefix;

	if (!s->network.present)
		return -ENOENT;
	return split_cidr(s->network.address, out, &prefix);
}

/* ---- NoCloud ------------------------------------------------------------ */

static int r_nocloud_meta_data(const struct instance_spec *s, struct md_emit *e,
			       const char *path)
{
	char iid[MODEL_INSTANCE_ID_LEN];
	struct yw w;

	yw_begin(&w);
	yw_map(&w, true);
	yw_str(&w, "instance-id");
	yw_str(&w, model_instance_id(s, iid, sizeof(iid))); /* new after a rebuild */
	yw_str(&w, "local-hostname");
	yw_str(&w, s->hostname);
	if (s->n_ssh_keys) {
		yw_str(&w, "public-keys");
		yw_seq(&w, true);
		for (size_t i = 0; i < s->n_ssh_keys; i++)
			yw_str(&w, s->ssh_keys[i].key);
		yw_seq(&w, false);
	}
	yw_map(&w, false);
	return yw_finish(&w, e, path);
}

/* NoCloud requires the file: empty when the spec has none. */
static int r_user_data_always(const struct instance_spec *s, struct md_emit *e,
			      const char *path)
{
	return emit_copy(e, path, s->user_data ? s->user_data : (const unsigned char *)"",
			 s->user_data_len);
}

/* OpenStack and EC2: absent (404) when the spec has none, as Nova does. */
static int r_user_data(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	if (!s->user_data)
		return 0;
	return emit_copy(e, path, s->user_data, s->user_data_len);
}

/* The flavor's local disks as the guest sees them (vdb, vdc; sdb, sdc on
 * hw_disk_bus=scsi): model_local_disk_devs, as the domain XML names them. */
static int local_disk_devs(const struct instance_spec *s, char eph[MODEL_DEV_LEN],
			   char swap[MODEL_DEV_LEN])
{
	struct model_image_props props = { .disk_bus = MODEL_BUS_VIRTIO };

	if (model_image_props_parse(s->image.name, s->image.properties, s->image.n_properties,
				    &props) < 0)
		props.disk_bus = MODEL_BUS_VIRTIO; /* the agent refuses such an image anyway */
	return model_local_disk_devs(&s->flavor, props.disk_bus, eph, swap);
}

/*
 * NoCloud's vendor data. Without local disks: empty (nothing to do). With
 * them: cloud-init's NoCloud datasource cannot map the names "ephemeral0"
 * and "swap" to devices (that is the EC2 block-device-mapping, which only
 * the OpenStack and EC2 datasources read), so its default mounts
 * ([ephemeral0, /mnt], [swap, none, swap]) would be skipped: the vendor
 * data names the devices with device_aliases, and user data may still
 * override mounts as on OpenStack.
 */
static int r_vendor_data(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	char eph[MODEL_DEV_LEN], swap[MODEL_DEV_LEN];
	struct yw w;

	if (local_disk_devs(s, eph, swap) == 0)
		return emit_str(e, path, "");
	yw_begin(&w);
	yw_map(&w, true);
	yw_str(&w, "device_aliases");
	yw_map(&w, true);
	if (*eph) {
		char dev[16];

		snprintf(dev, sizeof(dev), "/dev/%s", eph);
		yw_str(&w, "ephemeral0");
		yw_str(&w, dev);
	}
	if (*swap) {
		char dev[16];

		snprintf(dev, sizeof(dev), "/dev/%s", swap);
		yw_str(&w, "swap");
		yw_str(&w, dev);
	}
	yw_map(&w, false);
	yw_map(&w, false);
	return yw_finish_after(&w, e, path, "#cloud-config");
}

/* Network config version 2: match by MAC, static address, default route,
 * name servers. Without a network the file is left out and cloud-init
 * falls back to DHCP on the first NIC. */
static int r_nocloud_network_config(const struct instance_spec *s, struct md_emit *e,
				    const char *path)
{
	const struct spec_network *n = &s->network;
	struct yw w;

	if (!n->present)
		return 0;
	yw_begin(&w);
	yw_map(&w, true);
	yw_str(&w, "version");
	yw_raw(&w, "2");
	yw_str(&w, "ethernets");
	yw_map(&w, true);
	yw_str(&w, "eth0");
	yw_map(&w, true);
	yw_str(&w, "match");
	yw_map(&w, true);
	yw_str(&w, "macaddress");
	yw_str(&w, n->mac);
	yw_map(&w, false);
	yw_str(&w, "set-name");
	yw_str(&w, "eth0");
	yw_str(&w, "addresses");
	yw_seq(&w, true);
	yw_str(&w, n->address);
	yw_seq(&w, false);
	if (n->gateway) {
		yw_str(&w, "routes");
		yw_seq(&w, true);
		yw_map(&w, true);
		yw_str(&w, "to");
		yw_str(&w, "0.0.0.0/0");
		yw_str(&w, "via");
		yw_str(&w, n->gateway);
		yw_map(&w, false);
		yw_seq(&w, false);
	}
	if (n->n_dns) {
		yw_str(&w, "nameservers");
		yw_map(&w, true);
		yw_str(&w, "addresses");
		yw_seq(&w, true);
		for (size_t i = 0; i < n->n_dns; i++)
			yw_str(&w, n->dns[i]);
		yw_seq(&w, false);
		yw_map(&w, false);
	}
	yw_map(&w, false);
	yw_map(&w, false);
	yw_map(&w, false);
	return yw_finish(&w, e, path);
}

/* ---- OpenStack ---------------------------------------------------------- */

static int r_os_meta_data(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	json_t *j = json_object(), *pk = json_object(), *keys = json_array(), *meta = json_object();
	int bad = !j || !pk || !keys || !meta;

	for (size_t i = 0; !bad && i < s->n_ssh_keys; i++) {
		const struct spec_ssh_key *k = &s->ssh_keys[i];

		bad |= json_object_set_new(pk, k->name, json_string(k->key));
		bad |= json_array_append_new(keys, json_pack("{s:s, s:s, s:s}", "name", k->name,
							      "type", "ssh", "data", k->key));
	}
	for (size_t i = 0; !bad && i < s->n_metadata; i++)
		bad |= json_object_set_new(meta, s->metadata[i].key,
					   json_string(s->metadata[i].val));
	if (bad) {
		json_decref(j);
		json_decref(pk);
		json_decref(keys);
		json_decref(meta);
		return err_set(-ENOMEM, "%s: out of memory", path);
	}
	bad |= json_object_set_new(j, "uuid", json_string(s->uuid));
	bad |= json_object_set_new(j, "name", json_string(s->name));
	bad |= json_object_set_new(j, "hostname", json_string(s->hostname));
	bad |= json_object_set_new(j, "project_id", json_string(s->project));
	bad |= json_object_set_new(j, "availability_zone", json_string(s->availability_zone));
	bad |= json_object_set_new(j, "launch_index", json_integer(s->launch_index));
	bad |= json_object_set_new(j, "public_keys", pk);
	bad |= json_object_set_new(j, "keys", keys);
	bad |= json_object_set_new(j, "meta", meta);
	bad |= json_object_set_new(j, "devices", json_array());
	if (bad) {
		json_decref(j);
		return err_set(-ENOMEM, "%s: out of memory", path);
	}
	return emit_json(e, path, j);
}

static int r_os_network_data(const struct instance_spec *s, struct md_emit *e,
			     const char *path)
{
	const struct spec_network *n = &s->network;
	json_t *links = json_array(), *nets = json_array(), *svcs = json_array();
	json_t *routes = json_array(), *nsvcs = json_array();
	char addr[INET_ADDRSTRLEN], mask[INET_ADDRSTRLEN];
	int prefix, r = 0, bad = !links || !nets || !svcs || !routes || !nsvcs;

	if (!bad && n->present) {
		r = split_cidr(n->address, addr, &prefix);
		if (r < 0) {
			bad = 1;
			goto out;
		}
		prefix_to_netmask(prefix, mask);
		bad |= json_array_append_new(links,
					     json_pack("{s:s, s:s, s:s, s:i}", "id", "interface0",
						       "type", "phy", "ethernet_mac_address", n->mac,
						       "mtu", 1500));
		if (n->gateway)
			bad |= json_array_append_new(routes,
						     json_pack("{s:s, s:s, s:s}", "network",
							       "0.0.0.0", "netmask", "0.0.0.0",
							       "gateway", n->gateway));
		for (size_t i = 0; i < n->n_dns; i++) {
			bad |= json_array_append_new(svcs, json_pack("{s:s, s:s}", "type", "dns",
								     "address", n->dns[i]));
			bad |= json_array_append_new(nsvcs, json_pack("{s:s, s:s}", "type", "dns",
								      "address", n->dns[i]));
		}
		bad |= json_array_append_new(nets,
					     json_pack("{s:s, s:s, s:s, s:s, s:s, s:O, s:O}", "id",
						       "network0", "type", "ipv4", "link",
						       "interface0", "ip_address", addr, "netmask",
						       mask, "routes", routes, "services", nsvcs));
	}
out:
	json_decref(routes);
	json_decref(nsvcs);
	if (bad) {
		json_decref(links);
		json_decref(nets);
		json_decref(svcs);
		return r < 0 ? r : err_set(-ENOMEM, "%s: out of memory", path);
	}
	return emit_json(e, path,
			 json_pack("{s:o, s:o, s:o}", "links", links, "networks", nets, "services",
				   svcs));
}

/* No vendor data source yet: Nova's empty object. */
static int r_os_vendor_data(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	(void)s;
	return emit_json(e, path, json_object());
}

/* ---- EC2 ---------------------------------------------------------------- */

static int r_ec2_instance_id(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	char iid[MODEL_INSTANCE_ID_LEN];

	/* the same id NoCloud reports (a new one after each rebuild) */
	return emit_str(e, path, model_instance_id(s, iid, sizeof(iid)));
}

static int r_ec2_hostname(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	return emit_str(e, path, s->hostname);
}

static int r_ec2_launch_index(const struct instance_spec *s, struct md_emit *e,
			      const char *path)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%ld", s->launch_index);
	return emit_str(e, path, buf);
}

static int r_ec2_local_ipv4(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	char addr[INET_ADDRSTRLEN];
	int r = md_guest_address(s, addr);

	if (r == -ENOENT)
		return 0;
	return r < 0 ? r : emit_str(e, path, addr);
}

static int r_ec2_mac(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	return s->network.present ? emit_str(e, path, s->network.mac) : 0;
}

static int r_ec2_az(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	return emit_str(e, path, s->availability_zone);
}

static int r_ec2_instance_type(const struct instance_spec *s, struct md_emit *e,
			       const char *path)
{
	return emit_str(e, path, s->flavor.name);
}

/* ami-XXXXXXXX from the image checksum: stable for one image. */
static void ami_id(const struct instance_spec *s, char out[16])
{
	const char *hex = s->image.checksum ? strchr(s->image.checksum, ':') : NULL;

	snprintf(out, 16, "ami-%.8s", hex && strlen(hex + 1) >= 8 ? hex + 1 : "00000000");
}

static int r_ec2_ami_id(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	char buf[16];

	ami_id(s, buf);
	return emit_str(e, path, buf);
}

/* r-XXXXXXXX from the instance uuid. */
static int r_ec2_reservation_id(const struct instance_spec *s, struct md_emit *e,
				const char *path)
{
	char buf[16];

	snprintf(buf, sizeof(buf), "r-%.8s", s->uuid);
	return emit_str(e, path, buf);
}

static int r_ec2_security_groups(const struct instance_spec *s, struct md_emit *e,
				 const char *path)
{
	(void)s;
	return emit_str(e, path, "default");
}

static int r_ec2_bdm_ami(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	(void)s;
	return emit_str(e, path, "vda");
}

static int r_ec2_bdm_root(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	(void)s;
	return emit_str(e, path, "/dev/vda");
}

/* block-device-mapping/ephemeral0 and /swap: only when the flavor has them
 * (cloud-init's default mounts look them up by these names). */
static int r_ec2_bdm_ephemeral0(const struct instance_spec *s, struct md_emit *e,
				const char *path)
{
	char eph[MODEL_DEV_LEN], swap[MODEL_DEV_LEN], dev[16];

	local_disk_devs(s, eph, swap);
	if (!*eph)
		return 0;
	snprintf(dev, sizeof(dev), "/dev/%s", eph);
	return emit_str(e, path, dev);
}

static int r_ec2_bdm_swap(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	char eph[MODEL_DEV_LEN], swap[MODEL_DEV_LEN], dev[16];

	local_disk_devs(s, eph, swap);
	if (!*swap)
		return 0;
	snprintf(dev, sizeof(dev), "/dev/%s", swap);
	return emit_str(e, path, dev);
}

/*
 * dynamic/instance-identity/document: EC2's identity document (JSON), which
 * cloud-init's EC2 datasource fetches on AWS-like platforms. No region
 * concept here: the region is the availability zone.
 */
static int r_ec2_identity(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	char addr[INET_ADDRSTRLEN], ami[16];
	int r = md_guest_address(s, addr);
	json_t *j;

	if (r < 0 && r != -ENOENT)
		return r;
	ami_id(s, ami);
	char iid[MODEL_INSTANCE_ID_LEN];

	j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "instanceId",
		      model_instance_id(s, iid, sizeof(iid)),
		      "instanceType", s->flavor.name, "imageId", ami, "availabilityZone",
		      s->availability_zone, "region", s->availability_zone, "accountId", s->project,
		      "architecture", "x86_64", "version", "2017-09-30");
	if (j && r == 0 && json_object_set_new(j, "privateIp", json_string(addr)) < 0) {
		json_decref(j);
		j = NULL;
	}
	return emit_json(e, path, j);
}

/*
 * public-keys/ lists "N=name" (EC2's format, which cloud-init's crawler
 * turns into public-keys/N/openssh-key); line breaks in a name would split
 * the listing, so they become spaces there.
 */
static int r_ec2_public_keys(const struct instance_spec *s, struct md_emit *e, const char *path)
{
	struct strbuf sb = { .max = 1u << 20 };
	int r = 0;

	if (!s->n_ssh_keys)
		return 0;
	for (size_t i = 0; i < s->n_ssh_keys && r == 0; i++) {
		char *sub = NULL;

		r = sb_printf(&sb, "%s%zu=", i ? "\n" : "", i);
		for (const char *p = s->ssh_keys[i].name; r == 0 && *p; p++)
			r = sb_append(&sb, *p == '\n' || *p == '\r' ? " " : p, 1);
		if (r == 0 && asprintf(&sub, "%s%zu/openssh-key", path, i) < 0)
			r = -ENOMEM;
		if (r == 0)
			r = emit_str(e, sub, s->ssh_keys[i].key);
		free(sub);
	}
	if (r < 0) {
		sb_free(&sb);
		return err_set(r, "%s: out of memory", path);
	}
	size_t len = sb.len;

	return emit_take(e, path, (unsigned char *)sb_steal(&sb), len);
}

/* ---- the tables -------------------------------------------------------- */

typedef int (*md_render_fn)(const struct instance_spec *s, struct md_emit *e, const char *path);

struct md_doc {
	const char *path;   /* below the datasource's base (and version) */
	unsigned views;     /* enum md_view */
	int since;          /* OpenStack: first version (index) that has it */
	md_render_fn render;
};

#define NC MD_VIEW_NOCLOUD
#define CD MD_VIEW_CONFIGDRIVE
#define HT MD_VIEW_HTTP

/* nocloud/PATH */
static const struct md_doc nocloud_docs[] = {
	{ "meta-data", NC, 0, r_nocloud_meta_data },
	{ "user-data", NC, 0, r_user_data_always },
	{ "vendor-data", NC, 0, r_vendor_data },
	{ "network-config", NC, 0, r_nocloud_network_config },
};

/* openstack/VERSION/PATH for every version from .since on */
static const struct md_doc openstack_docs[] = {
	{ "meta_data.json", CD | HT, OS_FOLSOM, r_os_meta_data },
	{ "user_data", CD | HT, OS_FOLSOM, r_user_data },
	{ "vendor_data.json", CD | HT, OS_HAVANA, r_os_vendor_data },
	{ "network_data.json", CD | HT, OS_LIBERTY, r_os_network_data },
	{ "vendor_data2.json", CD | HT, OS_NEWTON_TWO, r_os_vendor_data },
};

/* ec2/VERSION/PATH for every EC2 version */
static const struct md_doc ec2_docs[] = {
	{ "dynamic/instance-identity/document", HT, 0, r_ec2_identity },
	{ "meta-data/ami-id", HT, 0, r_ec2_ami_id },
	{ "meta-data/ami-launch-index", HT, 0, r_ec2_launch_index },
	{ "meta-data/block-device-mapping/ami", HT, 0, r_ec2_bdm_ami },
	{ "meta-data/block-device-mapping/ephemeral0", HT, 0, r_ec2_bdm_ephemeral0 },
	{ "meta-data/block-device-mapping/root", HT, 0, r_ec2_bdm_root },
	{ "meta-data/block-device-mapping/swap", HT, 0, r_ec2_bdm_swap },
	{ "meta-data/hostname", HT, 0, r_ec2_hostname },
	{ "meta-data/instance-id", HT, 0, r_ec2_instance_id },
	{ "meta-data/instance-type", HT, 0, r_ec2_instance_type },
	{ "meta-data/local-hostname", HT, 0, r_ec2_hostname },
	{ "meta-data/local-ipv4", HT, 0, r_ec2_local_ipv4 },
	{ "meta-data/mac", HT, 0, r_ec2_mac },
	{ "meta-data/placement/availability-zone", HT, 0, r_ec2_az },
	{ "meta-data/public-keys/", HT, 0, r_ec2_public_keys },
	{ "meta-data/reservation-id", HT, 0, r_ec2_reservation_id },
	{ "meta-data/security-groups", HT, 0, r_ec2_security_groups },
	{ "user-data", CD | HT, 0, r_user_data },
};

#undef NC
#undef CD
#undef HT

static int render_table(const struct instance_spec *s, struct md_emit *e, const char *base,
			const struct md_doc *docs, size_t n, int version)
{
	for (size_t i = 0; i < n; i++) {
		char *path = NULL;
		int r;

		if (version < docs[i].since)
			continue;
		if (asprintf(&path, "%s%s", base, docs[i].path) < 0)
			return err_set(-ENOMEM, "out of memory");
		e->views = docs[i].views;
		r = docs[i].render(s, e, path);
		if (r < 0)
			r = err_prefix(r, "instance %s: %s", s->uuid, path);
		free(path);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * The config drive's ec2/VERSION/meta-data.json: the EC2 meta-data tree
 * as nested JSON objects (as Nova writes it), built from the files the
 * EC2 table just rendered, so the two cannot disagree.
 */
static int render_ec2_json(struct md_emit *e, const char *version)
{
	char *base = NULL, *path = NULL;
	json_t *root = json_object();
	int r = -ENOMEM;

	if (!root || asprintf(&base, "ec2/%s/meta-data/", version) < 0 ||
	    asprintf(&path, "ec2/%s/meta-data.json", version) < 0)
		goto out;
	size_t blen = strlen(base);

	for (size_t i = 0; i < e->n; i++) {
		const struct md_file *f = &e->files[i];
		json_t *at = root;
		char *rel, *tok, *slash;

		if (strncmp(f->path, base, blen) != 0 || f->path[strlen(f->path) - 1] == '/')
			continue;
		rel = strdup(f->path + blen);
		if (!rel)
			goto out;
		for (tok = rel; (slash = strchr(tok, '/')); tok = slash + 1) {
			json_t *sub;

			*slash = '\0';
			sub = json_object_get(at, tok);
			if (!sub) {
				sub = json_object();
				if (json_object_set_new(at, tok, sub) < 0) {
					free(rel);
					goto out;
				}
			}
			at = sub;
		}
		if (json_object_set_new(at, tok, json_string((const char *)f->data)) < 0) {
			free(rel);
			goto out;
		}
		free(rel);
	}
	e->views = MD_VIEW_CONFIGDRIVE;
	r = emit_json(e, path, root);
	root = NULL;
out:
	json_decref(root);
	free(base);
	free(path);
	return r == -ENOMEM ? err_set(r, "out of memory") : r;
}

static int file_cmp(const void *a, const void *b)
{
	return strcmp(((const struct md_file *)a)->path, ((const struct md_file *)b)->path);
}

int md_render(const struct instance_spec *s, struct md_tree **out)
{
	struct md_emit e = { 0 };
	struct md_tree *t;
	char *base = NULL;
	int r;

	r = render_table(s, &e, "nocloud/", nocloud_docs, ARRAY_SIZE(nocloud_docs), 0);
	for (int v = 0; r == 0 && md_openstack_versions[v]; v++) {
		free(base);
		base = NULL;
		if (asprintf(&base, "openstack/%s/", md_openstack_versions[v]) < 0)
			r = err_set(-ENOMEM, "out of memory");
		else
			r = render_table(s, &e, base, openstack_docs, ARRAY_SIZE(openstack_docs), v);
	}
	for (int v = 0; r == 0 && md_ec2_versions[v]; v++) {
		free(base);
		base = NULL;
		if (asprintf(&base, "ec2/%s/", md_ec2_versions[v]) < 0)
			r = err_set(-ENOMEM, "out of memory");
		else
			r = render_table(s, &e, base, ec2_docs, ARRAY_SIZE(ec2_docs), 0);
		if (r == 0)
			r = render_ec2_json(&e, md_ec2_versions[v]);
	}
	free(base);
	if (r == 0) {
		qsort(e.files, e.n, sizeof(*e.files), file_cmp);
		for (size_t i = 1; i < e.n; i++)
			if (strcmp(e.files[i - 1].path, e.files[i].path) == 0)
				r = err_set(-EINVAL, "internal: %s rendered twice", e.files[i].path);
	}
	t = r == 0 ? malloc(sizeof(*t)) : NULL;
	if (r == 0 && !t)
		r = err_set(-ENOMEM, "out of memory");
	if (r < 0) {
		struct md_tree tmp = { .files = e.files, .n = e.n };

		for (size_t i = 0; i < tmp.n; i++) {
			free(tmp.files[i].path);
			free(tmp.files[i].data);
		}
		free(tmp.files);
		return r;
	}
	t->files = e.files;
	t->n = e.n;
	*out = t;
	return 0;
}

void md_tree_free(struct md_tree *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++) {
		free(t->files[i].path);
		free(t->files[i].data);
	}
	free(t->files);
	free(t);
}

const struct md_file *md_tree_find(const struct md_tree *t, const char *path, unsigned views)
{
	struct md_file key = { .path = (char *)(uintptr_t)path };
	const struct md_file *f = bsearch(&key, t->files, t->n, sizeof(*t->files), file_cmp);

	return f && (f->views & views) ? f : NULL;
}

int md_tree_list(const struct md_tree *t, const char *dir, unsigned views, char **out,
		 size_t *len)
{
	struct strbuf sb = { .max = 1u << 20 };
	char *prefix = NULL;
	const char *last = NULL;
	size_t plen, lastlen = 0;
	bool bare = strcmp(dir, "ec2") == 0 || strcmp(dir, "openstack") == 0;
	int r = 0, n = 0;

	if (asprintf(&prefix, "%s%s", dir, *dir ? "/" : "") < 0)
		return -ENOMEM;
	const struct md_file *listing = md_tree_find(t, prefix, views);

	if (listing) {
		free(prefix);
		*out = malloc(listing->len + 1);
		if (!*out)
			return -ENOMEM;
		memcpy(*out, listing->data, listing->len + 1);
		*len = listing->len;
		return 0;
	}
	plen = strlen(prefix);
	for (size_t i = 0; i < t->n && r == 0; i++) {
		const struct md_file *f = &t->files[i];
		const char *rest, *slash;
		size_t nlen;

		if (!(f->views & views) || strncmp(f->path, prefix, plen) != 0)
			continue;
		rest = f->path + plen;
		if (!*rest)
			continue;
		slash = strchr(rest, '/');
		nlen = slash ? (size_t)(slash - rest) : strlen(rest);
		if (last && nlen == lastlen && memcmp(rest, last, nlen) == 0)
			continue;
		r = sb_printf(&sb, "%s%.*s%s", n ? "\n" : "", (int)nlen, rest,
			      slash && !bare ? "/" : "");
		last = rest;
		lastlen = nlen;
		n++;
	}
	free(prefix);
	if (r < 0 || n == 0) {
		sb_free(&sb);
		return r < 0 ? r : -ENOENT;
	}
	*len = sb.len;
	*out = sb_steal(&sb);
	return *out ? 0 : -ENOMEM;
}
