#!/bin/sh
# host evacuate (issue 15) on libvirt's test driver: stratus-bus, the
# scheduler and two agents (hv1, hv2; tests/agent/migrate-lib.sh), driven
# with stratusctl as an admin would.
#   refused, nothing changed: a host that is up (with the reason), an
#     unknown host, a member (not admin)
#   hv1's agent killed (-9; the test driver's guests die with it): once the
#     scheduler judges hv1 down, `host evacuate hv1` rebuilds web (pinned)
#     and db (shared) on hv2 from their image with the same uuid, name,
#     metadata, user data and security groups; web's address (.10) is not
#     in hv2's range (.11 - .250): a new one, said so; db's (.12) is kept
#     (hv2 restarted with that range while hv1 is down);
#     the output and the reasons say local disk contents are lost; the
#     claims moved (hv1 0 pCPUs and no instance, hv2 1 pCPU)
#   off, stopped on hv1, is rebuilt on hv2 and stopped again (as Nova's
#     evacuate keeps a stopped instance stopped)
#   hv1's agent back: it destroys its stale copies (no row, no files, its
#     own report counts nothing), never starts them, and both instances
#     stay active on hv2
set -u
STRATUS_TOP=${STRATUS_TOP:-$(pwd)}
. "$STRATUS_TOP/tests/agent/migrate-lib.sh"
ctl flavor add m1.small --vcpus 1 --ram-mb 256 --disk-gb 1 >/dev/null || fail "flavor add m1.small"
printf '#cloud-config\n# UDMARK-e5a1\n' >"$T/ud.yaml"
ctl boot web --flavor m1.pin --image base --meta role=web --user-data "$T/ud.yaml" \
	--timeout 60 >"$T/boot.out" 2>&1 || fail "boot web: $(cat "$T/boot.out")"
ctl host disable hv2 >/dev/null || fail "disable hv2"
# db gets .12 (x took .11 and is gone): not the lowest free address of hv2's
# range, so web's new address cannot take it first
ctl boot x --flavor m1.small --image base --timeout 60 >"$T/boot2.out" 2>&1 ||
	fail "boot x: $(cat "$T/boot2.out")"
ctl boot db --flavor m1.small --image base --timeout 60 >"$T/boot2.out" 2>&1 ||
	fail "boot db: $(cat "$T/boot2.out")"
# off gets .13, above the .11 web takes on hv2 whatever the builds' order
ctl boot off --flavor m1.small --image base --timeout 60 >"$T/boot3.out" 2>&1 ||
	fail "boot off: $(cat "$T/boot3.out")"
ctl stop off --timeout 60 >"$T/stop.out" 2>&1 || fail "stop off: $(cat "$T/stop.out")"
ctl delete x --timeout 60 >"$T/del.out" 2>&1 || fail "delete x: $(cat "$T/del.out")"
for _ in $(seq 50); do ctl show x >/dev/null 2>&1 || break; sleep 0.2; done
ctl host enable hv2 >/dev/null || fail "enable hv2"
[ "$(ctl --json list | jq -r '[.[] | .host] | join(" ")')" = "hv1 hv1 hv1" ] || fail "not all on hv1: $(ctl list)"
[ "$(ctl --json show off | jq -r .state)" = stopped ] || fail "off not stopped: $(ctl show off)"
uoff=$(ctl --json show off | jq -r .uuid)
uweb=$(ctl --json show web | jq -r .uuid)
udb=$(ctl --json show db | jq -r .uuid)
addr() { sqlite3 "$T/sched/scheduler.db" "SELECT p.address FROM instance_ports p JOIN instances i ON i.uuid = p.uuid WHERE i.name = '$1' AND i.state != 'deleted'"; }
for _ in $(seq 50); do [ -n "$(addr db)" ] && break; sleep 0.2; done
[ "$(addr web) $(addr db) $(addr off)" = "10.77.0.10/24 10.77.0.12/24 10.77.0.13/24" ] ||
	fail "addresses: $(addr web) $(addr db) $(addr off)"

refuse() { # EXPECTED-TEXT ARGS...: the command fails naming the reason
	want=$1
	shift
	if "$@" >"$T/ref.out" 2>&1; then fail "$* succeeded: $(cat "$T/ref.out")"; fi
	grep -q -- "$want" "$T/ref.out" || fail "$*: expected '$want', got: $(cat "$T/ref.out")"
}
refuse "host hv1 is up" ctl host evacuate hv1
refuse "host hv9 is not known" ctl host evacuate hv9
ctl credential create --project acme --role member --output "$T/member.cred" >/dev/null ||
	fail "credential create member"
refuse "admin only" env STRATUS_CREDENTIAL="$T/member.cred" \
	"$B/stratusctl" -c "$T/stratus.yaml" host evacuate hv1
[ "$(ctl --json list | jq -r '[.[] | .state + "@" + .host] | sort | join(" ")')" = "active@hv1 active@hv1 stopped@hv1" ] ||
	fail "refusals changed the instances: $(ctl list)"
echo "refused: a host that is up, an unknown host, a member"

# ---- hv1 dies; hv2 gets a range that starts at .11 ----
kill -9 "$a1"
kill "$a2"
for _ in $(seq 50); do kill -0 "$a2" 2>/dev/null || break; sleep 0.1; done
sed -i 's|^  host: hv2$|  host: hv2\n  network: {range_start: 10.77.0.11}|' "$T/h2.yaml"
grep -q "range_start: 10.77.0.11" "$T/h2.yaml" || fail "h2.yaml: $(cat "$T/h2.yaml")"
mig_agent_start 2
state_of() { ctl --json host list | jq -r ".[] | select(.name == \"$1\") | .state"; }
for _ in $(seq 100); do [ "$(state_of hv1)" = down ] && break; sleep 0.2; done
[ "$(state_of hv1)" = down ] || fail "hv1 not judged down: $(ctl host list)"
[ "$(state_of hv2)" = up ] || fail "hv2 not up: $(ctl host list)"
ctl host evacuate hv1 --timeout 60 >"$T/evac.out" 2>&1 || fail "evacuate: $(cat "$T/evac.out")"
cat "$T/evac.out"
grep -q "local disk contents are lost" "$T/evac.out" || fail "no warning: $(cat "$T/evac.out")"
grep -q "web: rebuilding on hv2 from image base" "$T/evac.out" || fail "web: $(cat "$T/evac.out")"
grep -q "db: active on hv2" "$T/evac.out" || fail "db: $(cat "$T/evac.out")"
grep -q "host hv1: evacuated" "$T/evac.out" || fail "end: $(cat "$T/evac.out")"
ctl --json show web >"$T/web.json" && ctl --json show db >"$T/db.json" || fail "show"
aweb=$(addr web)
for n in web db; do
	[ "$(jq -r '.state + " " + .host' "$T/$n.json")" = "active hv2" ] || fail "$n: $(cat "$T/$n.json")"
	jq -r .reason "$T/$n.json" | grep -q "evacuated from host hv1 (down): rebuilt from its image, local disk contents lost" ||
		fail "$n's reason: $(jq -r .reason "$T/$n.json")"
done
[ "$(jq -r .uuid "$T/web.json") $(jq -r .uuid "$T/db.json")" = "$uweb $udb" ] || fail "uuids changed"
jq -r .reason "$T/web.json" | grep -q "address changed from 10.77.0.10/24 to $aweb (not free or not in host hv2's network)" ||
	fail "web's address: $aweb: $(jq -r .reason "$T/web.json")"
[ "$aweb" != 10.77.0.10/24 ] && [ "$aweb" != 10.77.0.12/24 ] || fail "web's new address: $aweb"
jq -r .reason "$T/db.json" | grep -q "address 10.77.0.12/24 kept" ||
	fail "db's address: $(jq -r .reason "$T/db.json")"
# on hv2: its metadata, user data (opened from the seal) and groups
spec2=$(sqlite3 "$T/h2/state/agent.db" "SELECT spec_json FROM instances WHERE uuid = '$uweb'")
[ "$(echo "$spec2" | jq -r '.name + " " + .metadata.role')" = "web web" ] || fail "hv2's spec of web: $spec2"
# hv2 filters web's port by its groups (the build's secgroups, agent/secgroup.c)
grep -q "$uweb" "$T/h2/state/secgroups.json" || fail "hv2 has no groups for web: $(cat "$T/h2/state/secgroups.json")"
[ "$(sqlite3 "$T/sched/scheduler.db" "SELECT s.name FROM secgroup_members m JOIN secgroups s ON s.id = m.group_id WHERE m.uuid = '$uweb'")" = default ] ||
	fail "web left its groups"
echo "$spec2" | jq -r .user_data | base64 -d | grep -q UDMARK-e5a1 || fail "user data lost: $spec2"
[ -e "$T/h2/inst/$uweb.qcow2" ] || fail "no overlay on hv2: $(ls "$T/h2/inst")"
usage() { ctl --json host list | jq -r ".[] | select(.name == \"$1\") | \"\(.instances) \(.pcpus.used)\""; }
[ "$(usage hv1)" = "0 0" ] || fail "hv1's claims: $(ctl host list)"
[ "$(usage hv2)" = "3 1" ] || fail "hv2's claims: $(ctl host list)"
echo "evacuated: web and db rebuilt on hv2 (same uuid, name, metadata, user data, groups), db's address kept, web's changed and said so; claims moved"
# off was stopped: rebuilt on hv2, then stopped again there
h2state() { sqlite3 "$T/h2/state/agent.db" "SELECT state FROM instances WHERE uuid = '$uoff'"; }
for _ in $(seq 100); do [ "$(ctl --json show off | jq -r '.state + " " + .host')" = "stopped hv2" ] && break; sleep 0.2; done
[ "$(ctl --json show off | jq -r '.state + " " + .host')" = "stopped hv2" ] || fail "off after the evacuation: $(ctl --json show off)"
[ "$(h2state)" = stopped ] || fail "hv2's record of off: $(h2state)"
grep -q "evacuated instance was stopped: stopping it again instance=$uoff host=hv2" "$T/sched.log" ||
	fail "no stop after the rebuild in the scheduler's log"
echo "evacuated: off, stopped on hv1, rebuilt on hv2 and stopped again"

# ---- hv1 comes back: its stale copies go, never started ----
hmark=$(wc -l <"$T/h1.log")
mig_agent_start 1
rows() { sqlite3 "$T/h1/state/agent.db" "SELECT count(*) FROM instances"; }
for _ in $(seq 100); do [ "$(rows)" = 0 ] && break; sleep 0.2; done
[ "$(rows)" = 0 ] || fail "hv1 kept its copies: $(sqlite3 "$T/h1/state/agent.db" "SELECT uuid, state FROM instances")"
ls "$T/h1/inst" | grep -q "$uweb\|$udb" && fail "hv1 kept files: $(ls "$T/h1/inst")"
for _ in $(seq 50); do
	[ "$(sqlite3 "$T/sched/scheduler.db" "SELECT count(*) FROM evacuations WHERE cleaned = 0")" = 0 ] && break
	sleep 0.2
done
[ "$(sqlite3 "$T/sched/scheduler.db" "SELECT count(*) FROM evacuations WHERE cleaned = 0")" = 0 ] ||
	fail "evacuations not cleaned: $(sqlite3 "$T/sched/scheduler.db" "SELECT * FROM evacuations")"
grep -q "stale copy destroyed instance=$uweb host=hv1" "$T/sched.log" || fail "no cleanup in the scheduler's log"
# never started: hv1's agent announced no `active` (its log of what it emits)
tail -n +"$((hmark + 1))" "$T/h1.log" >"$T/h1.after"
grep -q "state=active" "$T/h1.after" && fail "hv1 started a stale copy: $(grep "state=active" "$T/h1.after")"
grep -q "instance state instance=$uweb state=deleted" "$T/h1.after" || fail "hv1 did not delete web: $(tail "$T/h1.after")"
for _ in $(seq 50); do [ "$(state_of hv1)" = up ] && break; sleep 0.2; done
[ "$(usage hv1)" = "0 0" ] || fail "hv1's claims after its return: $(ctl host list)"
for n in web db; do
	[ "$(ctl --json show $n | jq -r '.state + " " + .host')" = "active hv2" ] || fail "$n after hv1's return: $(ctl --json show $n)"
done
[ "$(ctl --json show off | jq -r '.state + " " + .host')" = "stopped hv2" ] || fail "off after hv1's return: $(ctl --json show off)"
echo "hv1 back: its stale copies destroyed (no row, no files, never started); both instances active on hv2"
echo "PASS"
