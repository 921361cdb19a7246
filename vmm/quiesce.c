/*
 * Quiescing a running domain for a point-in-time copy of its disk
 * (snapshots, agent/snapshot.c): the guest's filesystems frozen through
 * the QEMU guest agent, or the vCPUs paused (QEMU drains and flushes the
 * block layer when it stops, so the qcow2 file on disk is consistent
 * until it runs again). See vmm/vmm.h.
 */
#define LOG_TAG "vmm"
#include <errno.h>
#include <stdio.h>

#include "vmm/vmm_priv.h"

static int lv_err(int code, const char *uuid, const char *what)
{
	const char *why = virGetLastErrorMessage();

	return err_set(code, "instance %s: %s: %s", uuid, what, why ? why : "unknown libvirt error");
}

static const char *const quiesce_names[] = { "fsfreeze", "fsthaw", "pause", "resume" };

int vmm_quiesce(struct vmm_conn *c, const char *uuid, enum vmm_quiesce_op op)
{
	virConnectPtr conn = NULL;
	int r = 0, rc = 0;
	virDomainPtr d;

	if ((int)op < 0 || op >= VMM_QUIESCE_LAST)
		return err_set(-EINVAL, "instance %s: unknown quiesce operation", uuid);
	d = vmm_dom_lookup(c, uuid, &conn, &r);
	if (!d)
		goto out;
	switch (op) {
	case VMM_FS_FREEZE:
		rc = virDomainFSFreeze(d, NULL, 0, 0);
		break;
	case VMM_FS_THAW:
		rc = virDomainFSThaw(d, NULL, 0, 0);
		break;
	case VMM_PAUSE:
		rc = virDomainSuspend(d);
		break;
	case VMM_RESUME:
		rc = virDomainResume(d);
		break;
	case VMM_QUIESCE_LAST:
		break;
	}
	if (rc < 0)
		r = lv_err(-EIO, uuid, quiesce_names[op]);
	virDomainFree(d);
out:
	if (conn)
		virConnectClose(conn);
	return r;
}
