#!/bin/sh
# Commands only from the scheduler (docs/agent.md "Trust"): stratus-agent on
# libvirt's test driver refuses, with an error event naming the reason and
# nothing else done, a hand-written instance.build and instance.stop, a
# command signed by a key it does not trust, an envelope changed after
# signing, one addressed to another host, a stale one, and a build whose
# sealed box does not open; a captured command sent again is answered from
# the record; a key rollover accepts two keys, then only the new one.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
trap agent_env_down EXIT
agent_env_up
# a second scheduler key (the rollover's new key), and one nobody trusts
for k in new rogue; do
	printf 'scheduler: {state_path: %s/%s/s.db, key_dir: %s/%s}\n' "$T" $k "$T" $k >"$T/$k.yaml"
	"$B/stratus-scheduler" -c "$T/$k.yaml" keys >"$T/$k.txt" || fail "keys $k"
done
[ "$(stat -c %a "$T/sched/scheduler-sign.key")" = 600 ] || fail "private key not 0600"
agent_start
[ "$(stat -c %a "$T/state/host-box.key")" = 600 ] || fail "host box key not 0600"

U1=11111111-1111-4111-8111-111111111111
U2=22222222-2222-4222-8222-222222222222
addr=$(cat "$T/bus.addr")

# refused REQUEST_ID REGEX: an error event for the request that names the reason
refused() {
	ev=$(wait_event ".type==\"request.result\" and .request_id==\"$1\" and .body.ok==false") ||
		fail "no error event for request $1"
	echo "$ev" | jq -e --arg re "$2" '.body.error | test($re)' >/dev/null ||
		fail "refusal of $1 does not say /$2/: $ev"
}
nothing_for() { # UUID: no row, no overlay, no state event
	[ "$(db "SELECT COUNT(*) FROM instances WHERE uuid='$1'")" = 0 ] || fail "$1: a store row"
	[ ! -e "$T/inst/$1.qcow2" ] || fail "$1: an overlay"
	[ "$(count_events ".type==\"instance.state\" and .body.uuid==\"$1\"")" = 0 ] ||
		fail "$1: state events"
}

# --- a hand-written build: unsigned -> refused, nothing built ---
RA=aaaaaaaa-0000-4000-8000-00000000000a
send_unsigned instance.build "$(spec $U2)" --request-id $RA
refused $RA "instance.build refused by host hv1: unsigned"
# the same through kcat, as any broker client would write it
RK=aaaaaaaa-0000-4000-8000-00000000000b
jq -nc --arg r $RK --arg ts "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --argjson b "$(spec $U2)" \
	'{v:1,id:"aaaaaaaa-0000-4000-8000-0000000000c1",type:"instance.build",ts:$ts,source:"x",request_id:$r,body:$b}' |
	kcat -P -b "$addr" -t stratus.host.hv1 2>/dev/null || fail "kcat -P"
refused $RK "unsigned"

# --- signed by the scheduler: built ---
R1=aaaaaaaa-0000-4000-8000-000000000001
send instance.build "$(spec $U1)" --request-id $R1
wait_event ".body.uuid==\"$U1\" and .body.state==\"active\"" >/dev/null || fail "signed build not active"

# --- a hand-written stop: refused, the instance keeps running ---
RS=aaaaaaaa-0000-4000-8000-000000000002
send_unsigned instance.stop "{\"uuid\":\"$U1\"}" --request-id $RS
refused $RS "instance.stop refused by host hv1: unsigned"
# signed by a key the agent does not trust
RR=aaaaaaaa-0000-4000-8000-000000000003
"$B/stratusctl" -c "$T/stratus.yaml" bus send instance.stop "{\"uuid\":\"$U1\"}" --host hv1 \
	--sign-key "$T/rogue/scheduler-sign.key" --request-id $RR >/dev/null || fail "send rogue"
rogue=$(sed -n 's/^key_id: //p' "$T/rogue.txt")
refused $RR "signed by key $rogue, which is not a trusted scheduler key"
# signed for another host, sent to this one
RH=aaaaaaaa-0000-4000-8000-000000000004
"$B/stratusctl" -c "$T/stratus.yaml" bus send instance.stop "{\"uuid\":\"$U1\",\"host\":\"hv2\"}" \
	--host hv1 --sign-key "$SCHED_KEY" --request-id $RH >/dev/null || fail "send hv2"
refused $RH "addressed to host 'hv2', not to this host"
# too old: a command held back (or captured) longer than agent.command_max_age
RO=aaaaaaaa-0000-4000-8000-000000000005
send instance.stop "{\"uuid\":\"$U1\"}" --request-id $RO --ts 2020-01-01T00:00:00Z
refused $RO "stale: ts 2020-01-01T00:00:00Z is older than agent.command_max_age"
# a validly signed stop, captured on a scratch topic, changed, sent: bad signature
RT=aaaaaaaa-0000-4000-8000-000000000006
"$B/stratusctl" -c "$T/stratus.yaml" bus send instance.stop "{\"uuid\":\"$U1\",\"host\":\"hv1\"}" \
	--host scratch --sign-key "$SCHED_KEY" --request-id $RT >/dev/null || fail "send scratch"
kcat -C -b "$addr" -t stratus.host.scratch -o beginning -c 1 -e -q >"$T/captured.json" 2>/dev/null
jq -e '.auth.key and .auth.sig' "$T/captured.json" >/dev/null || fail "captured: $(cat "$T/captured.json")"
jq -c ".body.uuid = \"$U2\"" "$T/captured.json" | kcat -P -b "$addr" -t stratus.host.hv1 2>/dev/null
refused $RT "bad signature by key .*changed after signing"
sleep 1
[ "$(db "SELECT state FROM instances WHERE uuid='$U1'")" = active ] || fail "a refused stop stopped it"
[ "$(count_events ".body.uuid==\"$U1\" and .body.state==\"stopped\"")" = 0 ] || fail "stopped events"
nothing_for $U2

# --- a signed build whose sealed box does not open (tampered, or another key) ---
RB=aaaaaaaa-0000-4000-8000-000000000007
U3=33333333-3333-4333-8333-333333333333
box=$(head -c 120 /dev/urandom | base64 -w0)
send instance.build "$(spec $U3 ".sealed = \"$box\" | del(.user_data, .ssh_keys, .metadata)")" --request-id $RB
refused $RB "sealed: the box does not open"
# signed, so the scheduler sent it: another host may build it
wait_event ".type==\"instance.reschedule\" and .body.uuid==\"$U3\" and .body.failed_host==\"hv1\"" >/dev/null ||
	fail "no reschedule for a build this host cannot open"
nothing_for $U3

# --- replay: the captured, validly signed stop sent again is answered from the record ---
RP=aaaaaaaa-0000-4000-8000-000000000008
send instance.stop "{\"uuid\":\"$U1\"}" --request-id $RP
wait_event ".body.uuid==\"$U1\" and .body.state==\"stopped\"" >/dev/null || fail "signed stop"
RQ=aaaaaaaa-0000-4000-8000-00000000000e
send instance.start "{\"uuid\":\"$U1\"}" --request-id $RQ
wait_event ".body.uuid==\"$U1\" and .body.state==\"active\" and .request_id==\"$RQ\"" >/dev/null ||
	fail "signed start"
kcat -C -b "$addr" -t stratus.host.hv1 -o beginning -e -q 2>/dev/null |
	jq -c "select(.request_id==\"$RP\")" | head -n 1 >"$T/stop.json"
[ -s "$T/stop.json" ] || fail "stop not captured"
kcat -P -b "$addr" -t stratus.host.hv1 <"$T/stop.json" 2>/dev/null
wait_event ".body.uuid==\"$U1\" and .request_id==\"$RP\" and .body.reason==\"duplicate request\"" >/dev/null ||
	fail "replayed stop not answered from the record"
sleep 1
[ "$(db "SELECT state FROM instances WHERE uuid='$U1'")" = active ] || fail "the replay stopped it again"
[ "$(count_events ".body.uuid==\"$U1\" and .body.state==\"stopped\"")" = 1 ] || fail "stopped twice"

# --- metrics: the refusals are counted ---
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -q '^stratus_commands_refused_total{host="hv1"} 8$' ||
	fail "refused counter: $(curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep refused)"

# --- rollover: the new key added beside the old one (as base64 text) ---
# (the test driver's domains die with the agent: instance.console, which
# needs none, shows what is obeyed)
answered() { # REQUEST_ID: an ok result
	wait_event ".type==\"request.result\" and .request_id==\"$1\" and .body.ok==true" >/dev/null
}
console_as() { # KEYFILE REQUEST_ID
	"$B/stratusctl" -c "$T/stratus.yaml" bus send instance.console "{\"uuid\":\"$U1\"}" --host hv1 \
		--sign-key "$1" --request-id "$2" >/dev/null || fail "send console"
}
new_key=$(sed -n 's/^sign_key: //p' "$T/new.txt")
sed -i "s|^  scheduler_keys: .*|  scheduler_keys: [$T/sched/scheduler-sign.pub, \"$new_key\"]|" "$T/stratus.yaml"
agent_kill TERM
agent_start
RN=aaaaaaaa-0000-4000-8000-000000000009
console_as "$T/new/scheduler-sign.key" $RN
answered $RN || fail "a command signed by the new key refused during the rollover"
RL=aaaaaaaa-0000-4000-8000-00000000000c
console_as "$SCHED_KEY" $RL
answered $RL || fail "a command signed by the old key refused during the rollover"
# ... then the old key removed: refused, the new one obeyed
sed -i "s|^  scheduler_keys: .*|  scheduler_keys: [\"$new_key\"]|" "$T/stratus.yaml"
agent_kill TERM
agent_start
old=$(sed -n 's/^key_id: //p' "$T/keys.txt")
RX=aaaaaaaa-0000-4000-8000-00000000000d
console_as "$SCHED_KEY" $RX
refused $RX "signed by key $old, which is not a trusted scheduler key"
RY=aaaaaaaa-0000-4000-8000-00000000000f
console_as "$T/new/scheduler-sign.key" $RY
answered $RY || fail "the new key refused after the rollover"

# a bad key entry: the agent does not start, and says which entry
sed -i "s|^  scheduler_keys: .*|  scheduler_keys: [notakey]|" "$T/stratus.yaml"
agent_kill TERM
"$B/stratus-agent" -c "$T/stratus.yaml" >"$T/bad.log" 2>&1 && fail "agent started with a bad key"
grep -q "agent.scheduler_keys\[0\]: 'notakey' is neither a base64 Ed25519 public key nor a file path" "$T/bad.log" ||
	fail "bad key error: $(tail -n 2 "$T/bad.log")"
echo "agent trust: ok"
