#!/bin/sh
# Single instances (issue 17): a second stratus-bus on the same address
# file, a second scheduler on the same database, a second agent on the same
# state dir refuse with the first one's pid and leave its files alone.
set -u
BUILD=${BUILD:-build}
tmp=$(mktemp -d /tmp/stratus-single.XXXXXX)
bus_pid= sched_pid= holder= first=
cleanup() {
	for p in $sched_pid $bus_pid $first $holder; do kill "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.err; do echo "== $f"; tail -n 20 "$f"; done; exit 1; }
export STRATUS_BUS_ADDR_FILE="$tmp/run/bus.addr"
unset STRATUS_CONFIG
printf 'log: {level: warn}\nscheduler: {state_path: %s/sched.db}\nagent: {host: h1, state_dir: %s/agent}\n' \
	"$tmp" "$tmp" >"$tmp/stratus.yaml"

"$BUILD/stratus-bus" -c "$tmp/stratus.yaml" >"$tmp/bus.out" 2>"$tmp/bus.err" &
bus_pid=$!
i=0
while [ ! -s "$STRATUS_BUS_ADDR_FILE" ]; do
	i=$((i + 1)); [ $i -gt 100 ] && fail "no address file"
	sleep 0.1
done
addr=$(cat "$STRATUS_BUS_ADDR_FILE")
[ "$(cat "$STRATUS_BUS_ADDR_FILE.pid")" = "$bus_pid" ] || fail "pid file: $(cat "$STRATUS_BUS_ADDR_FILE.pid")"

# -n takes no lock
"$BUILD/stratus-bus" -n -c "$tmp/stratus.yaml" >/dev/null 2>&1 || fail "-n beside a running broker"
# a second broker refuses, naming the first
"$BUILD/stratus-bus" -c "$tmp/stratus.yaml" >"$tmp/bus2.out" 2>"$tmp/bus2.err"
rc=$?
[ $rc -eq 1 ] || fail "second stratus-bus: exit $rc"
grep -qx "stratus-bus: already running as pid $bus_pid (lock $STRATUS_BUS_ADDR_FILE.pid)" "$tmp/bus2.err" ||
	fail "second stratus-bus said: $(cat "$tmp/bus2.err")"
[ "$(cat "$STRATUS_BUS_ADDR_FILE")" = "$addr" ] || fail "address file changed"
[ "$(cat "$STRATUS_BUS_ADDR_FILE.pid")" = "$bus_pid" ] || fail "pid file changed"
"$BUILD/stratusctl" bus send host.list '{}' >/dev/null 2>"$tmp/ctl.err" || fail "stratusctl after the second broker"
echo "second stratus-bus refused"

# the scheduler: one per database
"$BUILD/stratus-scheduler" -c "$tmp/stratus.yaml" >/dev/null 2>"$tmp/sched.err" &
sched_pid=$!
i=0
until [ -s "$tmp/sched.db.pid" ]; do
	i=$((i + 1)); [ $i -gt 100 ] && fail "scheduler wrote no pid file"
	kill -0 $sched_pid 2>/dev/null || fail "scheduler died"
	sleep 0.1
done
"$BUILD/stratus-scheduler" -c "$tmp/stratus.yaml" >/dev/null 2>"$tmp/sched2.err"
rc=$?
[ $rc -eq 1 ] || fail "second scheduler: exit $rc"
grep -qx "stratus-scheduler: already running as pid $sched_pid (lock $tmp/sched.db.pid)" "$tmp/sched2.err" ||
	fail "second scheduler said: $(cat "$tmp/sched2.err")"
kill -0 $sched_pid || fail "first scheduler gone"
kill -TERM $sched_pid; wait $sched_pid; sched_pid=
[ ! -e "$tmp/sched.db.pid" ] || fail "scheduler left its pid file"
echo "second scheduler refused"

# the agent: one per state dir (the first one stood in for by flock(1),
# which holds the lock file as an agent does, without libvirt)
mkdir -p "$tmp/agent"
flock -n "$tmp/agent/agent.pid" sh -c 'echo $$ >"$1"; exec sleep 60' sh "$tmp/agent/agent.pid" &
holder=$!
i=0
until [ -s "$tmp/agent/agent.pid" ]; do i=$((i + 1)); [ $i -gt 50 ] && fail "flock"; sleep 0.1; done
first=$(cat "$tmp/agent/agent.pid")
"$BUILD/stratus-agent" -c "$tmp/stratus.yaml" >/dev/null 2>"$tmp/agent2.err"
rc=$?
[ $rc -eq 1 ] || fail "second agent: exit $rc"
grep -qx "stratus-agent: already running as pid $first (lock $tmp/agent/agent.pid)" "$tmp/agent2.err" ||
	fail "second agent said: $(cat "$tmp/agent2.err")"
[ "$(cat "$tmp/agent/agent.pid")" = "$first" ] || fail "agent pid file changed"
echo "second agent refused"

kill -TERM $bus_pid; wait $bus_pid; bus_pid=
[ ! -e "$STRATUS_BUS_ADDR_FILE" ] && [ ! -e "$STRATUS_BUS_ADDR_FILE.pid" ] || fail "stratus-bus left its files"
echo PASS
