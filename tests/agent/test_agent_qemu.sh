#!/bin/sh
# The agent on real libvirtd + QEMU (domain type qemu): the tiny guest
# (Debian kernel + busybox initramfs, direct kernel boot) built through the
# bus, its console showing it booted and read its NoCloud seed; stop, start,
# and delete leaving no domain behind.
set -u
. "$STRATUS_TOP/tests/lib/libvirt.sh"
. "$STRATUS_TOP/tests/agent/lib.sh"
cleanup() {
	[ -n "${U:-}" ] && virsh -c qemu:///system destroy "stratus-$U" >/dev/null 2>&1
	[ -n "${U:-}" ] && virsh -c qemu:///system undefine "stratus-$U" >/dev/null 2>&1
	agent_env_down
	libvirt_down
}
trap cleanup EXIT
eval "$(sh "$STRATUS_TOP/tests/guest/build-tiny.sh" 2>"$T/tiny.log" | grep -E '^(kernel|initrd|disk|cmdline)=')" ||
	fail "tiny guest build: $(tail -n 5 "$T/tiny.log")"
libvirt_up || fail "libvirtd did not start"
agent_env_up qemu:///system
agent_start

U=7e57ab1e-0000-4000-8000-$(printf '%012d' $$)
sum() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
body=$(jq -nc --arg u "$U" --arg disk "file://$disk" --arg dsum "$(sum "$disk")" \
	--arg k "file://$kernel" --arg ksum "$(sum "$kernel")" \
	--arg i "file://$initrd" --arg isum "$(sum "$initrd")" --arg cmd "$cmdline" '{
	uuid: $u, name: "tiny <1>", project: "acme",
	flavor: {name: "m1.tiny", vcpus: 1, ram_mb: 256, disk_gb: 1},
	image: {name: "tiny", url: $disk, checksum: $dsum, disk_format: "qcow2",
		kernel: {url: $k, checksum: $ksum}, initrd: {url: $i, checksum: $isum},
		cmdline: $cmd},
	seed: "nocloud"}')
send instance.build "$body"
wait_event ".body.uuid==\"$U\" and .body.state==\"active\"" 60 >/dev/null ||
	fail "no active event: $(grep "$U" "$EVENTS" | tail -n 2)"
virsh -c qemu:///system domstate "stratus-$U" | grep -q running || fail "domain not running"
virsh -c qemu:///system dumpxml "stratus-$U" | grep -q "<project>acme</project>" ||
	virsh -c qemu:///system dumpxml "stratus-$U" | grep -q "acme" || fail "no owner metadata"
console="$T/inst/$U.log"
guest_console_wait "$console" "STRATUS-GUEST: ready" 90 || fail "guest did not boot: $(tail -n 5 "$console" 2>/dev/null)"
grep -q "seed cidata instance-id=$U" "$console" || fail "guest did not read its seed: $(grep STRATUS-GUEST "$console")"

# the console through the bus
RC=cccccccc-0000-4000-8000-$(printf '%012d' $$)
send instance.console "{\"uuid\":\"$U\",\"lines\":200}" --request-id "$RC"
wait_event ".type==\"request.result\" and .request_id==\"$RC\" and ([.body.data.lines[] | select(test(\"STRATUS-GUEST: ready\"))] | length > 0)" >/dev/null ||
	fail "console via the bus lacks the boot marker"

# stop (the busybox guest ignores ACPI: forced after the timeout), start
send instance.stop "{\"uuid\":\"$U\"}"
wait_event ".body.uuid==\"$U\" and .body.state==\"stopped\"" 30 >/dev/null || fail "no stopped event"
virsh -c qemu:///system domstate "stratus-$U" | grep -q "shut off" || fail "domain still running"
send instance.start "{\"uuid\":\"$U\"}"
wait_event ".body.uuid==\"$U\" and .body.state==\"active\" and .body.timings_ms==null" 30 >/dev/null ||
	fail "no active event after start"

# delete: no domain, no files, no address
send instance.delete "{\"uuid\":\"$U\"}"
wait_event ".body.uuid==\"$U\" and .body.state==\"deleted\"" 30 >/dev/null || fail "no deleted event"
virsh -c qemu:///system dominfo "stratus-$U" >/dev/null 2>&1 && fail "domain left behind"
[ -z "$(ls "$T/inst")" ] || fail "files left: $(ls "$T/inst")"
[ "$(db "SELECT COUNT(*) FROM addresses")" = 0 ] || fail "address leaked"
U=""
echo "agent qemu test: ok"
