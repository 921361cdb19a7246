#!/bin/sh
# Hosts sign what they publish and the scheduler trusts only each host's
# pinned key (docs/scheduler.md "Host keys"). On the whole control plane
# (libvirt's test driver): the agent's first report pins its key (TOFU);
# a forged host.report for hv1 with another box_key, unsigned or signed by
# another key, is refused and the stored box key is unchanged (the next
# build still opens on hv1); a forged instance.state (unsigned, another
# key, tampered, or from a host that is not the instance's) is refused,
# instance and quota unchanged; a configured key wins over a TOFU pin;
# host forget is refused for a member, accepted for the admin, and the
# next report pins again.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
trap stack_down EXIT
agent_env_up
SM_PORT=$(free_port)
cat >>"$T/stratus.yaml" <<EOF
$(stack_scheduler_yaml)
  metrics_listen: 127.0.0.1:$SM_PORT
  missed_heartbeats: 5
  default_quotas: {instances: 3, cores: 4, ram_mb: 4096}
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
EOF
sched_start() {
	"$B/stratus-scheduler" -c "$T/stratus.yaml" >>"$T/scheduler.log" 2>&1 &
	echo $! >"$T/scheduler.pid"
	for _ in $(seq 100); do grep -q "scheduler running" "$T/scheduler.log" && return 0; sleep 0.1; done
	fail "scheduler did not start: $(tail -n 5 "$T/scheduler.log")"
}
sched_start
export STRATUS_CREDENTIAL="$T/admin.credential"
agent_start
sdb() { sqlite3 "$T/scheduler.db" "$1"; }
refused() { curl -s "http://127.0.0.1:$SM_PORT/metrics" |
	awk -v r="$1" '$1 == "stratus_scheduler_refused_total{reason=\"" r "\"}" { print $2 }'; }
# another key pair: what a forger who can write the bus signs with
printf 'scheduler: {state_path: %s/evil/x.db, key_dir: %s/evil}\n' "$T" "$T" >"$T/evil.yaml"
"$B/stratus-scheduler" -c "$T/evil.yaml" keys >/dev/null || fail "evil keys"
EVIL=$T/evil/scheduler-sign.key
EVIL_PUB=$(cat "$T/evil/scheduler-sign.pub")

# TOFU: the first report pins the agent's own key
for _ in $(seq 100); do [ -n "$(sdb "SELECT key FROM host_keys WHERE host='hv1'")" ] && break; sleep 0.1; done
HV1_KEY=$(cat "$T/state/host-sign.pub")
[ "$(sdb "SELECT key FROM host_keys WHERE host='hv1'")" = "$HV1_KEY" ] ||
	fail "hv1 not pinned to its key: $(sdb 'SELECT * FROM host_keys')"
grep -q "host key pinned on first use host=hv1" "$T/scheduler.log" || fail "pin not logged"
[ "$(stat -c %a "$T/state/host-sign.key")" = 600 ] || fail "host-sign.key not 0600"
wait_event '.type=="instance.state" or .type=="host.report"' 1 >/dev/null || true
BOX=$(sdb "SELECT json_extract(report, '\$.box_key') FROM hosts WHERE name='hv1'")
[ -n "$BOX" ] || fail "no box key stored for hv1"

# a forged report for hv1 announcing another box key: unsigned, then signed by another key
fake='{"host":"hv1","box_key":"'"$EVIL_PUB"'","sign_key":"'"$EVIL_PUB"'","inventory":{"VCPU":64}}'
"$B/stratusctl" -c "$T/stratus.yaml" bus send host.report "$fake" >/dev/null || fail "send unsigned"
"$B/stratusctl" -c "$T/stratus.yaml" bus send host.report "$fake" --sign-key "$EVIL" >/dev/null ||
	fail "send signed"
for _ in $(seq 50); do [ "$(refused unknown_key)" = 1 ] && break; sleep 0.1; done
[ "$(refused unsigned)" = 1 ] || fail "unsigned report not counted: $(refused unsigned)"
[ "$(refused unknown_key)" = 1 ] || fail "report by another key not counted: $(refused unknown_key)"
grep -q 'host.report refused host=hv1 reason=unknown_key error="signed by key' "$T/scheduler.log" ||
	fail "refusal not logged: $(grep refused "$T/scheduler.log")"
sleep 1.5 # a real report in between: still the real box key
[ "$(sdb "SELECT json_extract(report, '\$.box_key') FROM hosts WHERE name='hv1'")" = "$BOX" ] ||
	fail "box key changed by a forged report"
[ "$(sdb "SELECT key FROM host_keys WHERE host='hv1'")" = "$HV1_KEY" ] || fail "pin changed"
# the next build is sealed to the real host, which opens it
printf '#cloud-config\nruncmd: [echo SECRET-1]\n' >"$T/ud.yaml"
ctl boot web-1 --flavor m1.small --image tiny --user-data "$T/ud.yaml" --timeout 60 \
	>"$T/boot.out" 2>&1 || fail "boot after a forged report: $(cat "$T/boot.out")"
ctl --json show web-1 | jq -e '.state == "active" and .host == "hv1"' >/dev/null ||
	fail "web-1: $(ctl --json show web-1)"
U=$(ctl --json show web-1 | jq -r .uuid)
usage() { ctl --json quota show acme | jq -c .usage; }
USAGE=$(usage)

# forged instance.state "deleted" for web-1: unsigned, another key, tampered, another host
st='{"uuid":"'"$U"'","project":"acme","host":"hv1","state":"deleted"}'
"$B/stratusctl" -c "$T/stratus.yaml" bus send instance.state "$st" >/dev/null || fail "send state"
"$B/stratusctl" -c "$T/stratus.yaml" bus send instance.state "$st" --sign-key "$EVIL" >/dev/null ||
	fail "send state signed"
real=$(jq -c "select(.type==\"instance.state\" and .body.uuid==\"$U\" and .body.state==\"active\")" \
	"$EVENTS" | head -n 1)
[ -n "$real" ] || fail "no genuine instance.state of web-1 seen"
echo "$real" | jq -e '.auth.key and .auth.sig' >/dev/null || fail "agent's event not signed: $real"
echo "$real" | jq -c '.body.state = "deleted" | .id = "'"$(cat /proc/sys/kernel/random/uuid)"'"' |
	kcat -P -b "$(cat "$T/bus.addr")" -t stratus.events || fail "kcat tampered"
# hv2: a host of the forger's, pinned on first use, cannot speak for web-1
"$B/stratusctl" -c "$T/stratus.yaml" bus send host.report \
	'{"host":"hv2","sign_key":"'"$EVIL_PUB"'","inventory":{"VCPU":1}}' --sign-key "$EVIL" \
	--source agent/hv2 >/dev/null || fail "send hv2 report"
"$B/stratusctl" -c "$T/stratus.yaml" bus send instance.state \
	'{"uuid":"'"$U"'","project":"acme","host":"hv2","state":"deleted"}' --sign-key "$EVIL" \
	--source agent/hv2 >/dev/null || fail "send hv2 state"
for _ in $(seq 50); do [ "$(refused wrong_host)" = 1 ] && break; sleep 0.1; done
[ "$(refused unsigned)" = 2 ] || fail "unsigned state not counted: $(grep refused "$T/scheduler.log")"
[ "$(refused unknown_key)" = 2 ] || fail "state by another key not counted"
[ "$(refused bad_signature)" = 1 ] || fail "tampered state not counted: $(refused bad_signature)"
[ "$(refused wrong_host)" = 1 ] || fail "state from hv2 not counted: $(refused wrong_host)"
grep -q "instance $U is placed on hv1, not on host hv2" "$T/scheduler.log" || fail "wrong host not logged"
[ "$(sdb "SELECT key FROM host_keys WHERE host='hv2'")" = "$EVIL_PUB" ] || fail "hv2 not pinned (TOFU)"
ctl --json show web-1 | jq -e '.state == "active"' >/dev/null || fail "web-1 changed: $(ctl --json show web-1)"
[ "$(usage)" = "$USAGE" ] || fail "quota changed: $USAGE -> $(usage)"
kill -0 "$(cat "$T/scheduler.pid")" || fail "scheduler died"

# host forget: a member is refused, the pin stays; the admin drops it, the next report re-pins
ctl credential create --project acme --role member --output "$T/member.cred" >/dev/null ||
	fail "credential create member"
if STRATUS_CREDENTIAL="$T/member.cred" ctl host forget hv1 >"$T/forget.out" 2>&1; then
	fail "member forgot a host key"
fi
grep -q "admin only" "$T/forget.out" || fail "member refusal: $(cat "$T/forget.out")"
[ "$(sdb "SELECT key FROM host_keys WHERE host='hv1'")" = "$HV1_KEY" ] || fail "pin dropped by a member"
if ctl host forget nosuch >"$T/forget.out" 2>&1; then fail "forget of an unknown host accepted"; fi
grep -q "host nosuch: no pinned key to forget" "$T/forget.out" || fail "unknown: $(cat "$T/forget.out")"
agent_kill TERM # so the row is seen gone before the next report
ctl host forget hv1 >"$T/forget.out" 2>&1 || fail "admin forget: $(cat "$T/forget.out")"
[ -z "$(sdb "SELECT key FROM host_keys WHERE host='hv1'")" ] || fail "pin still there after forget"
agent_start
for _ in $(seq 100); do [ -n "$(sdb "SELECT key FROM host_keys WHERE host='hv1'")" ] && break; sleep 0.1; done
[ "$(sdb "SELECT key FROM host_keys WHERE host='hv1'")" = "$HV1_KEY" ] || fail "hv1 not pinned again"

# a configured key wins over the TOFU pin: hv2 configured with another key
printf 'scheduler: {state_path: %s/good/x.db, key_dir: %s/good}\n' "$T" "$T" >"$T/good.yaml"
"$B/stratus-scheduler" -c "$T/good.yaml" keys >/dev/null || fail "good keys"
kill "$(cat "$T/scheduler.pid")"; sleep 0.5
sed -i "s|^  key_dir: $T/sched\$|  key_dir: $T/sched\n  host_keys: {hv2: $T/good/scheduler-sign.pub}|" "$T/stratus.yaml"
"$B/stratus-scheduler" -c "$T/stratus.yaml" -n >/dev/null 2>&1 || fail "config with host_keys refused"
sched_start
for k in "$EVIL" "$T/good/scheduler-sign.key"; do
	"$B/stratusctl" -c "$T/stratus.yaml" bus send host.report \
		'{"host":"hv2","inventory":{"VCPU":'"$([ "$k" = "$EVIL" ] && echo 7 || echo 9)"'}}' \
		--sign-key "$k" --source agent/hv2 >/dev/null || fail "send hv2"
done
for _ in $(seq 50); do [ "$(refused unknown_key)" = 1 ] && break; sleep 0.1; done
[ "$(refused unknown_key)" = 1 ] || fail "TOFU key used over the configured one"
for _ in $(seq 50); do
	[ "$(sdb "SELECT json_extract(report, '\$.inventory.VCPU') FROM hosts WHERE name='hv2'")" = 9 ] && break
	sleep 0.1
done
[ "$(sdb "SELECT json_extract(report, '\$.inventory.VCPU') FROM hosts WHERE name='hv2'")" = 9 ] ||
	fail "report by the configured key not taken"
if ctl host forget hv2 >"$T/forget.out" 2>&1; then fail "forget of a configured key accepted"; fi
grep -q "scheduler.host_keys" "$T/forget.out" || fail "configured forget: $(cat "$T/forget.out")"

# bad config: a clear error, the scheduler does not start
sed -i "s|host_keys: {hv2: .*}|host_keys: {hv2: notakey}|" "$T/stratus.yaml"
if "$B/stratus-scheduler" -c "$T/stratus.yaml" -n >"$T/n.out" 2>&1; then fail "bad host_keys accepted"; fi
grep -q "scheduler.host_keys.hv2: 'notakey' is neither a base64 Ed25519 public key nor a file path" \
	"$T/n.out" || fail "bad host_keys: $(cat "$T/n.out")"
echo "PASS: host keys pinned, forgeries refused"
