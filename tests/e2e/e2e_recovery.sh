#!/bin/sh
# Recovery on real libvirtd + QEMU:
#  - kill -9 of the agent mid-build (after define) and a restart: the domain,
#    overlay, seed and address are gone, a reschedule is asked for;
#  - kill -9 of the agent with a guest running: the guest keeps running and
#    the restarted agent still owns it;
#  - libvirtd restarted under a running cloud: the agent reports degraded,
#    reconnects, and commands work again.
set -u
. "$STRATUS_TOP/tests/e2e/lib.sh"
trap e2e_down EXIT
e2e_up

U=$(e2e_uuid 1)
AGENT_ENV="STRATUS_FAULT=build:define"
agent_start
send instance.build "$(tiny_spec "$U")"
pid=$(cat "$T/agent.pid")
for _ in $(seq $((E2E_WAIT * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "agent not killed at the fault point"
virsh -c qemu:///system dominfo "stratus-$U" >/dev/null 2>&1 || fail "the fault point came before define"
AGENT_ENV=""
agent_start
wait_event ".type==\"instance.reschedule\" and .body.uuid==\"$U\"" "$E2E_WAIT" >/dev/null || fail "no reschedule"
sleep 0.5
virsh -c qemu:///system dominfo "stratus-$U" >/dev/null 2>&1 && fail "domain left after the crash"
[ -z "$(ls "$T/inst")" ] || fail "files left: $(ls "$T/inst")"
[ "$(db "SELECT COUNT(*) FROM addresses")" = 0 ] || fail "address leaked"

U=$(e2e_uuid 2)
send instance.build "$(tiny_spec "$U")"
wait_event ".body.uuid==\"$U\" and .body.state==\"active\"" "$E2E_WAIT" >/dev/null || fail "not active"
agent_kill KILL
virsh -c qemu:///system domstate "stratus-$U" | grep -q running || fail "guest stopped with the agent"
agent_start
sleep 1
[ "$(db "SELECT state FROM instances WHERE uuid='$U'")" = active ] || fail "restart changed the state"

# a guest killed behind the agent's back: the agent notices and says so
virsh -c qemu:///system destroy "stratus-$U" >/dev/null || fail "virsh destroy"
wait_event ".body.uuid==\"$U\" and .body.state==\"stopped\" and .body.reason != null" "$E2E_WAIT" >/dev/null ||
	fail "crash not noticed: $(grep "$U" "$EVENTS" | tail -n 1)"
[ "$(db "SELECT state FROM instances WHERE uuid='$U'")" = stopped ] || fail "store not corrected"
send instance.start "{\"uuid\":\"$U\"}"
wait_event ".body.uuid==\"$U\" and .body.state==\"active\" and .body.timings_ms==null" "$E2E_WAIT" >/dev/null ||
	fail "start after the crash"

# a domain of ours that the store does not know: reported by reconcile
O=$(e2e_uuid 9)
virsh -c qemu:///system dumpxml "stratus-$U" --inactive |
	sed -e "s|$U|$O|g" >"$T/orphan.xml"
virsh -c qemu:///system define "$T/orphan.xml" >/dev/null || fail "cannot define the orphan"
for _ in $(seq "$E2E_WAIT"); do
	grep -q "orphan domain not in the store instance=$O" "$T/agent.log" && break
	sleep 1
done
grep -q "orphan domain not in the store instance=$O" "$T/agent.log" || fail "orphan not reported"
virsh -c qemu:///system undefine "stratus-$O" >/dev/null 2>&1

libvirt_restart || fail "libvirtd restart"
for _ in $(seq "$E2E_WAIT"); do
	grep -q "libvirtd connection back" "$T/agent.log" && break
	sleep 1
done
grep -q "libvirtd connection back" "$T/agent.log" || fail "agent did not reconnect"
curl -sf "http://127.0.0.1:$METRICS_PORT/healthz" >/dev/null || fail "still degraded after reconnect"
virsh -c qemu:///system domstate "stratus-$U" | grep -q running || fail "guest lost with libvirtd"
send instance.stop "{\"uuid\":\"$U\"}"
wait_event ".body.uuid==\"$U\" and .body.state==\"stopped\"" "$E2E_WAIT" >/dev/null || fail "stop after reconnect"
send instance.delete "{\"uuid\":\"$U\"}"
wait_event ".body.uuid==\"$U\" and .body.state==\"deleted\"" "$E2E_WAIT" >/dev/null || fail "delete after reconnect"
echo "e2e recovery: ok"
