#!/bin/sh
# Three hosts on one machine: each stratus-agent runs in its own network
# namespace with its own address (10.99.0.11-13) behind a bridge
# (10.99.0.1), on libvirt's test driver; stratus-bus (broker.listen:
# 10.99.0.1:PORT) and stratus-scheduler run in the root namespace. Driven with
# stratusctl as an operator would:
#   each agent answers /healthz and /metrics on its own address, its bus
#   connection crosses the bridge; all three hosts up; --count 6 spreads
#   2/2/2; one agent stopped (SIGTERM) -> down after the heartbeat timeout
#   -> new boots land on the other two, its instances keep their last state;
#   another agent killed (SIGKILL) -> down -> boots land on the last one;
#   the stopped agent restarted -> up again, it reports its instances
#   (whose test-driver domains died with it) as error, and takes new boots.
# Needs root (ip netns, a bridge, veths): exit 77 without CAP_NET_ADMIN.
set -u
BUILD=${BUILD:-build}
B=$(cd "$BUILD" && pwd)
T=$(mktemp -d /tmp/stratus-mh.XXXXXX)
chmod 755 "$T"
NET=10.99.0
BR=stmh$$
NS=stratus-mh-$$
bus_pid= sched_pid= a1= a2= a3=

cleanup() {
	for p in $a1 $a2 $a3 $sched_pid $bus_pid; do kill "$p" 2>/dev/null; done
	sleep 0.5
	for p in $a1 $a2 $a3 $sched_pid $bus_pid; do kill -9 "$p" 2>/dev/null; done
	for i in 1 2 3; do ip netns del "$NS-$i" 2>/dev/null; done
	for i in 1 2 3; do ip link del "mh$$h$i" 2>/dev/null; done
	ip link del "$BR" 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() {
	echo "FAIL: $*"
	for f in "$T"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; }; done
	exit 1
}
skip() { echo "SKIP: $*"; exit 77; }
ctl() { "$B/stratusctl" -c "$T/stratus.yaml" -p acme "$@"; }
agent_pid() { eval echo "\$a$1"; }

for c in ip jq curl kcat qemu-img ss python3; do
	command -v $c >/dev/null || fail "$c is not installed (deps/test-multihost.txt)"
done
[ "$(id -u)" = 0 ] || skip "needs root for network namespaces (ip netns, bridge, veth)"
ip -4 addr show | grep -q "inet $NET\." && skip "$NET.0/24 is already in use on this machine (another run?)"

# --- the network: a bridge in the root namespace, one namespace per host ---
ip link add "$BR" type bridge 2>"$T/ip.err" || skip "cannot create a bridge (no CAP_NET_ADMIN?): $(cat "$T/ip.err")"
ip addr add "$NET.1/24" dev "$BR" && ip link set "$BR" up || fail "bridge address"
for i in 1 2 3; do
	ip netns add "$NS-$i" 2>"$T/ip.err" || skip "cannot create a network namespace: $(cat "$T/ip.err")"
	ip link add "mh$$h$i" type veth peer name "mh$$n$i" || fail "veth $i"
	ip link set "mh$$n$i" netns "$NS-$i" || fail "veth $i into its namespace"
	ip link set "mh$$h$i" master "$BR" up || fail "veth $i on the bridge"
	ip -n "$NS-$i" link set "mh$$n$i" name eth0 || fail "rename veth $i"
	ip -n "$NS-$i" addr add "$NET.1$i/24" dev eth0 || fail "address of host $i"
	ip -n "$NS-$i" link set eth0 up && ip -n "$NS-$i" link set lo up || fail "links up in $i"
done
echo "network: bridge $BR $NET.1, namespaces $NS-1..3 at $NET.11..13"

# --- the controller: stratus-bus on the bridge address, the scheduler ---
# the bus's port, fixed like a real broker's (broker.listen ADDR:PORT)
PORT=$(python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$NET.1")
qemu-img create -q -f qcow2 "$T/base.qcow2" 64M || fail "qemu-img"
SUM=$(sha256sum "$T/base.qcow2" | cut -d' ' -f1)
cat >"$T/stratus.yaml" <<EOF
log: {level: info}
broker: {listen: "$NET.1:$PORT", partitions: 2, address_file: $T/bus.addr}
bus: {address_file: $T/bus.addr, properties: {fetch.wait.max.ms: "10"}}
scheduler:
  state_path: $T/scheduler.db
  heartbeat_interval: 1s
  missed_heartbeats: 3
  placement: spread
  # the three agents read this one machine's /proc/stat: their steal
  # differs only by sampling time, noise the normalized weigher would
  # weigh as much as free RAM on a machine with steal
  steal_weight_multiplier: 0
  default_quotas: {instances: 40, cores: 40, ram_mb: 40960}
  flavors:
    m1.small: vcpus=1 ram_mb=256 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$SUM disk_format=qcow2
EOF
"$B/stratus-bus" -c "$T/stratus.yaml" >"$T/bus.out" 2>"$T/bus.log" &
bus_pid=$!
for _ in $(seq 100); do [ -s "$T/bus.addr" ] && break; sleep 0.1; done
[ -s "$T/bus.addr" ] || fail "stratus-bus did not start"
ADDR=$(cat "$T/bus.addr")
[ "$ADDR" = "$NET.1:$PORT" ] || fail "stratus-bus at '$ADDR', not at $NET.1:$PORT"
ss -ltnH "src $NET.1" | grep -q ":${ADDR#*:} " || fail "no listener on $ADDR: $(ss -ltn)"
# the scheduler's keys first: the agents trust its signing key (scheduler-sign.pub)
"$B/stratus-scheduler" -c "$T/stratus.yaml" keys >"$T/keys.txt" || fail "stratus-scheduler keys"
"$B/stratus-scheduler" -c "$T/stratus.yaml" >"$T/sched.log" 2>&1 &
sched_pid=$!
# stratusctl signs with the admin credential the scheduler creates on first start
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
echo "stratus-bus at $ADDR"

# --- the three hosts: a real stratus-agent in each namespace ---
start_agent() { # N
	ip netns exec "$NS-$1" "$B/stratus-agent" -c "$T/h$1.yaml" >>"$T/h$1.log" 2>&1 &
	eval "a$1=$!"
	for _ in $(seq 150); do
		[ "$(grep -c "agent running" "$T/h$1.log")" -ge "$2" ] && return 0
		kill -0 "$(agent_pid "$1")" 2>/dev/null || break
		sleep 0.1
	done
	fail "agent h$1 did not start"
}
for i in 1 2 3; do
	# a remote host knows the bus by its address, not by a file
	cat >"$T/h$i.yaml" <<EOF
log: {level: info}
bus: {bootstrap_servers: "$ADDR", client_id: agent-h$i, properties: {fetch.wait.max.ms: "10"}}
agent:
  host: h$i
  availability_zone: az1
  state_dir: $T/h$i/state
  metrics_listen: $NET.1$i:9180
  report_interval: 1s
  reconcile_interval: 2s
  cpu_allocation_ratio: 16
  scheduler_keys: [$T/scheduler-sign.pub]
vmm: {uri: "test:///default", accel: qemu, shutdown_timeout: 2s, cpu_dedicated_set: "1",
      cpu_shared_set: "0", bridge: "", instances_dir: $T/h$i/inst, console_log_dir: $T/h$i/inst}
images: {cache_dir: $T/h$i/cache, allow_file_urls: true}
EOF
	"$B/stratus-agent" -n -c "$T/h$i.yaml" >/dev/null || fail "agent config h$i rejected"
	# the broker's metadata, as a client in that namespace sees it
	ip netns exec "$NS-$i" kcat -L -b "$ADDR" -m 5 >"$T/kcat-h$i.out" 2>&1 ||
		fail "h$i cannot reach the bus: $(cat "$T/kcat-h$i.out")"
	grep -q "broker 1 at $ADDR" "$T/kcat-h$i.out" || fail "h$i: advertised broker: $(cat "$T/kcat-h$i.out")"
	start_agent $i 1
done

# each agent answers on its own address, and only there
for i in 1 2 3; do
	curl -sf --max-time 5 "http://$NET.1$i:9180/healthz" >/dev/null || fail "h$i: no /healthz at $NET.1$i:9180"
	curl -sf --max-time 5 "http://$NET.1$i:9180/metrics" >"$T/metrics-h$i.txt" || fail "h$i: no /metrics"
	grep -q "host=\"h$i\"" "$T/metrics-h$i.txt" || fail "$NET.1$i:9180 is not h$i's agent"
	grep -q "host=\"h[^$i]\"" "$T/metrics-h$i.txt" && fail "$NET.1$i:9180 shows another host"
	ip netns exec "$NS-$i" ss -ltnH | grep -q "$NET.1$i:9180 " || fail "h$i: listener not in its namespace"
	# its bus connections leave from its own address, over the bridge
	ip netns exec "$NS-$i" ss -tnH state established "dst $ADDR" | grep -q "$NET.1$i:" ||
		fail "h$i: no connection from $NET.1$i to the bus at $ADDR"
done
echo "three agents, each on its own address"

# --- all three hosts up ---
hosts_state() { # prints "name:state ..." sorted
	ctl --json host list --timeout 10 2>/dev/null |
		jq -r '[.[] | "\(.name):\(.state)"] | sort | join(" ")'
}
wait_hosts() { # EXPECTED [SECONDS]
	for _ in $(seq $((${2:-30} * 4))); do
		[ "$(hosts_state)" = "$1" ] && return 0
		sleep 0.25
	done
	fail "hosts: '$(hosts_state)', expected '$1'"
}
wait_hosts "h1:up h2:up h3:up"
echo "hosts: $(hosts_state)"

# count_on PREFIX: "h1=N h2=N h3=N" of active instances named PREFIX-*
count_on() {
	ctl --json list >"$T/list.json" || fail "list"
	jq -r --arg p "$1-" '[.[] | select(.name | startswith($p))] as $a
		| ["h1", "h2", "h3"] | map(. as $h | "\($h)=\([$a[] | select(.host == $h and .state == "active")] | length)")
		| join(" ")' "$T/list.json"
}

# --- spread: six identical instances on three identical hosts ---
# spread weighs free RAM and free vCPUs (docs/scheduler.md): each claim makes
# its host less attractive, so equal hosts take turns: two each
ctl boot web --count 6 --flavor m1.small --image tiny --timeout 90 >"$T/boot-web.out" 2>&1 ||
	fail "boot web: $(cat "$T/boot-web.out")"
[ "$(count_on web)" = "h1=2 h2=2 h3=2" ] || fail "spread: $(count_on web); $(cat "$T/list.json")"
echo "spread: $(count_on web)"
# signatures on: every build came signed by the scheduler's key; a command
# written from h1's namespace to h2's topic (one host commanding another) is
# refused by h2, which names the reason and keeps its instance running
kid=$(sed -n 's/^key_id: //p' "$T/keys.txt")
grep -q "trusting scheduler key key=$kid" "$T/h2.log" || fail "h2 does not trust $kid"
victim=$(jq -r '[.[] | select(.host == "h2")][0].uuid' "$T/list.json")
RF=ffffffff-0000-4000-8000-0000000000f1
printf '{"v":1,"id":"ffffffff-0000-4000-8000-0000000000f0","type":"instance.stop","ts":"%s","source":"agent/h1","request_id":"%s","body":{"uuid":"%s"}}' \
	"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$RF" "$victim" |
	ip netns exec "$NS-1" kcat -P -b "$ADDR" -t stratus.host.h2 2>/dev/null || fail "kcat -P from h1"
for _ in $(seq 50); do grep -q "command refused.*request=$RF" "$T/h2.log" && break; sleep 0.1; done
grep -q "command refused type=instance.stop request=$RF .*unsigned" "$T/h2.log" ||
	fail "h2 did not refuse the unsigned stop: $(tail -n 5 "$T/h2.log")"
sleep 1
[ "$(ctl --json show "$victim" | jq -r .state)" = active ] || fail "h2's instance changed: $(ctl --json show "$victim")"
echo "signed: builds from key $kid; an unsigned stop from h1 to h2 refused"
for i in 1 2 3; do # each agent built its own two
	[ "$(curl -sf "http://$NET.1$i:9180/metrics" | grep -c "^stratus_instance_cpu_seconds_total{host=\"h$i\"")" = 2 ] ||
		fail "h$i's /metrics does not show its two instances"
done

# --- h2 stopped (SIGTERM): down after 3 missed heartbeats, avoided ---
kill -TERM "$a2"
t0=$(date +%s)
wait "$a2"
rc=$?
[ $rc = 0 ] || fail "h2 exit status $rc after SIGTERM"
grep -q "agent stopped" "$T/h2.log" || fail "h2 did not stop cleanly"
a2=
curl -s --max-time 2 "http://$NET.12:9180/healthz" >/dev/null && fail "h2 still answers after SIGTERM"
wait_hosts "h1:up h2:down h3:up" 20
echo "h2 down after $(( $(date +%s) - t0 )) s (heartbeat 1 s x 3)"
ctl --json host list >"$T/hosts.json"
jq -e '.[] | select(.name == "h2") | .state == "down" and .instances == 2' "$T/hosts.json" >/dev/null ||
	fail "host list after h2 stopped: $(cat "$T/hosts.json")"
# its instances keep their last known state and host: the scheduler does not
# move or fail instances of a down host (docs/scheduler.md, Liveness)
ctl --json list | jq -e '[.[] | select(.host == "h2")] | length == 2 and all(.state == "active")' >/dev/null ||
	fail "h2's instances: $(ctl --json list)"
ctl boot after-term --count 4 --flavor m1.small --image tiny --timeout 90 >"$T/boot-at.out" 2>&1 ||
	fail "boot after-term: $(cat "$T/boot-at.out")"
[ "$(count_on after-term)" = "h1=2 h2=0 h3=2" ] || fail "after h2 stopped: $(count_on after-term)"
echo "h2 stopped: new boots $(count_on after-term)"

# --- h3 killed (SIGKILL): down too, everything new goes to h1 ---
kill -KILL "$a3"
wait "$a3" 2>/dev/null
a3=
wait_hosts "h1:up h2:down h3:down" 20
ctl boot after-kill --count 2 --flavor m1.small --image tiny --timeout 90 >"$T/boot-ak.out" 2>&1 ||
	fail "boot after-kill: $(cat "$T/boot-ak.out")"
[ "$(count_on after-kill)" = "h1=2 h2=0 h3=0" ] || fail "after h3 killed: $(count_on after-kill)"
echo "h3 killed: new boots $(count_on after-kill)"
# a boot no host can take names each host's reason
ctl boot huge --flavor m1.small --image tiny --az nowhere --timeout 30 >"$T/boot-huge.out" 2>&1 &&
	fail "a boot into an unknown zone succeeded"
grep -q "h2: down (last report" "$T/boot-huge.out" || fail "no-valid-host reason: $(cat "$T/boot-huge.out")"

# --- h2 restarted with its state: up again, it reports what it found ---
start_agent 2 2
wait_hosts "h1:up h2:up h3:down" 20
# libvirt's test driver keeps its domains in the agent's process: they died
# with it, and the agent's reconcile reports them (docs/agent.md, Reconcile)
for _ in $(seq 60); do
	ctl --json list | jq -e '[.[] | select(.host == "h2")] | length == 2 and all(.state == "error")' >/dev/null && break
	sleep 0.5
done
ctl --json list | jq -e '[.[] | select(.host == "h2")] | length == 2 and all(.state == "error")' >/dev/null ||
	fail "h2's instances after its restart: $(ctl --json list)"
n=$(ctl --json list | jq -r '[.[] | select(.host == "h2")][0].name')
ctl --json show "$n" | jq -e '.reason | test("vanished")' >/dev/null || fail "reason: $(ctl --json show "$n")"
# h2 claims 2 instances, h1 8: spread sends the next one to h2
ctl boot back --flavor m1.small --image tiny --timeout 60 >"$T/boot-back.out" 2>&1 ||
	fail "boot back: $(cat "$T/boot-back.out")"
[ "$(ctl --json show back | jq -r .host)" = h2 ] || fail "back: $(ctl --json show back)"
echo "h2 restarted: up, its old instances error (domains gone), new boot on h2"

# --- SIGTERM: the daemons stop cleanly ---
for v in a1 a2; do
	p=$(eval echo "\$$v")
	kill -TERM "$p"; wait "$p"; rc=$?
	[ $rc = 0 ] || fail "$v exit $rc"
	eval "$v="
done
kill -TERM "$sched_pid"; wait "$sched_pid" || fail "scheduler exit status after SIGTERM"
sched_pid=
kill -TERM "$bus_pid"; wait "$bus_pid" || fail "stratus-bus exit status after SIGTERM"
bus_pid=
[ ! -e "$T/bus.addr" ] || fail "stratus-bus left its address file"
echo "multihost test: ok"
