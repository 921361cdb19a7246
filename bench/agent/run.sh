#!/bin/sh
# bench/agent: 50 build requests at once, through stratus-bus and
# stratus-agent on libvirt's test driver with a cached image.
# Prints builds/s and p50/p99 request-to-active latency and the agent's own
# step time, beside a reference measured in the same run: the one external
# program every build runs (qemu-img create of the overlay), 50 in a row.
# Targets (issue 17, from issue 6's 50 builds/s, which depends on the
# machine): builds/s at least 2x the serial qemu-img create rate of the
# same run; p50 agent step time at most 2x the disk's price for the
# durable writes those steps make (bench/agent/durable_ref.c: the index,
# the overlay, the instances directory and the seed, written and fsynced
# alone, 4 at once as the agent's workers, in the same directory right
# after the builds). The issue's 20 ms is printed beside it: the steps
# make 4 fsyncs in sequence, and on a shared disk one fsync alone takes
# 2-30 ms. Prints a BENCH line per figure (bench/lib.sh) for
# bench/run-all.sh.
set -u
STRATUS_TOP=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$STRATUS_TOP"
. tests/agent/lib.sh
. bench/lib.sh
trap agent_env_down EXIT
trap 'exit 1' INT TERM HUP
N=${N:-50}
agent_env_up
sed -i 's/^  report_interval: 1s/  report_interval: 10s\n  build_concurrency: 4/' "$T/stratus.yaml"
agent_start
spec 00000000-0000-4000-8000-000000000000 >"$T/spec.json"
# warm up: the group join and the image download happen once, not per build
"$B/bench/agent/agent_bench" -c "$T/stratus.yaml" -k "$SCHED_KEY" -s "$T/spec.json" -n 1 >/dev/null ||
	fail "warm-up build failed"
echo "== agent: $N builds at once (test driver, cached image, build_concurrency 4)"
"$B/bench/agent/agent_bench" -c "$T/stratus.yaml" -k "$SCHED_KEY" -s "$T/spec.json" -n "$N" | tee "$T/out" ||
	fail "benchmark failed"
"$B/bench/agent/durable_ref" "$T/inst" "$N" 4 | tee "$T/durable.out" ||
	fail "durable_ref failed"
ref_start=$(date +%s%N)
i=0
while [ $i -lt "$N" ]; do
	qemu-img create -q -f qcow2 -F qcow2 -b "$T/base.qcow2" "$T/ref-$i.qcow2" 4G
	i=$((i + 1))
done
ref_ns=$(( $(date +%s%N) - ref_start ))
bps=$(sed -n 's/.*builds_per_s=\([0-9.]*\).*/\1/p' "$T/out")
p50=$(sed -n 's/^agent_steps_ms p50=\([0-9.]*\).*/\1/p' "$T/out")
set -- $(awk -v n="$N" -v ns="$ref_ns" 'BEGIN { printf "%.1f %.2f\n", n / (ns / 1e9), ns / 1e6 / n }')
ref_rate=$1 ref_ms=$2
echo "reference: qemu-img create, $N in a row: $ref_rate overlays/s ($ref_ms ms each)"
echo "builds/s: $bps (target >= 2x the serial qemu-img rate)"
dur=$(sed -n 's/^durable_writes_ms p50=\([0-9.]*\).*/\1/p' "$T/durable.out")
echo "reference: the steps' durable writes alone, 4 at once, p50: $dur ms"
echo "agent step time p50: $p50 ms (target <= 2x the reference; issue 17's absolute target: 20 ms)"
bench_line name=agent.builds_per_s figure="$bps" unit=builds/s target='>=2x' \
	reference="$ref_rate" ref_unit=overlays/s ref_name="qemu-img create, serial"
bench_line name=agent.steps_p50 figure="$p50" unit=ms target='<=2x' \
	reference="$dur" ref_name="the steps' durable writes alone (index, overlay, dir, seed; 4 at once), p50"
