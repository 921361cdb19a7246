#!/bin/sh
# Cold migration on libvirt's test driver (issue 15): the same harness as
# test_migrate.sh (stratus-bus, the scheduler, two real agents hv1, hv2).
#   refused, nothing changed: --cold to the same host; a stopped instance
#     without --cold (the message points to --cold)
#   `migrate web --cold --host hv2`: hv2 prepares, hv1 stops the guest
#     (graceful, then destroy), then cannot start it paused on the test
#     driver: aborted, the error names the step (perform, start-paused),
#     web runs again on hv1 (active, its domain running: a reconcile pass
#     would see a shut-off domain), hv2 clean, its claim released
#   the same of a stopped web: it stays stopped on hv1
# The real move (copy, boot on the destination) is tests/e2e/e2e_migrate.sh.
set -u
STRATUS_TOP=${STRATUS_TOP:-$(pwd)}
. "$STRATUS_TOP/tests/agent/migrate-lib.sh"
ctl boot web --flavor m1.pin --image base --timeout 60 >"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out")"
[ "$(ctl --json show web | jq -r .host)" = hv1 ] || fail "web on $(ctl --json show web | jq -r .host), expected hv1"
uuid=$(ctl --json show web | jq -r .uuid)
refuse() { # EXPECTED-TEXT ARGS...: fails naming the reason
	want=$1
	shift
	if "$@" >"$T/ref.out" 2>&1; then fail "$* succeeded: $(cat "$T/ref.out")"; fi
	grep -q -- "$want" "$T/ref.out" || fail "$*: expected '$want', got: $(cat "$T/ref.out")"
}
hv2_clean() {
	db=$T/h2/state/agent.db
	for _ in $(seq 50); do
		[ "$(sqlite3 "$db" "SELECT count(*) FROM instances") $(sqlite3 "$db" "SELECT count(*) FROM migrations") $(sqlite3 "$db" "SELECT count(*) FROM addresses")" = "0 0 0" ] && break
		sleep 0.1
	done
	[ "$(sqlite3 "$db" "SELECT count(*) FROM instances") $(sqlite3 "$db" "SELECT count(*) FROM migrations") $(sqlite3 "$db" "SELECT count(*) FROM addresses")" = "0 0 0" ] ||
		fail "hv2 not clean: $(sqlite3 "$db" "SELECT uuid, state, step FROM instances")"
	ls "$T/h2/inst" | grep -q "$uuid" && fail "hv2 kept files: $(ls "$T/h2/inst")"
	[ "$(sqlite3 "$T/sched/scheduler.db" "SELECT count(*) FROM migrations")" = 0 ] || fail "the scheduler kept the migration"
	case "$(ctl --json host list | jq -r '.[] | select(.name == "hv2") | "\(.instances) \(.pcpus)"')" in
	"0 "*) ;;
	*) fail "hv2's claim not released: $(ctl host list)" ;;
	esac
}
refuse "already on host hv1" ctl migrate web --cold --host hv1 --timeout 20

# ---- an active instance: stopped, not copied (the test driver), running again ----
rc=0
ctl migrate web --cold --host hv2 --timeout 60 >"$T/cold.out" 2>&1 || rc=$?
[ $rc = 1 ] || fail "cold migrate: exit $rc: $(cat "$T/cold.out")"
grep -q "web: cold-migrating (stop, copy, start) from hv1 to hv2" "$T/cold.out" || fail "no start line: $(cat "$T/cold.out")"
grep -q "failed at step perform: host hv1: cold migration failed at step start-paused" "$T/cold.out" ||
	fail "error does not name the steps: $(cat "$T/cold.out")"
grep -q "migration starting instance=$uuid .* cold=1" "$T/h1.log" || fail "hv1 did not start a cold move"
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "active hv1" ] || fail "after the abort: $(ctl --json show web)"
ctl --json show web | jq -r .reason | grep -q "migration to hv2 failed at step perform" ||
	fail "show does not say why: $(ctl --json show web | jq -r .reason)"
hv2_clean
sleep 3 # a reconcile pass (2 s): a domain left off would turn web stopped
[ "$(ctl --json show web | jq -r .state)" = active ] || fail "web not running again on hv1: $(ctl --json show web)"
[ "$(sqlite3 "$T/h1/state/agent.db" "SELECT state FROM instances WHERE uuid = '$uuid'")" = active ] ||
	fail "hv1's store: $(sqlite3 "$T/h1/state/agent.db" "SELECT state, step FROM instances")"
echo "cold, active: aborted at start-paused, web running again on hv1, hv2 clean"

# ---- a stopped instance: live refused; cold aborted, it stays stopped ----
ctl stop web --timeout 30 >/dev/null 2>&1 || fail "stop web"
[ "$(ctl --json show web | jq -r .state)" = stopped ] || fail "web not stopped: $(ctl --json show web)"
refuse "the instance is stopped: live migration needs it active (a stopped instance moves with --cold)" \
	ctl migrate web --host hv2 --timeout 20
rc=0
ctl migrate web --cold --host hv2 --timeout 60 >"$T/cold2.out" 2>&1 || rc=$?
[ $rc = 1 ] || fail "cold migrate stopped: exit $rc: $(cat "$T/cold2.out")"
grep -q "cold migration failed at step start-paused" "$T/cold2.out" || fail "stopped: $(cat "$T/cold2.out")"
[ "$(ctl --json show web | jq -r '.state + " " + .host')" = "stopped hv1" ] || fail "stopped web after the abort: $(ctl --json show web)"
hv2_clean
sleep 3
[ "$(ctl --json show web | jq -r .state)" = stopped ] || fail "web started by the abort: $(ctl --json show web)"
[ "$(sqlite3 "$T/h1/state/agent.db" "SELECT state FROM instances WHERE uuid = '$uuid'")" = stopped ] ||
	fail "hv1's store: $(sqlite3 "$T/h1/state/agent.db" "SELECT state, step FROM instances")"
echo "cold, stopped: live refused, cold aborted, web stays stopped on hv1"
echo "PASS"
