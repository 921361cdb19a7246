#!/bin/sh
# kill -9 of the agent after each build step, then a restart: reconcile
# leaves no instance row, address, overlay, seed or claim behind, and asks
# for a reschedule. Also: a command accepted but not yet run when the
# agent dies is run after the restart (at least once).
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
trap agent_env_down EXIT
agent_env_up

# Each restart after a kill carries the next fault, so the agent that
# reconciles the last crash is the one the next build kills.
n=0
prev=""
AGENT_ENV="STRATUS_FAULT=build:claim"
agent_start
for step in claim network filter image seed define start; do
	n=$((n + 1))
	U=$(printf '%08d-0000-4000-8000-000000000000' $n)
	send instance.build "$(spec "$U" '.flavor.extra_specs = {"hw:cpu_policy": "dedicated"} | .flavor.vcpus = 1')"
	# the fault point kills the agent once the step is durable
	pid=$(cat "$T/agent.pid")
	for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$pid" 2>/dev/null && fail "agent not killed after step $step"
	[ "$(db "SELECT step FROM instances WHERE uuid='$U'")" = "$step" ] ||
		fail "store does not show step $step: $(db "SELECT uuid, step, state FROM instances")"
	case $step in
	claim) next=network ;; network) next=filter ;; filter) next=image ;; image) next=seed ;;
	seed) next=define ;;
	define) next=start ;; *) next="" ;;
	esac
	AGENT_ENV=${next:+STRATUS_FAULT=build:$next}
	agent_start
	wait_event ".type==\"instance.reschedule\" and .body.uuid==\"$U\" and (.body.reason|test(\"interrupted\"))" 10 >/dev/null ||
		fail "no reschedule after a crash at step $step"
	sleep 0.2
	[ "$(db "SELECT COUNT(*) FROM instances")" = 0 ] || fail "step $step: instance row left"
	[ "$(db "SELECT COUNT(*) FROM addresses")" = 0 ] || fail "step $step: address leaked"
	[ -z "$(ls "$T/inst")" ] || fail "step $step: files left: $(ls "$T/inst")"
	curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null || fail "metrics after restart"
done

# pCPU claims were given back: the host's one dedicated pCPU still takes a
# 1-vCPU dedicated instance after all those crashes (same agent as above)
for U in aaaaaaaa-0000-4000-8000-00000000000a; do
	send instance.build "$(spec "$U" '.flavor.extra_specs = {"hw:cpu_policy": "dedicated"} | .flavor.vcpus = 1')"
	wait_event ".body.uuid==\"$U\" and .body.state==\"active\"" >/dev/null ||
		fail "dedicated build after crashes did not fit: $(grep reschedule "$EVENTS" | tail -n 1)"
done

# a delete accepted (durable) but not run when the agent dies is finished
# after the restart: the offset was stored, so only the store remembers it
U=aaaaaaaa-0000-4000-8000-00000000000a
agent_kill KILL
AGENT_ENV="STRATUS_FAULT=accept:instance.delete"
agent_start
send instance.delete "{\"uuid\":\"$U\"}"
pid=$(cat "$T/agent.pid")
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "agent not killed after accepting the delete"
[ "$(db "SELECT COUNT(*) FROM requests WHERE type='instance.delete' AND outcome_json IS NULL")" = 1 ] ||
	fail "delete intent not durable"
AGENT_ENV=""
agent_start
wait_event ".body.uuid==\"$U\" and .body.state==\"deleted\"" 15 >/dev/null || fail "delete lost in a crash"
sleep 0.5
[ "$(db "SELECT COUNT(*) FROM instances WHERE uuid='$U'")" = 0 ] || fail "deleted instance still in the store"
[ "$(db "SELECT COUNT(*) FROM addresses")" = 0 ] || fail "addresses: $(db "SELECT * FROM addresses")"
echo "agent crash test: ok"
