#!/bin/sh
# A volume outlives its instance, on real libvirtd + QEMU with the tiny
# guest, through stratusctl: create; boot tiny-1, attach the volume to the
# running guest (hot-plug); the guest finds the disk by its serial (the
# volume id cut to 20 characters, /sys/block/vdX/serial: what udev names
# /dev/disk/by-id/virtio-<serial>) and writes a marker with dd; detach
# (hot-unplug); delete tiny-1; boot tiny-2 with --volume (placed on the
# volume's host, attached once active); the guest reads the marker back.
# The disk is in the persistent definition (a host reboot keeps it) and an
# agent restart keeps the volume in-use.
set -u
. "$STRATUS_TOP/tests/e2e/lib.sh"
trap e2e_down EXIT
trap 'exit 1' INT TERM
e2e_up
sed -i "s|^  state_dir: $T/state|  state_dir: $T/state\n  volume_dir: $T/vol|" "$T/stratus.yaml"
agent_start
img="url=file://$TINY_DISK checksum=$(_sum "$TINY_DISK") disk_format=qcow2"
img="$img kernel=file://$TINY_KERNEL kernel_checksum=$(_sum "$TINY_KERNEL")"
img="$img initrd=file://$TINY_INITRD initrd_checksum=$(_sum "$TINY_INITRD")"
img="$img cmdline=$(echo "$TINY_CMDLINE" | sed 's/ /%20/g')"
cat >>"$T/stratus.yaml" <<EOF
scheduler:
  state_path: $T/scheduler.db
  key_dir: $T/sched
  heartbeat_interval: 2s
  missed_heartbeats: 30
  flavors:
    m1.tiny: vcpus=1 ram_mb=128 disk_gb=1
  images:
    tiny: $img
EOF
"$B/stratus-scheduler" -c "$T/stratus.yaml" >"$T/scheduler.log" 2>&1 &
echo $! >"$T/scheduler.pid"
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
for _ in $(seq 100); do ctl --json host list 2>/dev/null | jq -e 'length > 0' >/dev/null && break; sleep 0.2; done

ctl --json volume create data --size 1 >"$T/vol.json" 2>&1 || fail "volume create: $(cat "$T/vol.json")"
vid=$(jq -r .uuid "$T/vol.json")
serial=$(echo "$vid" | cut -c1-20)
mark="VOLDATA-$$-$(date +%s)"

# user-data (the tiny guest runs a #! script at boot): find the disk of our
# serial (it is hot-plugged after boot), then write or read
finder='dev=""; n=0
while [ $n -lt 600 ] && [ -z "$dev" ]; do
	for d in /sys/block/vd*; do [ "$(cat "$d/serial" 2>/dev/null)" = "'"$serial"'" ] && dev=/dev/${d##*/}; done
	[ -n "$dev" ] || { sleep 0.5; n=$((n + 1)); }
done
[ -n "$dev" ] || { echo "VOLTEST: no disk of serial '"$serial"'"; exit 1; }'
printf '#!/bin/sh\n%s\nprintf "%%s\\n" %s | dd of="$dev" bs=512 count=1 conv=sync,fsync 2>/dev/null\necho "VOLTEST: wrote dev=$dev"\n' \
	"$finder" "$mark" >"$T/write.sh"
printf '#!/bin/sh\n%s\necho "VOLTEST: read dev=$dev data=$(dd if="$dev" bs=512 count=1 2>/dev/null | head -n 1)"\n' \
	"$finder" >"$T/read.sh"

ctl boot tiny-1 --flavor m1.tiny --image tiny --user-data "$T/write.sh" --timeout "$E2E_WAIT" \
	>"$T/boot1.out" 2>&1 || fail "boot tiny-1: $(cat "$T/boot1.out")"
u1=$(ctl --json show tiny-1 | jq -r .uuid)
echo "$u1" >>"$T/e2e-uuids"
ctl --json volume attach data tiny-1 >"$T/att1.json" 2>&1 || fail "attach to running tiny-1: $(cat "$T/att1.json")"
jq -e ".state == \"in-use\" and .instance == \"$u1\"" "$T/att1.json" >/dev/null || fail "attach: $(cat "$T/att1.json")"
guest_console_wait "$T/inst/$u1.log" "VOLTEST: wrote" "$E2E_WAIT" ||
	fail "tiny-1 did not write: $(grep -a 'VOLTEST\|STRATUS-GUEST' "$T/inst/$u1.log" | tail -n 5)"
virsh -c qemu:///system dumpxml --inactive "stratus-$u1" | grep -q "<serial>$serial</serial>" ||
	fail "the disk is not in tiny-1's persistent definition"
ctl --json volume detach data >"$T/det.json" 2>&1 || fail "detach: $(cat "$T/det.json")"
jq -e '.state == "available"' "$T/det.json" >/dev/null || fail "detach: $(cat "$T/det.json")"
virsh -c qemu:///system dumpxml "stratus-$u1" | grep -q "<serial>$serial</serial>" &&
	fail "the disk is still in the running tiny-1"
ctl delete tiny-1 --timeout 120 >/dev/null 2>&1 || fail "delete tiny-1"
ctl --json volume show data | jq -e '.state == "available"' >/dev/null || fail "volume after delete"
[ -f "$T/vol/$vid.img" ] || fail "the volume file went with the instance"

# a new instance on the volume's host, attached when active
ctl boot tiny-2 --flavor m1.tiny --image tiny --volume data --user-data "$T/read.sh" \
	--timeout "$E2E_WAIT" >"$T/boot2.out" 2>&1 || fail "boot tiny-2: $(cat "$T/boot2.out")"
u2=$(ctl --json show tiny-2 | jq -r .uuid)
echo "$u2" >>"$T/e2e-uuids"
guest_console_wait "$T/inst/$u2.log" "VOLTEST: read" "$E2E_WAIT" ||
	fail "tiny-2 did not read: $(grep -a 'VOLTEST\|STRATUS-GUEST' "$T/inst/$u2.log" | tail -n 5)"
grep -aq "VOLTEST: read dev=/dev/vd. data=$mark" "$T/inst/$u2.log" ||
	fail "tiny-2 read other data: $(grep -a 'VOLTEST' "$T/inst/$u2.log")"
ctl --json volume show data | jq -e ".state == \"in-use\" and .instance == \"$u2\"" >/dev/null ||
	fail "volume not in-use by tiny-2: $(ctl --json volume show data)"

# an agent restart: still in-use, still in the definition
agent_kill TERM
agent_start
sleep 3
ctl --json volume show data | jq -e ".state == \"in-use\"" >/dev/null || fail "after agent restart: $(ctl --json volume show data)"
virsh -c qemu:///system dumpxml --inactive "stratus-$u2" | grep -q "<serial>$serial</serial>" ||
	fail "the disk left tiny-2's definition"
ctl volume delete data >"$T/del.out" 2>&1 && fail "deleted an in-use volume"
grep -q "detach it first" "$T/del.out" || fail "delete in-use: $(cat "$T/del.out")"
ctl volume detach data >/dev/null 2>&1 || fail "detach from tiny-2"
ctl volume delete data >/dev/null 2>&1 || fail "volume delete"
[ ! -e "$T/vol/$vid.img" ] || fail "volume file left"
ctl delete tiny-2 --timeout 120 >/dev/null 2>&1 || fail "delete tiny-2"
echo "e2e volumes: ok"
