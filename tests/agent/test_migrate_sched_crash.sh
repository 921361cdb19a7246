#!/bin/sh
# Crash safety of a migration (issue 15): kill -9 of the SCHEDULER in the
# middle, then restart it (libvirt's test driver: two agents, stratus-bus;
# tests/agent/migrate-lib.sh).
#   killed right after it accepted `migrate web --host hv2` (the migrations
#   row and the prepare are out): hv2 prepares and answers while no
#   scheduler runs; the restarted scheduler rebuilds hv2's claim from its
#   record, reads the answer, sends the perform, which the test driver
#   cannot do: aborted at perform. Exactly one copy (hv1), hv2 clean, no
#   migration record anywhere, the claims agree with it (hv1 1 pCPU, hv2 0)
set -u
STRATUS_TOP=${STRATUS_TOP:-$(pwd)}
. "$STRATUS_TOP/tests/agent/migrate-lib.sh"
ctl boot web --flavor m1.pin --image base --timeout 60 >"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out")"
[ "$(ctl --json show web | jq -r .host)" = hv1 ] || fail "web on $(ctl --json show web | jq -r .host)"
uuid=$(ctl --json show web | jq -r .uuid)
rows() { sqlite3 "$T/h$1/state/agent.db" "SELECT count(*) FROM instances WHERE uuid = '$uuid'"; }
recs() { echo "$(sqlite3 "$T/h1/state/agent.db" "SELECT count(*) FROM migrations") $(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM migrations") $(sqlite3 "$T/sched/scheduler.db" "SELECT count(*) FROM migrations")"; }
pcpus() { ctl --json host list | jq -r ".[] | select(.name == \"$1\") | .pcpus.used"; }

ctl migrate web --host hv2 --no-wait --timeout 30 >"$T/m.out" 2>&1 || fail "migrate: $(cat "$T/m.out")"
kill -9 "$sched"
wait "$sched" 2>/dev/null
[ "$(sqlite3 "$T/sched/scheduler.db" "SELECT phase FROM migrations WHERE uuid = '$uuid'")" = preparing ] ||
	fail "no durable migration record: $(sqlite3 "$T/sched/scheduler.db" "SELECT * FROM migrations")"
# hv2 answers (while no scheduler runs, or the restarted one sends the prepare
# again when it died before the broker had it)
sel=".type == \"instance.migration\" and .body.uuid == \"$uuid\" and .body.host == \"hv2\" and .body.phase == \"prepared\""
"$B/stratus-scheduler" -c "$T/stratus.yaml" >>"$T/sched.log" 2>&1 &
sched=$!
wait_event "$sel" 40 >/dev/null || fail "hv2 did not prepare: $(grep -c "prepare sent again" "$T/sched.log") resent"
sel=".type == \"instance.migration\" and .body.uuid == \"$uuid\" and (.body.phase == \"done\" or .body.phase == \"aborted\")"
wait_event "$sel" 40 >"$T/end.json" || fail "the migration never ended after the restart: $(tail -n 20 "$T/sched.log")"
[ "$(jq -r .body.phase "$T/end.json")" = aborted ] || fail "end: $(cat "$T/end.json")"
jq -r .body.error "$T/end.json" | grep -q "failed at step perform" || fail "error: $(jq -r .body.error "$T/end.json")"
for _ in $(seq 100); do [ "$(recs)" = "0 0 0" ] && break; sleep 0.2; done
[ "$(recs)" = "0 0 0" ] || fail "migration records left (hv1 hv2 scheduler): $(recs)"
[ "$(rows 1) $(rows 2)" = "1 0" ] || fail "copies hv1 hv2: $(rows 1) $(rows 2)"
ls "$T/h2/inst" | grep -q "$uuid" && fail "hv2 kept files: $(ls "$T/h2/inst")"
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] || fail "web: $(ctl --json show web)"
[ "$(pcpus hv1) $(pcpus hv2)" = "1 0" ] || fail "claims hv1 hv2: $(pcpus hv1) $(pcpus hv2)"
echo "scheduler killed after accepting the migration: restarted, it went on from its record, aborted at perform; one copy on hv1, hv2 clean, claims agree"
echo "PASS"
