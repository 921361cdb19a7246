#!/bin/sh
# The tiny guest without a seed disk, with stratus.ip=/stratus.gw=/stratus.md=
# on its kernel command line, fetches meta_data.json and user_data over HTTP
# (QEMU user networking: 10.0.2.2 is the host's loopback, where this test
# serves a fake metadata tree) and runs the #! user-data. QEMU directly, no
# libvirt: about 10 s.
# suite: e2e
set -u
top=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$top/tests/lib/libvirt.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }

guest_tiny_build || fail "building the tiny guest"
tmp=$(mktemp -d) || fail mktemp
port=19$(($$ % 900 + 100))
srv="" qp=""
cleanup() {
	[ -n "$qp" ] && kill "$qp" 2>/dev/null
	[ -n "$srv" ] && kill "$srv" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

uuid=$(cat /proc/sys/kernel/random/uuid)
mkdir -p "$tmp/md/openstack/latest"
printf '{"uuid": "%s", "hostname": "md-tiny", "name": "t"}\n' "$uuid" >"$tmp/md/openstack/latest/meta_data.json"
printf '#!/bin/sh\necho "MD-USERDATA-RAN %s"\n' "$uuid" >"$tmp/md/openstack/latest/user_data"
(cd "$tmp/md" && exec python3 -m http.server "$port" --bind 127.0.0.1) >"$tmp/http.log" 2>&1 &
srv=$!
n=0
until curl -sf -o /dev/null "http://127.0.0.1:$port/openstack/latest/meta_data.json"; do
	n=$((n + 1))
	[ $n -lt 50 ] || fail "the fake metadata server did not start: $(cat "$tmp/http.log")"
	sleep 0.1
done

qemu-system-x86_64 -machine pc,accel=tcg -m 128 -display none -no-reboot \
	-kernel "$TINY_KERNEL" -initrd "$TINY_INITRD" \
	-append "console=ttyS0 stratus.ip=10.0.2.15/24 stratus.gw=10.0.2.2 stratus.md=http://10.0.2.2:$port" \
	-nic user,model=virtio-net-pci -serial "file:$tmp/console.log" -monitor none &
qp=$!
guest_console_wait "$tmp/console.log" '^STRATUS-GUEST: ready' 90 || fail "the guest did not reach ready"
c=$tmp/console.log
grep -q '^STRATUS-GUEST: seed none' "$c" || fail "the guest saw a seed disk"
grep -q '^STRATUS-GUEST: net 10.0.2.15/24 via 10.0.2.2 dev=eth0' "$c" || fail "no static network: $(grep 'net ' "$c")"
grep -q "^STRATUS-GUEST: metadata-service uuid=$uuid hostname=md-tiny" "$c" ||
	fail "metadata not fetched: $(grep 'metadata' "$c")"
grep -q "^MD-USERDATA-RAN $uuid" "$c" || fail "the metadata service's user-data did not run"
echo "PASS: tiny guest fetched its metadata ($uuid) and user-data over HTTP"
