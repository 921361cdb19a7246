#!/bin/sh
# bench/netiso: the cost of the anti-spoofing port filters (agent/netfilter.c).
#   1. time to filter 100 ports of one host: the table and 100 port chains in
#      one nft transaction (what reconcile does after a host restart), and
#      the same 100 ports one at a time (what 100 builds do); target: 100
#      ports within 1 s.
#   1b. a security group rule change on 100 ports (bench/netiso/sg_bench.c):
#      the agent's compile and one nft transaction, beside one nft -f of the
#      same script; and a member change (a set update); target: <= 1 s.
#      The scheduler -> bus -> agent path on top is measured by
#      tests/agent/test_secgroup.sh ("rule add -> port open: N ms").
#   2. the cost per packet: TCP throughput (iperf3, 3 s) between two network
#      namespaces whose veths sit on a bridge, without and with the filters
#      on both ports, alternated in the same run; target: with >= 0.9x without.
# Everything runs in network namespaces of its own (prefix nia-b).
# Prints a BENCH line per figure (bench/lib.sh) for bench/run-all.sh.
set -u
STRATUS_TOP=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$STRATUS_TOP"
. bench/lib.sh
B=${BUILD:-build}
N=${N:-100}
H=nia-bh$$ G1=nia-b1$$ G2=nia-b2$$ F=nia-bf$$
T=$(mktemp -d)
down() {
	for n in $H $G1 $G2 $F; do ip netns del "$n" 2>/dev/null; done
	rm -rf "$T"
}
trap down EXIT
trap 'exit 1' INT TERM HUP
die() { echo "bench/netiso: $*" >&2; exit 1; }
for tool in nft iperf3 jq; do command -v $tool >/dev/null || die "$tool is not installed (deps/test-netiso.txt)"; done
[ -x "$B/bench/netiso/filter_bench" ] || die "build it first: make benches"

echo "== netiso: $N ports filtered on one host"
ip netns add "$F" || die "netns"
ip netns exec "$F" "$B/bench/netiso/filter_bench" nia-bench0 "$N" | tee "$T/apply" || die "filter_bench failed"
batch=$(sed -n 's/.*batch_ms=\([0-9.]*\).*/\1/p' "$T/apply")
each=$(sed -n 's/.*each_ms=\([0-9.]*\).*/\1/p' "$T/apply")
bench_line name=netiso.apply_ports_batch figure="$batch" unit=ms target="<=1000" \
	reason="$N ports in one nft transaction (reconcile after a host restart)"
bench_line name=netiso.apply_ports_each figure="$each" unit=ms \
	reason="$N ports one at a time, one nft run each (as $N builds)"

echo "== netiso: a security group rule change on $N ports of one host (agent/secgroup.c)"
S=sg-bs$$
ip netns add "$S" || die "netns"
[ -x "$B/bench/netiso/sg_bench" ] || die "build it first: make benches"
ip netns exec "$S" "$B/bench/netiso/sg_bench" sg-bench0 "$N" | tee "$T/sg" || { ip netns del "$S"; die "sg_bench failed"; }
ip netns del "$S"
change=$(sed -n 's/.*change_ms=\([0-9.]*\).*/\1/p' "$T/sg")
members=$(sed -n 's/.*members_ms=\([0-9.]*\).*/\1/p' "$T/sg")
nftref=$(sed -n 's/.*nft_ms=\([0-9.]*\).*/\1/p' "$T/sg")
bench_line name=netiso.secgroup_rule_change figure="$change" unit=ms reference="$nftref" ref_unit=ms \
	ref_name="one nft -f of the same script" target="<=1000" \
	reason="compile + one transaction rewriting $N ports' group chains (the agent's part of secgroup.apply)"
bench_line name=netiso.secgroup_member_change figure="$members" unit=ms reference="$nftref" ref_unit=ms \
	ref_name="one nft -f of a full rule change" \
	reason="a remote group's member added: the set updated in place, no chain rewritten"

echo "== netiso: throughput between two ports, without and with filters (iperf3)"
for n in $H $G1 $G2; do ip netns add "$n" || die "netns $n"; done
X() { ip netns exec "$H" "$@"; }
X ip link set lo up
X ip link add nia-br type bridge && X ip link set nia-br up || die "bridge"
# two instances' ports: the tap names the agent would give them
i=1
for g in $G1 $G2; do
	u=be0e000$i-0000-4000-8000-00000000000$i
	tap=stxbe0e000${i}000$i
	mac=52:54:00:be:0e:0$i
	X ip link add "$tap" type veth peer name eth0 netns "$g" || die "veth"
	X ip link set "$tap" master nia-br up
	ip netns exec "$g" sh -c "ip link set lo up; ip link set eth0 address $mac; \
		ip addr add 10.201.0.$i/24 dev eth0; ip link set eth0 up"
	jq --arg u "$u" --arg m "$mac" --arg a "10.201.0.$i/24" \
		'.uuid = $u | .network.mac = $m | .network.address = $a' tests/data/spec-basic.json >"$T/spec$i.json"
	i=$((i + 1))
done
"$B/stratus-agent" port-filter render --bridge nia-br "$T/spec1.json" >"$T/filters.nft" &&
	"$B/stratus-agent" port-filter render --bridge nia-br "$T/spec2.json" | sed '1,/^}$/d' >>"$T/filters.nft" ||
	die "render"
ip netns exec "$G2" iperf3 -s -D -1 >/dev/null 2>&1
ip netns exec "$G1" ping -c 1 -W 2 10.201.0.2 >/dev/null 2>&1 || ip netns exec "$G1" busybox ping -c 1 -W 2 10.201.0.2 >/dev/null
run() { # prints Gbit/s
	ip netns exec "$G2" iperf3 -s -D -1 >/dev/null 2>&1
	sleep 0.3
	ip netns exec "$G1" iperf3 -c 10.201.0.2 -t "${SECS:-3}" -J 2>/dev/null |
		jq '.end.sum_received.bits_per_second / 1e9'
}
off="" on=""
for round in 1 2; do
	X nft delete table bridge stratus-nia-br 2>/dev/null
	off="$off $(run)"
	X nft -f "$T/filters.nft" || die "nft -f"
	on="$on $(run)"
done
X nft list chain bridge stratus-nia-br port-stxbe0e00010001 >/dev/null || die "filters not in place"
mean() { echo "$@" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.2f", s / NF }'; }
w=$(mean $on) wo=$(mean $off)
echo "without filters (Gbit/s):$off; with filters:$on"
bench_line name=netiso.throughput figure="$w" unit=Gbit/s reference="$wo" ref_unit=Gbit/s \
	ref_name="same ports, no filters" target=">=0.9x"
