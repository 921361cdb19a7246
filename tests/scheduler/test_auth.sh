#!/bin/sh
# Tenant identity on stratus.api, as a user and an attacker would meet it:
# stratus-bus, stratus-scheduler and one scripted agent (fake_agent), the
# bootstrap admin credential, stratusctl, kcat as a foreign Kafka client and
# examples/sign_request.py. Each forged request is refused with its reason
# and changes nothing (quota, catalog, credentials, instances):
#   unsigned; a member's request with another project in its body; a member
#   calling quota set, image add/remove, flavor add, credential create;
#   a revoked credential; a captured envelope replayed with kcat; a
#   timestamp outside the window; a tampered body under a valid signature;
#   a credential file readable by others; an admin's image add with a
#   loopback, link-local, bus-port or file URL (the URL filter).
# Then: show and list results on stratus.events carry no clear metadata
# value, and the Python example producer is accepted.
set -u
. "$(dirname "$0")/lib.sh"
sl_init auth
command -v kcat >/dev/null || { echo "SKIP: kcat not installed (deps/test-bus.txt)"; exit 77; }
PY=/usr/bin/python3
$PY -c 'import confluent_kafka' 2>/dev/null ||
	{ echo "SKIP: python3-confluent-kafka not installed (deps/test-sched.txt)"; exit 77; }
{
	sl_config_head
	cat <<YAML
  request_window: 60s
  flavors:
    m1.small: vcpus=1 ram_mb=1024 disk_gb=5
  images:
    debian: url=http://127.0.0.1/d.qcow2 checksum=sha256:$H disk_format=qcow2 min_disk_gb=2
YAML
} >"$STRATUS_CONFIG"
sl_bus_start
sl_sched_start
[ "$(stat -c %a "$ADMIN")" = 600 ] || fail "admin credential mode $(stat -c %a "$ADMIN")"
[ "$(stat -c %a "$tmp/state/scheduler.db")" = 600 ] || fail "state db mode"
secret=$(jget "$(cat "$ADMIN")" "j['secret']")
grep -q "$secret" "$tmp/state/scheduler.db"* && fail "the admin secret is stored in the state"
sl_agent h1

# no credential: refused before anything is sent
out=$(ctl flavor list 2>&1) && fail "no credential accepted: $out"
echo "$out" | grep -q "no credential" || fail "no credential: $out"
# the admin: hosts up, then a member of default and one of acme
export STRATUS_CREDENTIAL="$ADMIN"
sl_host_up h1
ctl credential create --project default --role member --output "$tmp/member.cred" >/dev/null ||
	fail "credential create member"
ctl credential create --project acme --role member --output "$tmp/acme.cred" >/dev/null ||
	fail "credential create acme"
[ "$(stat -c %a "$tmp/member.cred")" = 600 ] || fail "member credential mode"
MEMBER_ID=$(jget "$(cat "$tmp/member.cred")" "j['id']")
ctl quota set acme --instances 7 >/dev/null || fail "admin quota set"
ctl -C "$tmp/acme.cred" boot a1 --flavor m1.small --image debian --meta colour=AcmeSecretValue42 \
	>"$tmp/boot.out" 2>&1 || fail "acme boot: $(cat "$tmp/boot.out")"
echo "admin, two members, acme's instance a1 active"

# what nothing may change
snapshot() {
	{
		ctl --json quota show acme
		ctl --json quota show default
		ctl --json flavor list
		ctl --json image list
		ctl --json credential list
		ctl --json -p acme list | python3 -c "import json,sys; print(sorted((i['name'], i['state']) for i in json.load(sys.stdin)))"
	} 2>&1
}
before=$(snapshot)
unchanged() { [ "$(snapshot)" = "$before" ] || fail "$1 changed something: $(snapshot)"; }

refused() { # NAME EXPECTED-ERROR CMD...: exit 1, the reason on stderr
	name=$1 want=$2
	shift 2
	out=$("$@" 2>&1) && fail "$name accepted: $out"
	echo "$out" | grep -q "$want" || fail "$name: '$out', expected '$want'"
	unchanged "$name"
	echo "refused: $name ($want)"
}
M="ctl -C $tmp/member.cred"
refused "project spoofed" "is a member of project default, not of acme" $M -p acme delete a1
refused "project spoofed (quota)" "not of acme" $M quota show acme
refused "member quota set" "quota.set: admin only" $M quota set default --instances 100
refused "member image add" "image.add: admin only" $M image add evil --url http://10.0.0.1/x.qcow2 \
	--checksum sha256:$H --format qcow2
refused "member image remove" "image.remove: admin only" $M image remove debian
refused "member flavor add" "flavor.add: admin only" $M flavor add huge --vcpus 64 --ram-mb 1 --disk-gb 1
refused "member credential create" "credential.create: admin only" \
	$M credential create --project acme --role admin
chmod 644 "$tmp/member.cred"
refused "credential readable by others" "chmod 600" $M flavor list
chmod 600 "$tmp/member.cred"
$M flavor list >/dev/null || fail "member flavor list"

# image add (admin) passes the URL filter (scheduler.image_url_filter: the default)
refused "image add loopback" "a loopback address: denied by the URL filter" \
	ctl image add lo --url http://127.0.0.1/x.qcow2 --checksum sha256:$H --format qcow2
refused "image add link-local" "a link-local address" \
	ctl image add md --url http://169.254.169.254/latest --checksum sha256:$H --format qcow2
refused "image add bus port" "port 9092 is denied" \
	ctl image add bus --url http://10.0.0.1:9092/x --checksum sha256:$H --format qcow2
refused "image add file" "scheme file is not allowed" \
	ctl image add f --url file:///etc/shadow --checksum sha256:$H --format raw

# revoked
ctl credential create --project default --role member --output "$tmp/gone.cred" >/dev/null || fail "create gone"
GONE=$(jget "$(cat "$tmp/gone.cred")" "j['id']")
ctl credential revoke "$GONE" >/dev/null || fail "revoke"
before=$(snapshot)
refused "revoked credential" "credential $GONE: revoked" ctl -C "$tmp/gone.cred" quota show default
ctl credential revoke "$GONE" >/dev/null 2>&1 && fail "revoked twice"

# raw requests: a result for request id RID on stratus.events (kcat)
result_of() { # RID: the first request.result body after what we saw
	i=0
	while [ $i -lt 50 ]; do
		r=$(kcat -b "$ADDR" -C -t stratus.events -o beginning -e -q 2>/dev/null |
			python3 -c "
import json,sys
for l in sys.stdin:
    try: e=json.loads(l)
    except ValueError: continue
    if e.get('type')=='request.result' and e.get('request_id')==sys.argv[1] and e['body'].get('error','').find(sys.argv[2])>=0:
        print(json.dumps(e['body'])); break" "$1" "$2")
		[ -n "$r" ] && { echo "$r"; return 0; }
		i=$((i + 1)); sleep 0.2
	done
	return 1
}
send_raw() { printf '%s\n' "$1" | kcat -b "$ADDR" -P -t stratus.api -k default; }

# unsigned, with stratusctl bus send (any Kafka client could)
rid=$(python3 -c 'import uuid; print(uuid.uuid4())')
ctl bus send quota.set '{"project":"acme","limits":{"instances":0}}' --request-id "$rid" >/dev/null ||
	fail "bus send"
result_of "$rid" "unsigned request" >/dev/null || fail "unsigned: no refusal naming the reason"
unchanged "unsigned request"
echo "refused: unsigned request"

# a captured envelope replayed: capture the admin's quota set from stratus.api
ctl quota set acme --instances 9 >/dev/null || fail "quota set 9"
cap=$(kcat -b "$ADDR" -C -t stratus.api -o beginning -e -q 2>/dev/null | python3 -c "
import json,sys
last=None
for l in sys.stdin:
    e=json.loads(l)
    if e['type']=='quota.set' and e['body'].get('limits')=={'instances':9}: last=l.strip()
print(last)")
[ "$cap" != None ] || fail "no quota.set captured on stratus.api"
ctl quota set acme --instances 7 >/dev/null || fail "quota set 7"
before=$(snapshot)
send_raw "$cap"
rid=$(jget "$cap" "j['request_id']")
result_of "$rid" "replayed" >/dev/null || fail "replay: no refusal naming the reason"
unchanged "replay"
echo "refused: replayed envelope"

# a tampered body under the captured signature
bad=$(python3 -c "
import json,sys,uuid
e=json.loads(sys.argv[1]); e['id']=str(uuid.uuid4()); e['body']['limits']['instances']=99
print(json.dumps(e))" "$cap")
send_raw "$bad"
result_of "$rid" "bad signature" >/dev/null || fail "tampered: no refusal naming the reason"
unchanged "tampered signature"
echo "refused: tampered body"

# a timestamp outside the window, correctly signed (the example's function)
old=$(PYTHONPATH=examples $PY -c "
import json,sys,sign_request as s
c=json.load(open(sys.argv[1]))
e=s.envelope('quota.set',{'project':'acme','limits':{'instances':1}},ts='2020-01-01T00:00:00.000Z')
print(json.dumps(s.sign(e,c)))" "$ADMIN")
send_raw "$old"
result_of "$(jget "$old" "j['request_id']")" "outside the scheduler's window" >/dev/null ||
	fail "stale: no refusal naming the reason"
unchanged "stale timestamp"
echo "refused: timestamp outside the window"

# tenant data is sealed: a kcat consumer on stratus.events sees no metadata value
ctl -C "$tmp/acme.cred" --json show a1 | grep -q AcmeSecretValue42 || fail "acme cannot read its own metadata"
ctl -C "$tmp/acme.cred" --json list | grep -q '"a1"' || fail "acme list"
kcat -b "$ADDR" -C -t stratus.events -o beginning -e -q >"$tmp/events.txt" 2>/dev/null
grep -q '"sealed"' "$tmp/events.txt" || fail "no sealed result on stratus.events"
grep -q AcmeSecretValue42 "$tmp/events.txt" && fail "metadata in clear on stratus.events"
echo "sealed: no metadata value on stratus.events"

# the example producer (standard library + confluent_kafka) is accepted
out=$($PY examples/sign_request.py --credential "$tmp/member.cred" --bootstrap "$ADDR" \
	quota.show '{"project":"default"}') || fail "sign_request.py: $out"
[ "$(jget "$out" "j['ok']")" = True ] || fail "sign_request.py: $out"
out=$($PY examples/sign_request.py --credential "$tmp/member.cred" --bootstrap "$ADDR" \
	quota.set '{"project":"default","limits":{"instances":1}}') && fail "example: member quota set accepted"
echo "$out" | grep -q "admin only" || fail "example refusal: $out"
echo "example producer: accepted, and refused as a member for quota set"
grep -q "request refused type=quota.set" "$tmp/sched.err" || fail "no refusal in the scheduler's log"
echo "PASS"
