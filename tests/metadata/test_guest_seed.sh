#!/bin/sh
# Our seed ISOs read by a real guest kernel: the Stratus tiny guest
# (tests/guest/build-tiny.sh: Debian's kernel + busybox; see
# docs/guest-images.md) boots under qemu (TCG) with the seed attached, mounts
# it with its own iso9660 driver and prints what it found on the serial
# console. NoCloud goes in as a virtio disk, the config drive as an IDE cdrom
# (the two ways libvirt attaches seeds). The user-data is a shell script the
# guest runs: its marker must appear.
# suite: e2e
set -u
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
PY=/usr/bin/python3
T=$(mktemp -d)
qpid=""
cleanup() {
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP PIPE
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 missing (deps/test-guest.txt)"; exit 1; }
guest=$(sh tests/guest/build-tiny.sh) || { echo "cannot build the tiny guest"; exit 1; }
eval "$guest"

# spec-basic with a user-data script the guest runs
$PY - "$T/spec.json" <<'PYEOF'
import base64, json, sys
s = json.load(open("tests/data/spec-basic.json"))
s["hostname"] = "guest-seed-1"
s["user_data"] = base64.b64encode(b"#!/bin/sh\necho STRATUS-USERDATA-RAN marker=7f3e\n").decode()
json.dump(s, open(sys.argv[1], "w"))
PYEOF
uuid=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["uuid"])' "$T/spec.json")
ud_sha=$($PY -c 'import json,sys,base64,hashlib; print(hashlib.sha256(base64.b64decode(json.load(open(sys.argv[1]))["user_data"])).hexdigest())' "$T/spec.json")

for fmt in nocloud configdrive; do
	iso=$T/$fmt.iso
	"$B/stratus-agent" seed --instance "$T/spec.json" --format $fmt -o "$iso" || { fail "seed $fmt"; continue; }
	case $fmt in
	nocloud) label=cidata attach="-drive file=$iso,if=virtio,format=raw,readonly=on" ;;
	*) label=config-2 attach="-drive file=$iso,media=cdrom,if=ide,format=raw,readonly=on" ;;
	esac
	con=$T/$fmt.console
	: >"$con"
	# shellcheck disable=SC2086
	timeout 120 qemu-system-x86_64 -machine accel=tcg -m 256 -nographic -no-reboot \
		-kernel "$kernel" -initrd "$initrd" -append "$cmdline" $attach \
		-serial "file:$con" -display none -monitor none 2>"$T/qemu.err" &
	qpid=$!
	n=0
	while [ $n -lt 110 ] && ! grep -q "STRATUS-GUEST: ready" "$con"; do
		sleep 1
		n=$((n + 1))
	done
	kill "$qpid" 2>/dev/null
	wait "$qpid" 2>/dev/null
	qpid=""
	grep -q "STRATUS-GUEST: ready" "$con" || { fail "$fmt: the guest did not finish booting: $(tail -5 "$con") $(cat "$T/qemu.err")"; continue; }
	grep "STRATUS-GUEST: seed\|STRATUS-USERDATA\|user-data exit" "$con" | tr -d '\r' | sed "s/^/  $fmt: /"
	grep -q "STRATUS-GUEST: seed $label instance-id=$uuid " "$con" || fail "$fmt: guest did not find label $label with instance-id $uuid"
	grep -q "STRATUS-GUEST: seed hostname=guest-seed-1" "$con" || fail "$fmt: guest read another hostname"
	grep -q "STRATUS-GUEST: seed user-data bytes=[0-9]* sha256=$ud_sha" "$con" || fail "$fmt: guest read other user-data"
	grep -q "STRATUS-USERDATA-RAN marker=7f3e" "$con" || fail "$fmt: the user-data script did not run"
	grep -q "STRATUS-GUEST: user-data exit=0" "$con" || fail "$fmt: user-data exit status"
done
[ $fails -eq 0 ] && echo "guest seed: a real kernel read both seed formats"
[ $fails -eq 0 ]
