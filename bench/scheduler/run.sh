#!/bin/sh
# Scheduler benchmark: 10,000 simulated hosts report, then 100,000 boot
# decisions (request in -> quota + claim committed -> instance.build out).
# References from the same run: a full scan of every host, and one SQLite
# claim transaction. Targets (issue 17, from issue 7's 10,000/s, which
# depends on the machine): decisions/s at least 1.5x the claim
# transaction's rate; p99 <= 5 ms; signing (one Ed25519 signature per
# batch sent, issue 13) <= 10 % of a decision. BATCH_MAX, BATCH_WINDOW:
# the group commit (bench_sched.c). REPS (default 5): the decisions are
# split into that many interleaved repetitions (claim reference, decisions,
# full scan, signed, then again) and every figure is the median over them,
# so both sides of a ratio see the same load; CLAIMS (default 5000): claim
# transactions per repetition. Prints a BENCH line per figure
# (bench/lib.sh) for bench/run-all.sh.
set -u
. "$(dirname "$0")/../lib.sh"
BUILD=${BUILD:-build}
out=$(mktemp /tmp/stratus-bench-sched.XXXXXX)
trap 'rm -f "$out"' EXIT
trap 'exit 1' INT TERM HUP
"$BUILD/bench/scheduler/bench_sched" "${HOSTS:-10000}" "${DECISIONS:-100000}" \
	"${FULLSCAN_DECISIONS:-2000}" >"$out"
rc=$?
cat "$out"
# 3: ran, a target missed (the BENCH lines say which)
[ $rc = 0 ] || [ $rc = 3 ] || { echo "bench/scheduler: bench_sched exited $rc" >&2; exit 1; }
per_s=$(sed -n 's/^  decisions\/s: *\([0-9.]*\).*/\1/p' "$out")
p99=$(sed -n 's/^  p99 latency: *\([0-9.]*\) ms.*/\1/p' "$out")
p99_full=$(sed -n 's/^  full scan .* p99 \([0-9.]*\) ms.*/\1/p' "$out")
claim_per_s=$(sed -n 's/^  one SQLite claim .* at most \([0-9]*\) decisions\/s.*/\1/p' "$out")
unplaced=$(sed -n 's/^  placed: .*no valid host: \([0-9]*\).*/\1/p' "$out")
[ "${unplaced:-1}" = 0 ] && err= || err="${unplaced:-?} requests found no valid host"
bench_line name=scheduler.decisions_per_s figure="$per_s" unit=decisions/s target='>=1.5x' \
	reference="$claim_per_s" ref_name="one SQLite claim transaction" error="$err"
sign_pct=$(sed -n 's/^  signing: .* = \([0-9.]*\)% of a decision.*/\1/p' "$out")
bench_line name=scheduler.sign_share figure="$sign_pct" unit=% target='<=10'
bench_line name=scheduler.p99 figure="$p99" unit=ms target='<=5' \
	reference="$p99_full" ref_name="full scan of every host, p99"
# signed requests (sign + verify + replay record) beside the unsigned rate, same run
signed_per_s=$(sed -n 's/^  signed requests .*: \([0-9.]*\) decisions\/s = .*/\1/p' "$out")
bench_line name=scheduler.signed_decisions_per_s figure="$signed_per_s" unit=decisions/s \
	target='>=0.9x' reference="$per_s" ref_name="unsigned decisions, same run"
