#!/bin/sh
# Security groups across a migration (issue 15 with issue 14's groups), on the
# migration harness (tests/agent/migrate-lib.sh: stratus-bus, the scheduler,
# agents hv1 and hv2 on libvirt's test driver) in a network namespace of its
# own (prefix msg), each host with its own bridge and so its own nft table:
#   the prepare carries the port's groups: while the migration waits on its
#     source (hv1 stopped with SIGSTOP), hv2's kernel ruleset has the port's
#     anti-spoofing chain, its sg-<tap>-in/-out chains jumping to the same
#     shared chains as hv1's, and secgroups.json lists the port: before any
#     guest arrives
#   a rule added during the migration reaches hv2 (its view holds the ports
#     migrating to it), and hv1 too once it runs again
#   the migration aborted (the test driver cannot migrate): hv2 has none of
#     the port's chains, hv1 keeps them with the new rule
#   order: a secgroup.apply naming the port read after the abort (no seq)
#     is kept but makes no chains (the port is not here); a view older than
#     the applied one (its seq) is ignored; read before the next prepare, the
#     prepare's chains come all the same
#   restart at the prepared step: hv2 killed -9 and its table deleted (a host
#     reboot): restarted, it puts back the port's filter and groups from its
#     store and secgroups.json
set -u
if [ -z "${MSG_INSIDE:-}" ]; then
	command -v nft >/dev/null || { echo "SKIP: nft is not installed (deps/test-agent.txt)"; exit 77; }
	NS=msg-ag$$
	ip netns add "$NS" || { echo "SKIP: cannot create network namespaces"; exit 77; }
	MSG_INSIDE=1 ip netns exec "$NS" sh "$0"
	rc=$?
	ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null
	ip netns del "$NS"
	exit $rc
fi
STRATUS_TOP=${STRATUS_TOP:-$(pwd)}
ip link set lo up
for i in 1 2; do ip link add mgsg$i type bridge && ip link set mgsg$i up || { echo "FAIL: bridge mgsg$i"; exit 1; }; done
# an address besides loopback: librdkafka resolves with AI_ADDRCONFIG
ip addr add 10.97.8.1/24 dev mgsg1 || { echo "FAIL: address on mgsg1"; exit 1; }
AGENT_BRIDGE=mgsg
MIG_MISSED_HEARTBEATS=60 # hv1 is stopped on purpose while the migration waits on it
. "$STRATUS_TOP/tests/agent/migrate-lib.sh"

tbl() { nft list table bridge "stratus-mgsg$1" 2>/dev/null; }
# chains of the port on host N: "port sg-in sg-out" present (1) or not (0)
chains() {
	tbl "$1" >"$T/tbl$1"
	printf '%s %s %s' "$(grep -c "chain port-$tap {" "$T/tbl$1")" \
		"$(grep -c "chain sg-$tap-in {" "$T/tbl$1")" "$(grep -c "chain sg-$tap-out {" "$T/tbl$1")"
}
wait_chains() { # N WANT SECONDS
	for _ in $(seq $(($3 * 10))); do [ "$(chains "$1")" = "$2" ] && return 0; sleep 0.1; done
	return 1
}
# the shared chain sg-<tap>-in jumps to on host N
target() { nft list chain bridge "stratus-mgsg$1" "sg-$tap-in" 2>/dev/null | sed -n 's/.*jump \(sgc-[0-9a-f]*-in\).*/\1/p'; }
phase() { sqlite3 "$T/h$1/state/agent.db" "SELECT phase FROM migrations WHERE uuid = '$uuid'"; }
wait_phase() { # N PHASE SECONDS
	for _ in $(seq $(($3 * 10))); do [ "$(phase "$1")" = "$2" ] && return 0; sleep 0.1; done
	fail "hv$1's migration phase: '$(phase "$1")', expected $2"
}
listed() { # N: does host N's secgroups.json list the port (1/0)?
	jq -r --arg u "$uuid" '[.acme.ports[]? | select(.uuid == $u)] | length' "$T/h$1/state/secgroups.json"
}
settle() { # no migration record anywhere
	for _ in $(seq 150); do
		[ "$(sqlite3 "$T/h1/state/agent.db" "SELECT count(*) FROM migrations") $(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM migrations") $(sqlite3 "$T/sched/scheduler.db" "SELECT count(*) FROM migrations")" = "0 0 0" ] && return 0
		sleep 0.2
	done
	fail "migration records left"
}
# send_hv2 TYPE BODY RID: signed as the scheduler signs
send_hv2() {
	"$B/stratusctl" -c "$T/stratus.yaml" bus send "$1" "$2" --host hv2 --key acme \
		--request-id "$3" --sign-key "$T/sched/scheduler-sign.key" >/dev/null || fail "bus send $1"
	wait_event ".type == \"request.result\" and .request_id == \"$3\"" 20 >"$T/res" ||
		fail "no result for $1 $3"
}

ctl boot web --flavor m1.pin --image base --timeout 60 >"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out")"
[ "$(ctl --json show web | jq -r .host)" = hv1 ] || fail "web on $(ctl --json show web | jq -r .host)"
uuid=$(ctl --json show web | jq -r .uuid)
tap=stx$(echo "$uuid" | tr -d - | sed 's/^\(........\).*\(....\)$/\1\2/')
wait_chains 1 "1 1 1" 10 || fail "hv1 without the port's chains: $(chains 1)"
[ "$(chains 2)" = "0 0 0" ] || fail "hv2 has chains of web before any migration: $(chains 2)"
src_target=$(target 1)
[ -n "$src_target" ] || fail "hv1's sg-$tap-in jumps nowhere: $(nft list chain bridge stratus-mgsg1 sg-$tap-in)"
echo "web on hv1: its port $tap filtered there (groups: $src_target), nothing on hv2"

# ---- 1. the prepare carries the groups -----------------------------------------
kill -STOP "$a1"
ctl migrate web --host hv2 --no-wait --timeout 30 >"$T/m1.out" 2>&1 || { kill -CONT "$a1"; fail "migrate: $(cat "$T/m1.out")"; }
wait_phase 2 prepared 20
[ "$(chains 2)" = "1 1 1" ] || { kill -CONT "$a1"; fail "hv2 prepared without the port's chains (port sg-in sg-out): $(chains 2)"; }
[ "$(target 2)" = "$src_target" ] || { kill -CONT "$a1"; fail "hv2's port jumps to '$(target 2)', hv1's to $src_target"; }
grep -q "element.*\"$tap\" : jump sg-$tap-in\|\"$tap\" : jump sg-$tap-in" "$T/tbl2" || { kill -CONT "$a1"; fail "hv2's sg_in map without the port"; }
n1=$(nft list chain bridge stratus-mgsg1 "$src_target" | grep -c 'comment "rule ')
n2=$(nft list chain bridge stratus-mgsg2 "$src_target" | grep -c 'comment "rule ')
[ "$n1" -ge 1 ] && [ "$n1" = "$n2" ] || { kill -CONT "$a1"; fail "ingress rules of the groups: hv1 $n1, hv2 $n2"; }
[ "$(listed 2)" = 1 ] || { kill -CONT "$a1"; fail "hv2's secgroups.json does not list the port"; }
sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM instances WHERE uuid = '$uuid' AND step = 'prepared'" | grep -qx 1 ||
	{ kill -CONT "$a1"; fail "hv2's row: $(sqlite3 "$T/h2/state/agent.db" "SELECT state, step FROM instances")"; }
cp "$T/h2/state/secgroups.json" "$T/view-prepare.json"
echo "prepared on hv2: the port's filter and groups in hv2's table before any guest ($n2 ingress rules, as on hv1)"

# ---- 2. a rule added during the migration ----------------------------------------
ctl --json secgroup rule add default --direction ingress --protocol tcp --port 2222 \
	--remote-ip 192.0.2.0/24 >"$T/rule.json" 2>&1 || { kill -CONT "$a1"; fail "rule add: $(cat "$T/rule.json")"; }
rid=$(jq -r .id "$T/rule.json")
for _ in $(seq 50); do nft list chain bridge stratus-mgsg2 "$src_target" | grep -q "rule $rid" && break; sleep 0.1; done
nft list chain bridge stratus-mgsg2 "$src_target" | grep "rule $rid" | grep -q "dport 2222" ||
	{ kill -CONT "$a1"; fail "the rule added during the migration is not on hv2"; }
echo "a rule added during the migration: on hv2 at once"
kill -CONT "$a1"

# ---- 3. aborted at perform: hv2 drops the port ------------------------------------
settle
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] || fail "web: $(ctl --json show web)"
wait_chains 2 "0 0 0" 10 || fail "hv2 kept chains of the port after the abort: $(chains 2)"
[ "$(listed 2)" = 0 ] || fail "hv2's secgroups.json still lists the port after the abort"
for _ in $(seq 50); do nft list chain bridge stratus-mgsg1 "$src_target" | grep -q "rule $rid" && break; sleep 0.1; done
nft list chain bridge stratus-mgsg1 "$src_target" | grep -q "rule $rid" || fail "hv1 did not get the rule added"
[ "$(chains 1)" = "1 1 1" ] || fail "hv1 lost the port's chains: $(chains 1)"
echo "aborted: hv2 has none of the port's chains, hv1 keeps them with the new rule"

# ---- 4. order: views read late or early -----------------------------------------
# the abort's view of hv2 (the scheduler's last for it) read there first
last=$(grep "security groups sent project=acme host=hv2 " "$T/sched.log" | tail -n 1 | sed -n 's/.* seq=\([0-9]*\).*/\1/p')
[ -n "$last" ] || fail "the scheduler sent hv2 no numbered view: $(grep 'security groups sent' "$T/sched.log" | tail -n 3)"
for _ in $(seq 50); do [ "$(jq -r .acme.seq "$T/h2/state/secgroups.json")" = "$last" ] && break; sleep 0.1; done
[ "$(jq -r .acme.seq "$T/h2/state/secgroups.json")" = "$last" ] || fail "hv2 did not keep the abort's view (seq $last)"
# a numbered view older than the one applied: ignored, nothing changed
cur=$(jq -c .acme "$T/h2/state/secgroups.json")
send_hv2 secgroup.apply "$(jq -c '.acme | .seq = 1' "$T/view-prepare.json")" "$(cat /proc/sys/kernel/random/uuid)"
jq -e '.body.ok == true' "$T/res" >/dev/null || fail "older view: $(cat "$T/res")"
grep -q "security groups of project=acme seq=1 ignored: older than the applied seq=$last" "$T/h2.log" ||
	fail "the older view was not ignored: $(grep 'security groups' "$T/h2.log" | tail -n 3)"
[ "$(jq -c .acme "$T/h2/state/secgroups.json")" = "$cur" ] || fail "the older view changed secgroups.json"
# the prepare's view (it lists the port) read after the abort, unnumbered (a
# tool's): kept, but no chains for a port that is not here
send_hv2 secgroup.apply "$(jq -c '.acme | del(.seq)' "$T/view-prepare.json")" "$(cat /proc/sys/kernel/random/uuid)"
jq -e '.body.ok == true' "$T/res" >/dev/null || fail "late view refused: $(cat "$T/res")"
[ "$(listed 2)" = 1 ] || fail "the unnumbered view was not kept"
sleep 2.5 # a reconcile round (reconcile_interval 2s)
[ "$(chains 2)" = "0 0 0" ] || fail "a view naming a port that is not here made its chains: $(chains 2)"
echo "order: an older numbered view is ignored; a late view naming the port makes no chain"

# ---- 5. restart at the prepared step ----------------------------------------------
kill -STOP "$a1"
ctl migrate web --host hv2 --no-wait --timeout 30 >"$T/m2.out" 2>&1 || { kill -CONT "$a1"; fail "migrate again: $(cat "$T/m2.out")"; }
wait_phase 2 prepared 20
[ "$(chains 2)" = "1 1 1" ] || { kill -CONT "$a1"; fail "second prepare (after a view listing the port) without chains: $(chains 2)"; }
nft list chain bridge stratus-mgsg2 "$src_target" | grep -q "rule $rid" || { kill -CONT "$a1"; fail "second prepare without the added rule"; }
kill -9 "$a2"
for _ in $(seq 50); do kill -0 "$a2" 2>/dev/null || break; sleep 0.1; done
nft delete table bridge stratus-mgsg2 || { kill -CONT "$a1"; fail "delete hv2's table"; }
mig_agent_start 2
wait_chains 2 "1 1 1" 20 || { kill -CONT "$a1"; fail "hv2 restarted at prepared without the port's chains: $(chains 2)"; }
[ "$(target 2)" = "$src_target" ] && nft list chain bridge stratus-mgsg2 "$src_target" | grep -q "rule $rid" ||
	{ kill -CONT "$a1"; fail "hv2 restarted: the port's groups differ from hv1's"; }
echo "restart at prepared: hv2 put back the port's filter and groups from its store and secgroups.json"
kill -CONT "$a1"
settle
wait_chains 2 "0 0 0" 10 || fail "hv2 kept chains of the port after the second abort: $(chains 2)"
[ "$(chains 1)" = "1 1 1" ] || fail "hv1 lost the port's chains: $(chains 1)"
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] || fail "web: $(ctl --json show web)"
echo "second abort: hv2 clean again, web active on hv1 with its chains"
echo "PASS"
