#!/bin/sh
# Flavors' ephemeral_gb and swap_mb through the binaries a user runs, on
# libvirt's test driver: stratusctl flavor add takes them (and refuses bad
# values, changing nothing), the scheduler counts them in the host's disk,
# the agent makes the two formatted qcow2 files beside the root disk (ext4
# labelled ephemeral0, swap labelled swap: blkid on their raw content),
# keeps them over reboot and stop/start, makes new ones on rebuild and
# removes them with the instance.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
ld_down() {
	[ -f "$T/scheduler.pid" ] && kill "$(cat "$T/scheduler.pid")" 2>/dev/null
	agent_env_down
}
trap ld_down EXIT
agent_env_up
cat >>"$T/stratus.yaml" <<EOT
scheduler:
  state_path: $T/scheduler.db
  key_dir: $T/sched
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
EOT
"$B/stratus-scheduler" -c "$T/stratus.yaml" >>"$T/scheduler.log" 2>&1 &
echo $! >"$T/scheduler.pid"
agent_start
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
ctl() { "$B/stratusctl" -c "$T/stratus.yaml" -p acme "$@"; }

# ---- flavor add: accepted and refused values ----
ctl flavor add m1.local --vcpus 1 --ram-mb 512 --disk-gb 1 --ephemeral-gb 1 --swap-mb 64 \
	>"$T/add.out" 2>&1 || fail "flavor add with ephemeral and swap: $(cat "$T/add.out")"
row=$(ctl --json flavor list | jq -c '.[] | select(.name == "m1.local") | [.ephemeral_gb, .swap_mb]')
[ "$row" = "[1,64]" ] || fail "flavor list: m1.local ephemeral/swap $row, want [1,64]"
ctl flavor list | grep -q "EPHEMERAL_GB  SWAP_MB" || fail "flavor list header: $(ctl flavor list)"
refused() { # WHAT EXPECTED-TEXT ARGS...
	what=$1 want=$2
	shift 2
	if ctl flavor add m1.bad --vcpus 1 --ram-mb 512 "$@" >"$T/bad.out" 2>&1; then
		fail "$what: accepted"
	fi
	grep -qF -- "$want" "$T/bad.out" || fail "$what: message '$(cat "$T/bad.out")', want '$want'"
	ctl --json flavor list | jq -e '.[] | select(.name == "m1.bad")' >/dev/null &&
		fail "$what: a refused flavor was added"
	echo "ok   refused: $what"
}
refused "swap too large" "flavor m1.bad: swap_mb: expected an integer from 0 to 1048576" --swap-mb 1048577
refused "ephemeral too large" "flavor m1.bad: ephemeral_gb: expected an integer from 0 to 65536" \
	--ephemeral-gb 65537
refused "negative ephemeral" "--ephemeral-gb: expected a number, got '-1'" --ephemeral-gb -1
refused "ephemeral not a number" "--swap-mb: expected a number, got 'lots'" --swap-mb lots
if ctl image add bad --url file:///x --checksum "sha256:$IMAGE_SUM" --swap-mb 1 >"$T/bad.out" 2>&1; then
	fail "image add --swap-mb: accepted"
fi
grep -q "swap-mb is for flavor add" "$T/bad.out" || fail "image add --swap-mb: $(cat "$T/bad.out")"

# ---- boot: the files, their format, the host's disk ----
ctl boot web-1 --flavor m1.local --image tiny --timeout 60 >"$T/boot.out" 2>&1 ||
	fail "boot: $(cat "$T/boot.out")"
uuid=$(ctl --json show web-1 | jq -r .uuid)
eph=$T/inst/$uuid.ephemeral0.qcow2 swp=$T/inst/$uuid.swap.qcow2
[ -f "$eph" ] && [ -f "$swp" ] || fail "no local disks in $T/inst: $(ls "$T/inst")"
[ "$(qemu-img info --output=json "$eph" | jq -r '.format, ."virtual-size"' | tr '\n' ' ')" = \
	"qcow2 1073741824 " ] || fail "ephemeral disk: $(qemu-img info "$eph")"
[ "$(qemu-img info --output=json "$swp" | jq -r '.format, ."virtual-size"' | tr '\n' ' ')" = \
	"qcow2 67108864 " ] || fail "swap disk: $(qemu-img info "$swp")"
qemu-img convert -O raw "$eph" "$T/eph.raw" && qemu-img convert -O raw "$swp" "$T/swp.raw"
[ "$(blkid -o value -s TYPE "$T/eph.raw") $(blkid -o value -s LABEL "$T/eph.raw")" = "ext4 ephemeral0" ] ||
	fail "ephemeral disk content: $(blkid "$T/eph.raw")"
[ "$(blkid -o value -s TYPE "$T/swp.raw") $(blkid -o value -s LABEL "$T/swp.raw")" = "swap swap" ] ||
	fail "swap disk content: $(blkid "$T/swp.raw")"
rm -f "$T/eph.raw" "$T/swp.raw"
# the scheduler's claim: root 1 + ephemeral 1 + swap 64 MB (1 GB, rounded up)
used=$(ctl --json host list | jq '.[] | select(.name == "hv1") | .disk_gb.used')
[ "$used" = 3 ] || fail "host disk used $used GB, want 3 (1 root + 1 ephemeral + 1 swap)"
echo "ok   boot: ephemeral (ext4 ephemeral0) and swap disks, 3 GB claimed"

# ---- kept over reboot and stop/start ----
ino() { stat -c %i "$eph" "$swp" | tr '\n' ' '; }
before=$(ino)
ctl reboot web-1 --timeout 60 >/dev/null 2>&1 || fail "reboot"
ctl stop web-1 --timeout 60 >/dev/null 2>&1 || fail "stop"
ctl start web-1 --timeout 60 >/dev/null 2>&1 || fail "start"
[ "$(ino)" = "$before" ] || fail "local disks replaced over reboot/stop/start"
echo "ok   kept over reboot, stop and start"

# ---- rebuild: new local disks (Nova's rebuild) ----
# hard links keep the old files' inodes alive: a new file cannot reuse them
ln "$eph" "$T/old-eph" && ln "$swp" "$T/old-swp" || fail "links to the old local disks"
ctl rebuild web-1 --timeout 60 >"$T/rebuild.out" 2>&1 || fail "rebuild: $(cat "$T/rebuild.out")"
[ -f "$eph" ] && [ -f "$swp" ] || fail "rebuild: local disks gone"
[ "$(stat -c %i "$eph")" != "$(stat -c %i "$T/old-eph")" ] &&
	[ "$(stat -c %i "$swp")" != "$(stat -c %i "$T/old-swp")" ] || fail "rebuild kept the old local disks"
rm -f "$T/old-eph" "$T/old-swp"
echo "ok   rebuild: new local disks"

# ---- delete: removed with the instance ----
ctl delete web-1 --timeout 60 >/dev/null 2>&1 || fail "delete"
[ ! -e "$eph" ] && [ ! -e "$swp" ] || fail "local disks left after delete: $(ls "$T/inst")"
used=$(ctl --json host list | jq '.[] | select(.name == "hv1") | .disk_gb.used')
[ "$used" = 0 ] || fail "host disk used $used GB after delete"
# a flavor without them makes none
ctl boot web-2 --flavor m1.small --image tiny --timeout 60 >/dev/null 2>&1 || fail "boot m1.small"
ls "$T/inst" | grep -q "ephemeral0\|swap" && fail "m1.small got local disks: $(ls "$T/inst")"
echo "local disks test: ok"
