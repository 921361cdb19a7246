#!/bin/sh
# Build (once) a GRUB-bootable Debian 12 cloud image like Debian's own
# genericcloud, from the root file system build-debian.sh made (its cache:
# no second debootstrap). No loop device and no mount of the image:
#   - the root tree comes out of build-debian.sh's ext4 with debugfs rdump;
#   - chroot adds GRUB (grub-pc-bin, grub-efi-amd64-bin, grub2-common: the
#     guest can run update-grub), growpart (cloud-guest-utils) and sfdisk;
#   - mkfs.ext4 -d writes the root partition image, mkfs.vfat -C + mtools
#     the ESP, sfdisk the GPT on a plain file, dd puts them in place;
#   - GRUB for BIOS: grub-mkimage -O i386-pc core.img in the BIOS boot
#     partition, boot.img in the MBR (patched as grub-bios-setup would);
#     for UEFI: grub-mkimage -O x86_64-efi as \EFI\BOOT\BOOTX64.EFI.
# Both find the root by its file system UUID and read /boot/grub/grub.cfg,
# which update-grub in the guest rewrites. See docs/guest-images.md.
#
#   tests/guest/build-cloudimg.sh [--force]
#
# Disk (2 GiB, GPT): 1 BIOS boot (1 MiB), 2 ESP (63 MiB, vfat), 3 root
# (ext4, label stratus-root, the rest). cloud-init's growpart and resizefs
# grow partition 3 and its file system to the instance disk at first boot.
# Output in ${STRATUS_CACHE:-/var/cache/stratus}/guest/debian12-cloud/v-HASH/
# (symlinks to the latest beside it): debian12-cloud.qcow2, SHA256SUMS,
# inputs, build.log. Prints image=PATH on stdout. Needs root (chroot).
set -eu

cache=${STRATUS_CACHE:-/var/cache/stratus}
out=$cache/guest/debian12-cloud
here=$(cd "$(dirname "$0")" && pwd)
force=0
case "${1:-}" in
--force) force=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac
# What a GRUB-booted cloud guest adds to the direct-kernel image.
PACKAGES="grub-pc-bin grub-efi-amd64-bin grub2-common cloud-guest-utils fdisk"
SIZE_MIB=2048
ESP_START=4096      # sectors: after the BIOS boot partition (2048-4095)
ROOT_START=133120   # sectors: 65 MiB
GRUB_MODULES_COMMON="part_gpt part_msdos ext2 fat search search_fs_uuid normal configfile linux echo test gzio serial terminal"

die() { echo "build-cloudimg: error: $*" >&2; exit 1; }
note() { echo "build-cloudimg: $(date -u +%H:%M:%S) $*" >&2; [ -z "${log:-}" ] || echo "== $*" >>"$log"; }

[ "$(id -u)" = 0 ] || die "needs root (chroot)"
for tool in debugfs mkfs.ext4 mkfs.vfat mmd mcopy sfdisk grub-mkimage qemu-img chroot flock python3; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found (install: sh deps/install.sh deps/test-guest.txt)"
done
for d in /usr/lib/grub/i386-pc /usr/lib/grub/x86_64-efi; do
	[ -d "$d" ] || die "$d missing (install grub-pc-bin and grub-efi-amd64-bin)"
done

# the direct-kernel build: its qcow2 is the root file system we start from.
# Its latest build is reused as it is (build-debian.sh re-checks the mirror's
# versions with apt-cache, minutes on a loaded machine); with none yet, or
# with STRATUS_CLOUDIMG_BASE_CHECK=1, build-debian.sh runs first.
base=$(readlink -f "$cache/guest/debian12/debian12.qcow2" 2>/dev/null || true)
if [ "${STRATUS_CLOUDIMG_BASE_CHECK:-0}" = 1 ] || [ ! -s "$base" ]; then
	base=$(sh "$here/build-debian.sh" | sed -n 's/^image=//p')
fi
[ -s "$base" ] || die "build-debian.sh gave no image"

mkdir -p "$out" || die "cannot create $out"
exec 9>"$out/.lock"
flock 9 || die "cannot lock $out/.lock"

inputs="base=$(sha256sum <"$base" | cut -c1-16)
packages=$PACKAGES
build=$(sha256sum <"$0" | cut -d' ' -f1)"
ver=$out/v-$(printf '%s\n' "$inputs" | sha256sum | cut -c1-12)
img=debian12-cloud.qcow2

link_latest() {
	for f in $img SHA256SUMS inputs; do
		ln -sfn "${ver##*/}/$f" "$out/.$f.lnk" && mv -fT "$out/.$f.lnk" "$out/$f"
	done
}
if [ $force = 0 ] && [ -f "$ver/inputs" ] && [ "$(cat "$ver/inputs")" = "$inputs" ] && [ -s "$ver/$img" ]; then
	[ "$(readlink "$out/inputs" 2>/dev/null)" = "${ver##*/}/inputs" ] || link_latest
	note "up to date in $ver"
	echo "image=$ver/$img"
	exit 0
fi

work=$(mktemp -d "$out/.build.XXXXXX")
log=$out/build.log
: >"$log"
root=$work/root
cleanup() {
	set +e
	for m in dev/pts dev proc sys; do
		if mountpoint -q "$root/$m" 2>/dev/null; then umount -l "$root/$m"; fi
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
started=$(date +%s)
run() {
	if ! "$@" >>"$log" 2>&1; then
		tail -n 25 "$log" >&2
		die "failed: $* (full log: $log)"
	fi
}
inchroot() { run chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

note "extracting the root tree of $base (debugfs rdump, no mount)"
run qemu-img convert -f qcow2 -O raw "$base" "$work/base.raw"
mkdir -p "$root"
run debugfs -R "rdump -p / $root" "$work/base.raw"
rm -f "$work/base.raw"
rm -rf "$root/lost+found"
[ -x "$root/sbin/init" ] || [ -L "$root/sbin/init" ] || die "no /sbin/init in the extracted tree"

note "adding $PACKAGES"
mkdir -p "$root/proc" "$root/sys" "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf"
inchroot apt-get update -q
# shellcheck disable=SC2086
inchroot apt-get install -y -q $PACKAGES
inchroot apt-get clean
rm -rf "$root/var/lib/apt/lists/"*
: >"$root/etc/resolv.conf"
for m in dev/pts dev proc sys; do umount "$root/$m"; done

kver=$(ls "$root/lib/modules" | sort -V | tail -n 1)
[ -f "$root/boot/vmlinuz-$kver" ] && [ -f "$root/boot/initrd.img-$kver" ] || die "no kernel in /boot"
uuid=$(cat /proc/sys/kernel/random/uuid)

note "GRUB configuration (kernel $kver, root UUID $uuid)"
cat >"$root/etc/fstab" <<EOF
# Stratus Debian 12 cloud image: GPT, root on partition 3, ESP on 2.
UUID=$uuid / ext4 defaults,errors=remount-ro 0 1
LABEL=ESP /boot/efi vfat umask=0077,nofail 0 2
EOF
mkdir -p "$root/boot/efi" "$root/boot/grub"
cat >"$root/etc/default/grub" <<'EOF'
# Stratus cloud image: the serial console is the one a cloud shows.
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --speed=115200"
GRUB_DISABLE_OS_PROBER=true
EOF
# What update-grub writes in the guest; here it cannot probe a device.
cat >"$root/boot/grub/grub.cfg" <<EOF
# Written by build-cloudimg.sh; update-grub in the guest replaces it.
serial --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root $uuid
menuentry 'Debian GNU/Linux' {
	linux /boot/vmlinuz-$kver root=UUID=$uuid ro console=tty0 console=ttyS0,115200
	initrd /boot/initrd.img-$kver
}
EOF
# modules where grub-install puts them: grub.cfg's insmod lines load them
for t in i386-pc x86_64-efi; do
	mkdir -p "$root/boot/grub/$t"
	cp /usr/lib/grub/$t/*.mod /usr/lib/grub/$t/*.lst "$root/boot/grub/$t/"
done
# both core images: find the root file system, read its grub.cfg
cat >"$work/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $uuid
set prefix=(\$root)/boot/grub
EOF
# shellcheck disable=SC2086
run grub-mkimage -O i386-pc -o "$work/core.img" -c "$work/early.cfg" -p /boot/grub \
	biosdisk $GRUB_MODULES_COMMON
# shellcheck disable=SC2086
run grub-mkimage -O x86_64-efi -o "$work/BOOTX64.EFI" -c "$work/early.cfg" -p /boot/grub \
	$GRUB_MODULES_COMMON efi_gop all_video
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
[ "$core_sectors" -le 2048 ] || die "core.img is $core_sectors sectors, over the 1 MiB BIOS boot partition"

note "partition images: root (mkfs.ext4 -d) and ESP (mkfs.vfat -C + mtools)"
total=$((SIZE_MIB * 2048))
root_sectors=$((total - ROOT_START - 2048)) # leave 1 MiB for the backup GPT
run mkfs.ext4 -q -F -L stratus-root -U "$uuid" -d "$root" -E lazy_itable_init=0,lazy_journal_init=0 \
	"$work/root.img" "$((root_sectors / 2))k"
run mkfs.vfat -C -n ESP "$work/esp.img" $(((ROOT_START - ESP_START) / 2))
run mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
run mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

note "GPT disk of $SIZE_MIB MiB (sfdisk on a file) and the boot code"
run truncate -s "${SIZE_MIB}M" "$work/disk.raw"
cat >"$work/layout" <<EOF
label: gpt
start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name="bios"
start=$ESP_START, size=$((ROOT_START - ESP_START)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"
start=$ROOT_START, size=$root_sectors, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"
EOF
run sh -c "sfdisk --no-reread --no-tell-kernel '$work/disk.raw' <'$work/layout'"
run dd if="$work/esp.img" of="$work/disk.raw" bs=1M seek=$((ESP_START * 512)) oflag=seek_bytes conv=notrunc,sparse
run dd if="$work/root.img" of="$work/disk.raw" bs=1M seek=$((ROOT_START * 512)) oflag=seek_bytes conv=notrunc,sparse
# What grub-bios-setup does for an embedded core image: boot.img learns
# core.img's first sector (0x5c) and skips its floppy probe (0x66);
# core.img's first sector (diskboot) learns where the rest is (0x1f4,
# length at 0x1fc). boot.img goes into the MBR's first 440 bytes only
# (the protective MBR's partition table stays).
python3 - "$work/disk.raw" /usr/lib/grub/i386-pc/boot.img "$work/core.img" "$core_sectors" <<'EOF'
import struct, sys
disk, boot, core, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
b = bytearray(open(boot, 'rb').read())
c = bytearray(open(core, 'rb').read())
c += b'\0' * (n * 512 - len(c))
struct.pack_into('<Q', b, 0x5c, 2048)
b[0x66:0x68] = b'\x90\x90'
struct.pack_into('<QH', c, 0x1f4, 2049, n - 1)
with open(disk, 'r+b') as f:
    f.seek(0); f.write(b[:440])
    f.seek(2048 * 512); f.write(c)
EOF
run sfdisk --verify "$work/disk.raw"

note "converting to qcow2"
run qemu-img convert -c -f raw -O qcow2 "$work/disk.raw" "$work/$img"
rm -f "$work/disk.raw" "$work/root.img" "$work/esp.img"
(cd "$work" && sha256sum $img) >"$work/SHA256SUMS"
printf '%s\n' "$inputs" >"$work/inputs"
mkdir -p "$ver"
for f in $img SHA256SUMS inputs; do mv -f "$work/$f" "$ver/$f"; done
link_latest
find "$out" -maxdepth 1 -name 'v-*' -type d ! -name "${ver##*/}" -mtime +0 -exec rm -rf {} + 2>/dev/null || true
note "built $ver in $(( $(date +%s) - started )) s (qcow2 $(( $(stat -c %s "$ver/$img") / 1048576 )) MiB)"
echo "image=$ver/$img"
