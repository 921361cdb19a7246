# Sourced by tests/e2e/e2e_migrate.sh and bench/migrate/run.sh: two
# namespaced libvirtds (tests/lib/twohost.sh), a stratus-agent inside each
# host's namespaces (h1, h2: one dedicated pCPU each, the same instance path),
# stratus-bus and the scheduler in the root namespace on the hosts' bridge,
# the tiny guest as image "tiny", flavor m1.tiny. Sets T, B, ctl, th_*.
# MIG_CONFIG: extra lines for the scheduler's migration: section.
STRATUS_TOP=${STRATUS_TOP:-$(pwd)}
B=$(cd "${BUILD:-build}" && pwd)
T=$(mktemp -d /tmp/stratus-e2e-mig.XXXXXX)
chmod 755 "$T"
TH_DIR=$T/hosts
TH_LIB=$STRATUS_TOP/tests/lib/twohost.sh
. "$TH_LIB"
bus= sched= a1= a2=
cleanup() {
	for p in $a1 $a2 $sched $bus; do kill "$p" 2>/dev/null; done
	sleep 0.5
	for p in $a1 $a2 $sched $bus; do kill -9 "$p" 2>/dev/null; done
	# the agents run under th_exec (a subshell): $a1 and $a2 are not their pids
	pkill -9 -f "stratus-agent -c $T/h[12].yaml" 2>/dev/null
	twohost_down
	[ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() {
	echo "FAIL: $*"
	for f in "$T"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 12 "$f"; }; done
	exit 1
}
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
for c in virsh libvirtd qemu-system-x86_64 jq curl nsenter unshare; do
	command -v $c >/dev/null || { echo "SKIP: $c missing"; exit 77; }
done
t0=$(date +%s)
eval "$(sh "$STRATUS_TOP/tests/guest/build-tiny.sh" 2>"$T/tiny.log" | grep -E '^(kernel|initrd|disk)=')" ||
	fail "tiny guest: $(tail -n 3 "$T/tiny.log")"
twohost_up 2>"$T/twohost.log" || fail "two hosts: $(cat "$T/twohost.log")"
echo "hosts: $(twohost_status | tr '\n' ';')"

sum() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
PORT=$(python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$TH_NET.1")
cat >"$T/stratus.yaml" <<EOF
log: {level: info}
broker: {listen: "$TH_NET.1:$PORT", partitions: 2, address_file: $T/bus.addr}
bus: {address_file: $T/bus.addr, properties: {fetch.wait.max.ms: "10"}}
scheduler:
  state_path: $T/scheduler.db
  key_dir: $T/sched
  heartbeat_interval: 1s
  missed_heartbeats: 30
  default_quotas: {instances: 10, cores: 10, ram_mb: 8192, pcpus: 4}
  flavors:
    m1.tiny: vcpus=1 ram_mb=128 disk_gb=1 hw:cpu_policy=dedicated
  images:
    tiny: url=file://$disk checksum=$(sum "$disk") disk_format=qcow2 kernel=file://$kernel kernel_checksum=$(sum "$kernel") initrd=file://$initrd initrd_checksum=$(sum "$initrd") cmdline=console=ttyS0
  migration: {${MIG_CONFIG:-downtime: 300ms, downtime_steps: 3, downtime_delay: 1s, completion_timeout: 60s}}
EOF
"$B/stratus-bus" -c "$T/stratus.yaml" >"$T/bus.log" 2>&1 &
bus=$!
for _ in $(seq 100); do [ -s "$T/bus.addr" ] && break; sleep 0.1; done
[ -s "$T/bus.addr" ] || fail "stratus-bus did not start"
"$B/stratus-scheduler" -c "$T/stratus.yaml" >"$T/sched.log" 2>&1 &
sched=$!
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
[ -s "$STRATUS_CREDENTIAL" ] || fail "no admin credential"
for i in 1 2; do
	# each host: its own dedicated pCPU and shared one, the same instance path
	cat >"$T/h$i.yaml" <<EOF
log: {level: info}
bus: {bootstrap_servers: "$TH_NET.1:$PORT", client_id: agent-h$i, properties: {fetch.wait.max.ms: "10"}}
agent:
  host: h$i
  state_dir: $T/h$i/state
  metrics_listen: $(th_addr $i):9180
  report_interval: 1s
  reconcile_interval: 3s
  scheduler_keys: [$T/sched/scheduler-sign.pub]
  migration_uri: "$(th_uri $i)"
vmm: {uri: "qemu:///system", accel: qemu, shutdown_timeout: 5s, cpu_dedicated_set: "$((2 - i))",
      cpu_shared_set: "$((i - 1))", bridge: "", instances_dir: $TH_INST, console_log_dir: $TH_INST}
images: {cache_dir: $T/h$i/cache, allow_file_urls: true}
EOF
	th_exec $i "$B/stratus-agent" -c "$T/h$i.yaml" >"$T/h$i.log" 2>&1 &
	eval "a$i=\$!"
done
ctl() { "$B/stratusctl" -c "$T/stratus.yaml" -p default "$@"; }
for _ in $(seq 150); do
	[ "$(ctl --json host list 2>/dev/null | jq -r '[.[] | select(.state == "up")] | length')" = 2 ] && break
	sleep 0.2
done
[ "$(ctl --json host list | jq -r '[.[] | select(.state == "up")] | length')" = 2 ] || fail "hosts not up"

