#!/bin/sh
# make demo after a broker crash repairs the cloud: deploy/demo.sh's own
# functions (start_bus, start_daemon, wait_reannounced) run on a stack on
# libvirt's test driver whose stratus-bus was killed with -9. Only the bus
# is started again, on the same address file; the scheduler and agent keep
# their pids, the host re-announces, and a boot succeeds.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
repair_down() {
	[ -f "$T/scheduler.pid" ] && kill "$(cat "$T/scheduler.pid")" 2>/dev/null
	agent_env_down
}
trap repair_down EXIT
agent_env_up
cat >>"$T/stratus.yaml" <<EOT
$(stack_scheduler_yaml)
  missed_heartbeats: 4
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
EOT
"$B/stratus-scheduler" -c "$T/stratus.yaml" >>"$T/scheduler.log" 2>&1 &
echo $! >"$T/scheduler.pid"
agent_start
sched_pid=$(cat "$T/scheduler.pid")
agent_pid=$(cat "$T/agent.pid")
# stratusctl signs with the admin credential the scheduler creates on first start
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
ctl boot web-1 --flavor m1.small --image tiny --timeout 60 >"$T/boot.out" 2>&1 ||
	fail "boot before the crash: $(cat "$T/boot.out")"
old_addr=$(cat "$T/bus.addr")
kill -9 "$(cat "$T/bus.pid")"
sleep 0.5
# the demo's functions on this stack's files ($RUN/NAME.pid as lib.sh writes them)
DEMO=$T RUN=$T CTL="$B/stratusctl"
export STRATUS_CONFIG="$T/stratus.yaml"
mkdir -p "$T/logs"
say() { printf '== %s\n' "$*"; }
die() { fail "demo: $*"; }
funcs=$(sed -n '/^running()/,/^prepare_host() {/p' "$STRATUS_TOP/deploy/demo.sh" | sed '$d')
echo "$funcs" | grep -q "^start_bus()" || fail "deploy/demo.sh has no start_bus"
eval "$funcs"
touch -d '1 hour ago' "$T/stratus.yaml" # the config is older than the daemons
start_bus >"$T/demo.out" 2>&1 || fail "start_bus: $(cat "$T/demo.out")"
start_daemon scheduler "$B/stratus-scheduler" -c "$T/stratus.yaml" >>"$T/demo.out" 2>&1
start_daemon agent "$B/stratus-agent" -c "$T/stratus.yaml" >>"$T/demo.out" 2>&1
[ -n "$REPAIRED" ] || fail "a dead stratus-bus was not seen as a repair: $(cat "$T/demo.out")"
grep -q "starting it again on $T/bus.addr" "$T/demo.out" || fail "demo output: $(cat "$T/demo.out")"
[ "$(cat "$T/bus.addr")" != "$old_addr" ] || fail "the address file still names the dead broker"
wait_reannounced >>"$T/demo.out" 2>&1 || fail "not repaired: $(cat "$T/demo.out")"
grep -q "the cloud is repaired" "$T/demo.out" || fail "demo output: $(cat "$T/demo.out")"
[ "$(cat "$T/scheduler.pid")" = "$sched_pid" ] && [ "$(cat "$T/agent.pid")" = "$agent_pid" ] ||
	fail "the scheduler or the agent was restarted: $(cat "$T/demo.out")"
kill -0 "$sched_pid" && kill -0 "$agent_pid" || fail "a daemon died"
ctl boot web-2 --flavor m1.small --image tiny --timeout 60 >"$T/boot2.out" 2>&1 ||
	fail "boot after the repair: $(cat "$T/boot2.out")"
[ "$(ctl --json list | jq '[.[] | select(.state == "active")] | length')" = 2 ] ||
	fail "list after the repair: $(ctl list)"
echo "demo repair test: ok"
