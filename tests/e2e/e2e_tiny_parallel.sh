#!/bin/sh
# 10 tiny guests requested at once all reach ACTIVE on real QEMU, each boots
# and reads its own seed; deleting them leaves no domain, file or address.
set -u
. "$STRATUS_TOP/tests/e2e/lib.sh"
trap e2e_down EXIT
e2e_up
sed -i 's/^  report_interval: 1s/  report_interval: 5s\n  build_concurrency: 4/' "$T/stratus.yaml"
agent_start
N=10
i=1
while [ $i -le $N ]; do
	send instance.build "$(tiny_spec "$(e2e_uuid $i)")"
	i=$((i + 1))
done
i=1
while [ $i -le $N ]; do
	u=$(e2e_uuid $i)
	wait_event ".body.uuid==\"$u\" and .body.state==\"active\"" "$E2E_WAIT" >/dev/null ||
		fail "instance $i not active: $(grep "$u" "$EVENTS" | tail -n 1)"
	i=$((i + 1))
done
[ "$(virsh -c qemu:///system list --name | grep -c "^stratus-e2e0")" -ge $N ] || fail "not $N domains running"
i=1
while [ $i -le $N ]; do
	u=$(e2e_uuid $i)
	guest_console_wait "$T/inst/$u.log" "STRATUS-GUEST: ready" "$E2E_WAIT" ||
		fail "guest $i did not boot: $(tail -n 3 "$T/inst/$u.log")"
	grep -q "instance-id=$u" "$T/inst/$u.log" || fail "guest $i did not read its own seed"
	i=$((i + 1))
done
[ "$(db "SELECT COUNT(DISTINCT address) FROM instances")" = $N ] || fail "addresses not distinct"
i=1
while [ $i -le $N ]; do
	send instance.delete "{\"uuid\":\"$(e2e_uuid $i)\"}"
	i=$((i + 1))
done
i=1
while [ $i -le $N ]; do
	wait_event ".body.uuid==\"$(e2e_uuid $i)\" and .body.state==\"deleted\"" "$E2E_WAIT" >/dev/null || fail "delete $i"
	i=$((i + 1))
done
virsh -c qemu:///system list --all --name | grep -q "^stratus-e2e0.*$$" && fail "domains left"
[ -z "$(ls "$T/inst")" ] || fail "files left"
[ "$(db "SELECT COUNT(*) FROM addresses")" = 0 ] || fail "addresses left"
echo "e2e tiny parallel: ok"
