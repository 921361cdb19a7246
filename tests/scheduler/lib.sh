# The scheduler stack of the scheduler's script tests: stratus-bus,
# stratus-scheduler and scripted hosts (build/tests/scheduler/fake_agent),
# driven with stratusctl as a user would. Source it after `set -u`:
#   sl_init NAME        $tmp (removed at exit), the EXIT trap that stops every
#                       daemon started here, fail, ctl, jget; STRATUS_CONFIG
#                       and STRATUS_BUS_ADDR_FILE point into $tmp, HOME too (no
#                       credential of the user running the tests)
#   sl_config_head      the config's common lines, up to and within the
#                       scheduler: section (append its flavors: and images:)
#   sl_bus_start        stratus-bus, waits for its address file ($ADDR)
#   sl_sched_start      stratus-scheduler, waits for the bootstrap admin
#                       credential ($ADMIN), which stratusctl then signs with
#   sl_agent NAME [ARGS] a fake_agent for host NAME (its log $tmp/NAME.log)
#   sl_host_up NAME     waits until `host list` says NAME is up
#   sl_stop             stops every daemon (sched_pid bus_pid agent_pids)
# fail prints the *.err (and *.log) files of the daemons.
BUILD=${BUILD:-build}
bus_pid='' sched_pid='' agent_pids=''
H=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

sl_stop() {
	for p in $sched_pid $agent_pids $bus_pid; do kill "$p" 2>/dev/null; done
	sleep 0.3
	for p in $sched_pid $agent_pids $bus_pid; do kill -9 "$p" 2>/dev/null; done
	sched_pid='' agent_pids='' bus_pid=''
}

sl_init() {
	tmp=$(mktemp -d "/tmp/stratus-$1.XXXXXX")
	trap 'sl_stop; rm -rf "$tmp"' EXIT
	export STRATUS_BUS_ADDR_FILE="$tmp/bus.addr"
	export STRATUS_CONFIG="$tmp/stratus.yaml"
	unset STRATUS_PROJECT STRATUS_CREDENTIAL
	export HOME="$tmp/home"
	ADMIN="$tmp/state/admin.credential"
}

fail() {
	echo "FAIL: $*"
	for f in "$tmp"/*.err "$tmp"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 25 "$f"; }; done
	exit 1
}
ctl() { "$BUILD/stratusctl" "$@"; }
# jget JSON EXPR: a Python expression over j
jget() { python3 -c "import json,sys; j=json.loads(sys.argv[1]); print($2)" "$1"; }

sl_config_head() {
	cat <<YAML
log: {level: info}
broker: {partitions: 2}
# the mock broker answers idle fetches only after fetch.wait.max.ms (docs/bus.md)
bus: {address_file: $tmp/bus.addr, properties: {fetch.wait.max.ms: "10"}}
scheduler:
  state_path: $tmp/state/scheduler.db
  heartbeat_interval: 300ms
YAML
}

sl_bus_start() {
	"$BUILD/stratus-bus" -c "$STRATUS_CONFIG" >>"$tmp/bus.out" 2>>"$tmp/bus.err" &
	bus_pid=$!
	for _ in $(seq 100); do [ -s "$STRATUS_BUS_ADDR_FILE" ] && break; sleep 0.1; done
	[ -s "$STRATUS_BUS_ADDR_FILE" ] || fail "stratus-bus: no address file"
	ADDR=$(head -n 1 "$STRATUS_BUS_ADDR_FILE")
}

sl_sched_start() {
	"$BUILD/stratus-scheduler" -c "$STRATUS_CONFIG" >>"$tmp/sched.out" 2>>"$tmp/sched.err" &
	sched_pid=$!
	for _ in $(seq 100); do [ -s "$ADMIN" ] && break; sleep 0.1; done
	[ -s "$ADMIN" ] || fail "no bootstrap admin credential at $ADMIN"
}

sl_agent() {
	_n=$1
	shift
	"$BUILD/tests/scheduler/fake_agent" "$_n" "$tmp/$_n.log" --interval-ms 200 "$@" 2>"$tmp/$_n.err" &
	agent_pids="$agent_pids $!"
}

sl_host_up() {
	for _ in $(seq 40); do
		ctl --json host list --timeout 10 2>/dev/null |
			python3 -c "import json,sys; sys.exit(0 if any(h['name'] == '$1' and h['state'] == 'up' for h in json.load(sys.stdin)) else 1)" 2>/dev/null &&
			return 0
		sleep 0.25
	done
	fail "host $1 not up"
}
