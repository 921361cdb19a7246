#!/bin/sh
# The cloud survives a broker crash and a scheduler restart (issue 17, items
# 3 and 5), on libvirt's test driver: stratus-bus, -scheduler, -agent and
# -metadata running as test_stack.sh starts them.
#  1. kill -9 of stratus-bus with a build in flight (the agent paused, so the
#     build dies with the broker), a new stratus-bus on the same address
#     file: the agent re-announces, the scheduler sends the build again, host
#     list says the host re-announced, a new boot succeeds, and list agrees
#     with the agent's store. Nothing else is restarted.
#  2. kill -9 of the scheduler, a boot sent while it is down and the host
#     silent for longer than the heartbeat window, the scheduler started
#     again: the boot waits for the host's report and goes active (it used
#     to fail with "no valid host ... down").
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
stack_down() {
	[ -f "$T/agent.pid" ] && kill -CONT "$(cat "$T/agent.pid")" 2>/dev/null
	for p in scheduler metadata; do
		[ -f "$T/$p.pid" ] && kill "$(cat "$T/$p.pid")" 2>/dev/null
	done
	agent_env_down
}
trap stack_down EXIT
agent_env_up
MD_PORT=$(free_port)
cat >>"$T/stratus.yaml" <<EOF
$(stack_scheduler_yaml)
  missed_heartbeats: 4
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
metadata:
  listen: 127.0.0.1:$MD_PORT
  store: $T/state/agent.db
EOF
sed -i 's/^  host: hv1/  host: hv1\n  network: {cidr: 127.0.0.0\/8, range_start: 127.0.0.10, range_end: 127.0.0.20, gateway: 127.0.0.1}/' "$T/stratus.yaml"
sched_start() {
	"$B/stratus-scheduler" -c "$T/stratus.yaml" >>"$T/scheduler.log" 2>&1 &
	echo $! >"$T/scheduler.pid"
}
sched_start
agent_start
"$B/stratus-metadata" -c "$T/stratus.yaml" >"$T/metadata.log" 2>&1 &
echo $! >"$T/metadata.pid"
# stratusctl signs with the admin credential the scheduler creates on first start
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
agent_pid=$(cat "$T/agent.pid")
sched_pid=$(cat "$T/scheduler.pid")
md_pid=$(cat "$T/metadata.pid")
# wait_for SECONDS COMMAND...: until COMMAND succeeds
wait_for() {
	n=$(($1 * 5))
	shift
	for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
	return 1
}
state_of() { [ "$(ctl --json show "$1" 2>/dev/null | jq -r .state)" = "$2" ]; }
host_known() { ctl --json host list | jq -e '.[0].state == "up"'; }
wait_for 20 host_known || fail "host not up: $(ctl host list 2>&1)"
ctl boot web-1 --flavor m1.small --image tiny --timeout 60 >"$T/boot.out" 2>&1 ||
	fail "boot web-1: $(cat "$T/boot.out")"

# ---- 1. kill -9 of stratus-bus, a build in flight -----------------------
kill -STOP "$agent_pid"
ctl boot inflight --flavor m1.small --image tiny --no-wait --timeout 30 >"$T/inflight.out" 2>&1 ||
	fail "boot inflight: $(cat "$T/inflight.out")"
grep -q "instance scheduled .*name=inflight" "$T/scheduler.log" || fail "inflight not scheduled"
old_addr=$(cat "$T/bus.addr")
kill -9 "$(cat "$T/bus.pid")"
sleep 0.5
"$B/stratus-bus" -c "$T/stratus.yaml" >>"$T/bus.log" 2>&1 &
echo $! >"$T/bus.pid"
addr_moved() { [ -s "$T/bus.addr" ] && [ "$(cat "$T/bus.addr")" != "$old_addr" ]; }
wait_for 10 addr_moved || fail "the new stratus-bus wrote no new address"
kill -CONT "$agent_pid"
reannounced() { grep -q "broker changed: re-announcing host=hv1" "$T/agent.log"; }
wait_for 20 reannounced || fail "the agent did not re-announce"
sched_saw() { grep -q "host re-announced after a broker change host=hv1" "$T/scheduler.log"; }
wait_for 20 sched_saw || fail "the scheduler did not see the re-announce: $(tail -n 5 "$T/scheduler.log")"
grep -q "broker moved: hosts are stale" "$T/scheduler.log" || fail "scheduler did not log the broker move"
hl_reannounced() { ctl --json host list | jq -e '.[0].recovery == "re-announced" and .[0].state == "up"'; }
wait_for 10 hl_reannounced || fail "host list: $(ctl --json host list 2>&1)"
ctl host list | grep -q "RECOVERY" || fail "host list has no RECOVERY column: $(ctl host list)"
ctl host list | grep -q "re-announced" || fail "host list: $(ctl host list)"
# the build that died with the broker is sent again from the durable record
wait_for 30 state_of inflight active || fail "inflight not active: $(ctl --json show inflight 2>&1)"
grep -q "re-announce: build not on the host, sent again" "$T/scheduler.log" ||
	fail "inflight: no resend logged"
# a new boot works, nothing restarted
ctl boot web-2 --flavor m1.small --image tiny --timeout 60 >"$T/boot2.out" 2>&1 ||
	fail "boot after the broker crash: $(cat "$T/boot2.out")"
for p in "$agent_pid" "$sched_pid" "$md_pid"; do
	kill -0 "$p" 2>/dev/null || fail "a daemon died (pid $p)"
done
[ "$(cat "$T/agent.pid")" = "$agent_pid" ] && [ "$(cat "$T/scheduler.pid")" = "$sched_pid" ] ||
	fail "a daemon was restarted"
# stratusctl list agrees with the agent's store (uuid and state)
ctl --json list | jq -r '.[] | "\(.uuid) \(.state)"' | sort >"$T/list.txt"
db "SELECT uuid || ' ' || state FROM instances WHERE state != 'deleted'" | sort >"$T/store.txt"
[ "$(wc -l <"$T/list.txt")" = 3 ] || fail "list: $(cat "$T/list.txt")"
cmp -s "$T/list.txt" "$T/store.txt" ||
	fail "list and the agent's store differ: $(diff "$T/list.txt" "$T/store.txt")"
echo "broker crash: ok ($(cat "$T/bus.addr"))"

# ---- 2. scheduler restart with a queued boot -----------------------------
# the host goes silent (its last reports consumed), then the scheduler dies
kill -STOP "$agent_pid"
sleep 2
kill -9 "$sched_pid"
sleep 5 # longer than the window (1 s x 4): the host's last report is old
ctl boot queued --flavor m1.small --image tiny --no-wait --timeout 60 >"$T/queued.out" 2>&1 &
ctl_pid=$!
sleep 1
sched_start
# the host stays silent until the scheduler has judged the boot
judged() { grep -q "request waits for hosts to report type=instance.boot\|no valid host" "$T/scheduler.log"; }
wait_for 30 judged || fail "the scheduler never took the boot: $(tail -n 5 "$T/scheduler.log")"
kill -CONT "$agent_pid"
wait "$ctl_pid" || fail "queued boot refused: $(cat "$T/queued.out")"
if grep -q "no valid host" "$T/scheduler.log"; then fail "no valid host: $(grep 'no valid host' "$T/scheduler.log")"; fi
wait_for 30 state_of queued active || fail "queued not active: $(ctl --json show queued 2>&1)"
[ "$(ctl --json list | jq length)" = 4 ] || fail "list after the restart: $(ctl list)"
echo "recover stack test: ok"
