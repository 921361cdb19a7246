#!/bin/sh
# The bus benchmark: envelopes/s and produce-to-consume latency through a
# stratus-bus on loopback, beside kcat's throughput on the same broker in
# the same run.
#   BENCH_COUNT=N   envelopes in the throughput runs (default 200000)
set -u
BUILD=${BUILD:-build}
N=${BENCH_COUNT:-200000}
tmp=$(mktemp -d /tmp/stratus-bench-bus.XXXXXX)
bus_pid=
cleanup() { [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
die() { echo "bench/bus: $*" >&2; exit 1; }

export STRATUS_BUS_ADDR_FILE="$tmp/bus.addr"
unset STRATUS_CONFIG
cat >"$tmp/stratus.yaml" <<YAML
log: {level: warn}
broker:
  partitions: 4
  topics: {stratus.bench.kcat: 16}
YAML
"$BUILD/stratus-bus" -c "$tmp/stratus.yaml" >"$tmp/bus.out" 2>"$tmp/bus.err" &
bus_pid=$!
i=0
while [ ! -s "$STRATUS_BUS_ADDR_FILE" ]; do
	i=$((i + 1)); [ $i -gt 100 ] && die "stratus-bus did not start: $(cat "$tmp/bus.err")"
	sleep 0.1
done
addr=$(cat "$STRATUS_BUS_ADDR_FILE")
echo "stratus-bus at $addr; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

# ours: envelopes built, validated and serialized by bus/, parsed and
# validated by bus/ on the consumer side. fetch.wait.max.ms=5: the mock
# broker answers an empty fetch only after that wait, even when data comes
# (docs/bus.md).
"$BUILD/bench/bus/bench_bus" -n "$N" -w 5 >"$tmp/ours" 2>"$tmp/ours.err" || die "bench_bus: $(tail -n 3 "$tmp/ours.err")"
"$BUILD/bench/bus/bench_bus" -L >"$tmp/ours-default" 2>"$tmp/ours-default.err" || die "bench_bus -L: $(tail -n 3 "$tmp/ours-default.err")"

# kcat: the same number of 1 KiB lines through the same broker, producer and
# consumer at once (no JSON at all: what the broker and librdkafka carry)
line=$(head -c 1023 /dev/zero | tr '\0' x)
echo warm | kcat -P -b "$addr" -t stratus.bench.kcat 2>"$tmp/kcat.err" || die "kcat -P: $(cat "$tmp/kcat.err")"
kcat -C -b "$addr" -t stratus.bench.kcat -o beginning -c $((N + 1)) -q -X fetch.wait.max.ms=5 \
	>"$tmp/kcat.out" 2>>"$tmp/kcat.err" &
kc=$!
sleep 1
t0=$(date +%s%N)
yes "$line" | head -n "$N" | kcat -P -b "$addr" -t stratus.bench.kcat 2>>"$tmp/kcat.err" || die "kcat -P"
( sleep 120; kill $kc 2>/dev/null ) &
wd=$!
wait $kc || die "kcat -C did not get $N messages: $(tail -n 3 "$tmp/kcat.err")"
t1=$(date +%s%N)
kill $wd 2>/dev/null
got=$(wc -l <"$tmp/kcat.out")
[ "$got" -eq $((N + 1)) ] || die "kcat -C got $got of $((N + 1)) messages in 120 s: $(tail -n 3 "$tmp/kcat.err")"
kcat_rate=$(( N * 1000000000 / (t1 - t0) ))

set -- $(grep throughput "$tmp/ours")
ours_rate=$3
bytes=$(awk '/envelope_bytes/ {print $3}' "$tmp/ours")
lat=$(grep latency "$tmp/ours")
lat_def=$(grep latency "$tmp/ours-default")
p99=$(echo "$lat" | awk '{for (i = 1; i < NF; i++) if ($i == "p99") print $(i + 1)}')
echo
echo "throughput, $N envelopes of $bytes bytes, producer -> stratus-bus -> consumer:"
printf '  stratus bus/ (build+validate+serialize, parse+validate)  %8s msg/s   target >= 100000\n' "$ours_rate"
printf '  kcat (1 KiB lines, no JSON), same broker, same run       %8s msg/s   (reference)\n' "$kcat_rate"
set -- $(grep cpu_us "$tmp/ours")
echo "  CPU per envelope on one core: build+validate+serialize $4 us, parse+validate $6 us (jansson)"
echo "latency at 1000 envelopes/s, produce to consume (ms):"
echo "  fetch.wait.max.ms=5 (bus.properties): $(echo "$lat" | cut -d' ' -f5-)   target p99 <= 10"
echo "  librdkafka default fetch wait:         $(echo "$lat_def" | cut -d' ' -f5-)"
ok=yes
[ "$ours_rate" -ge 100000 ] || ok=no
awk -v p="$p99" 'BEGIN { exit !(p <= 10) }' || ok=no
echo "targets met: $ok"
kill -TERM $bus_pid; wait $bus_pid 2>/dev/null; bus_pid=
