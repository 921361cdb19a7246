#!/bin/sh
# Live migration on libvirt's test driver (issue 15): stratus-bus, the
# scheduler and two real agents (hv1, hv2; each agent process has its own
# test:///default, so two hosts), driven with stratusctl as an admin would.
#   the destination's fit and XML: `migrate web --host hv2` makes hv2
#     prepare (its overlay, its address entry) and answer with its own
#     domain XML: hv2's pinning (cpu_dedicated_set 0 there, 1 on hv1) and
#     hv2's paths. The test driver cannot migrate, so the source's libvirt
#     step fails: the migration is aborted, the error names the step, the
#     guest stays active on hv1, hv2 is clean (no row, no overlay, its claim
#     released in `host list`)
#   refused, nothing changed: to the same host, to an unknown host, to a
#     host without room (hv2's one dedicated pCPU taken), an unknown
#     instance, a member (not admin), and the store/claims agree after
set -u
STRATUS_TOP=${STRATUS_TOP:-$(pwd)}
. "$STRATUS_TOP/tests/agent/migrate-lib.sh"
# web on hv1 (its one dedicated pCPU is 1)
ctl boot web --flavor m1.pin --image base --timeout 60 >"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out")"
host=$(ctl --json show web | jq -r .host)
if [ "$host" != hv1 ]; then
	# placement chose hv2: the test wants hv1 as the source
	fail "web landed on $host; expected hv1 (spread, equal hosts, first host)"
fi
uuid=$(ctl --json show web | jq -r .uuid)

# ---- refused, nothing changed ----
refuse() { # EXPECTED-TEXT ARGS...: the migrate fails naming the reason
	want=$1
	shift
	if "$@" >"$T/ref.out" 2>&1; then fail "$* succeeded: $(cat "$T/ref.out")"; fi
	grep -q -- "$want" "$T/ref.out" || fail "$*: expected '$want', got: $(cat "$T/ref.out")"
}
refuse "already on host hv1" ctl migrate web --host hv1 --timeout 20
refuse "host hv9 is not known" ctl migrate web --host hv9 --timeout 20
refuse "instance nosuch not found" ctl migrate nosuch --timeout 20
ctl credential create --project acme --role member --output "$T/member.cred" >/dev/null ||
	fail "credential create member"
refuse "admin only" env STRATUS_CREDENTIAL="$T/member.cred" \
	"$B/stratusctl" -c "$T/stratus.yaml" migrate web --timeout 20
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] ||
	fail "refusals changed web: $(ctl --json show web)"
echo "refused: same host, unknown host, unknown instance, member"

# ---- prepare on hv2, perform fails on the test driver: aborted ----
rc=0
ctl migrate web --host hv2 --timeout 60 >"$T/mig.out" 2>&1 || rc=$?
[ $rc = 1 ] || fail "migrate to hv2: exit $rc: $(cat "$T/mig.out")"
grep -q "migrating from hv1 to hv2" "$T/mig.out" || fail "no start line: $(cat "$T/mig.out")"
grep -q "failed at step perform" "$T/mig.out" || fail "error does not name the step: $(cat "$T/mig.out")"
grep -q "host hv1: instance $uuid: live migration to test:///default" "$T/mig.out" ||
	fail "error does not name the host and libvirt step: $(cat "$T/mig.out")"
# the destination's answer: its XML, with hv2's pinning and hv2's paths
sel=".type == \"instance.migration\" and .body.phase == \"prepared\" and .body.uuid == \"$uuid\""
wait_event "$sel" 10 >/dev/null || fail "no prepared event from hv2"
[ "$(jq -r "select($sel) | .body.host" "$EVENTS")" = hv2 ] || fail "prepared by: $(jq -r "select($sel) | .source" "$EVENTS")"
jq -r "select($sel) | .body.domain_xml" "$EVENTS" >"$T/dest.xml"
grep -q "<vcpupin vcpu=\"0\" cpuset=\"0\"/>\|<vcpupin vcpu='0' cpuset='0'/>" "$T/dest.xml" ||
	fail "destination XML without hv2's pinning (pCPU 0): $(grep -i vcpupin "$T/dest.xml")"
grep -q "$T/h2/inst/$uuid" "$T/dest.xml" || fail "destination XML without hv2's disk path: $(grep source "$T/dest.xml")"
grep -q "$T/h1/" "$T/dest.xml" && fail "destination XML names hv1's paths"
sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM addresses" >/dev/null
# the source's XML pins to its own pCPU 1: the destination's is a rewrite
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] ||
	fail "after the abort: $(ctl --json show web)"
ctl --json show web | jq -r .reason | grep -q "migration to hv2 failed at step perform" ||
	fail "show does not say why: $(ctl --json show web | jq -r .reason)"
for _ in $(seq 50); do
	[ "$(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM instances")" = 0 ] &&
		[ "$(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM migrations")" = 0 ] && break
	sleep 0.1
done
[ "$(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM instances") $(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM migrations") $(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM addresses")" = "0 0 0" ] ||
	fail "hv2 not clean: $(sqlite3 "$T/h2/state/agent.db" "SELECT uuid, state, step FROM instances")"
ls "$T/h2/inst" | grep -q "$uuid" && fail "hv2 kept files: $(ls "$T/h2/inst")"
[ "$(sqlite3 "$T/h1/state/agent.db" "SELECT state FROM instances WHERE uuid = '$uuid'")" = active ] ||
	fail "hv1's store: $(sqlite3 "$T/h1/state/agent.db" "SELECT state, step FROM instances")"
[ "$(sqlite3 "$T/h1/state/agent.db" "SELECT count(*) FROM migrations")" = 0 ] || fail "hv1 kept its migration record"
[ "$(sqlite3 "$T/sched/scheduler.db" "SELECT count(*) FROM migrations")" = 0 ] || fail "the scheduler kept the migration"
usage() { ctl --json host list | jq -r --arg h "$1" '.[] | select(.name == $h) | "\(.instances) \(.pcpus)"'; }
echo "aborted at perform: web active on hv1, hv2 clean (usage hv1 '$(usage hv1)', hv2 '$(usage hv2)')"
case "$(usage hv2)" in "0 "*) ;; *) fail "hv2's claim not released: $(ctl host list)" ;; esac
curl -sf "http://$(sed -n 's/.*metrics_listen: //p' "$T/h1.yaml")/metrics" |
	grep -q 'stratus_migrations_total{host="hv1",result="failed"} 1' || fail "hv1 /metrics: no failed migration"

# ---- host maintenance: disabled hosts take nothing; a drain reports each ----
ctl host disable hv2 "kernel update" >"$T/dis.out" 2>&1 || fail "host disable: $(cat "$T/dis.out")"
[ "$(ctl --json host list | jq -r '.[] | select(.name == "hv2") | .maintenance')" = disabled ] ||
	fail "host list: $(ctl host list)"
refuse "host hv2 cannot take it: disabled by an operator" ctl migrate web --host hv2 --timeout 20
refuse "hv2: disabled by an operator" ctl migrate web --timeout 20
refuse "host hv7 is not known" ctl host disable hv7
refuse "admin only" env STRATUS_CREDENTIAL="$T/member.cred" \
	"$B/stratusctl" -c "$T/stratus.yaml" host disable hv1
ctl host enable hv2 >/dev/null || fail "host enable"
[ "$(ctl --json host list | jq -r '.[] | select(.name == "hv2") | .maintenance')" = - ] ||
	fail "still disabled: $(ctl host list)"
# drain hv1: web is tried (the test driver cannot migrate: reported, not moved)
rc=0
ctl host drain hv1 --timeout 60 >"$T/drain.out" 2>&1 || rc=$?
[ $rc = 1 ] || fail "drain: exit $rc: $(cat "$T/drain.out")"
grep -q "host hv1: disabled; migrating 1 instance" "$T/drain.out" || fail "drain: $(cat "$T/drain.out")"
grep -q "web: migrating to hv2" "$T/drain.out" || fail "drain did not start web: $(cat "$T/drain.out")"
grep -q "web: not migrated: migration to hv2 failed at step perform" "$T/drain.out" ||
	fail "drain did not report web: $(cat "$T/drain.out")"
grep -q "could not be migrated; it stays disabled" "$T/drain.out" || fail "drain end: $(cat "$T/drain.out")"
[ "$(ctl --json host list | jq -r '.[] | select(.name == "hv1") | .maintenance')" = disabled ] ||
	fail "hv1 after the drain: $(ctl host list)"
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] || fail "web after the drain"
ctl host enable hv1 >/dev/null || fail "host enable hv1"
echo "maintenance: disable refuses, enable restores, drain reports each (web not movable here)"

# ---- no room on hv2: its one dedicated pCPU taken ----
ctl boot db --flavor m1.pin --image base --timeout 60 >"$T/boot2.out" 2>&1 || fail "boot db: $(cat "$T/boot2.out")"
[ "$(ctl --json show db | jq -r .host)" = hv2 ] || fail "db not on hv2: $(ctl --json show db)"
refuse "host hv2 cannot take it: PCPU" ctl migrate web --host hv2 --timeout 20
refuse "no valid host" ctl migrate web --timeout 20
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] || fail "web moved: $(ctl --json show web)"
echo "refused: hv2 without room (asked for, and picked)"
echo "PASS"
