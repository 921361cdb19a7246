#!/bin/sh
# Build (once) a Debian 12 guest image with real cloud-init from Debian's
# packages: debootstrap --variant=minbase into an ext4 file system (no
# partition table) in a loop-mounted raw image, converted to qcow2, with the
# kernel and initrd beside it for direct kernel boot. See docs/guest-images.md.
#
#   tests/guest/build-debian.sh [--force]
#
# Output in ${STRATUS_CACHE:-/var/cache/stratus}/guest/debian12/v-HASH/ (one
# directory per distinct build; the same names in guest/debian12/ are
# symlinks to the latest):
#   debian12.qcow2  the root disk (ext4 on the whole disk, virtual size 2 GiB)
#   vmlinuz         the guest's kernel    } boot with
#   initrd.img      the guest's initramfs } root=/dev/vda console=ttyS0
#   SHA256SUMS, inputs, build.log
# On success prints KEY=VALUE lines (image=, kernel=, initrd=, cmdline=) on
# stdout. Progress goes to stderr, the full log to build.log.
# Environment:
#   STRATUS_DEBIAN_MIRROR   default http://deb.debian.org/debian
#   STRATUS_DEBIAN_SECURITY default http://deb.debian.org/debian-security
#   STRATUS_DEBIAN_EXTRA    extra packages, space separated (e.g. openssh-server)
# Needs root (debootstrap, loop mount). Idempotent; concurrent runs wait (flock).
set -eu

cache=${STRATUS_CACHE:-/var/cache/stratus}
out=$cache/guest/debian12
mirror=${STRATUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${STRATUS_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
extra=${STRATUS_DEBIAN_EXTRA:-}
suite=bookworm
size=2G
force=0
case "${1:-}" in
--force) force=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

# What the guest gets beyond minbase (debootstrap installs no Recommends).
# python3-cffi-backend: python3-cryptography depends on the virtual
# python3-cffi-backend-api-min, which debootstrap cannot resolve by itself.
# isc-dhcp-client + ifupdown: cloud-init 22.4 on Debian renders ENI network
# config and its OpenStack/Ec2 datasources use dhclient for ephemeral DHCP.
PACKAGES="systemd-sysv udev cloud-init python3-cffi-backend isc-dhcp-client ifupdown iproute2 netbase ca-certificates"
# The kernel comes later, after the initramfs configuration is in place.
KERNEL_PACKAGE=linux-image-amd64
# Modules in the guest's initramfs (MODULES=list): enough to mount / on
# virtio-blk and to read seed disks.
INITRD_MODULES="virtio_pci virtio_blk virtio_net virtio_scsi ext4 isofs vfat ahci ata_piix sr_mod sd_mod"
# Module trees a virtual server never needs (about 200 MB).
PRUNE="sound drivers/media drivers/gpu drivers/net/wireless drivers/net/ethernet drivers/infiniband drivers/staging drivers/bluetooth drivers/isdn drivers/iio drivers/mtd drivers/usb/gadget drivers/hwmon drivers/video net/wireless net/mac80211 net/bluetooth"

die() { echo "build-debian: error: $*" >&2; exit 1; }
note() { echo "build-debian: $(date -u +%H:%M:%S) $*" >&2; [ -z "${log:-}" ] || echo "== $*" >>"$log"; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap and a loop mount)"
for tool in debootstrap mkfs.ext4 qemu-img losetup mount chroot flock sha256sum apt-cache; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found (install: sh deps/install.sh deps/test-guest.txt)"
done

mkdir -p "$out" || die "cannot create $out (set STRATUS_CACHE to a writable directory)"
exec 9>"$out/.lock"
flock 9 || die "cannot lock $out/.lock"

ver() { apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1; }
inputs="suite=$suite mirror=$mirror security=$security
packages=$PACKAGES $extra
cloud-init=$(ver cloud-init) kernel=$(ver $KERNEL_PACKAGE) $(apt-cache depends $KERNEL_PACKAGE 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
build=$(sha256sum <"$0" | cut -d' ' -f1)"

# One directory per distinct build (v-HASH/), the same names in $out are
# symlinks to the latest: a guest never has its backing image replaced by
# another version's build (see build-tiny.sh).
ver=$out/v-$(printf '%s\n' "$inputs" | sha256sum | cut -c1-12)

print_paths() {
	echo "image=$ver/debian12.qcow2"
	echo "kernel=$ver/vmlinuz"
	echo "initrd=$ver/initrd.img"
	echo "cmdline='root=/dev/vda console=ttyS0'"
}

link_latest() {
	for f in debian12.qcow2 vmlinuz initrd.img SHA256SUMS inputs; do
		ln -sfn "${ver##*/}/$f" "$out/.$f.lnk" && mv -fT "$out/.$f.lnk" "$out/$f"
	done
}

if [ $force = 0 ] && [ -f "$ver/inputs" ] && [ "$(cat "$ver/inputs")" = "$inputs" ] &&
	[ -s "$ver/debian12.qcow2" ] && [ -s "$ver/vmlinuz" ] && [ -s "$ver/initrd.img" ]; then
	[ "$(readlink "$out/inputs" 2>/dev/null)" = "${ver##*/}/inputs" ] || link_latest
	note "up to date in $ver"
	print_paths
	exit 0
fi

work=$(mktemp -d "$out/.build.XXXXXX")
log=$out/build.log
: >"$log"
mnt=$work/root
loopdev=""
cleanup() {
	set +e
	if [ -d "$mnt" ]; then
		for m in dev/pts dev proc sys; do
			if mountpoint -q "$mnt/$m"; then umount -l "$mnt/$m"; fi
		done
		if mountpoint -q "$mnt"; then umount "$mnt"; fi
	fi
	[ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
started=$(date +%s)

run() { # run CMD...: log its output; on failure show the tail of the log
	if ! "$@" >>"$log" 2>&1; then
		tail -n 25 "$log" >&2
		die "failed: $* (full log: $log)"
	fi
}
inchroot() { run chroot "$mnt" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

note "creating a $size ext4 file system in a raw image"
run truncate -s "$size" "$work/root.raw"
run mkfs.ext4 -q -F -L stratus-root -E lazy_itable_init=0,lazy_journal_init=0 "$work/root.raw"
mkdir -p "$mnt"
loopdev=$(losetup -f --show "$work/root.raw") || die "losetup failed (are loop devices available?)"
run mount -t ext4 "$loopdev" "$mnt"

note "debootstrap $suite (minbase + $PACKAGES $extra) from $mirror"
pkgs=$(echo "$PACKAGES $extra" | tr -s ' ' ',' | sed 's/,$//')
run debootstrap --variant=minbase --include="$pkgs" "$suite" "$mnt" "$mirror"

mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
mount --bind /dev "$mnt/dev"
mount --bind /dev/pts "$mnt/dev/pts"

note "configuring apt, fstab, cloud-init and the initramfs"
cat >"$mnt/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
EOF
cat >"$mnt/etc/apt/apt.conf.d/90stratus" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
cat >"$mnt/etc/dpkg/dpkg.cfg.d/90stratus" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
cat >"$mnt/etc/fstab" <<'EOF'
# Stratus Debian 12 guest: ext4 on the whole disk.
/dev/vda / ext4 defaults,errors=remount-ro 0 1
EOF
echo debian >"$mnt/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$mnt/etc/hosts"
# The loopback interface only: cloud-init writes the rest (50-cloud-init).
cat >"$mnt/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback
source /etc/network/interfaces.d/*
EOF
mkdir -p "$mnt/etc/cloud/cloud.cfg.d" "$mnt/etc/initramfs-tools/conf.d"
cat >"$mnt/etc/cloud/cloud.cfg.d/90_stratus.cfg" <<'EOF'
# Stratus guest image: the datasources a Stratus cloud offers.
# NoCloud: seed disk labelled cidata; ConfigDrive: seed disk labelled config-2;
# OpenStack and Ec2: the metadata service at 169.254.169.254 (cloud-init's
# ds-identify enables OpenStack when the SMBIOS product is "OpenStack Nova").
datasource_list: [NoCloud, ConfigDrive, OpenStack, Ec2, None]
# The image has no openssh-server (STRATUS_DEBIAN_EXTRA=openssh-server adds
# it) and no locales package: skip what would only print warnings.
ssh_genkeytypes: []
locale: false
EOF
echo "MODULES=list" >"$mnt/etc/initramfs-tools/conf.d/stratus"
echo "COMPRESS=gzip" >>"$mnt/etc/initramfs-tools/conf.d/stratus"
echo "$INITRD_MODULES" | tr ' ' '\n' >>"$mnt/etc/initramfs-tools/modules"

note "installing $KERNEL_PACKAGE"
inchroot apt-get update -q
inchroot apt-get install -y -q "$KERNEL_PACKAGE"
kver=$(ls "$mnt/lib/modules" | sort -V | tail -n 1)
[ -n "$kver" ] && [ -f "$mnt/boot/vmlinuz-$kver" ] || die "no kernel installed in the guest"
note "pruning unused kernel modules and regenerating the initramfs ($kver)"
for p in $PRUNE; do
	rm -rf "$mnt/lib/modules/$kver/kernel/$p"
done
inchroot depmod "$kver"
inchroot update-initramfs -u -k "$kver"

# Services a short-lived cloud guest does not need at boot.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
	if [ -e "$mnt/lib/systemd/system/$unit" ]; then inchroot systemctl disable "$unit"; fi
done
# cloud-init writes its own logs; keep the journal small.
mkdir -p "$mnt/etc/systemd/journald.conf.d"
printf '[Journal]\nSystemMaxUse=32M\n' >"$mnt/etc/systemd/journald.conf.d/90-stratus.conf"
# Root has no password (locked): cloud-init installs users and keys.
inchroot passwd -l root
# Every boot of an image must look like a first boot.
: >"$mnt/etc/machine-id"
rm -f "$mnt/var/lib/dbus/machine-id"
rm -rf "$mnt/var/lib/cloud" "$mnt/var/log/cloud-init"*
inchroot apt-get clean
rm -rf "$mnt/var/lib/apt/lists/"* "$mnt/usr/share/doc/"*/[!c]* "$mnt/usr/share/man/"* "$mnt/usr/share/locale/"[!l]* "$mnt/tmp/"*
inchroot dpkg-query -W -f='${Package} ${Version}\n' cloud-init "linux-image-$kver" systemd python3-cffi-backend

cp "$mnt/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$mnt/boot/initrd.img-$kver" "$work/initrd.img"
used=$(df -k --output=used "$mnt" | tail -n 1)
du -xsh "$mnt/usr" "$mnt/lib/modules" "$mnt/var" "$mnt/boot" >>"$log" 2>&1 || true
for m in dev/pts dev proc sys; do umount "$mnt/$m"; done
# Deleted files (debootstrap's .debs, apt lists) must not reach the qcow2:
# discard their blocks so the raw file is sparse again.
run fstrim "$mnt"
umount "$mnt"
run e2fsck -f -y "$loopdev"
losetup -d "$loopdev"
loopdev=""

note "converting to qcow2 (compressed; ${used} KiB used)"
run qemu-img convert -c -f raw -O qcow2 "$work/root.raw" "$work/debian12.qcow2"
rm -f "$work/root.raw"
(cd "$work" && sha256sum debian12.qcow2 vmlinuz initrd.img) >"$work/SHA256SUMS"
printf '%s\n' "$inputs" >"$work/inputs"
mkdir -p "$ver"
for f in debian12.qcow2 vmlinuz initrd.img SHA256SUMS inputs; do # inputs last: marks it complete
	mv -f "$work/$f" "$ver/$f"
done
link_latest
# Other versions' builds, unused for a day, go (an image is 350 MiB).
find "$out" -maxdepth 1 -name 'v-*' -type d ! -name "${ver##*/}" -mtime +0 -exec rm -rf {} + 2>/dev/null || true
note "built $ver in $(( $(date +%s) - started )) s (qcow2 $(( $(stat -c %s "$ver/debian12.qcow2") / 1048576 )) MiB, kernel $kver)"
print_paths
