#!/bin/sh
# Volumes through the binaries a user runs, on libvirt's test driver: two
# agents (hv1, hv2), the scheduler, stratusctl. create -> available (a
# sparse file in agent.volume_dir); refused inputs change nothing (bad
# size, a member's host choice, another project's volume, attach to an
# instance on another host, delete of an in-use volume); attach to a
# stopped instance -> in-use; detach; the instance deleted -> available,
# file kept; delete gives the quota back. The other refusals, the failure
# paths and reconcile: tests/scheduler/test_volumes.c and
# tests/agent/test_agent_volumes.c (in-process, faster).
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
stack_down() {
	[ -f "$T/scheduler.pid" ] && kill "$(cat "$T/scheduler.pid")" 2>/dev/null
	[ -f "$T/agent2.pid" ] && kill "$(cat "$T/agent2.pid")" 2>/dev/null
	agent_env_down
}
trap stack_down EXIT
agent_env_up
sum=$IMAGE_SUM
sed -i "s|^  state_dir: $T/state|  state_dir: $T/state\n  volume_dir: $T/vol1|" "$T/stratus.yaml"
cat >>"$T/stratus.yaml" <<EOF
$(stack_scheduler_yaml)
  missed_heartbeats: 5
  default_quotas: {instances: 4, cores: 8, ram_mb: 8192, volumes: 3, gigabytes: 5}
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$sum disk_format=qcow2
EOF
# the second host: its own state, volumes, metrics port
sed -e "s|host: hv1|host: hv2|; s|$T/state|$T/state2|; s|$T/vol1|$T/vol2|; s|$T/inst|$T/inst2|g" \
	-e "s|metrics_listen: 127.0.0.1:[0-9]*|metrics_listen: 127.0.0.1:$(free_port)|" \
	"$T/stratus.yaml" >"$T/hv2.yaml"
stack_scheduler_start
agent_start
"$B/stratus-agent" -c "$T/hv2.yaml" >"$T/agent2.log" 2>&1 &
echo $! >"$T/agent2.pid"
for _ in $(seq 100); do ctl --json host list 2>/dev/null | jq -e 'length == 2' >/dev/null && break; sleep 0.2; done
ctl --json host list | jq -e 'length == 2' >/dev/null || fail "two hosts not known"

inst() { sqlite3 "$T/scheduler.db" "SELECT $2 FROM instances WHERE name = '$1' AND state != 'deleted'"; }
# the scheduler's volumes and quota usage, read from its database
vols() {
	sqlite3 "$T/scheduler.db" "SELECT name, state, instance FROM volumes ORDER BY name;
		SELECT volumes, gigabytes FROM quota_volume_usage WHERE project = 'acme'" | tr '\n' ' '
}
# refuse: expect_fail WHAT PATTERN CMD...: fails, says PATTERN, changes nothing
expect_fail() {
	what=$1 pat=$2
	shift 2
	before=$(vols)
	if ctl "$@" >"$T/out" 2>&1; then fail "$what accepted: $(cat "$T/out")"; fi
	grep -q -- "$pat" "$T/out" || fail "$what: expected '$pat', got: $(cat "$T/out")"
	after=$(vols)
	[ "$before" = "$after" ] || fail "$what changed the volumes: $before -> $after"
}

# boot one instance on each host
ctl boot a1 --flavor m1.small --image tiny --timeout 60 >"$T/b1" 2>&1 || fail "boot a1: $(cat "$T/b1")"
h_a1=$(inst a1 host)
ctl boot a2 --flavor m1.small --image tiny --timeout 60 >"$T/b2" 2>&1 || fail "boot a2: $(cat "$T/b2")"
h_a2=$(inst a2 host)
[ "$h_a1" != "$h_a2" ] || {
	ctl boot a3 --flavor m1.small --image tiny --timeout 60 >/dev/null 2>&1
	h_a3=$(inst a3 host)
	[ "$h_a3" != "$h_a1" ] || fail "no instance on a second host ($h_a1, $h_a2, $h_a3)"
	a_other=a3
}
a_other=${a_other:-a2}
h_other=$(inst $a_other host)

# create on a1's host (admin chooses), 2 GB
ctl --json volume create data --size 2 --host "$h_a1" >"$T/create.json" 2>&1 || fail "create: $(cat "$T/create.json")"
jq -e ".state == \"available\" and .host == \"$h_a1\" and .size_gb == 2" "$T/create.json" >/dev/null ||
	fail "create: $(cat "$T/create.json")"
vid=$(jq -r .uuid "$T/create.json")
vdir=$T/vol1; [ "$h_a1" = hv2 ] && vdir=$T/vol2
[ -f "$vdir/$vid.img" ] || fail "no volume file $vdir/$vid.img"
[ "$(stat -c %s "$vdir/$vid.img")" = $((2 << 30)) ] || fail "volume file size $(stat -c %s "$vdir/$vid.img")"
wait_event "select(.type==\"volume.state\" and .body.uuid==\"$vid\" and .body.state==\"available\") | .auth.sig" 5 >/dev/null ||
	fail "no signed volume.state available event"
ctl --json quota show acme | jq -e '.usage.volumes == 1 and .usage.gigabytes == 2 and .limits.gigabytes == 5' >/dev/null ||
	fail "quota usage: $(ctl --json quota show acme)"

# refusals
expect_fail "size 0" "size: expected GB" volume create v0 --size 0
expect_fail "size x" "size: expected GB" volume create v0 --size 12x
expect_fail "attach to another host" "volume data is on host $h_a1, instance $a_other on $h_other: a volume attaches only to an instance on its host" \
	volume attach data $a_other
ctl credential create --project acme --role member --output "$T/member.cred" >/dev/null ||
	fail "credential create member"
ctl credential create --project other --role member --output "$T/other.cred" >/dev/null ||
	fail "credential create other"
STRATUS_CREDENTIAL=$T/member.cred expect_fail "member chooses a host" \
	"volume m1: host: only an admin chooses the host of a volume" volume create m1 --size 1 --host "$h_a1"
STRATUS_CREDENTIAL=$T/other.cred expect_fail "another project's volume (its project)" \
	"volume.delete: credential .* is a member of project other, not of acme" volume delete data --project acme

# stopped: the disk goes into the definition
ctl stop a1 --timeout 30 >/dev/null 2>&1 || fail "stop a1"
a1=$(inst a1 uuid)
ctl --json volume attach data a1 >"$T/att.json" 2>&1 || fail "attach: $(cat "$T/att.json")"
jq -e ".state == \"in-use\" and .instance == \"$a1\" and .reason == null" "$T/att.json" >/dev/null || fail "attach: $(cat "$T/att.json")"
expect_fail "delete in-use" "volume data is in-use (attached to instance $a1): detach it first" volume delete data
ctl --json volume detach data >"$T/det.json" 2>&1 || fail "detach: $(cat "$T/det.json")"
jq -e '.state == "available" and .instance == null' "$T/det.json" >/dev/null || fail "detach: $(cat "$T/det.json")"
ctl volume attach data a1 >/dev/null 2>&1 || fail "attach again"
# the instance deleted: the volume outlives it, available, its file kept
ctl delete a1 --timeout 30 >/dev/null 2>&1 || fail "delete a1"
for _ in $(seq 50); do [ "$(sqlite3 "$T/scheduler.db" "SELECT state FROM volumes WHERE uuid='$vid'")" = available ] && break; sleep 0.1; done
ctl --json volume list | jq -e 'length == 1 and .[0].name == "data" and .[0].state == "available" and .[0].instance == null' >/dev/null ||
	fail "after instance delete: $(ctl --json volume list)"
[ -f "$vdir/$vid.img" ] || fail "volume file gone with the instance"
# delete: file gone, quota back
ctl volume delete data >"$T/del.out" 2>&1 || fail "delete: $(cat "$T/del.out")"
grep -q "volume data deleted" "$T/del.out" || fail "delete: $(cat "$T/del.out")"
[ ! -e "$vdir/$vid.img" ] || fail "volume file left after delete"
[ "$(vols)" = "0|0 " ] || fail "quota not given back: $(vols)"
echo "volumes: ok"
