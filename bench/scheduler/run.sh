#!/bin/sh
# Scheduler benchmark: 10,000 simulated hosts report, then 100,000 boot
# decisions (request in -> quota + claim committed -> instance.build out).
# Target (issue 7): >= 10,000 decisions/s, p99 <= 5 ms. References from the
# same run: a full scan of every host, and one SQLite claim transaction.
set -e
BUILD=${BUILD:-build}
exec "$BUILD/bench/scheduler/bench_sched" "${HOSTS:-10000}" "${DECISIONS:-100000}" "${FULLSCAN_DECISIONS:-2000}"
