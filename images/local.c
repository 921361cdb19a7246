/*
 * The flavor's local disks (Nova's ephemeral and swap): blank qcow2 files
 * formatted on the host, as Nova's libvirt driver does (an ext4 file
 * system labelled ephemeral0, a swap area labelled swap), so that
 * cloud-init's default `mounts` finds them through the metadata's
 * block-device-mapping (or by label) and mounts /mnt and enables swap.
 *
 * No loop device and no mount: mkfs.ext4 / mkswap write a sparse raw
 * file, `qemu-img convert` copies what they wrote into a qcow2 (holes
 * stay unallocated), and the qcow2 is renamed into place.
 */
#define LOG_TAG "images"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images/images_priv.h"

const char *const img_local_kind_names[] = {
	[IMG_LOCAL_EPHEMERAL] = "ephemeral",
	[IMG_LOCAL_SWAP] = "swap",
	[IMG_LOCAL_LAST] = NULL,
};

/* mkfs.ext4 and mkswap live in /usr/sbin, which a service's PATH may lack. */
static char *tool_path(const char *name)
{
	static const char *const dirs[] = { "/usr/sbin", "/sbin", "/usr/bin", "/bin" };
	const char *path = getenv("PATH");
	char *copy, *save = NULL, *p = NULL;

	if (strchr(name, '/')) /* a configured path (images.qemu_img) */
		return strdup(name);
	copy = path ? strdup(path) : NULL;

	for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d && !p;
	     d = strtok_r(NULL, ":", &save)) {
		if (asprintf(&p, "%s/%s", d, name) < 0)
			p = NULL;
		else if (access(p, X_OK) != 0) {
			free(p);
			p = NULL;
		}
	}
	free(copy);
	for (size_t i = 0; !p && i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if (asprintf(&p, "%s/%s", dirs[i], name) < 0)
			p = NULL;
		else if (access(p, X_OK) != 0) {
			free(p);
			p = NULL;
		}
	}
	return p;
}

/* Run argv (argv[0] looked up by tool_path); "<what>: <prog> failed (exit N): output". */
static int run_tool(const char *what, char **argv)
{
	char *prog = tool_path(argv[0]), *out = NULL, *name = argv[0];
	int r;

	if (!prog)
		return err_set(-ENOENT, "%s: %s not found (install e2fsprogs, util-linux, "
			       "qemu-utils)", what, name);
	argv[0] = prog;
	r = img_run(argv, &out);
	argv[0] = name;
	free(prog);
	if (r > 0)
		r = err_set(-EIO, "%s: %s failed (exit %d): %.300s", what, name, r, out ? out : "");
	else if (r < 0)
		r = err_prefix(r, "%s", what);
	free(out);
	return r;
}

/* The sparse raw file, formatted as KIND. */
static int format_raw(const char *what, char *raw, uint64_t bytes, enum img_local_kind kind)
{
	char *mkfs[] = { "mkfs.ext4", "-q", "-F", "-L", "ephemeral0", "-m", "0", "-E",
			 "lazy_itable_init=1,lazy_journal_init=1,nodiscard", raw, NULL };
	char *mkswap[] = { "mkswap", "-L", "swap", raw, NULL };
	int fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return err_sys(-errno, "%s: creating %s", what, raw);
	if (ftruncate(fd, (off_t)bytes) < 0) {
		int e = errno;

		close(fd);
		return err_sys(-e, "%s: setting the size of %s", what, raw);
	}
	close(fd);
	return run_tool(what, kind == IMG_LOCAL_SWAP ? mkswap : mkfs);
}

int img_local_disk_create(struct img_cache *c, const char *instance_uuid, const char *path,
			  uint64_t bytes, enum img_local_kind kind)
{
	char *raw = NULL, *tmp = NULL, *what = NULL, *dir = NULL, *slash;
	struct stat st;
	int r;

	if ((unsigned)kind >= IMG_LOCAL_LAST || bytes < (1u << 20) || bytes > ((uint64_t)1 << 50))
		return err_set(-EINVAL, "instance %s: %s disk of %" PRIu64 " bytes: out of range",
			       instance_uuid, (unsigned)kind < IMG_LOCAL_LAST ?
					      img_local_kind_names[kind] : "?", bytes);
	if (stat(path, &st) == 0) /* idempotent: kept over reboot, stop/start, restarts */
		return 0;
	if (asprintf(&what, "instance %s: %s disk", instance_uuid, img_local_kind_names[kind]) < 0)
		what = NULL;
	if (!what || asprintf(&raw, "%s.raw.tmp", path) < 0 ||
	    asprintf(&tmp, "%s.tmp", path) < 0 || !(dir = strdup(path))) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	r = format_raw(what, raw, bytes, kind);
	if (r == 0) {
		char *conv[] = { c->cfg.qemu_img, "convert", "-q", "-f", "raw", "-O", "qcow2",
				 raw, tmp, NULL };

		r = run_tool(what, conv);
	}
	if (r == 0 && rename(tmp, path) < 0)
		r = err_sys(-errno, "%s: rename %s", what, path);
	if (r == 0) {
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			fsync_dir(dir);
		}
		log_info("created %s disk instance=%s path=%s size=%" PRIu64,
			 img_local_kind_names[kind], instance_uuid, path, bytes);
	}
out:
	if (raw)
		unlink(raw);
	if (r < 0 && tmp)
		unlink(tmp);
	free(raw);
	free(tmp);
	free(what);
	free(dir);
	return r;
}
