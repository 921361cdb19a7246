#!/bin/sh
# Crash safety of a migration (issue 15): kill -9 of either agent in the
# middle, then restart it (libvirt's test driver: two agents, the scheduler,
# stratus-bus; tests/agent/migrate-lib.sh).
#   the destination killed right after its prepare is durable (before it
#     said so): restarted, it says prepared again, the migration goes on
#     (and ends at the source's libvirt step, which the test driver cannot
#     do): one copy on hv1, hv2 clean, no migration record anywhere
#   the source killed right after accepting the perform: restarted, it finds
#     its migration record and the guest neither running here (the test
#     driver's domains die with their agent) nor on hv2: failed, never
#     committed; the scheduler's record and hv2's prepare are undone, the
#     claims on hv2 released
set -u
STRATUS_TOP=${STRATUS_TOP:-$(pwd)}
. "$STRATUS_TOP/tests/agent/migrate-lib.sh"
ctl boot web --flavor m1.pin --image base --timeout 60 >"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out")"
[ "$(ctl --json show web | jq -r .host)" = hv1 ] || fail "web on $(ctl --json show web | jq -r .host)"
uuid=$(ctl --json show web | jq -r .uuid)
rows() { sqlite3 "$T/h$1/state/agent.db" "SELECT count(*) FROM instances WHERE uuid = '$uuid'"; }
recs() { echo "$(sqlite3 "$T/h1/state/agent.db" "SELECT count(*) FROM migrations") $(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM migrations") $(sqlite3 "$T/sched/scheduler.db" "SELECT count(*) FROM migrations")"; }
hv2_pcpus() { ctl --json host list | jq -r '.[] | select(.name == "hv2") | .pcpus.used'; }
restart() { # N: wait for the kill -9, start again without the fault
	eval "p=\$a$1"
	for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$p" 2>/dev/null && fail "agent hv$1 was not killed by the fault"
	grep -q "fault injection: killing the agent" "$T/h$1.log" || fail "hv$1 died without the fault"
	mig_agent_start "$1"
}
settle() { # wait until no migration record is left anywhere
	for _ in $(seq 150); do [ "$(recs)" = "0 0 0" ] && return 0; sleep 0.2; done
	fail "migration records left (hv1 hv2 scheduler): $(recs)"
}

# ---- the destination dies after prepare ----
kill "$a2"
for _ in $(seq 50); do kill -0 "$a2" 2>/dev/null || break; sleep 0.1; done
mig_agent_start 2 STRATUS_FAULT=migrate:prepared
sleep 2
ctl migrate web --host hv2 --no-wait --timeout 30 >"$T/m1.out" 2>&1 || fail "migrate: $(cat "$T/m1.out")"
restart 2
settle
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] || fail "web: $(ctl --json show web)"
ctl --json show web | jq -r .reason | grep -q "failed at step perform" || fail "reason: $(ctl --json show web | jq -r .reason)"
[ "$(rows 1) $(rows 2)" = "1 0" ] || fail "rows hv1 hv2: $(rows 1) $(rows 2)"
ls "$T/h2/inst" | grep -q "$uuid" && fail "hv2 kept files"
[ "$(hv2_pcpus)" = 0 ] || fail "hv2's claim: $(ctl host list)"
echo "destination killed after prepare: went on after its restart, aborted at perform; one copy on hv1, hv2 clean"

# ---- the source dies after accepting the perform ----
# (the test driver's domains die with their agent: the source gets the fault
# before the guest is built there, and hv2 is disabled so it is built on hv1)
kill "$a1"
for _ in $(seq 50); do kill -0 "$a1" 2>/dev/null || break; sleep 0.1; done
mig_agent_start 1 STRATUS_FAULT=accept:instance.migrate.perform
ctl delete web --no-wait --timeout 60 >"$T/del.out" 2>&1 || fail "delete web: $(cat "$T/del.out")"
for _ in $(seq 100); do ctl show web >/dev/null 2>&1 || break; sleep 0.2; done
ctl show web >/dev/null 2>&1 && fail "web not deleted: $(ctl --json show web)"
ctl host disable hv2 >/dev/null || fail "disable hv2"
ctl boot web2 --flavor m1.pin --image base --timeout 60 >"$T/boot2.out" 2>&1 || fail "boot web2: $(cat "$T/boot2.out")"
ctl host enable hv2 >/dev/null || fail "enable hv2"
uuid=$(ctl --json show web2 | jq -r .uuid)
[ "$(ctl --json show web2 | jq -r .host)" = hv1 ] || fail "web2 on $(ctl --json show web2 | jq -r .host)"
ctl migrate web2 --host hv2 --no-wait --timeout 30 >"$T/m2.out" 2>&1 || fail "migrate: $(cat "$T/m2.out")"
restart 1
settle
[ "$(ctl --json show web2 | jq -r .host)" = hv1 ] || fail "committed to hv2 although the guest is not there: $(ctl --json show web2)"
# the scheduler's end of it (the instance then goes to error: its test-driver
# domain died with the agent)
sel=".type == \"instance.migration\" and .body.uuid == \"$uuid\" and .body.phase == \"aborted\""
wait_event "$sel" 10 >/dev/null || fail "no aborted event for web2"
jq -r "select($sel) | .body.error" "$EVENTS" | grep -q "runs neither here nor on hv2" ||
	fail "aborted: $(jq -r "select($sel) | .body.error" "$EVENTS")"
jq -e "select(.type == \"instance.migration\" and .body.uuid == \"$uuid\" and .body.phase == \"done\")" "$EVENTS" >/dev/null &&
	fail "the migration was committed"
[ "$(rows 2)" = 0 ] || fail "hv2 kept the instance"
[ "$(hv2_pcpus)" = 0 ] || fail "hv2's claim: $(ctl host list)"
echo "source killed after accepting perform: failed after its restart, not committed; hv2 clean, claims released"
echo "PASS"
