#!/bin/sh
# The passthrough and CPU-model domains stratus-agent render-domain makes
# (the golden cases' specs on the sysfs fixture, domain type qemu: this
# machine has neither KVM nor an IOMMU) are accepted by a real libvirtd:
# defined on qemu:///system, never started (starting would need VT-d and
# vfio-pci: docs/vmm.md "What a VT-d host adds"), and undefined again.
# Run it under the shared lock: flock /tmp/stratus-libvirt.lock make check ...
set -u
BUILD=${BUILD:-build}
agent=$BUILD/stratus-agent
data=tests/vmm/data
sysfs=tests/vmm/sysfs
if ! command -v libvirtd >/dev/null 2>&1; then
	[ "${CI:-}" = true ] && { echo "FAIL: libvirtd missing (CI must have it)"; exit 1; }
	echo "libvirtd not installed"
	exit 77
fi
. "$STRATUS_TOP/tests/lib/libvirt.sh"
tmp=$(mktemp -d)
defined=""
cleanup() {
	for d in $defined; do
		virsh -c qemu:///system undefine "$d" >/dev/null 2>&1
	done
	rm -rf "$tmp"
	libvirt_down
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
libvirt_up || fail "libvirtd did not start"

# define CASE FIXTURE: render the case with a fresh uuid, define it, print the live XML
define() {
	u=$(cat /proc/sys/kernel/random/uuid)
	jq --arg u "$u" '.uuid = $u' "$data/$1.json" >"$tmp/$1.json"
	cfg=""
	[ -f "$data/$1.yaml" ] && cfg="-c $data/$1.yaml"
	# shellcheck disable=SC2086
	"$agent" render-domain $cfg --sysfs "$sysfs/$2" --accel qemu "$tmp/$1.json" >"$tmp/$1.xml" ||
		fail "$1: render-domain failed"
	virt-xml-validate "$tmp/$1.xml" domain >/dev/null || fail "$1: not valid for libvirt's schema"
	virsh -c qemu:///system define "$tmp/$1.xml" >"$tmp/$1.out" 2>&1 ||
		fail "$1: libvirtd refused the definition: $(cat "$tmp/$1.out")"
	defined="$defined stratus-$u"
	[ "$(virsh -c qemu:///system domstate "stratus-$u")" = "shut off" ] || fail "$1: not shut off after define"
	virsh -c qemu:///system dumpxml --inactive "stratus-$u" >"$tmp/$1.live"
}

# one device on NUMA node 1, with the guest cell and its memory there
define pci-required pci-2node
grep -q "<hostdev mode='subsystem' type='pci' managed='yes'>" "$tmp/pci-required.live" || fail "pci-required: no hostdev kept"
grep -q "<address domain='0x0000' bus='0xd9' slot='0x00' function='0x0'/>" "$tmp/pci-required.live" ||
	fail "pci-required: not the node-1 device 0000:d9:00.0: $(grep -A3 hostdev "$tmp/pci-required.live")"
grep -q "<memnode cellid='0' mode='strict' nodeset='1'/>" "$tmp/pci-required.live" || fail "pci-required: guest memory not on node 1"
echo "ok   pci-required defined (0000:d9:00.0, node 1)"

# two devices (preferred: one from the other node)
define pci-preferred pci-2node
[ "$(grep -c "<hostdev mode='subsystem' type='pci' managed='yes'>" "$tmp/pci-preferred.live")" = 2 ] ||
	fail "pci-preferred: expected 2 hostdevs"
echo "ok   pci-preferred defined (2 devices)"

# a named CPU model, and flags on QEMU's own model under TCG
define cpu-custom-qemu 1node
grep -q "<model fallback='forbid'>Nehalem</model>" "$tmp/cpu-custom-qemu.live" || fail "cpu-custom-qemu: model not kept"
echo "ok   cpu-custom-qemu defined (Nehalem)"
define cpu-flags-qemu 1node
grep -q "<feature policy='require' name='pcid'/>" "$tmp/cpu-flags-qemu.live" || fail "cpu-flags-qemu: flag not kept"
echo "ok   cpu-flags-qemu defined (qemu64 +pcid)"
echo "all defined and accepted"
