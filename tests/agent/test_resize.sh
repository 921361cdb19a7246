#!/bin/sh
# Resize with confirm and revert (issue 18) through the binaries, libvirt's
# test driver underneath: stratus-bus, stratus-scheduler, stratus-agent and
# stratusctl as a tenant uses it. What a user checks: the instance's state
# and flavor (stratusctl show), the project's usage (quota show), the
# host's claims (host list), the domain's vCPUs and memory (the agent's
# /metrics, from libvirt's domain stats) and the disk's size (qemu-img).
#   - refused, changing nothing: an unknown flavor, the same flavor, a
#     smaller disk, no room on the host, over quota, another project's
#     instance (a member), confirm or revert with no resize pending, a
#     deleting instance;
#   - kill -9 of the agent right after the disk grew: reconcile rolls back
#     (old flavor in the domain, the store and the scheduler; usage back);
#   - resize + revert: verify_resize with the new vCPUs/RAM and both flavors
#     held on the host, then everything back but the disk (stays grown);
#   - resize + confirm (--json: the final record): usage of the new flavor;
#   - auto-confirm after scheduler.resize_confirm_window (1s).
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
stack_down() {
	[ -f "$T/scheduler.pid" ] && kill "$(cat "$T/scheduler.pid")" 2>/dev/null
	agent_env_down
}
trap stack_down EXIT
agent_env_up
cat >>"$T/stratus.yaml" <<EOF
scheduler:
  state_path: $T/scheduler.db
  key_dir: $T/sched
  heartbeat_interval: 1s
  missed_heartbeats: 5
  resize_confirm_window: 0s
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
    m1.medium: vcpus=2 ram_mb=1024 disk_gb=2
    m1.large: vcpus=2 ram_mb=1536 disk_gb=2
    m1.nodisk: vcpus=1 ram_mb=512 disk_gb=0
    m1.huge: vcpus=1 ram_mb=4000000 disk_gb=2
    m1.ram: vcpus=1 ram_mb=1024 disk_gb=1
    m1.pt: vcpus=2 ram_mb=1024 disk_gb=2 hw:cpu_mode=host-passthrough
    m1.eph: vcpus=2 ram_mb=1024 disk_gb=2 ephemeral_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
EOF
sched_start() {
	"$B/stratus-scheduler" -c "$T/stratus.yaml" >>"$T/scheduler.log" 2>&1 &
	echo $! >"$T/scheduler.pid"
}
sched_start
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
# armed from the start (the test driver forgets its domains when the agent
# restarts): the first resize kills the agent right after its disk grew
AGENT_ENV="STRATUS_FAULT=resize:disk" agent_start
ctl() { "$B/stratusctl" -c "$T/stratus.yaml" -p acme "$@"; }
for _ in $(seq 100); do ctl --json host list 2>/dev/null | jq -e 'length > 0' >/dev/null && break; sleep 0.2; done

ctl boot web-1 --flavor m1.small --image tiny --timeout 60 >"$T/boot.out" 2>&1 ||
	fail "boot: $(cat "$T/boot.out")"
uuid=$(ctl --json show web-1 | jq -r .uuid)
disk=$T/inst/$uuid.qcow2
show() { ctl --json show web-1 | jq -r '.state + " " + .flavor'; }
usage() { ctl --json quota show acme | jq -r '"\(.usage.cores) \(.usage.ram_mb)"'; }
hostuse() {
	ctl --json host list 2>>"$T/hostuse.err" | jq -r '.[] | select(.name == "hv1") | "\(.vcpus.used) \(.ram_mb.used)"'
}
vsize() { qemu-img info --output=json -U "$disk" | jq -r '."virtual-size"'; }
# the domain's vCPUs and memory (MiB), as libvirt reports them to the agent
dom() {
	curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v u="$uuid" '
		index($0, "instance=\"" u "\"") && /^stratus_instance_vcpus/ { v = $2 }
		index($0, "instance=\"" u "\"") && /^stratus_instance_memory_bytes/ { m = $2 / 1048576 }
		END { print v " " m }'
}
want_dom() { # VCPUS MIB
	for _ in $(seq 50); do [ "$(dom)" = "$1 $2" ] && return 0; sleep 0.1; done
	curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep stratus_instance >&2
	fail "domain: want $1 vCPUs $2 MiB, have $(dom)"
}
want_show() { # "STATE FLAVOR"
	for _ in $(seq 100); do [ "$(show)" = "$1" ] && return 0; sleep 0.1; done
	fail "scheduler: want '$1', have '$(show)'"
}
want_dom 1 512
[ "$(usage)" = "1 512" ] || fail "usage after boot: $(usage)"
[ "$(hostuse)" = "1 512" ] || fail "host after boot: $(hostuse)"
[ "$(vsize)" = 1073741824 ] || fail "disk after boot: $(vsize)"

# ---- refusals: nothing changes
refused() { # WHAT EXPECTED-TEXT ARGS...
	what=$1 text=$2
	shift 2
	out=$("$@" 2>&1) && fail "$what accepted: $out"
	echo "$out" | grep -qF "$text" || fail "$what: $out"
}
refused "unknown flavor" "flavor 'm9.nope' not found" ctl resize web-1 --flavor m9.nope
refused "same flavor" "instance web-1 already has flavor m1.small" ctl resize web-1 --flavor m1.small
refused "local disks change" "resize web-1 to m1.eph: ephemeral 1 GB and swap 0 MB differ from flavor m1.small's 0 GB and 0 MB" \
	ctl resize web-1 --flavor m1.eph
refused "smaller disk" "resize web-1 to m1.nodisk: disk 0 GB is smaller than the 1 GB of flavor m1.small: a disk is never shrunk" \
	ctl resize web-1 --flavor m1.nodisk
refused "no room" "resize web-1 to m1.huge: its host hv1 cannot take the new flavor beside the old one (held until the resize is confirmed): RAM" \
	ctl resize web-1 --flavor m1.huge
ctl quota set acme --ram-mb 1000 >/dev/null || fail "quota set"
refused "over quota" "resize web-1 to m1.large: quota exceeded for project acme: ram_mb: requested 1024, used 512, limit 1000" \
	ctl resize web-1 --flavor m1.large
ctl quota set acme --ram-mb 100000 >/dev/null || fail "quota set"
ctl credential create --project other --role member --output "$T/other.cred" >/dev/null || fail "credential"
refused "another project's instance" "instance web-1 not found in project other" \
	"$B/stratusctl" -c "$T/stratus.yaml" -C "$T/other.cred" resize web-1 --flavor m1.medium
refused "confirm with no resize" "instance web-1 is active: no resize to confirm (it needs verify_resize)" \
	ctl resize-confirm web-1
refused "revert with no resize" "instance web-1 is active: no resize to revert (it needs verify_resize)" \
	ctl resize-revert web-1
refused "resize without --flavor" "resize: --flavor is required" ctl resize web-1
[ "$(show)" = "active m1.small" ] || fail "refusals changed the instance: $(show)"
[ "$(usage)" = "1 512" ] || fail "refusals changed the usage: $(usage)"
[ "$(hostuse)" = "1 512" ] || fail "refusals changed the host's claims: $(hostuse)"
[ "$(vsize)" = 1073741824 ] || fail "refusals changed the disk: $(vsize)"
want_dom 1 512
echo "refused: unknown, same, smaller disk, no room, over quota, another project, nothing pending"

# ---- a step that fails on the host (host-passthrough needs KVM; this agent runs TCG)
out=$(ctl resize web-1 --flavor m1.pt --timeout 30 2>&1) && fail "resize to m1.pt worked: $out"
echo "$out" | grep -qF "resize failed: resize step claim: host hv1 cannot fit flavor m1.pt" ||
	fail "failed step not named: $out"
echo "$out" | grep -qF "back on flavor m1.small" || fail "rollback not said: $out"
want_show "active m1.small"
want_dom 1 512
[ "$(usage)" = "1 512" ] || fail "usage after a failed step: $(usage)"
[ "$(hostuse)" = "1 512" ] || fail "host claims after a failed step: $(hostuse)"
[ -f "$T/inst/$uuid.resize.json" ] && fail "resize record left over after a failed step"
echo "failed at step claim: back on m1.small, the error names the step"

# ---- kill -9 in the middle: the agent dies right after the disk grew
ctl resize web-1 --flavor m1.medium --timeout 20 >"$T/rz0.out" 2>&1 &
ctlpid=$!
for _ in $(seq 150); do kill -0 "$(cat "$T/agent.pid")" 2>/dev/null || break; sleep 0.1; done
kill -0 "$(cat "$T/agent.pid")" 2>/dev/null && fail "the fault point was not reached"
[ -f "$T/inst/$uuid.resize.json" ] || fail "no record of the flavor before at the fault"
[ "$(vsize)" = 2147483648 ] || fail "the fault came before the disk grew: $(vsize)"
[ "$(hostuse)" = "3 1536" ] || fail "both flavors not held on the host mid-resize: $(hostuse)"
AGENT_ENV= agent_start
want_show "active m1.small"
grep -q "rolling back instance=$uuid" "$T/agent.log" || fail "no rollback in the log"
[ "$(db "SELECT state FROM instances WHERE uuid='$uuid'")" = active ] || fail "agent store state"
db "SELECT spec_json FROM instances WHERE uuid='$uuid'" | jq -e '.flavor.name == "m1.small"' >/dev/null ||
	fail "agent store flavor after rollback"
want_dom 1 512
[ -f "$T/inst/$uuid.resize.json" ] && fail "resize record left over after rollback"
[ "$(usage)" = "1 512" ] || fail "usage after rollback: $(usage)"
[ "$(hostuse)" = "1 512" ] || fail "host claims after rollback: $(hostuse)"
wait $ctlpid && fail "the interrupted resize's stratusctl says it worked: $(cat "$T/rz0.out")"
grep -q "interrupted by an agent restart; back on flavor m1.small" "$T/rz0.out" ||
	fail "interrupted resize: $(cat "$T/rz0.out")"
echo "kill -9 mid-resize: rolled back to m1.small (domain, store, scheduler, usage)"

# ---- resize, then revert
ctl resize web-1 --flavor m1.medium --timeout 30 >"$T/rz1.out" 2>&1 || fail "resize: $(cat "$T/rz1.out")"
grep -q "web-1: resizing on hv1" "$T/rz1.out" && grep -q "web-1: verify_resize on hv1" "$T/rz1.out" ||
	fail "resize progress: $(cat "$T/rz1.out")"
[ "$(show)" = "verify_resize m1.medium" ] || fail "after resize: $(show)"
want_dom 2 1024
[ "$(usage)" = "2 1024" ] || fail "usage in verify_resize: $(usage)"
[ "$(hostuse)" = "3 1536" ] || fail "host claims in verify_resize (both flavors held): $(hostuse)"
[ "$(vsize)" = 2147483648 ] || fail "disk not grown: $(vsize)"
ctl resize-revert web-1 --timeout 30 >"$T/rv.out" 2>&1 || fail "revert: $(cat "$T/rv.out")"
grep -q "web-1: reverting on hv1" "$T/rv.out" && grep -q "web-1: active on hv1" "$T/rv.out" ||
	fail "revert progress: $(cat "$T/rv.out")"
want_show "active m1.small"
want_dom 1 512
[ "$(usage)" = "1 512" ] || fail "usage after revert: $(usage)"
[ "$(hostuse)" = "1 512" ] || fail "host claims after revert: $(hostuse)"
[ "$(vsize)" = 2147483648 ] || fail "the disk was shrunk by the revert: $(vsize)"
refused "a second revert" "no resize to revert" ctl resize-revert web-1
echo "resize + revert: 2 vCPUs/1024 MiB in verify_resize, then 1/512 again, usage and claims back"

# ---- resize, then confirm (--json: the final record)
ctl resize web-1 --flavor m1.medium --timeout 30 >/dev/null 2>&1 || fail "resize again"
ctl --json resize-confirm web-1 --timeout 30 >"$T/cf.json" 2>"$T/cf.err" || fail "confirm: $(cat "$T/cf.err")"
jq -e '.state == "active" and .flavor == "m1.medium" and .uuid == "'"$uuid"'"' "$T/cf.json" >/dev/null ||
	fail "confirm --json: $(cat "$T/cf.json")"
want_show "active m1.medium"
want_dom 2 1024
[ "$(usage)" = "2 1024" ] || fail "usage after confirm: $(usage)"
[ "$(hostuse)" = "2 1024" ] || fail "host claims after confirm (old released): $(hostuse)"
[ -f "$T/inst/$uuid.resize.json" ] && fail "resize record left over after confirm"
refused "a second confirm" "no resize to confirm" ctl resize-confirm web-1
echo "resize + confirm: m1.medium, usage 2 cores, the old claim released"

# ---- auto-confirm after scheduler.resize_confirm_window
kill "$(cat "$T/scheduler.pid")"
for _ in $(seq 50); do kill -0 "$(cat "$T/scheduler.pid")" 2>/dev/null || break; sleep 0.1; done
sed -i 's/resize_confirm_window: 0s/resize_confirm_window: 1s/' "$T/stratus.yaml"
sched_start
# the restarted scheduler hears from hv1 again before it places anything there
for _ in $(seq 150); do
	ctl --json host list 2>/dev/null | jq -e '.[] | select(.name == "hv1" and .state == "up")' >/dev/null && break
	sleep 0.2
done
ctl resize web-1 --flavor m1.large --timeout 30 >"$T/rz3.out" 2>&1 || fail "resize to m1.large: $(cat "$T/rz3.out")"
want_show "active m1.large"
grep -q "resize auto-confirmed instance=$uuid window_ms=1000" "$T/scheduler.log" || fail "not auto-confirmed"
want_dom 2 1536
[ "$(usage)" = "2 1536" ] || fail "usage after auto-confirm: $(usage)"
[ "$(hostuse)" = "2 1536" ] || fail "host claims after auto-confirm: $(hostuse)"
echo "auto-confirmed after 1s: m1.large"
# ---- delete in verify_resize: both flavors' claims and the usage go
ctl boot web-2 --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "boot web-2"
ctl resize web-2 --flavor m1.ram --timeout 30 >"$T/rz4.out" 2>&1 || fail "resize web-2: $(cat "$T/rz4.out")"
[ "$(hostuse)" = "4 3072" ] || fail "host claims with web-2 in verify_resize: $(hostuse)"
ctl delete web-2 --timeout 30 >/dev/null 2>&1 || fail "delete web-2 in verify_resize"
[ "$(usage)" = "2 1536" ] || fail "usage after deleting web-2: $(usage)"
[ "$(hostuse)" = "2 1536" ] || fail "host claims after deleting web-2: $(hostuse)"
echo "deleted in verify_resize: both claims and the usage released"

# ---- a deleting instance: the agent is away, the delete waits for it
ctl boot web-2 --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "boot web-2"
agent_kill TERM
ctl delete web-2 --no-wait >/dev/null || fail "delete web-2"
refused "a deleting instance" "instance web-2 is deleting: resize needs it active or stopped" \
	ctl resize web-2 --flavor m1.medium
agent_start
echo "refused: resize of a deleting instance"

echo "resize test: ok"
