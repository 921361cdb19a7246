#!/bin/sh
# Boots the tiny guest under real libvirtd/QEMU (domain type qemu) from a
# hand-written domain XML: a qcow2 overlay on the tiny disk as vda, a NoCloud
# seed (cloud-localds) as a read-only virtio disk, serial console to a file.
# Checks from the console: booted, the disk image, the seed's instance-id and
# hostname, the user-data script ran, ready; then an ACPI shutdown (virsh
# shutdown) powers it off. Cleans up the domain and its files.
# suite: e2e
set -u
top=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top/tests/lib/libvirt.sh"

fail() { echo "FAIL: $*" >&2; exit 1; }

guest_tiny_build || fail "building the tiny guest"
libvirt_up || fail "libvirt"

name=stratus-test-tiny-$$
iid=iid-$(cat /proc/sys/kernel/random/uuid)
dir=$(mktemp -d /var/tmp/stratus-tiny.XXXXXX) || fail "mktemp"
chmod 0755 "$dir" # QEMU runs as libvirt-qemu
cleanup() {
	guest_destroy "$name"
	if [ -n "${STRATUS_KEEP:-}" ]; then echo "kept $dir" >&2; else rm -rf "$dir"; fi
	libvirt_down
}
trap cleanup EXIT
trap 'exit 1' INT TERM

qemu-img create -q -f qcow2 -b "$TINY_DISK" -F qcow2 "$dir/root.qcow2" || fail "qemu-img create overlay"
cat >"$dir/user-data" <<EOF
#!/bin/sh
echo "TINY-USERDATA-RAN $iid"
EOF
guest_seed_nocloud "$dir/seed.iso" "$iid" "$dir/user-data" tiny-test || fail "seed"

cat >"$dir/domain.xml" <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$TINY_KERNEL</kernel>
    <initrd>$TINY_INITRD</initrd>
    <cmdline>$TINY_CMDLINE</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$dir/root.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <serial>stratus-root</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$dir/seed.iso'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <interface type='user'>
      <mac address='52:54:00:5e:00:42'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='$dir/console.log'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF

start=$(date +%s)
virsh -c "$LIBVIRT_URI" define "$dir/domain.xml" >/dev/null || fail "virsh define"
virsh -c "$LIBVIRT_URI" start "$name" >/dev/null || fail "virsh start"
t1=$(date +%s)
echo "defined and started in $(( t1 - start )) s"
guest_console_wait "$dir/console.log" '^STRATUS-GUEST: ready' 120 || fail "the guest did not reach ready"
# Tests grep the console log: lines end in \r\n (the serial line's ONLCR),
# so patterns must not anchor at the end with $.
echo "tiny guest ready $(( $(date +%s) - t1 )) s after virsh start (TCG)"

c=$dir/console.log
grep -q '^STRATUS-GUEST: booted kernel=' "$c" || fail "no booted line"
grep -q '^STRATUS-GUEST: modules loaded=[0-9]* failed=0' "$c" || fail "modules failed to load: $(grep 'module' "$c")"
grep -q '^STRATUS-GUEST: disk vda size=67108864 ro=0 serial=stratus-root image=stratus-tiny' "$c" ||
	fail "vda is not the 64 MiB tiny disk: $(grep 'disk ' "$c")"
grep -q '^STRATUS-GUEST: disk vdb .*ro=1' "$c" || fail "no read-only vdb"
grep -q "^STRATUS-GUEST: seed cidata instance-id=$iid dev=vdb" "$c" ||
	fail "seed instance-id $iid not seen: $(grep 'seed' "$c")"
grep -q '^STRATUS-GUEST: seed hostname=tiny-test' "$c" || fail "seed hostname not seen"
grep -q "^TINY-USERDATA-RAN $iid" "$c" || fail "user-data script did not run"
grep -q '^STRATUS-GUEST: nic eth0 mac=52:54:00:5e:00:42' "$c" || fail "NIC MAC not seen: $(grep 'nic' "$c")"

# virsh shutdown = ACPI power button: the guest must power itself off.
virsh -c "$LIBVIRT_URI" shutdown "$name" >/dev/null || fail "virsh shutdown"
n=0
while [ "$(virsh -c "$LIBVIRT_URI" domstate "$name" 2>/dev/null)" != "shut off" ]; do
	n=$((n + 1))
	[ $n -lt 120 ] || fail "the guest did not power off within 60 s of virsh shutdown"
	sleep 0.5
done
grep -q '^STRATUS-GUEST: poweroff' "$c" || fail "no poweroff line after ACPI shutdown"
echo "PASS: tiny guest booted, saw its seed ($iid), ran user-data, powered off on ACPI in $(( $(date +%s) - start )) s"
