/* delete, stop, start, reboot, console, and power-state sync. */
#define LOG_TAG "agent"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent_priv.h"

void agent_cleanup_instance(struct agent *a, const struct store_instance *row)
{
	char *p;

	if (a->conn && vmm_undefine(a->conn, row->uuid) < 0)
		log_warn("cleanup: domain not undefined instance=%s: %s", row->uuid, err_msg());
	if (row->seed_path)
		unlink(row->seed_path);
	if ((p = agent_instance_path(a, row->uuid, ".seed.iso"))) {
		unlink(p);
		free(p);
	}
	if ((p = agent_instance_path(a, row->uuid, ".log"))) {
		unlink(p);
		free(p);
	}
	if ((p = agent_instance_path(a, row->uuid, ".nvram"))) { /* UEFI images */
		unlink(p);
		free(p);
	}
	/* a rebuild's kept old disk and spec (agent/rebuild.c) */
	if ((p = agent_instance_path(a, row->uuid, ".qcow2.prev"))) {
		unlink(p);
		free(p);
	}
	if ((p = agent_instance_path(a, row->uuid, ".rebuild.json"))) {
		unlink(p);
		free(p);
	}
	agent_local_disks_remove(a, row->uuid); /* the flavor's ephemeral and swap */
	if ((p = agent_instance_path(a, row->uuid, ".resize.json"))) { /* agent/resize.c */
		unlink(p);
		free(p);
	}
	if (img_overlay_delete(a->images, row->uuid) < 0)
		log_warn("cleanup: overlay not removed instance=%s: %s", row->uuid, err_msg());
	agent_dhcp_host_remove(a, row->uuid);
	store_address_release(a->store, row->uuid);
	if (row->placement_json) {
		json_t *pj = json_loads(row->placement_json, 0, NULL);
		struct vmm_placement p2;

		if (pj && vmm_placement_from_json(pj, a->topo, &p2) == 0) {
			pthread_mutex_lock(&a->usage_lock);
			vmm_usage_release(&a->usage, &p2);
			pthread_mutex_unlock(&a->usage_lock);
			vmm_placement_free(&p2);
		}
		json_decref(pj);
	}
	store_instance_delete(a->store, row->uuid);
	/* the filter after the row: reconcile restores the filter of every row
	 * it finds, and would put it back between the two (a crash between them
	 * leaves a filter of no instance, which reconcile removes) */
	agent_filter_remove(a, row->uuid);
	agent_volumes_instance_gone(a, row->uuid); /* the files stay: available again */
}

int agent_do_delete(struct agent *a, struct job *j)
{
	struct store_instance row;
	int r;

	r = store_instance_get(a->store, j->uuid, &row);
	if (r == -ENOENT) {
		/* already gone: say so again (idempotent) */
		agent_emit_state(a, j->uuid, NULL, INST_DELETED, NULL, j->request_id, NULL);
		store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":true}");
		return 0;
	}
	if (r < 0)
		return r;
	agent_cleanup_instance(a, &row);
	store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":true}");
	agent_emit_state(a, j->uuid, row.project, INST_DELETED, NULL, j->request_id, NULL);
	store_instance_free(&row);
	return 0;
}

/* The reason an instance.state after a reboot carries. */
static void reboot_reason(enum vmm_reboot_how how, int64_t timeout_ms, char *buf, size_t len)
{
	switch (how) {
	case VMM_REBOOT_SOFT:
		snprintf(buf, len, "rebooted (soft)");
		return;
	case VMM_REBOOT_HARD_TIMEOUT:
		if (timeout_ms % 1000 == 0)
			snprintf(buf, len, "hard reboot after %lld s without a guest reboot",
				 (long long)(timeout_ms / 1000));
		else
			snprintf(buf, len, "hard reboot after %lld ms without a guest reboot",
				 (long long)timeout_ms);
		return;
	case VMM_REBOOT_HARD_REFUSED:
		snprintf(buf, len, "hard reboot: the soft reboot was refused");
		return;
	case VMM_REBOOT_HARD_POWEROFF:
		snprintf(buf, len, "the guest powered off during its soft reboot: started again");
		return;
	case VMM_REBOOT_HARD:
		snprintf(buf, len, "hard reboot");
		return;
	case VMM_REBOOT_LAST:
	default:
		break;
	}
	buf[0] = '\0';
}

int agent_do_power(struct agent *a, struct job *j)
{
	struct store_instance row;
	enum instance_state next;
	bool forced = false;
	char why[96] = "";
	const char *rebooted = NULL; /* how a reboot went: vmm_reboot_how_names */
	int r;

	r = store_instance_get(a->store, j->uuid, &row);
	if (r < 0) {
		agent_emit_result(a, j->request_id, false, err_msg(), NULL);
		store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":false}");
		return r;
	}
	if (row.state == INST_BUILDING || row.state == INST_DELETING || row.state == INST_ERROR) {
		char msg[160];

		snprintf(msg, sizeof(msg), "instance %s is %s: cannot %s", j->uuid,
			 instance_state_names[row.state], j->type + strlen("instance."));
		agent_emit_result(a, j->request_id, false, msg, NULL);
		store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":false}");
		store_instance_free(&row);
		return err_set(-EBUSY, "%s", msg);
	}
	if (strcmp(j->type, "instance.stop") == 0) {
		r = vmm_stop(a->conn, j->uuid, a->vmm_cfg->shutdown_timeout_ms, &forced);
		next = INST_STOPPED;
	} else if (strcmp(j->type, "instance.start") == 0) {
		enum vmm_power pw = VMM_POWER_NONE;

		r = vmm_power_state(a->conn, j->uuid, &pw);
		if (r == 0 && pw != VMM_POWER_RUNNING)
			r = vmm_start(a->conn, j->uuid);
		next = INST_ACTIVE;
	} else {
		enum vmm_reboot_how how = VMM_REBOOT_LAST;

		store_instance_set_state(a->store, j->uuid, INST_REBOOTING, NULL, NULL);
		agent_emit_state(a, j->uuid, row.project, INST_REBOOTING, NULL, j->request_id, NULL);
		/* a worker waits (up to vmm.reboot_timeout), not the bus loop */
		r = vmm_reboot(a->conn, j->uuid, j->hard, a->vmm_cfg->reboot_timeout_ms, &how);
		if (r == 0) {
			reboot_reason(how, a->vmm_cfg->reboot_timeout_ms, why, sizeof(why));
			rebooted = vmm_reboot_how_names[how];
			log_info("rebooted instance=%s how=%s request=%s", j->uuid, rebooted,
				 j->request_id);
		}
		next = INST_ACTIVE;
	}
	if (r < 0) {
		enum instance_state now = row.state;
		enum vmm_power pw = VMM_POWER_NONE;
		char msg[1024];

		snprintf(msg, sizeof(msg), "%s", err_msg());
		/* say what is true now: a reboot or start that failed half-way
		 * may have left the domain off, whatever the row said before */
		if ((row.state == INST_ACTIVE || row.state == INST_STOPPED) &&
		    vmm_power_state(a->conn, j->uuid, &pw) == 0) {
			if (pw == VMM_POWER_RUNNING)
				now = INST_ACTIVE;
			else if (pw == VMM_POWER_SHUTOFF || pw == VMM_POWER_CRASHED)
				now = INST_STOPPED;
		}
		store_instance_set_state(a->store, j->uuid, now, NULL, msg);
		agent_emit_state(a, j->uuid, row.project, now, msg, j->request_id, NULL);
		store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":false}");
		store_instance_free(&row);
		return err_set(r, "%s", msg);
	}
	store_instance_set_state(a->store, j->uuid, next, NULL, NULL);
	store_request_put(a->store, j->request_id, j->uuid, j->type, "{\"ok\":true}");
	agent_emit_state(a, j->uuid, row.project, next,
			 forced ? "forced off after timeout" : why[0] ? why : NULL, j->request_id,
			 rebooted ? json_pack("{s:s}", "rebooted", rebooted) : NULL);
	store_instance_free(&row);
	return 0;
}

/* A lifecycle event or reconcile saw the domain's power state: make the
 * store agree with libvirt, with an event when they differed. */
int agent_do_sync(struct agent *a, struct job *j)
{
	struct store_instance row;
	enum vmm_power pw = VMM_POWER_NONE;
	enum instance_state want;
	int r;

	r = store_instance_get(a->store, j->uuid, &row);
	if (r < 0)
		return 0; /* not ours (any more) */
	if (row.state != INST_ACTIVE && row.state != INST_STOPPED && row.state != INST_REBOOTING) {
		store_instance_free(&row);
		return 0; /* a command owns it */
	}
	r = vmm_power_state(a->conn, j->uuid, &pw);
	if (r < 0) {
		store_instance_free(&row);
		return r;
	}
	switch (pw) {
	case VMM_POWER_RUNNING:
	case VMM_POWER_PAUSED:
		want = INST_ACTIVE;
		break;
	case VMM_POWER_SHUTOFF:
	case VMM_POWER_CRASHED:
		want = INST_STOPPED;
		break;
	case VMM_POWER_NONE:
		want = INST_ERROR;
		break;
	case VMM_POWER_OTHER:
	case VMM_POWER_LAST:
	default:
		want = row.state;
		break;
	}
	if (want != row.state) {
		const char *why = j->reason;

		if (!why)
			why = want == INST_ERROR ? "domain vanished from libvirt"
						 : "power state changed outside Stratus";
		store_instance_set_state(a->store, j->uuid, want, NULL,
					       want == INST_ERROR ? why : NULL);
		agent_emit_state(a, j->uuid, row.project, want, why, NULL, NULL);
	}
	store_instance_free(&row);
	return 0;
}

json_t *agent_console_tail(struct agent *a, const char *uuid, long lines)
{
	char *path = agent_instance_path(a, uuid, ".log");
	char *buf = NULL;
	struct stat st;
	off_t start;
	ssize_t n;
	int fd;
	json_t *out = NULL;

	if (!path)
		return NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return json_pack("{s:[]}", "lines");
	}
	start = st.st_size > AGENT_CONSOLE_MAX_BYTES ? st.st_size - AGENT_CONSOLE_MAX_BYTES : 0;
	buf = malloc(AGENT_CONSOLE_MAX_BYTES + 1);
	if (!buf) {
		close(fd);
		return NULL;
	}
	n = pread(fd, buf, AGENT_CONSOLE_MAX_BYTES, start);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = '\0';
	/* the last `lines` lines */
	long seen = 0;
	char *p = buf + n;

	if (p > buf && p[-1] == '\n')
		p--;
	while (p > buf) {
		if (p[-1] == '\n' && ++seen >= lines)
			break;
		p--;
	}
	out = json_object();
	json_t *arr = json_array();
	char *save = NULL;

	for (char *l = strtok_r(p, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		size_t len = strlen(l);

		if (len && l[len - 1] == '\r')
			l[len - 1] = '\0';
		/* console bytes are not always UTF-8: keep what jansson accepts */
		json_t *s = json_string(l);

		json_array_append_new(arr, s ? s : json_string("(binary)"));
	}
	json_object_set_new(out, "lines", arr);
	free(buf);
	return out;
}
