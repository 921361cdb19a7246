/*
 * DHCP host entries, like Neutron's DHCP agent: one file per instance in
 * agent.network.dhcp_hosts_dir, named by its uuid and holding one line in
 * dnsmasq's --dhcp-hostsfile format, "MAC,IP,hostname". The dnsmasq on the
 * bridge (deploy/host/prepare-host.sh) watches the directory with inotify,
 * so a guest without a seed disk gets its address by DHCP and can reach
 * the metadata service. Files are written atomically (a dotfile renamed
 * into place; dnsmasq skips dotfiles). Files whose name is not a uuid are
 * not ours and are left alone.
 */
#define LOG_TAG "agent"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent_priv.h"

static const char *hosts_dir(const struct agent *a)
{
	const char *d = a->cfg->network.dhcp_hosts_dir;

	return d && *d ? d : NULL;
}

int agent_dhcp_dir_check(const char *dir)
{
	char *probe = NULL;
	struct stat st;
	int r;

	if (!dir || !*dir)
		return 0;
	if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
		return err_set(-ENOTDIR, "agent.network.dhcp_hosts_dir %s: not a directory", dir);
	if ((r = mkdir_p(dir, 0755)) < 0)
		return err_prefix(r, "agent.network.dhcp_hosts_dir %s", dir);
	/* writable by us: a dotfile, which dnsmasq ignores */
	if (asprintf(&probe, "%s/.stratus-agent-probe", dir) < 0)
		return err_set(-ENOMEM, "out of memory");
	r = write_file_atomic(probe, "", 0, 0644);
	unlink(probe);
	free(probe);
	if (r < 0)
		return err_prefix(r, "agent.network.dhcp_hosts_dir %s: not writable", dir);
	return 0;
}

int agent_dhcp_line(const char *mac, const char *address, const char *hostname, char *buf,
		    size_t len)
{
	size_t alen = strcspn(address ? address : "", "/");
	size_t hlen = strcspn(hostname ? hostname : "", ".");
	int n;

	if (!mac || !*mac || alen == 0)
		return err_set(-EINVAL, "DHCP host entry: no MAC or address");
	/* dnsmasq wants a bare name: the first label of the host name */
	if (hlen > 0)
		n = snprintf(buf, len, "%s,%.*s,%.*s\n", mac, (int)alen, address, (int)hlen,
			     hostname);
	else
		n = snprintf(buf, len, "%s,%.*s\n", mac, (int)alen, address);
	if (n < 0 || (size_t)n >= len)
		return err_set(-ENAMETOOLONG, "DHCP host entry too long");
	return 0;
}

static char *entry_path(const struct agent *a, const char *uuid)
{
	char *p = NULL;

	if (asprintf(&p, "%s/%s", hosts_dir(a), uuid) < 0)
		return NULL;
	return p;
}

int agent_dhcp_host_write(struct agent *a, const char *uuid, const char *mac,
			  const char *address, const char *hostname)
{
	char line[512], *path;
	int r;

	if (!hosts_dir(a))
		return 0;
	if ((r = agent_dhcp_line(mac, address, hostname, line, sizeof(line))) < 0)
		return err_prefix(r, "instance %s", uuid);
	if (!(path = entry_path(a, uuid)))
		return err_set(-ENOMEM, "out of memory");
	r = write_file_atomic(path, line, strlen(line), 0644);
	if (r < 0)
		err_prefix(r, "DHCP host entry");
	else
		log_debug("dhcp host entry written instance=%s mac=%s address=%s", uuid, mac, address);
	free(path);
	return r;
}

/* dnsmasq keeps the entries of removed files until SIGHUP, which makes it
 * read the directory again: a reused address may then carry another MAC or
 * host name. Failures are logged; the entry is gone from the directory. */
static void reload_dhcp_server(struct agent *a)
{
	const char *pf = a->cfg->network.dhcp_pid_file;
	char *text = NULL;
	size_t n;
	long pid;

	if (!pf || !*pf)
		return;
	if (read_file(pf, 32, &text, &n) < 0) {
		log_warn("dhcp server not reloaded: %s", err_msg());
		return;
	}
	text[strcspn(text, "\n")] = '\0';
	if (parse_long(text, 2, INT32_MAX, &pid) < 0)
		log_warn("dhcp server not reloaded: %s: no pid in '%.20s'", pf, text);
	else if (kill((pid_t)pid, SIGHUP) < 0)
		log_warn("dhcp server not reloaded: kill -HUP %ld (%s): %s", pid, pf,
			 strerror(errno));
	else
		log_debug("dhcp server reloaded pid=%ld", pid);
	free(text);
}

void agent_dhcp_host_remove(struct agent *a, const char *uuid)
{
	char *path;

	if (!hosts_dir(a) || !(path = entry_path(a, uuid)))
		return;
	if (unlink(path) == 0)
		reload_dhcp_server(a);
	else if (errno != ENOENT)
		log_warn("dhcp host entry not removed instance=%s path=%s: %s", uuid, path,
			 strerror(errno));
	free(path);
}

/* ---- reconcile: the directory against the store ------------------------- */

static bool wants_entry(const struct store_instance *row)
{
	return (row->state == INST_ACTIVE || row->state == INST_STOPPED ||
		row->state == INST_REBOOTING) &&
	       row->mac && row->address;
}

static char *row_hostname(const struct store_instance *row)
{
	json_t *sj = row->spec_json ? json_loads(row->spec_json, 0, NULL) : NULL;
	const char *h = json_string_value(json_object_get(sj, "hostname"));
	char *out = h ? strdup(h) : NULL;

	json_decref(sj);
	return out;
}

static int recreate_cb(const struct store_instance *row, void *ud)
{
	struct agent *a = ud;
	char line[512], *path, *host, *have = NULL;
	size_t n;

	if (!wants_entry(row))
		return 0;
	host = row_hostname(row);
	path = entry_path(a, row->uuid);
	if (path && agent_dhcp_line(row->mac, row->address, host, line, sizeof(line)) == 0 &&
	    (read_file(path, sizeof(line), &have, &n) < 0 || strcmp(have, line) != 0)) {
		log_warn("reconcile: DHCP host entry %s instance=%s, writing it",
			 have ? "differs" : "missing", row->uuid);
		if (agent_dhcp_host_write(a, row->uuid, row->mac, row->address, host) < 0)
			log_warn("reconcile: %s", err_msg());
	}
	free(have);
	free(path);
	free(host);
	return 0;
}

void agent_dhcp_reconcile(struct agent *a)
{
	const char *dir = hosts_dir(a);
	struct dirent *de;
	DIR *d;

	if (!dir)
		return;
	store_instance_foreach(a->store, recreate_cb, a);
	if (!(d = opendir(dir))) {
		log_warn("reconcile: cannot read agent.network.dhcp_hosts_dir %s: %s", dir,
			 strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		struct store_instance row;

		if (!uuid_valid(de->d_name))
			continue; /* not ours */
		if (store_instance_get(a->store, de->d_name, &row) == 0) {
			bool keep = wants_entry(&row) || row.state == INST_BUILDING;

			store_instance_free(&row);
			if (keep)
				continue;
		}
		log_warn("reconcile: removing stale DHCP host entry instance=%s", de->d_name);
		agent_dhcp_host_remove(a, de->d_name);
	}
	closedir(d);
}
