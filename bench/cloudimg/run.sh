#!/bin/sh
# cloud image benchmark (issue 16): the time from `virsh start` to
# "Cloud-init ... finished" on the serial console (TCG, one vCPU, 768 MiB,
# NoCloud seed) for the GRUB cloud image (tests/guest/build-cloudimg.sh)
# under SeaBIOS and under OVMF, beside the direct-kernel Debian image (the
# same root file system, the kernel given by the host) in the same run,
# one after the other. Target: each at most 1.3x the direct-kernel time.
# Needs root and libvirtd (qemu:///system); run it under
# flock /tmp/stratus-libvirt.lock when others use the same libvirtd.
set -eu
. "$(dirname "$0")/../lib.sh"
STRATUS_TOP=$(cd "$(dirname "$0")/../.." && pwd)
. "$STRATUS_TOP/tests/lib/libvirt.sh"
tmp=$(mktemp -d /var/tmp/stratus-cloudimg-bench.XXXXXX)
chmod 755 "$tmp"
cleanup() {
	for k in direct bios uefi; do guest_destroy "stratus-bench-cloudimg-$k-$$"; done
	rm -rf "$tmp"
	libvirt_down
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

cloud=$(sh "$STRATUS_TOP/tests/guest/build-cloudimg.sh" 2>"$tmp/build.log" | sed -n 's/^image=//p')
[ -s "$cloud" ] || { echo "cloud image build failed: $(tail -n 3 "$tmp/build.log")"; exit 1; }
# the direct-kernel build it was made from (build-cloudimg.sh made sure of it)
deb=${STRATUS_CACHE:-/var/cache/stratus}/guest/debian12
DEB_IMAGE=$(readlink -f "$deb/debian12.qcow2") DEB_KERNEL=$(readlink -f "$deb/vmlinuz")
DEB_INITRD=$(readlink -f "$deb/initrd.img")
libvirt_up
virsh -c "$LIBVIRT_URI" domcapabilities --virttype qemu >/dev/null # first probe: not ours to time

# boot_time KIND: seconds from virsh start to cloud-init finished
boot_time() {
	kind=$1 name=stratus-bench-cloudimg-$1-$$
	d=$tmp/$kind
	mkdir -p "$d"
	chmod 755 "$d"
	base=$cloud
	[ "$kind" = direct ] && base=$DEB_IMAGE
	qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$d/root.qcow2" 4G
	printf '#cloud-config\n' >"$d/user-data"
	guest_seed_nocloud "$d/seed.iso" "iid-$kind-$$" "$d/user-data" bench >/dev/null
	case $kind in
	direct) os="<os><type arch='x86_64' machine='pc'>hvm</type><kernel>$DEB_KERNEL</kernel><initrd>$DEB_INITRD</initrd><cmdline>root=/dev/vda console=ttyS0</cmdline></os>" ;;
	bios) os="<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>" ;;
	uefi) os="<os firmware='efi'><type arch='x86_64' machine='pc'>hvm</type><firmware><feature enabled='no' name='enrolled-keys'/><feature enabled='no' name='secure-boot'/></firmware><nvram>$d/nvram.fd</nvram><boot dev='hd'/></os>" ;;
	esac
	cat >"$d/domain.xml" <<XML
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>768</memory>
  <vcpu>1</vcpu>
  $os
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$d/root.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='$d/seed.iso'/><target dev='hda' bus='ide'/><readonly/></disk>
    <serial type='file'><source path='$d/console.log'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
XML
	virsh -q -c "$LIBVIRT_URI" define "$d/domain.xml" >/dev/null
	t0=$(date +%s.%N)
	virsh -q -c "$LIBVIRT_URI" start "$name" >/dev/null
	guest_console_wait "$d/console.log" 'Cloud-init v\. [0-9.]+ finished at' 400 >/dev/null || return 1
	t1=$(date +%s.%N)
	guest_destroy "$name"
	echo "$t0 $t1" | awk '{printf "%.1f", $2 - $1}'
}

direct=$(boot_time direct) || direct=
bios=$(boot_time bios) || bios=
uefi=$(boot_time uefi) || uefi=
printf '  direct kernel %6s s   GRUB/SeaBIOS %6s s   GRUB/OVMF %6s s   (virsh start -> cloud-init finished, TCG)\n' \
	"${direct:-?}" "${bios:-?}" "${uefi:-?}"
bench_line name=cloudimg.boot_bios figure="$bios" unit=s reference="$direct" ref_unit=s \
	ref_name="direct kernel boot" target="<=1.3x"
bench_line name=cloudimg.boot_uefi figure="$uefi" unit=s reference="$direct" ref_unit=s \
	ref_name="direct kernel boot" target="<=1.3x"
