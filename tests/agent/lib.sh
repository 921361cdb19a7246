# Sourced by the agent tests: a private stratus-bus, an agent on libvirt's
# test driver (or another URI), a tail of stratus.events, and helpers to
# send commands and wait for events. Everything lives in $T and is stopped
# by agent_env_down (trap it).
B=${BUILD:-build}
T=$(mktemp -d /tmp/stratus-agent-test.XXXXXX)
chmod 755 "$T" # QEMU runs as libvirt-qemu and must reach the disks
EVENTS=$T/events.jsonl
fail() { # the message, then the last lines of each daemon's log
	echo "FAIL: $*" >&2
	for _log in "$T/agent.log" "$T/scheduler.log"; do
		[ -f "$_log" ] || continue
		echo "--- the last lines of $(basename "$_log"):" >&2
		tail -n 20 "$_log" >&2
	done
	exit 1
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# agent_env_up [LIBVIRT_URI]: writes $T/stratus.yaml, starts stratus-bus and the tail.
# AGENT_BRIDGE (vmm.bridge, default none) and AGENT_NETWORK (agent.network as
# a YAML flow mapping, default the built-in) change the instance network.
# AGENT_REBOOT_TIMEOUT: vmm.reboot_timeout (default 1s: the test driver sends
# no reboot event, so each soft reboot ends hard after it).
agent_env_up() {
	uri=${1:-test:///default}
	METRICS_PORT=$(free_port)
	qemu-img create -q -f qcow2 "$T/base.qcow2" 64M
	IMAGE_SUM=$(sha256sum "$T/base.qcow2" | cut -d' ' -f1)
	cat >"$T/stratus.yaml" <<EOF
bus: {address_file: $T/bus.addr, properties: {fetch.wait.max.ms: "10"}}
broker: {address_file: $T/bus.addr, partitions: 2}
agent:
  host: hv1
  state_dir: $T/state
  scheduler_keys: [$T/sched/scheduler-sign.pub]
  metrics_listen: 127.0.0.1:$METRICS_PORT
  report_interval: 1s
  reconcile_interval: 2s${AGENT_NETWORK:+
  network: $AGENT_NETWORK}
vmm: {uri: "$uri", accel: qemu, shutdown_timeout: 2s, reboot_timeout: ${AGENT_REBOOT_TIMEOUT:-1s},
      cpu_dedicated_set: "1", cpu_shared_set: "0",
      bridge: "${AGENT_BRIDGE:-}", instances_dir: $T/inst, console_log_dir: $T/inst}
images: {cache_dir: $T/cache, allow_file_urls: true}
EOF
	# the scheduler's key pair: the agent trusts it, send() signs with it
	# (a scheduler started on $T/stratus.yaml needs key_dir: $T/sched)
	printf 'scheduler: {state_path: %s/sched/scheduler.db, key_dir: %s/sched}\n' "$T" "$T" \
		>"$T/keys.yaml"
	"$B/stratus-scheduler" -c "$T/keys.yaml" keys >"$T/keys.txt" || fail "stratus-scheduler keys"
	SCHED_KEY=$T/sched/scheduler-sign.key
	"$B/stratus-bus" -c "$T/stratus.yaml" >"$T/bus.log" 2>&1 &
	echo $! >"$T/bus.pid"
	for _ in $(seq 50); do [ -s "$T/bus.addr" ] && break; sleep 0.1; done
	[ -s "$T/bus.addr" ] || fail "stratus-bus did not start"
	"$B/stratusctl" -c "$T/stratus.yaml" --json bus tail stratus.events --from-beginning \
		--timeout 600 >"$EVENTS" 2>"$T/tail.log" &
	echo $! >"$T/tail.pid"
}

agent_start() {
	env ${AGENT_ENV:-} "$B/stratus-agent" -c "$T/stratus.yaml" >>"$T/agent.log" 2>&1 &
	echo $! >"$T/agent.pid"
	for _ in $(seq 100); do
		grep -q "agent running" "$T/agent.log" 2>/dev/null && return 0
		kill -0 "$(cat "$T/agent.pid")" 2>/dev/null || break
		sleep 0.1
	done
	fail "agent did not start"
}

agent_kill() { # SIGNAL
	pid=$(cat "$T/agent.pid")
	kill "-${1:-TERM}" "$pid" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null
}

agent_env_down() {
	for p in agent tail bus; do
		[ -f "$T/$p.pid" ] && kill "$(cat "$T/$p.pid")" 2>/dev/null
	done
	sleep 0.3
	for p in agent tail bus; do
		[ -f "$T/$p.pid" ] && kill -9 "$(cat "$T/$p.pid")" 2>/dev/null
	done
	[ -n "${KEEP:-}" ] || rm -rf "$T"
}

# spec UUID [jq-expression to modify it]: an instance spec on stdout
spec() {
	jq -c --arg u "$1" --arg url "file://$T/base.qcow2" --arg sum "sha256:$IMAGE_SUM" \
		".uuid = \$u | .image.url = \$url | .image.checksum = \$sum | del(.network)
		 | .flavor.extra_specs = {} | ${2:-.}" "$STRATUS_TOP/tests/data/spec-basic.json"
}

# send TYPE BODY [--request-id R]: signed with the scheduler's key, as the scheduler does
send() {
	type=$1 body=$2
	shift 2
	"$B/stratusctl" -c "$T/stratus.yaml" bus send "$type" "$body" --host hv1 \
		--sign-key "$SCHED_KEY" "$@" >/dev/null || fail "bus send $type"
}

# send_unsigned TYPE BODY [...]: what anyone with access to the broker can write
send_unsigned() {
	type=$1 body=$2
	shift 2
	"$B/stratusctl" -c "$T/stratus.yaml" bus send "$type" "$body" --host hv1 "$@" >/dev/null ||
		fail "bus send $type"
}

# wait_event JQ-FILTER [TIMEOUT]: waits until an event matches; prints it
wait_event() {
	for _ in $(seq $((${2:-20} * 10))); do
		m=$(jq -c "select($1)" "$EVENTS" 2>/dev/null | head -n 1)
		[ -n "$m" ] && { echo "$m"; return 0; }
		sleep 0.1
	done
	return 1
}

count_events() { jq -c "select($1)" "$EVENTS" 2>/dev/null | wc -l; }

db() { sqlite3 "$T/state/agent.db" "$1"; }

# ---- the whole stack: a scheduler beside this agent ---------------------------
# A stack test: `trap stack_down EXIT`, agent_env_up, the config's scheduler:
# section starting with $(stack_scheduler_yaml) in its here-document, then
# stack_scheduler_start, agent_start, stack_host_known, and ctl (stratusctl
# as project acme, signed with the scheduler's admin credential).
stack_down() { # every daemon with a $T/NAME.pid (scheduler, metadata, ...)
	for sig in TERM KILL; do
		for f in "$T"/*.pid; do
			case "$f" in */agent.pid | */tail.pid | */bus.pid) continue ;; esac
			[ -f "$f" ] && kill -s $sig "$(cat "$f")" 2>/dev/null
		done
		[ $sig = TERM ] && sleep 0.3
	done
	agent_env_down
}
stack_scheduler_yaml() {
	printf 'scheduler:\n  state_path: %s/scheduler.db\n  key_dir: %s/sched\n  heartbeat_interval: 1s\n' "$T" "$T"
}
stack_scheduler_start() {
	"$B/stratus-scheduler" -c "$T/stratus.yaml" >>"$T/scheduler.log" 2>&1 &
	echo $! >"$T/scheduler.pid"
	# stratusctl signs with the admin credential the scheduler creates on first start
	export STRATUS_CREDENTIAL="$T/admin.credential"
	for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
}
ctl() { "$B/stratusctl" -c "$T/stratus.yaml" -p acme "$@"; }
stack_host_known() { # the scheduler knows a host once it has reported
	for _ in $(seq 100); do ctl --json host list 2>/dev/null | jq -e 'length > 0' >/dev/null && return 0; sleep 0.2; done
	fail "the scheduler knows no host: $(ctl --json host list 2>&1 | tail -n 3)"
}
