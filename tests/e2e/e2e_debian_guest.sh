#!/bin/sh
# Boots the Debian 12 guest (real cloud-init 22.4) under libvirtd/QEMU
# (domain type qemu) with a NoCloud seed (cloud-localds) whose user-data has a
# runcmd that writes a marker and the instance-id to the serial console.
# Checks "Cloud-init v. ... finished" and the marker on the console.
# Slow (a first build of the image takes about 2 min, the boot about 1 min
# under TCG): part of make e2e, not make check.
set -u
top=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top/tests/lib/libvirt.sh"

fail() { echo "FAIL: $*" >&2; exit 1; }

STRATUS_TOP=$top
guest_debian_build || fail "building the Debian image"
image=$DEB_IMAGE kernel=$DEB_KERNEL initrd=$DEB_INITRD
libvirt_up || fail "libvirt"

name=stratus-test-debian-$$
iid=iid-$(cat /proc/sys/kernel/random/uuid)
mark=marker-$$-$(date +%s)
dir=$(mktemp -d /var/tmp/stratus-debian.XXXXXX) || fail "mktemp"
chmod 0755 "$dir" # QEMU runs as libvirt-qemu
cleanup() {
	guest_destroy "$name"
	if [ -n "${STRATUS_KEEP:-}" ]; then echo "kept $dir" >&2; else rm -rf "$dir"; fi
	libvirt_down
}
trap cleanup EXIT
trap 'exit 1' INT TERM

qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$dir/root.qcow2" 4G || fail "qemu-img create overlay"
cat >"$dir/user-data" <<EOF
#cloud-config
runcmd:
  - [sh, -c, 'echo "STRATUS-E2E: $mark iid=\$(cat /var/lib/cloud/data/instance-id) host=\$(hostname)" > /dev/ttyS0']
EOF
guest_seed_nocloud "$dir/seed.iso" "$iid" "$dir/user-data" deb-test || fail "seed"

cat >"$dir/domain.xml" <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$kernel</kernel>
    <initrd>$initrd</initrd>
    <cmdline>root=/dev/vda console=ttyS0</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$dir/root.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$dir/seed.iso'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <serial type='file'>
      <source path='$dir/console.log'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF

virsh -c "$LIBVIRT_URI" define "$dir/domain.xml" >/dev/null || fail "virsh define"
virsh -c "$LIBVIRT_URI" start "$name" >/dev/null || fail "virsh start"
start=$(date +%s)
guest_console_wait "$dir/console.log" 'Cloud-init v\. [0-9.]+ finished at' 300 ||
	fail "cloud-init did not finish within 300 s"
secs=$(( $(date +%s) - start ))
c=$dir/console.log
grep -q "STRATUS-E2E: $mark iid=$iid host=deb-test" "$c" ||
	fail "runcmd marker with instance-id $iid not on the console: $(grep 'STRATUS-E2E' "$c")"
grep -q 'Datasource DataSourceNoCloud' "$c" || fail "cloud-init did not use the NoCloud seed"
echo "PASS: cloud-init finished $secs s after virsh start (TCG), ran runcmd, instance-id $iid"
