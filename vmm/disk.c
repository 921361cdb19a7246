/*
 * Volumes: disks hot-plugged into a running domain and kept in its
 * persistent definition (see vmm/vmm.h). The disk element is built with
 * the libxml2 writer; the domain's XML is read with libxml2 to find free
 * targets and a disk by its serial.
 */
#define LOG_TAG "vmm"
#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlwriter.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vmm/vmm_priv.h"

#define X(s) ((const xmlChar *)(s))
#define DETACH_WAIT_MS 20000 /* a guest's time to give a hot-plugged disk back */

/* "instance UUID: WHAT: <libvirt's last error>" */
static int lv_err(int code, const char *uuid, const char *what)
{
	const char *why = virGetLastErrorMessage();

	return err_set(code, "instance %s: %s: %s", uuid, what, why ? why : "unknown libvirt error");
}

/* <disk type=file device=disk> ... </disk>, malloc'd. */
static char *disk_xml(const char *path, const char *format, const char *serial,
		      const char *target)
{
	xmlBufferPtr buf = xmlBufferCreate();
	xmlTextWriterPtr w = buf ? xmlNewTextWriterMemory(buf, 0) : NULL;
	char *out = NULL;
	int e = 0;

	if (!w)
		goto out;
	e |= xmlTextWriterStartElement(w, X("disk")) < 0;
	e |= xmlTextWriterWriteAttribute(w, X("type"), X("file")) < 0;
	e |= xmlTextWriterWriteAttribute(w, X("device"), X("disk")) < 0;
	e |= xmlTextWriterStartElement(w, X("driver")) < 0;
	e |= xmlTextWriterWriteAttribute(w, X("name"), X("qemu")) < 0;
	e |= xmlTextWriterWriteAttribute(w, X("type"), X(format)) < 0;
	e |= xmlTextWriterWriteAttribute(w, X("discard"), X("unmap")) < 0;
	e |= xmlTextWriterEndElement(w) < 0;
	e |= xmlTextWriterStartElement(w, X("source")) < 0;
	e |= xmlTextWriterWriteAttribute(w, X("file"), X(path)) < 0;
	e |= xmlTextWriterEndElement(w) < 0;
	e |= xmlTextWriterStartElement(w, X("target")) < 0;
	e |= xmlTextWriterWriteAttribute(w, X("dev"), X(target)) < 0;
	e |= xmlTextWriterWriteAttribute(w, X("bus"), X("virtio")) < 0;
	e |= xmlTextWriterEndElement(w) < 0;
	e |= xmlTextWriterWriteElement(w, X("serial"), X(serial)) < 0;
	e |= xmlTextWriterEndElement(w) < 0;
	e |= xmlTextWriterEndDocument(w) < 0;
	xmlFreeTextWriter(w);
	if (!e)
		out = strdup((const char *)xmlBufferContent(buf));
out:
	xmlBufferFree(buf);
	return out;
}

/* The domain's XML (INACTIVE: the persistent definition) parsed. */
static xmlDocPtr dom_doc(virDomainPtr d, bool inactive)
{
	char *xml = virDomainGetXMLDesc(d, inactive ? VIR_DOMAIN_XML_INACTIVE : 0);
	xmlDocPtr doc;

	if (!xml)
		return NULL;
	doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL, XML_PARSE_NONET);
	free(xml);
	return doc;
}

static xmlNodePtr child(xmlNodePtr n, const char *name)
{
	for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next)
		if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, X(name)) == 0)
			return c;
	return NULL;
}

static xmlNodePtr devices_of(xmlDocPtr doc)
{
	return child(xmlDocGetRootElement(doc), "devices");
}

/* The <disk> of SERIAL under DEVICES, or NULL. */
static xmlNodePtr disk_by_serial(xmlNodePtr devices, const char *serial)
{
	for (xmlNodePtr d = devices ? devices->children : NULL; d; d = d->next) {
		xmlNodePtr s;
		xmlChar *text;
		bool match;

		if (d->type != XML_ELEMENT_NODE || xmlStrcmp(d->name, X("disk")) != 0)
			continue;
		s = child(d, "serial");
		if (!s)
			continue;
		text = xmlNodeGetContent(s);
		match = text && xmlStrcmp(text, X(serial)) == 0;
		xmlFree(text);
		if (match)
			return d;
	}
	return NULL;
}

/* Mark the vdX targets used under DEVICES in USED['a'..'z']. */
static void targets_used(xmlNodePtr devices, bool used[26])
{
	for (xmlNodePtr d = devices ? devices->children : NULL; d; d = d->next) {
		xmlNodePtr t = d->type == XML_ELEMENT_NODE ? child(d, "target") : NULL;
		xmlChar *dev = t ? xmlGetProp(t, X("dev")) : NULL;

		if (dev && xmlStrlen(dev) == 3 && dev[0] == 'v' && dev[1] == 'd' && dev[2] >= 'a' &&
		    dev[2] <= 'z')
			used[dev[2] - 'a'] = true;
		xmlFree(dev);
	}
}

int vmm_disk_find(struct vmm_conn *c, const char *uuid, const char *serial, bool *config,
		  bool *live)
{
	virConnectPtr conn = NULL;
	int r = 0;
	virDomainPtr d = vmm_dom_lookup(c, uuid, &conn, &r);
	xmlDocPtr doc = NULL;

	if (!d)
		goto out;
	doc = dom_doc(d, true);
	if (!doc) {
		r = lv_err(-EIO, uuid, "reading its definition");
		goto out;
	}
	*config = disk_by_serial(devices_of(doc), serial) != NULL;
	xmlFreeDoc(doc);
	doc = NULL;
	*live = false;
	if (virDomainIsActive(d) == 1) {
		doc = dom_doc(d, false);
		if (!doc) {
			r = lv_err(-EIO, uuid, "reading its live XML");
			goto out;
		}
		*live = disk_by_serial(devices_of(doc), serial) != NULL;
	}
out:
	xmlFreeDoc(doc);
	if (d)
		virDomainFree(d);
	if (conn)
		virConnectClose(conn);
	return r;
}

/* The driver lacks device hot-plug: edit the persistent definition (add
 * DISK, or remove the disk of SERIAL when DISK is NULL) and redefine. */
static int redefine(virConnectPtr conn, virDomainPtr d, const char *uuid, const char *disk,
		    const char *serial)
{
	xmlDocPtr doc = dom_doc(d, true), frag = NULL;
	xmlNodePtr devices = doc ? devices_of(doc) : NULL, n;
	xmlChar *text = NULL;
	virDomainPtr nd;
	int len = 0, r = 0;

	if (!devices) {
		r = lv_err(-EIO, uuid, "reading its definition");
		goto out;
	}
	if (disk) {
		frag = xmlReadMemory(disk, (int)strlen(disk), "disk.xml", NULL, XML_PARSE_NONET);
		n = frag ? xmlDocCopyNode(xmlDocGetRootElement(frag), doc, 1) : NULL;
		if (!n || !xmlAddChild(devices, n)) {
			xmlFreeNode(n);
			r = err_set(-ENOMEM, "instance %s: adding the disk to its definition", uuid);
			goto out;
		}
	} else if ((n = disk_by_serial(devices, serial))) {
		xmlUnlinkNode(n);
		xmlFreeNode(n);
	}
	xmlDocDumpMemory(doc, &text, &len);
	nd = text ? virDomainDefineXML(conn, (const char *)text) : NULL;
	if (!nd)
		r = lv_err(-EIO, uuid, "redefining it");
	else
		virDomainFree(nd);
out:
	xmlFree(text);
	xmlFreeDoc(frag);
	xmlFreeDoc(doc);
	return r;
}

static bool no_support(void)
{
	virErrorPtr e = virGetLastError();

	return e && e->code == VIR_ERR_NO_SUPPORT;
}

int vmm_disk_attach(struct vmm_conn *c, const char *uuid, const char *path, const char *format,
		    const char *serial, bool *live)
{
	virConnectPtr conn = NULL;
	int r = 0;
	virDomainPtr d = vmm_dom_lookup(c, uuid, &conn, &r);
	xmlDocPtr cfg_doc = NULL, live_doc = NULL;
	bool used[26] = { false }, running;
	xmlNodePtr in_cfg;
	char target[4] = "vd?", *xml = NULL;
	unsigned flags;

	if (live)
		*live = false;
	if (!d)
		goto out;
	if (strlen(serial) > VMM_SERIAL_MAX) {
		r = err_set(-EINVAL, "instance %s: disk serial %s is longer than %d characters",
			    uuid, serial, VMM_SERIAL_MAX);
		goto out;
	}
	running = virDomainIsActive(d) == 1;
	cfg_doc = dom_doc(d, true);
	live_doc = running ? dom_doc(d, false) : NULL;
	if (!cfg_doc || (running && !live_doc)) {
		r = lv_err(-EIO, uuid, "reading its XML");
		goto out;
	}
	if (disk_by_serial(devices_of(cfg_doc), serial) &&
	    (!running || disk_by_serial(devices_of(live_doc), serial))) {
		if (live)
			*live = running;
		goto out; /* attached already */
	}
	in_cfg = disk_by_serial(devices_of(cfg_doc), serial);
	if (in_cfg) {
		/* defined, not in the running guest: plug it in where the definition says */
		xmlNodePtr t = child(in_cfg, "target");
		xmlChar *dev = t ? xmlGetProp(t, X("dev")) : NULL;

		if (dev && xmlStrlen(dev) == 3)
			memcpy(target, dev, 3);
		xmlFree(dev);
	}
	targets_used(devices_of(cfg_doc), used);
	targets_used(devices_of(live_doc), used);
	for (int i = 1; i < 26 && target[2] == '?'; i++) /* vda is the root disk */
		if (!used[i])
			target[2] = (char)('a' + i);
	if (target[2] == '?') {
		r = err_set(-ENOSPC, "instance %s: no free virtio disk name (vdb..vdz)", uuid);
		goto out;
	}
	xml = disk_xml(path, format, serial, target);
	if (!xml) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	flags = (in_cfg ? 0 : VIR_DOMAIN_AFFECT_CONFIG) | (running ? VIR_DOMAIN_AFFECT_LIVE : 0);
	if (virDomainAttachDeviceFlags(d, xml, flags) == 0) {
		if (live)
			*live = running;
	} else if (!running && no_support()) {
		r = redefine(conn, d, uuid, xml, serial);
	} else {
		r = lv_err(-EIO, uuid, "attaching the disk");
	}
out:
	free(xml);
	xmlFreeDoc(cfg_doc);
	xmlFreeDoc(live_doc);
	if (d)
		virDomainFree(d);
	if (conn)
		virConnectClose(conn);
	return r;
}

/* The disk element of SERIAL in D's XML (live or config), malloc'd; NULL
 * when absent. */
static char *disk_element(virDomainPtr d, bool inactive, const char *serial)
{
	xmlDocPtr doc = dom_doc(d, inactive);
	xmlNodePtr n = doc ? disk_by_serial(devices_of(doc), serial) : NULL;
	xmlBufferPtr buf = n ? xmlBufferCreate() : NULL;
	char *out = NULL;

	if (buf && xmlNodeDump(buf, doc, n, 0, 0) >= 0)
		out = strdup((const char *)xmlBufferContent(buf));
	xmlBufferFree(buf);
	xmlFreeDoc(doc);
	return out;
}

int vmm_disk_detach(struct vmm_conn *c, const char *uuid, const char *serial)
{
	virConnectPtr conn = NULL;
	int r = 0;
	virDomainPtr d = vmm_dom_lookup(c, uuid, &conn, &r);
	char *cfg_xml = NULL, *live_xml = NULL;
	bool running;

	if (!d)
		goto out;
	running = virDomainIsActive(d) == 1;
	cfg_xml = disk_element(d, true, serial);
	live_xml = running ? disk_element(d, false, serial) : NULL;
	if (live_xml && virDomainDetachDeviceFlags(d, live_xml, VIR_DOMAIN_AFFECT_LIVE) < 0) {
		r = lv_err(-EIO, uuid, "detaching the disk from the running guest");
		goto out;
	}
	/* the guest releases the device asynchronously (ACPI eject): wait */
	for (int i = 0; live_xml && i < DETACH_WAIT_MS / 100; i++) {
		char *still = disk_element(d, false, serial);

		free(still);
		if (!still) {
			free(live_xml);
			live_xml = NULL;
			break;
		}
		usleep(100 * 1000);
	}
	if (live_xml) {
		r = err_set(-ETIMEDOUT, "instance %s: the guest did not release disk %s in %d s",
			    uuid, serial, DETACH_WAIT_MS / 1000);
		goto out;
	}
	if (cfg_xml && virDomainDetachDeviceFlags(d, cfg_xml, VIR_DOMAIN_AFFECT_CONFIG) < 0) {
		if (no_support())
			r = redefine(conn, d, uuid, NULL, serial);
		else
			r = lv_err(-EIO, uuid, "removing the disk from its definition");
	}
out:
	free(cfg_xml);
	free(live_xml);
	if (d)
		virDomainFree(d);
	if (conn)
		virConnectClose(conn);
	return r;
}
