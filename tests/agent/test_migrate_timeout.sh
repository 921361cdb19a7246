#!/bin/sh
# scheduler.migration.prepare_timeout and the flavors' migration:* extra
# specs (issue 15), on libvirt's test driver (tests/agent/migrate-lib.sh).
#   flavor add refuses a bad migration:* name or value with what is
#     accepted, and adds nothing; a good one is taken
#   a destination that never answers its prepare (hv2's agent stopped with
#     SIGSTOP, still up for the scheduler): after prepare_timeout (2s) the
#     migration is aborted naming the step "prepare", the guest stays active
#     on hv1, hv2's claim is released; hv2, resumed, finds the prepare and
#     then the abort, and is left clean
set -u
STRATUS_TOP=${STRATUS_TOP:-$(pwd)}
MIG_PREPARE_TIMEOUT=2s
. "$STRATUS_TOP/tests/agent/migrate-lib.sh"
# a stopped agent would not see the SIGTERM of the usual trap
trap 'kill -CONT $a2 2>/dev/null; for p in $a1 $a2 $sched; do kill $p 2>/dev/null; done; agent_env_down' EXIT

refuse() { # EXPECTED-TEXT ARGS...: the command fails naming the reason
	want=$1
	shift
	if "$@" >"$T/ref.out" 2>&1; then fail "$* succeeded: $(cat "$T/ref.out")"; fi
	grep -qF -- "$want" "$T/ref.out" || fail "$*: expected '$want', got: $(cat "$T/ref.out")"
}
refuse "migration:timeout_action: invalid value 'explode' (accepted: abort, pause, postcopy)" \
	ctl flavor add m1.bad --vcpus 1 --ram-mb 256 --spec migration:timeout_action=explode
refuse "unknown extra spec 'migration:speed' (accepted migration specs: migration:downtime," \
	ctl flavor add m1.bad --vcpus 1 --ram-mb 256 --spec migration:speed=fast
refuse "migration:downtime: invalid value '5s' (accepted: an integer from 10 to 600000, ms)" \
	ctl flavor add m1.bad --vcpus 1 --ram-mb 256 --spec migration:downtime=5s
refuse "migration:permit_auto_converge: invalid value 'yes' (accepted: true, false)" \
	ctl flavor add m1.bad --vcpus 1 --ram-mb 256 --spec migration:permit_auto_converge=yes
ctl --json flavor list | jq -e '.[] | select(.name == "m1.bad")' >/dev/null && fail "m1.bad was added"
ctl flavor add m1.live --vcpus 1 --ram-mb 256 --spec hw:cpu_policy=dedicated \
	--spec migration:downtime=200 --spec migration:timeout_action=pause >/dev/null ||
	fail "flavor add m1.live"
ctl --json flavor list | jq -e '.[] | select(.name == "m1.live") | .extra_specs."migration:downtime" == "200"' >/dev/null ||
	fail "m1.live: $(ctl --json flavor list)"
echo "flavor add: bad migration specs refused with the accepted ones, a good one taken"

ctl boot web --flavor m1.live --image base --timeout 60 >"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out")"
[ "$(ctl --json show web | jq -r .host)" = hv1 ] || fail "web on $(ctl --json show web | jq -r .host)"
uuid=$(ctl --json show web | jq -r .uuid)
hv2_pcpus() { ctl --json host list | jq -r '.[] | select(.name == "hv2") | .pcpus.used'; }
kill -STOP "$a2"
start=$(date +%s)
rc=0
ctl migrate web --host hv2 --timeout 30 >"$T/mig.out" 2>&1 || rc=$?
took=$(($(date +%s) - start))
kill -CONT "$a2"
[ $rc = 1 ] || fail "migrate: exit $rc: $(cat "$T/mig.out")"
grep -q "failed at step prepare: the destination did not answer within scheduler.migration.prepare_timeout (2.0 s)" "$T/mig.out" ||
	fail "error: $(cat "$T/mig.out")"
[ "$took" -le 6 ] || fail "aborted after $took s (prepare_timeout 2s)"
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] || fail "web: $(ctl --json show web)"
[ "$(hv2_pcpus)" = 0 ] || fail "hv2's claim: $(ctl host list)"
[ "$(sqlite3 "$T/sched/scheduler.db" "SELECT count(*) FROM migrations")" = 0 ] || fail "migration record left"
# hv2 resumed: the prepare (it answers, too late), then the abort
sel=".type == \"instance.migration\" and .body.uuid == \"$uuid\" and .body.host == \"hv2\" and (.body.phase == \"prepared\" or .body.phase == \"failed\")"
wait_event "$sel" 20 >/dev/null || fail "hv2 never handled the prepare"
for _ in $(seq 100); do
	[ "$(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM instances WHERE uuid = '$uuid'") $(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM migrations")" = "0 0" ] && break
	sleep 0.2
done
[ "$(sqlite3 "$T/h2/state/agent.db" "SELECT count(*) FROM instances WHERE uuid = '$uuid'")" = 0 ] || fail "hv2 kept the instance"
ls "$T/h2/inst" | grep -q "$uuid" && fail "hv2 kept files: $(ls "$T/h2/inst")"
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] || fail "web after hv2 resumed: $(ctl --json show web)"
echo "prepare_timeout: a silent destination aborted at step prepare after ${took}s; web on hv1, hv2 clean, its claim released"
echo "PASS"
