#!/bin/sh
# Glance image properties through the binaries a user runs: stratus-bus,
# stratus-scheduler and stratusctl (no host needed for the catalog).
#   - `stratusctl image add --property K=V` stores them; `image list`
#     shows them; a scheduler restart keeps them (the state);
#   - an unknown name, a bad value, secure boot without UEFI, --property
#     on a flavor and a member's image add are refused with the reason
#     and the accepted list, and change nothing;
#   - a config image line with a bad property fails `stratus-scheduler -n`.
# What the properties do to the domain: tests/vmm/test_golden.sh (image-*).
set -u
. "$(dirname "$0")/lib.sh"
sl_init imgprops
config() { # IMAGE-LINE
	sl_config_head
	cat <<YAML
  flavors:
    m1.small: vcpus=1 ram_mb=1024 disk_gb=5
  images:
    grub: $1
YAML
}
# a config with a bad property: refused by the check mode, naming it
config "url=http://10.0.0.1/g.qcow2 checksum=sha256:$H disk_format=qcow2 hw_firmware_type=efi" \
	>"$tmp/bad.yaml"
out=$("$BUILD/stratus-scheduler" -n -c "$tmp/bad.yaml" 2>&1) && fail "bad config accepted: $out"
echo "$out" | grep -q "scheduler.images.grub: image grub: hw_firmware_type: invalid value 'efi' (accepted: bios, uefi)" ||
	fail "bad config: $out"
config "url=http://10.0.0.1/g.qcow2 checksum=sha256:$H disk_format=qcow2 hw_fw=uefi" >"$tmp/bad.yaml"
out=$("$BUILD/stratus-scheduler" -n -c "$tmp/bad.yaml" 2>&1) && fail "unknown property accepted: $out"
echo "$out" | grep -q "unknown key 'hw_fw' (expected .*, or an image property: hw_firmware_type, os_secure_boot, hw_machine_type, hw_disk_bus, hw_vif_model, hw_qemu_guest_agent, os_type)" ||
	fail "unknown config word: $out"
echo "ok: config lines with a bad property refused"

config "url=http://10.0.0.1/g.qcow2 checksum=sha256:$H disk_format=qcow2 hw_firmware_type=uefi hw_machine_type=q35" \
	>"$tmp/stratus.yaml"
"$BUILD/stratus-scheduler" -n -c "$tmp/stratus.yaml" >/dev/null 2>&1 || fail "good config refused"
answers() { # WHAT: the scheduler answers stratusctl
	for _ in $(seq 40); do ctl --json image list --timeout 10 >/dev/null 2>&1 && return 0; sleep 0.25; done
	fail "scheduler does not answer $1"
}
sl_bus_start
sl_sched_start
export STRATUS_CREDENTIAL="$ADMIN"
answers ""
props() { # NAME: the image's properties as "k=v ..." sorted
	ctl --json image list | python3 -c "
import json,sys
for i in json.load(sys.stdin):
    if i['name']==sys.argv[1]: print(' '.join(sorted('%s=%s' % kv for kv in i.get('properties',{}).items())))" "$1"
}
[ "$(props grub)" = "hw_firmware_type=uefi hw_machine_type=q35" ] || fail "config image properties: '$(props grub)'"
ctl image add win --url http://10.0.0.1/w.qcow2 --checksum sha256:$H --property hw_firmware_type=uefi \
	--property os_type=windows --property hw_disk_bus=scsi --property hw_vif_model=e1000 \
	--property hw_qemu_guest_agent=yes >"$tmp/add.out" 2>&1 || fail "image add: $(cat "$tmp/add.out")"
wantp="hw_disk_bus=scsi hw_firmware_type=uefi hw_qemu_guest_agent=yes hw_vif_model=e1000 os_type=windows"
[ "$(props win)" = "$wantp" ] || fail "image add properties: '$(props win)'"
echo "ok: image add --property stored and listed"

before=$(ctl --json image list)
refused() { # NAME EXPECTED CMD...
	name=$1 want=$2
	shift 2
	out=$("$@" 2>&1) && fail "$name accepted: $out"
	echo "$out" | grep -qF "$want" || fail "$name: '$out', expected '$want'"
	[ "$(ctl --json image list)" = "$before" ] || fail "$name changed the catalog"
	echo "refused: $name ($want)"
}
add() { ctl image add "$1" --url http://10.0.0.1/x.qcow2 --checksum sha256:$H --property "$2"; }
refused "bad firmware" "image x1: hw_firmware_type: invalid value 'efi' (accepted: bios, uefi)" add x1 hw_firmware_type=efi
refused "unknown property" "image x2: unknown property 'hw_cdrom_bus' (accepted: hw_firmware_type, os_secure_boot, hw_machine_type, hw_disk_bus, hw_vif_model, hw_qemu_guest_agent, os_type)" \
	add x2 hw_cdrom_bus=ide
# (every property's values: the bad-* golden cases of tests/vmm/test_golden.sh)
refused "bad os type" "os_type: invalid value 'bsd' (accepted: linux, windows)" add x7 os_type=bsd
refused "secure boot on bios" "image x8: os_secure_boot=required needs hw_firmware_type=uefi" add x8 os_secure_boot=required
refused "property on a flavor" "flavor: --property is for image add" \
	ctl flavor add f1 --vcpus 1 --ram-mb 512 --property hw_firmware_type=uefi
ctl credential create --project default --role member --output "$tmp/member.cred" >/dev/null ||
	fail "credential create"
refused "member image add" "image.add: admin only" \
	ctl -C "$tmp/member.cred" image add x9 --url http://10.0.0.1/x.qcow2 --checksum sha256:$H \
	--property hw_firmware_type=uefi

# the state keeps them across a restart of the scheduler
kill "$sched_pid"
wait "$sched_pid" 2>/dev/null
sl_sched_start
answers "after its restart"
got=$(props win); [ "$got" = "$wantp" ] || fail "after restart: '$got' ($(ctl --json image list 2>&1))"
echo "ok: properties kept across a scheduler restart"
echo "1 passed, 0 failed"
