#!/bin/sh
# Build (once) the Stratus tiny guest: Debian's kernel + a busybox initramfs
# whose /init (tests/guest/tiny-init.sh) loads the virtio/isofs modules and
# prints "STRATUS-GUEST: ..." marker lines on ttyS0. See docs/guest-images.md.
#
#   tests/guest/build-tiny.sh [--force]
#
# Output in ${STRATUS_CACHE:-/var/cache/stratus}/guest/tiny/v-HASH/ (one
# directory per distinct build; the same names in guest/tiny/ are symlinks
# to the latest):
#   vmlinuz      the kernel (boot with console=ttyS0)
#   initrd.img   the busybox initramfs (gzip'd newc cpio)
#   disk.qcow2   a 64 MiB qcow2 disk (first line "STRATUS-TINY-DISK"), a base
#                image for root-disk overlays; the guest does not need it to boot
#   SHA256SUMS   checksums of the three
#   inputs       what the build was made from (a rebuild happens when it changes)
# On success prints KEY=VALUE lines (kernel=, initrd=, disk=, cmdline=) on
# stdout, so callers can  eval "$(sh tests/guest/build-tiny.sh)".
# Progress goes to stderr. Idempotent, and safe to run concurrently (flock).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${STRATUS_CACHE:-/var/cache/stratus}
out=$cache/guest/tiny
dl=$cache/guest/downloads
force=0
case "${1:-}" in
--force) force=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

# Modules the guest loads (modprobe resolves their dependencies, which the
# build copies too, from modules.dep): virtio PCI devices, disks, the NIC,
# iso9660 and vfat seed disks, cdroms on AHCI or IDE, the ACPI power button.
MODULES="virtio_pci virtio_blk virtio_net virtio_balloon isofs vfat nls_cp437 nls_utf8 ahci ata_piix sr_mod sd_mod button evdev"

die() { echo "build-tiny: error: $*" >&2; exit 1; }
note() { echo "build-tiny: $*" >&2; }

for tool in apt-get apt-cache dpkg-deb qemu-img flock gzip sha256sum; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found (install: sh deps/install.sh deps/test-guest.txt)"
done
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox not found (apt-get install busybox-static)"
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
	die "$busybox is not statically linked (apt-get install busybox-static)"

mkdir -p "$out" "$dl" || die "cannot create $out (set STRATUS_CACHE to a writable directory)"
exec 9>"$out/.lock"
flock 9 || die "cannot lock $out/.lock"

# The kernel package linux-image-amd64 points to (or STRATUS_TINY_KERNEL_PKG).
kpkg=${STRATUS_TINY_KERNEL_PKG:-}
if [ -z "$kpkg" ]; then
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
	if [ -z "$kpkg" ]; then
		note "apt lists lack linux-image-amd64; running apt-get update"
		apt-get update -q >/dev/null || die "apt-get update failed"
		kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
	fi
	[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 to a kernel package (apt-cache depends linux-image-amd64)"
fi
kver_pkg=$(apt-cache show --no-all-versions "$kpkg" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1)
[ -n "$kver_pkg" ] || die "apt-cache knows no version of $kpkg"
bbver=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)

inputs="kernel=$kpkg $kver_pkg
busybox=$bbver
modules=$MODULES
build=$(cat "$0" "$here/tiny-init.sh" | sha256sum | cut -d' ' -f1)"

# Each distinct build lives in its own directory v-HASH/ (so a test never
# sees its kernel or initrd replaced by another version's build while it
# runs); $out/vmlinuz, initrd.img, disk.qcow2, SHA256SUMS and inputs are
# symlinks to the latest one.
ver=$out/v-$(printf '%s\n' "$inputs" | sha256sum | cut -c1-12)

print_paths() {
	echo "kernel=$ver/vmlinuz"
	echo "initrd=$ver/initrd.img"
	echo "disk=$ver/disk.qcow2"
	echo "cmdline='console=ttyS0'"
}

link_latest() {
	for f in vmlinuz initrd.img disk.qcow2 SHA256SUMS inputs; do
		ln -sfn "${ver##*/}/$f" "$out/.$f.lnk" && mv -fT "$out/.$f.lnk" "$out/$f"
	done
}

if [ $force = 0 ] && [ -f "$ver/inputs" ] && [ "$(cat "$ver/inputs")" = "$inputs" ] &&
	[ -s "$ver/vmlinuz" ] && [ -s "$ver/initrd.img" ] && [ -s "$ver/disk.qcow2" ]; then
	[ "$(readlink "$out/inputs" 2>/dev/null)" = "${ver##*/}/inputs" ] || link_latest
	note "up to date in $ver"
	print_paths
	exit 0
fi

work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# 1. The kernel package: downloaded (not installed) and unpacked.
deb=$(ls "$dl/${kpkg}_${kver_pkg}"_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
	note "downloading $kpkg $kver_pkg"
	(cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kver_pkg" >&2) ||
		die "apt-get download $kpkg=$kver_pkg failed (apt-get update?)"
	deb=$(ls "$dl/${kpkg}_"*.deb 2>/dev/null | head -n 1 || true)
	[ -n "$deb" ] || die "apt-get download left no $kpkg .deb in $dl"
fi
# Older kernel packages of ours are stale now.
for old in "$dl"/linux-image-*.deb; do
	[ "$old" = "$deb" ] || rm -f "$old"
done
note "unpacking $(basename "$deb")"
dpkg-deb -x "$deb" "$work/k" || die "dpkg-deb -x $deb failed"
kver=$(ls "$work/k/lib/modules" | head -n 1)
[ -n "$kver" ] && [ -f "$work/k/boot/vmlinuz-$kver" ] || die "no kernel in $deb"
kmods=$work/k/lib/modules/$kver
# The package's postinst would run depmod; busybox's depmod does it here.
"$busybox" depmod -b "$work/k" "$kver" || die "depmod on $kmods failed"

# 2. The initramfs tree.
root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/etc/acpi/PWRF" "$root/proc" "$root/sys" \
	"$root/dev" "$root/tmp" "$root/seed" "$root/lib/modules/$kver"
cp "$busybox" "$root/bin/busybox"
for app in $("$busybox" --list); do
	[ "$app" = busybox ] || ln -s busybox "$root/bin/$app"
done
install -m 0755 "$here/tiny-init.sh" "$root/init"
cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
# ACPI power button (virsh shutdown): tell PID 1 to power off.
kill -TERM 1
EOF
chmod 0755 "$root/etc/acpi/PWRF/00000080"
if [ "$(id -u)" = 0 ]; then
	mknod -m 600 "$root/dev/console" c 5 1
	mknod -m 666 "$root/dev/null" c 1 3
fi

# Modules: the closure of $MODULES over modules.dep.
need=""
add_mod() { # add_mod PATH (relative to $kmods), with its dependencies
	case " $need " in *" $1 "*) return 0 ;; esac
	need="$need $1"
	for d in $(sed -n "s|^$1:||p" "$kmods/modules.dep"); do
		add_mod "$d"
	done
}
for m in $MODULES; do
	re=$(echo "$m" | sed 's/[-_]/[-_]/g') # foo_bar.ko may be foo-bar.ko
	p=$(grep -E "/$re\.ko(\.[a-z]+)?:" "$kmods/modules.dep" | head -n 1 | cut -d: -f1)
	if [ -z "$p" ]; then
		grep -qE "/$re\.ko\$" "$kmods/modules.builtin" 2>/dev/null && continue
		die "module $m is neither in $kver's modules.dep nor built in"
	fi
	add_mod "$p"
done
for p in $need; do
	mkdir -p "$root/lib/modules/$kver/$(dirname "$p")"
	cp "$kmods/$p" "$root/lib/modules/$kver/$p"
	case "$p" in
	*.ko.xz) unxz "$root/lib/modules/$kver/$p" ;;
	*.ko.zst) zstd -q -d --rm "$root/lib/modules/$kver/$p" ;;
	esac
done
cp "$kmods/modules.builtin" "$kmods/modules.order" "$root/lib/modules/$kver/" 2>/dev/null || true
"$busybox" depmod -b "$root" "$kver" || die "depmod on the initramfs failed"
echo "$MODULES" | tr ' ' '\n' >"$root/etc/stratus-modules"
note "initramfs carries $(echo $need | wc -w) modules"

(cd "$root" && find . | sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null | gzip -9n) >"$work/initrd.img" ||
	die "cpio/gzip of the initramfs failed"
cp "$work/k/boot/vmlinuz-$kver" "$work/vmlinuz"

# 3. The 64 MiB disk: a recognisable first sector, the rest zero.
printf 'STRATUS-TINY-DISK\nversion=1 kernel=%s\n' "$kver" >"$work/disk.raw"
truncate -s 64M "$work/disk.raw"
qemu-img convert -q -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2" || die "qemu-img convert failed"

(cd "$work" && sha256sum vmlinuz initrd.img disk.qcow2) >"$work/SHA256SUMS"
printf '%s\n' "$inputs" >"$work/inputs"
mkdir -p "$ver"
for f in vmlinuz initrd.img disk.qcow2 SHA256SUMS inputs; do # inputs last: marks it complete
	mv -f "$work/$f" "$ver/$f"
done
link_latest
# Other versions' builds, unused for a day, go.
find "$out" -maxdepth 1 -name 'v-*' -type d ! -name "${ver##*/}" -mtime +0 -exec rm -rf {} + 2>/dev/null || true
note "built $ver (kernel $kver, initrd $(wc -c <"$ver/initrd.img") bytes)"
print_paths
