#!/bin/sh
# Reboot on real QEMU with the tiny guest (its acpid powers off on the ACPI
# power button; libvirt turns that into a reset): a soft reboot is seen by
# libvirt's reboot event well before vmm.reboot_timeout and the event says
# "rebooted (soft)"; a hard one ("hard": true) resets at once. Both boot the
# guest again from the same disk in the same QEMU process.
set -u
AGENT_REBOOT_TIMEOUT=120s
. "$STRATUS_TOP/tests/e2e/lib.sh"
trap e2e_down EXIT
e2e_up
agent_start
U=$(e2e_uuid 1)
log=$T/inst/$U.log
send instance.build "$(tiny_spec "$U")"
wait_event ".body.uuid==\"$U\" and .body.state==\"active\"" "$E2E_WAIT" >/dev/null ||
	fail "not active: $(grep "$U" "$EVENTS" | tail -n 1)"
guest_console_wait "$log" "STRATUS-GUEST: ready" "$E2E_WAIT" || fail "the guest did not boot"
boots() { grep -c "STRATUS-GUEST: ready" "$log"; }
wait_boots() { # N: the console shows N boots
	for _ in $(seq 240); do [ "$(boots)" -ge "$1" ] && return 0; sleep 0.5; done
	return 1
}
disk=$T/inst/$U.qcow2
ino=$(stat -c %i "$disk")
qpid=$(pgrep -f "guest=stratus-$U" | head -n 1)
[ -n "$qpid" ] || fail "no QEMU process for stratus-$U"

# soft: the guest takes the power button, libvirt resets it, the event comes
t0=$(date +%s)
send instance.reboot "{\"uuid\":\"$U\"}" --request-id aaaaaaaa-0000-4000-8000-0000000000e1
ev=$(wait_event ".body.uuid==\"$U\" and .request_id==\"aaaaaaaa-0000-4000-8000-0000000000e1\" and .body.state==\"active\"" 150) ||
	fail "no active event after the soft reboot"
s=$(($(date +%s) - t0))
[ "$(echo "$ev" | jq -r .body.reason)" = "rebooted (soft)" ] || fail "soft reboot: $ev"
[ "$s" -lt 120 ] || fail "the soft reboot took $s s: the timeout, not the guest"
wait_boots 2 || fail "the guest did not boot again after the soft reboot: $(tail -n 5 "$log")"
echo "ok   soft reboot: the guest's reset seen after $s s, booted again"

send instance.reboot "{\"uuid\":\"$U\",\"hard\":true}" --request-id aaaaaaaa-0000-4000-8000-0000000000e2
ev=$(wait_event ".body.uuid==\"$U\" and .request_id==\"aaaaaaaa-0000-4000-8000-0000000000e2\" and .body.state==\"active\"" 60) ||
	fail "no active event after the hard reboot"
[ "$(echo "$ev" | jq -r .body.reason)" = "hard reboot" ] || fail "hard reboot: $ev"
wait_boots 3 || fail "the guest did not boot again after the hard reboot: $(tail -n 5 "$log")"
echo "ok   hard reboot: reset, booted again"

[ "$(stat -c %i "$disk")" = "$ino" ] || fail "the disk was replaced"
[ "$(pgrep -f "guest=stratus-$U" | head -n 1)" = "$qpid" ] || fail "QEMU was restarted, not reset"
send instance.delete "{\"uuid\":\"$U\"}"
wait_event ".body.uuid==\"$U\" and .body.state==\"deleted\"" "$E2E_WAIT" >/dev/null || fail "delete"
echo "e2e reboot: ok"
