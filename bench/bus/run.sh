#!/bin/sh
# The bus benchmark: envelopes/s and produce-to-consume latency through a
# stratus-bus on loopback, beside kcat's throughput on the same broker in
# the same run.
#   BENCH_COUNT=N   envelopes in the throughput runs (default 200000; kcat's
#                   run carries at most 100000, see below)
# Prints a BENCH line per figure (bench/lib.sh) for bench/run-all.sh.
set -u
. "$(dirname "$0")/../lib.sh"
BUILD=${BUILD:-build}
N=${BENCH_COUNT:-200000}
tmp=$(mktemp -d /tmp/stratus-bench-bus.XXXXXX)
bus_pid=
cleanup() { [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
die() { echo "bench/bus: $*" >&2; exit 1; }

export STRATUS_BUS_ADDR_FILE="$tmp/bus.addr"
unset STRATUS_CONFIG
cat >"$tmp/stratus.yaml" <<YAML
log: {level: warn}
broker:
  partitions: 4
  topics: {stratus.bench.kcat: 64}
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

# kcat: 1 KiB lines through the same broker, producer and consumer at once
# (no JSON at all: what the broker and librdkafka carry). The mock broker
# keeps at most 5 MiB per partition (librdkafka 2.0.2, rdkafka_mock.c
# max_size) and drops the oldest beyond: a kcat consumer that fell more than
# that behind, as on a loaded 2-core machine, lost messages and waited for
# them until the watchdog. So: at most 100,000 lines (about 100 MiB) over 64
# partitions (320 MiB), and the producer's sticky partition changes every
# millisecond instead of every 10 (sticky.partitioning.linger.ms=1), so that
# no partition gets more than a fraction of it in a row: every line stays on
# the broker even if the consumer reads none before the producer is done.
# The consumer starts first; the clock starts when it has fetched the
# warm-up lines, and stops when it has every line.
kn=$N
[ "$kn" -le 100000 ] || kn=100000
warm=64 # 64 KiB: more than kcat's stdout buffer, so they show in the file
line=$(head -c 1023 /dev/zero | tr '\0' x)
kcat_rate= kcat_why=
timeout 120 kcat -C -b "$addr" -t stratus.bench.kcat -o beginning -c $((warm + kn)) -q \
	-X fetch.wait.max.ms=5 >"$tmp/kcat.out" 2>"$tmp/kcat.err" &
kc=$!
yes "$line" | head -n $warm | kcat -P -b "$addr" -t stratus.bench.kcat 2>>"$tmp/kcat.err" ||
	die "kcat -P: $(tail -n 3 "$tmp/kcat.err")"
i=0
while [ ! -s "$tmp/kcat.out" ] && [ $i -lt 200 ]; do i=$((i + 1)); sleep 0.05; done
if [ -s "$tmp/kcat.out" ]; then
	t0=$(date +%s%N)
	yes "$line" | head -n "$kn" |
		kcat -P -b "$addr" -t stratus.bench.kcat -X sticky.partitioning.linger.ms=1 2>>"$tmp/kcat.err" ||
		die "kcat -P: $(tail -n 3 "$tmp/kcat.err")"
	tp=$(date +%s%N)
	wait $kc
	kc_rc=$?
	t1=$(date +%s%N)
	got=$(wc -l <"$tmp/kcat.out")
	if [ "$got" -eq $((warm + kn)) ]; then
		kcat_rate=$(( kn * 1000000000 / (t1 - t0) ))
		echo "kcat: $kn lines, producer done after $(( (tp - t0) / 1000000 )) ms, consumer after $(( (t1 - t0) / 1000000 )) ms"
	else
		kcat_why="kcat -C got $((got - warm)) of $kn lines (exit $kc_rc, 120 s limit)"
	fi
else
	kill $kc 2>/dev/null
	kcat_why="kcat -C fetched nothing in 10 s: $(tail -n 1 "$tmp/kcat.err")"
fi

set -- $(grep throughput "$tmp/ours")
ours_rate=$3
bytes=$(awk '/envelope_bytes/ {print $3}' "$tmp/ours")
lat=$(grep latency "$tmp/ours")
lat_def=$(grep latency "$tmp/ours-default")
p99=$(echo "$lat" | awk '{for (i = 1; i < NF; i++) if ($i == "p99") print $(i + 1)}')
p99_def=$(echo "$lat_def" | awk '{for (i = 1; i < NF; i++) if ($i == "p99") print $(i + 1)}')
echo
echo "throughput, $N envelopes of $bytes bytes, producer -> stratus-bus -> consumer:"
printf '  stratus bus/ (build+validate+serialize, parse+validate)  %8s msg/s   target >= 100000\n' "$ours_rate"
printf '  kcat (%s 1 KiB lines, no JSON), same broker, same run  %8s msg/s   (reference) %s\n' \
	"$kn" "${kcat_rate:--}" "$kcat_why"
set -- $(grep cpu_us "$tmp/ours")
echo "  CPU per envelope on one core: build+validate+serialize $4 us, parse+validate $6 us (jansson)"
echo "latency at 1000 envelopes/s, produce to consume (ms):"
echo "  fetch.wait.max.ms=5 (bus.properties): $(echo "$lat" | cut -d' ' -f5-)   target p99 <= 10"
echo "  librdkafka default fetch wait:         $(echo "$lat_def" | cut -d' ' -f5-)"
bench_line name=bus.throughput figure="$ours_rate" unit=msg/s target='>=100000' \
	reference="$kcat_rate" ref_name="kcat, 1 KiB lines" reason="$kcat_why"
bench_line name=bus.latency_p99 figure="$p99" unit=ms target='<=10' \
	reference="$p99_def" ref_name="librdkafka default fetch wait"
# the trust layer per host command, beside the same command unsigned, this run
"$BUILD/bench/bus/bench_crypto" >"$tmp/crypto" 2>"$tmp/crypto.err" ||
	die "bench_crypto: $(tail -n 3 "$tmp/crypto.err")"
set -- $(cat "$tmp/crypto")
echo "per instance.build (1 KiB user data), one core, in process (us/msg):"
echo "  unsigned: build+serialize+parse $3; + Ed25519 sign+verify $5; + X25519 box seal+open $7"
bench_line name=bus.signed_cmd figure="$5" unit=us/msg reference="$3" \
	ref_name="the same command unsigned"
bench_line name=bus.sealed_cmd figure="$7" unit=us/msg reference="$3" \
	ref_name="the same command unsigned"
kill -TERM $bus_pid; wait $bus_pid 2>/dev/null; bus_pid=
