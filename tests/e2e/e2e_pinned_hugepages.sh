#!/bin/sh
# A dedicated-CPU, 2MB-hugepage flavor through the agent on real QEMU: the
# vCPU is pinned where the fit said, the guest's memory comes out of the
# hugepage pool, and delete gives pCPU and pages back.
set -u
. "$STRATUS_TOP/tests/e2e/lib.sh"
trap e2e_down EXIT
E2E_HUGEPAGES=1
hugepages_reserve 128 || { echo "cannot reserve hugepages"; exit 1; }
e2e_up
agent_start
U=$(e2e_uuid 1)
free0=$(hugepages_free)
send instance.build "$(tiny_spec "$U" '.flavor.name = "m1.pinned" | .flavor.extra_specs = {"hw:cpu_policy": "dedicated", "hw:mem_page_size": "2MB"}')"
wait_event ".body.uuid==\"$U\" and .body.state==\"active\"" "$E2E_WAIT" >/dev/null ||
	fail "not active: $(grep "$U" "$EVENTS" | tail -n 1)"
pcpu=$(db "SELECT placement_json FROM instances WHERE uuid='$U'" | jq -r '.pcpus[0] // .pcpu[0] // empty')
[ -n "$pcpu" ] || fail "no pCPU in the placement: $(db "SELECT placement_json FROM instances")"
virsh -c qemu:///system vcpupin "stratus-$U" --vcpu 0 |
	awk -v p="$pcpu" '$1 ~ /^0:?$/ && $NF == p { f = 1 } END { exit !f }' ||
	fail "vCPU 0 not pinned to $pcpu: $(virsh -c qemu:///system vcpupin "stratus-$U")"
virsh -c qemu:///system dumpxml "stratus-$U" | grep -q "<hugepages>" || fail "no hugepages backing"
guest_console_wait "$T/inst/$U.log" "STRATUS-GUEST: ready" "$E2E_WAIT" || fail "guest did not boot"
free1=$(hugepages_free)
[ $((free0 - free1)) -eq 64 ] || fail "HugePages_Free went $free0 -> $free1, expected -64 (128 MiB)"
send instance.delete "{\"uuid\":\"$U\"}"
wait_event ".body.uuid==\"$U\" and .body.state==\"deleted\"" "$E2E_WAIT" >/dev/null || fail "no deleted event"
sleep 1
[ "$(hugepages_free)" -eq "$free0" ] || fail "pages not back: $(hugepages_free) of $free0"
# the pCPU is free again: the same flavor fits once more
U2=$(e2e_uuid 2)
send instance.build "$(tiny_spec "$U2" '.flavor.extra_specs = {"hw:cpu_policy": "dedicated", "hw:mem_page_size": "2MB"}')"
wait_event ".body.uuid==\"$U2\" and .body.state==\"active\"" "$E2E_WAIT" >/dev/null || fail "pCPU not released"
send instance.delete "{\"uuid\":\"$U2\"}"
wait_event ".body.uuid==\"$U2\" and .body.state==\"deleted\"" "$E2E_WAIT" >/dev/null || fail "second delete"
echo "e2e pinned hugepages: ok"
