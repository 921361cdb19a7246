#!/bin/sh
# bench/vmm: spec -> started domain (test driver and real QEMU), and bulk
# stats for 100 domains on the test driver. Each figure is printed beside
# its target and a reference measured in the same run. Prints a BENCH line
# per figure (bench/lib.sh) for bench/run-all.sh.
set -eu
. "$(dirname "$0")/../lib.sh"
BUILD=${BUILD:-build}
STRATUS_TOP=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$STRATUS_TOP"
bench=$BUILD/bench/vmm/bench_vmm
[ -x "$bench" ] || make -s "$bench"

out=$("$bench" test 200)
get() { echo "$out" | sed -n "s/^$1 //p"; }
echo "vmm on the test driver (test:///default), median of 200:"
printf '  fit+render+define+start  %8.3f ms   target <= 5 ms   reference: raw virDomainDefineXML+virDomainCreate %.3f ms\n' \
	"$(echo "$(get spawn_test_ours_us) / 1000" | bc -l)" "$(echo "$(get spawn_test_raw_us) / 1000" | bc -l)"
printf '  stats for %s domains     %8.3f ms   target <= 10 ms  reference: raw virConnectGetAllDomainStats %.3f ms\n' \
	"$(get stats_domains)" "$(echo "$(get stats100_ours_us) / 1000" | bc -l)" \
	"$(echo "$(get stats100_raw_us) / 1000" | bc -l)"
ms() { echo "$(get "$1") / 1000" | bc -l | xargs printf %.3f; }
bench_line name=vmm.spawn_test figure="$(ms spawn_test_ours_us)" unit=ms target='<=5' \
	reference="$(ms spawn_test_raw_us)" ref_name="raw virDomainDefineXML+virDomainCreate"
bench_line name=vmm.stats_$(get stats_domains) figure="$(ms stats100_ours_us)" unit=ms target='<=10' \
	reference="$(ms stats100_raw_us)" ref_name="raw virConnectGetAllDomainStats"

# real QEMU (TCG): one tiny guest, spec to QEMU launched
. "$STRATUS_TOP/tests/lib/libvirt.sh"
tmp=$(mktemp -d /tmp/stratus-bench-vmm.XXXXXX)
chmod 755 "$tmp"
cleanup() {
	virsh -c qemu:///system destroy stratus-00000000-0000-4000-8000-0000be0c0001 >/dev/null 2>&1 || true
	virsh -c qemu:///system undefine stratus-00000000-0000-4000-8000-0000be0c0001 >/dev/null 2>&1 || true
	libvirt_down
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
libvirt_up
guest_tiny_build
qemu-img create -q -f qcow2 -F qcow2 -b "$TINY_DISK" "$tmp/disk.qcow2"
# a fresh libvirtd probes QEMU's capabilities on first use: not ours to time
virsh -c qemu:///system domcapabilities --virttype qemu >/dev/null
ours=$("$bench" qemu "$TINY_KERNEL" "$TINY_INITRD" "$tmp/disk.qcow2" | sed -n 's/^spawn_qemu_ours_ms //p')
t0=$(date +%s%N)
virsh -q -c qemu:///system define /tmp/stratus-bench-vmm.xml >/dev/null
virsh -q -c qemu:///system start stratus-00000000-0000-4000-8000-0000be0c0001 >/dev/null
ref=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "vmm on real QEMU (qemu:///system, TCG, tiny guest):"
printf '  fit+render+define+start  %8.1f ms   (no target)      reference: virsh define + virsh start of the same XML %d ms\n' "$ours" "$ref"
bench_line name=vmm.spawn_qemu figure="$ours" unit=ms reference="$ref" ref_name="virsh define + virsh start"
