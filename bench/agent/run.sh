#!/bin/sh
# bench/agent: 50 build requests at once, through stratus-bus and
# stratus-agent on libvirt's test driver with a cached image.
# Prints builds/s and p50/p99 request-to-active latency and the agent's own
# step time, beside a reference measured in the same run: the one external
# program every build runs (qemu-img create of the overlay), 50 in a row.
# Targets (issue 6): >= 50 builds/s; p50 agent overhead <= 20 ms.
set -u
STRATUS_TOP=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$STRATUS_TOP"
. tests/agent/lib.sh
trap agent_env_down EXIT
N=${N:-50}
agent_env_up
sed -i 's/^  report_interval: 1s/  report_interval: 10s\n  build_concurrency: 4/' "$T/stratus.yaml"
agent_start
spec 00000000-0000-4000-8000-000000000000 >"$T/spec.json"
# warm up: the group join and the image download happen once, not per build
"$B/bench/agent/agent_bench" -c "$T/stratus.yaml" -s "$T/spec.json" -n 1 >/dev/null ||
	fail "warm-up build failed"
echo "== agent: $N builds at once (test driver, cached image, build_concurrency 4)"
"$B/bench/agent/agent_bench" -c "$T/stratus.yaml" -s "$T/spec.json" -n "$N" | tee "$T/out" ||
	fail "benchmark failed"
ref_start=$(date +%s%N)
i=0
while [ $i -lt "$N" ]; do
	qemu-img create -q -f qcow2 -F qcow2 -b "$T/base.qcow2" "$T/ref-$i.qcow2" 4G
	i=$((i + 1))
done
ref_ns=$(( $(date +%s%N) - ref_start ))
bps=$(sed -n 's/.*builds_per_s=\([0-9.]*\).*/\1/p' "$T/out")
p50=$(sed -n 's/^agent_steps_ms p50=\([0-9.]*\).*/\1/p' "$T/out")
awk -v n="$N" -v ns="$ref_ns" -v bps="$bps" -v p50="$p50" 'BEGIN {
	ref = n / (ns / 1e9);
	printf "reference: qemu-img create, %d in a row: %.1f overlays/s (%.1f ms each)\n", n, ref, ns / 1e6 / n;
	printf "builds/s: %.1f (%.2fx the serial qemu-img rate; target >= 50)\n", bps, bps / ref;
	printf "agent step time p50: %.1f ms (target <= 20 ms)\n", p50;
}'
