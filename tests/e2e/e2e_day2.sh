#!/bin/sh
# Day-2 on real libvirtd + QEMU with the tiny guest (issue 18): a guest built
# with user data, then rebuilt with new user data through instance.rebuild
# (signed as the scheduler signs it): the same domain uuid, address and MAC,
# a fresh disk, and on the console the new instance-id (<uuid>-r1) and the new
# user-data script's output, which the first boot did not print.
# Then the same guest resized through instance.resize (1 -> 2 vCPUs, 128 ->
# 256 MiB, disk 1 -> 2 GiB): its console (tests/guest/tiny-init.sh's cpus,
# mem and disk lines) shows the new size in verify_resize, the old vCPUs and
# RAM after instance.resize.revert (the disk stays 2 GiB), and the new ones
# again after a second resize and instance.resize.confirm.
# Then a snapshot (instance.snapshot, as the scheduler sends it) of a guest
# whose user data wrote a mark onto its disk, uploaded to nginx
# (deploy/host/serve-images.sh): the guest paused briefly and running again,
# and the snapshot, booted as a new instance (the image record the
# scheduler would register), prints the mark on its console.
# Run under the shared lock: flock /tmp/stratus-libvirt.lock make e2e ...
set -u
[ -x /usr/bin/python3 ] && PATH=/usr/bin:$PATH
. "$STRATUS_TOP/tests/e2e/lib.sh"
STORE_PORT=$(free_port)
day2_down() {
	STRATUS_RUN_DIR=$T/run sh "$STRATUS_TOP/deploy/host/serve-images.sh" stop - "$STORE_PORT" \
		>/dev/null 2>&1
	e2e_down
}
trap day2_down EXIT
e2e_up
# the image store of the snapshot section below
sed -i "s|^images: {cache_dir: $T/cache, allow_file_urls: true}|images: {cache_dir: $T/cache, allow_file_urls: true, store_url: http://127.0.0.1:$STORE_PORT/snapshots}|" "$T/stratus.yaml"
grep -q "store_url: http://127.0.0.1:$STORE_PORT/" "$T/stratus.yaml" || fail "store_url not set"
agent_start
u=$(e2e_uuid 1)
ud1=$(printf '#!/bin/sh\necho "DAY2-FIRST-RAN"\n' | base64 -w0)
ud2=$(printf '#!/bin/sh\necho "DAY2-SECOND-RAN"\n' | base64 -w0)
send instance.build "$(tiny_spec "$u" ".user_data = \"$ud1\"")"
wait_event ".body.uuid==\"$u\" and .body.state==\"active\"" "$E2E_WAIT" >/dev/null ||
	fail "not active: $(grep "$u" "$EVENTS" | tail -n 1)"
guest_console_wait "$T/inst/$u.log" "DAY2-FIRST-RAN" "$E2E_WAIT" ||
	fail "first user data did not run: $(tail -n 5 "$T/inst/$u.log")"
grep -q "instance-id=$u " "$T/inst/$u.log" || fail "first instance-id not seen"
net=$(db "SELECT address || ' ' || mac FROM instances WHERE uuid='$u'")
[ -n "$net" ] || fail "no address"
# the rebuilt spec as the scheduler sends it: new user data, generation 1
send instance.rebuild "$(tiny_spec "$u" ".user_data = \"$ud2\" | .generation = 1")"
wait_event ".body.uuid==\"$u\" and .body.state==\"rebuilding\"" 60 >/dev/null || fail "no rebuilding"
for _ in $(seq "$E2E_WAIT"); do
	[ "$(count_events ".body.uuid==\"$u\" and .body.state==\"active\"")" -ge 2 ] && break
	grep -q "\"uuid\":\"$u\".*\"state\":\"error\"" "$EVENTS" && fail "rebuild failed: $(grep "$u" "$EVENTS" | tail -n 1)"
	sleep 1
done
[ "$(count_events ".body.uuid==\"$u\" and .body.state==\"active\"")" -ge 2 ] || fail "not active after rebuild"
guest_console_wait "$T/inst/$u.log" "DAY2-SECOND-RAN" "$E2E_WAIT" ||
	fail "new user data did not run: $(tail -n 5 "$T/inst/$u.log")"
grep -q "instance-id=$u-r1 " "$T/inst/$u.log" || fail "new instance-id not seen: $(grep 'seed' "$T/inst/$u.log")"
[ "$(db "SELECT address || ' ' || mac FROM instances WHERE uuid='$u'")" = "$net" ] ||
	fail "address or MAC changed"
virsh -c qemu:///system domuuid "stratus-$u" >/dev/null 2>&1 ||
	virsh -c qemu:///system list --uuid | grep -q "$u" || fail "domain gone"
ls "$T/inst" | grep -q 'prev\|rebuild' && fail "left over: $(ls "$T/inst")"
echo "e2e day2 (rebuild): ok"

# ---- resize: what the guest sees after each boot
log=$T/inst/$u.log
boots() { grep -c "STRATUS-GUEST: ready" "$log"; }
next_boot() { # N: wait for the N-th ready line
	for _ in $(seq "$E2E_WAIT"); do [ "$(boots)" -ge "$1" ] && return 0; sleep 1; done
	fail "no boot $1: $(tail -n 5 "$log")"
}
seen() { # the last boot's vCPUs, memory (MiB, MemTotal rounded up to 64) and vda size (GiB)
	# digits only: the serial console ends its lines with \r
	c=$(grep "STRATUS-GUEST: cpus n=" "$log" | tail -n 1 | sed 's/.*n=\([0-9]*\).*/\1/')
	m=$(grep "STRATUS-GUEST: mem total_kb=" "$log" | tail -n 1 | sed 's/.*total_kb=\([0-9]*\).*/\1/')
	d=$(grep "STRATUS-GUEST: disk vda size=" "$log" | tail -n 1 | sed 's/.*size=\([0-9]*\).*/\1/')
	echo "$c $(((m / 1024 + 63) / 64 * 64)) $((d / 1073741824))"
}
n=$(boots)
[ "$(seen)" = "1 128 1" ] || fail "before the resize the guest sees $(seen) (want 1 vCPU, 128 MiB, 1 GiB)"
big='{"uuid":"'$u'","flavor":{"name":"m1.tiny2","vcpus":2,"ram_mb":256,"disk_gb":2,"extra_specs":{}}}'
send instance.resize "$big"
wait_event ".body.uuid==\"$u\" and .body.state==\"verify_resize\"" "$E2E_WAIT" >/dev/null ||
	fail "no verify_resize: $(grep "$u" "$EVENTS" | tail -n 1)"
next_boot $((n + 1))
[ "$(seen)" = "2 256 2" ] || fail "resized guest sees $(seen) (want 2 vCPUs, 256 MiB, 2 GiB)"
send instance.resize.revert "{\"uuid\":\"$u\"}"
wait_event ".body.uuid==\"$u\" and .body.reverted==true and .body.state==\"active\"" "$E2E_WAIT" >/dev/null ||
	fail "no revert: $(grep "$u" "$EVENTS" | tail -n 1)"
next_boot $((n + 2))
[ "$(seen)" = "1 128 2" ] || fail "reverted guest sees $(seen) (want 1 vCPU, 128 MiB, the disk kept at 2 GiB)"
send instance.resize "$big"
for _ in $(seq "$E2E_WAIT"); do
	[ "$(count_events ".body.uuid==\"$u\" and .body.state==\"verify_resize\"")" -ge 2 ] && break
	sleep 1
done
[ "$(count_events ".body.uuid==\"$u\" and .body.state==\"verify_resize\"")" -ge 2 ] || fail "no second verify_resize"
send instance.resize.confirm "{\"uuid\":\"$u\"}"
wait_event ".body.uuid==\"$u\" and .body.confirmed==true and .body.state==\"active\"" 60 >/dev/null ||
	fail "no confirm: $(grep "$u" "$EVENTS" | tail -n 1)"
next_boot $((n + 3))
[ "$(seen)" = "2 256 2" ] || fail "confirmed guest sees $(seen) (want 2 vCPUs, 256 MiB, 2 GiB)"
[ -f "$T/inst/$u.resize.json" ] && fail "resize record left over after confirm"
echo "e2e day2 (resize): the guest saw 2 vCPUs/256 MiB, 1/128 after revert, 2/256 after confirm"
send instance.delete "{\"uuid\":\"$u\"}"
wait_event ".body.uuid==\"$u\" and .body.state==\"deleted\"" "$E2E_WAIT" >/dev/null || fail "delete"
echo "e2e day2 (rebuild, resize): ok"

# ---- snapshot (issue 18): a mark on the disk survives into a new instance
mkdir -p "$T/www"
STRATUS_RUN_DIR=$T/run sh "$STRATUS_TOP/deploy/host/serve-images.sh" start "$T/www" "$STORE_PORT" \
	>/dev/null || fail "serve-images"
s1=$(e2e_uuid 2)
s2=$(e2e_uuid 3)
mark=SNAPFILE-4711
udw=$(printf '#!/bin/sh\nprintf "%s\\n" | dd of=/dev/vda bs=512 seek=8192 conv=fsync 2>/dev/null && sync && echo "DAY2-MARK-WRITTEN"\n' "$mark" | base64 -w0)
udr=$(printf '#!/bin/sh\necho "DAY2-DISK-SAYS $(dd if=/dev/vda bs=512 skip=8192 count=1 2>/dev/null | head -n 1)"\n' | base64 -w0)
send instance.build "$(tiny_spec "$s1" ".user_data = \"$udw\"")"
wait_event ".body.uuid==\"$s1\" and .body.state==\"active\"" "$E2E_WAIT" >/dev/null || fail "snapshot source not active"
guest_console_wait "$T/inst/$s1.log" "DAY2-MARK-WRITTEN" "$E2E_WAIT" ||
	fail "the mark was not written: $(tail -n 5 "$T/inst/$s1.log")"
snap=$(e2e_uuid 4)
t0=$(date +%s)
send instance.snapshot "{\"uuid\":\"$s1\",\"snapshot\":\"$snap\",\"name\":\"e2e-snap\"}"
ev=$(wait_event ".type==\"image.snapshot\" and .body.snapshot==\"$snap\" and (.body.phase==\"uploaded\" or .body.phase==\"failed\")" 120) ||
	fail "no snapshot outcome: $(grep image.snapshot "$EVENTS" | tail -n 2)"
[ "$(echo "$ev" | jq -r .body.phase)" = uploaded ] || fail "snapshot failed: $ev"
echo "$ev" | jq -r .body.quiesce | grep -qE '^paused [0-9]+ ms$' || fail "quiesce: $ev"
[ "$(virsh -c qemu:///system domstate "stratus-$s1" 2>/dev/null)" = running ] ||
	fail "the source guest is not running after its snapshot: $(virsh -c qemu:///system domstate "stratus-$s1")"
url=$(echo "$ev" | jq -r .body.url)
sum=$(echo "$ev" | jq -r .body.checksum)
file=$T/www/snapshots/$snap.qcow2
[ "$sum" = "sha256:$(sha256sum "$file" | cut -d' ' -f1)" ] || fail "checksum is not the store's file's"
qemu-img info --output=json "$file" | jq -e '."backing-filename" == null' >/dev/null || fail "not standalone"
ls "$T/inst" | grep -q snap && fail "left over: $(ls "$T/inst")"
echo "snapshot uploaded in $(( $(date +%s) - t0 )) s, $(echo "$ev" | jq -r .body.quiesce), $(echo "$ev" | jq -r .body.size) bytes"
# booted as the scheduler would register it: the store's URL and checksum, the tiny kernel
send instance.build "$(tiny_spec "$s2" ".image.name = \"e2e-snap\" | .image.url = \"$url\" | .image.checksum = \"$sum\" | .user_data = \"$udr\"")"
wait_event ".body.uuid==\"$s2\" and .body.state==\"active\"" "$E2E_WAIT" >/dev/null ||
	fail "the snapshot did not boot: $(grep "$s2" "$EVENTS" | tail -n 1)"
guest_console_wait "$T/inst/$s2.log" "DAY2-DISK-SAYS $mark" "$E2E_WAIT" ||
	fail "the snapshot's guest does not see the mark: $(grep DAY2 "$T/inst/$s2.log" | tail -n 2)"
for u in "$s1" "$s2"; do
	send instance.delete "{\"uuid\":\"$u\"}"
	wait_event ".body.uuid==\"$u\" and .body.state==\"deleted\"" "$E2E_WAIT" >/dev/null || fail "delete $u"
done
echo "e2e day2 (snapshot): ok"
