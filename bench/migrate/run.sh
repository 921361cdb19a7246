#!/bin/sh
# bench/migrate/run.sh: live migration of the tiny guest between two
# namespaced libvirtds on this machine (tests/lib/twohost.sh), by Stratus
# (`stratusctl migrate`, relayed by the scheduler, the destination prepared by
# its agent) and by `virsh migrate --live --p2p --copy-storage-inc` of the same
# guest defined by hand, in the same run, MIG_RUNS times each (default 5),
# alternating directions. Figures: the medians of libvirt's measured downtime
# (VIR_DOMAIN_JOB_DOWNTIME) and of the total time (Stratus: libvirt's elapsed
# time of its job; virsh: domjobinfo --completed), side by side.
# Targets (issue 15): downtime median <= 300 ms; total <= 1.2x virsh's.
# Needs root, QEMU, libvirt (prints BENCH lines with reason otherwise).
set -u
STRATUS_TOP=$(cd "$(dirname "$0")/../.." && pwd)
export STRATUS_TOP
. "$STRATUS_TOP/bench/lib.sh"
N=${MIG_RUNS:-5}
skip() {
	bench_line name=migrate.downtime figure= reason="$*"
	bench_line name=migrate.total figure= reason="$*"
	exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root (namespaces)"
command -v qemu-system-x86_64 >/dev/null || skip "no QEMU"
# Nova's limits (300 ms in 3 steps from 100 ms), with steps of 250 ms, fit for
# a 128 MiB guest (Nova scales its delay per GiB); MIG_CONFIG overrides them
MIG_CONFIG=${MIG_CONFIG:-"downtime: 300ms, downtime_steps: 3, downtime_delay: 250ms, completion_timeout: 120s"}
fail() { echo "bench: $*" >&2; skip "$*"; }
. "$STRATUS_TOP/tests/e2e/twohost-stack.sh"

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) exit; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- Stratus ----
ctl boot bench --flavor m1.tiny --image tiny --timeout 300 >"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out")"
uuid=$(ctl --json show bench | jq -r .uuid)
here=$(ctl --json show bench | jq -r .host)
for _ in $(seq 600); do grep -q "STRATUS-GUEST: ready" "$TH_DIR/h${here#h}/inst/$uuid.log" 2>/dev/null && break; sleep 0.5; done
: >"$T/stratus.txt"
i=0
while [ $i -lt "$N" ]; do
	to=h2
	[ "$here" = h2 ] && to=h1
	ctl --json migrate bench --host "$to" --timeout 300 >"$T/m.json" 2>"$T/m.err" ||
		fail "stratusctl migrate: $(cat "$T/m.err")"
	jq -r '"\(.total_ms) \(.downtime_ms)"' "$T/m.json" | tail -n 1 >>"$T/stratus.txt"
	echo "stratus $((i + 1)): $here -> $to: $(tail -n 1 "$T/stratus.txt") (total ms, downtime ms)"
	here=$to
	i=$((i + 1))
done
ctl delete bench --timeout 120 >/dev/null 2>&1

# ---- virsh, the same guest by hand ----
cat >"$T/dom.xml" <<XML
<domain type='qemu'><name>mgbench</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><kernel>$kernel</kernel><initrd>$initrd</initrd>
<cmdline>console=ttyS0</cmdline></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='$TH_INST/mgbench.qcow2'/><target dev='vda' bus='virtio'/></disk>
<serial type='file'><source path='$TH_INST/mgbench.log'/></serial><console type='file'><source path='$TH_INST/mgbench.log'/></console>
</devices></domain>
XML
for n in 1 2; do th_exec $n qemu-img create -q -f qcow2 -b "$disk" -F qcow2 "$TH_INST/mgbench.qcow2" 1G || fail "qemu-img"; done
virsh -c "$(th_uri 1)" create "$T/dom.xml" >/dev/null || fail "virsh create"
for _ in $(seq 600); do grep -q "STRATUS-GUEST: ready" "$TH_DIR/h1/inst/mgbench.log" 2>/dev/null && break; sleep 0.5; done
: >"$T/virsh.txt"
from=1
i=0
while [ $i -lt "$N" ]; do
	to=$((3 - from))
	virsh -c "$(th_uri $from)" migrate --live --p2p --copy-storage-inc mgbench "$(th_uri $to)" >"$T/v.out" 2>&1 ||
		fail "virsh migrate: $(cat "$T/v.out")"
	virsh -c "$(th_uri $to)" domjobinfo mgbench --completed >"$T/ji.txt" 2>&1
	tot=$(awk -F: '/^Time elapsed:/ { print $2 + 0; exit }' "$T/ji.txt")
	down=$(awk -F: '/^Total downtime:/ { print $2 + 0; exit }' "$T/ji.txt")
	echo "$tot $down" >>"$T/virsh.txt"
	echo "virsh $((i + 1)): h$from -> h$to: $tot $down (total ms, downtime ms)"
	# the next copy goes back onto the same disk there: recreate its overlay
	th_exec "$from" qemu-img create -q -f qcow2 -b "$disk" -F qcow2 "$TH_INST/mgbench.qcow2" 1G
	from=$to
	i=$((i + 1))
done
virsh -c "$(th_uri $from)" destroy mgbench >/dev/null 2>&1

s_down=$(cut -d' ' -f2 "$T/stratus.txt" | median)
s_tot=$(cut -d' ' -f1 "$T/stratus.txt" | median)
v_down=$(cut -d' ' -f2 "$T/virsh.txt" | median)
v_tot=$(cut -d' ' -f1 "$T/virsh.txt" | median)
echo "medians over $N: Stratus total $s_tot ms downtime $s_down ms; virsh total $v_tot ms downtime $v_down ms"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (TCG guests on $(nproc) cores: a loaded machine stretches both alike)"
bench_line name=migrate.downtime figure="$s_down" unit=ms reference="$v_down" ref_unit=ms \
	ref_name="virsh migrate --live --p2p --copy-storage-inc" target="<=300"
bench_line name=migrate.total figure="$s_tot" unit=ms reference="$v_tot" ref_unit=ms \
	ref_name="virsh migrate --live --p2p --copy-storage-inc" target="<=1.2x"
