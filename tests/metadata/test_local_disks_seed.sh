#!/bin/sh
# The flavor's ephemeral and swap disks in the seeds (stratus-agent seed),
# read by real cloud-init code (local_disks_check.py): the config drive's
# EC2 block-device-mapping names ephemeral0 and swap (vdb, vdc; sdb, sdc on
# hw_disk_bus=scsi; swap alone is vdb), the NoCloud vendor-data aliases
# them for cc_mounts; a flavor without them gets neither.
set -eu
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
PY=/usr/bin/python3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

mkspec() { # FILE EPHEMERAL_GB SWAP_MB DISK_BUS
	$PY - "$@" <<'PYEOF'
import json, sys
f, eph, swap, bus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = json.load(open("tests/data/spec-basic.json"))
if eph:
    s["flavor"]["ephemeral_gb"] = eph
if swap:
    s["flavor"]["swap_mb"] = swap
if bus != "virtio":
    s["image"]["properties"] = {"hw_disk_bus": bus}
json.dump(s, open(f, "w"))
PYEOF
}

# name        ephemeral swap bus     -> ephemeral0 swap
cases="
both          2         512  virtio  /dev/vdb  /dev/vdc
scsi          2         512  scsi    /dev/sdb  /dev/sdc
swap-only     0         256  virtio  -         /dev/vdb
"
echo "$cases" | while read -r name eph swap bus deph dswap; do
	[ -n "$name" ] || continue
	mkspec "$T/$name.json" "$eph" "$swap" "$bus"
	for fmt in configdrive nocloud; do
		"$B/stratus-agent" seed --instance "$T/$name.json" --format $fmt -o "$T/$name-$fmt.iso" ||
			{ echo x >>"$T/failed"; echo "FAIL: seed $name $fmt"; continue; }
		rm -rf "$T/$name-$fmt"
		xorriso -osirrox on -indev "$T/$name-$fmt.iso" -extract / "$T/$name-$fmt" >/dev/null 2>&1
		if [ "$deph" = - ]; then
			# no ephemeral: the check must fail on it, and the swap must still be found
			if $PY tests/metadata/local_disks_check.py $fmt "$T/$name-$fmt" /dev/vdb /dev/vdc 2>/dev/null; then
				echo x >>"$T/failed"; echo "FAIL: $name $fmt: an ephemeral disk that is not there was accepted"
			fi
			grep -rqs "ephemeral0" "$T/$name-$fmt" && { echo x >>"$T/failed"; echo "FAIL: $name $fmt names ephemeral0"; }
			grep -rqs "/dev/vdb" "$T/$name-$fmt" || { echo x >>"$T/failed"; echo "FAIL: $name $fmt: swap not on vdb"; }
			echo "ok   $name $fmt"
			continue
		fi
		if $PY tests/metadata/local_disks_check.py $fmt "$T/$name-$fmt" "$deph" "$dswap"; then
			echo "ok   $name $fmt"
		else
			echo x >>"$T/failed"; echo "FAIL: $name $fmt: cloud-init did not find ephemeral0 $deph and swap $dswap"
		fi
	done
done

# a flavor without local disks: empty vendor-data, no entries
mkspec "$T/none.json" 0 0 virtio
"$B/stratus-agent" seed --instance "$T/none.json" --format nocloud -o "$T/none.iso"
xorriso -osirrox on -indev "$T/none.iso" -extract / "$T/none" >/dev/null 2>&1
[ ! -s "$T/none/vendor-data" ] || fail "no local disks: vendor-data is not empty: $(cat "$T/none/vendor-data")"
"$B/stratus-agent" seed --instance "$T/none.json" --format configdrive -o "$T/none-cd.iso"
xorriso -osirrox on -indev "$T/none-cd.iso" -extract / "$T/none-cd" >/dev/null 2>&1
grep -q '"swap"\|ephemeral0' "$T/none-cd/ec2/latest/meta-data.json" && fail "no local disks: block-device-mapping names some"

[ -f "$T/failed" ] && fails=$((fails + $(wc -l <"$T/failed")))
[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "local disks in the seeds: ok"
