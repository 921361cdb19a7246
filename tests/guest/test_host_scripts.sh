#!/bin/sh
# deploy/host/prepare-host.sh and serve-images.sh, inside a network namespace
# this test creates (the host's own interfaces are never touched):
#   prepare-host creates stratusbr0 with 10.77.0.1/24 and 169.254.169.254/32,
#   turns on ip_forward, is idempotent, and --undo removes what it made;
#   serve-images serves a directory on 127.0.0.1 and the bridge address with
#   Range support, keeps a running instance, and stops.
# Hugepages and libvirtd are host-wide: this test runs prepare-host with
# --hugepages 0 --no-libvirt (test_tiny_guest.sh covers libvirt).
set -u
top=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "skip: needs root (network namespaces)"; exit 77; }

ns=stratus-hosttest-$$
tmp=$(mktemp -d) || fail mktemp
port=18$(($$ % 1000 + 100))
cleanup() {
	ip netns exec "$ns" env STRATUS_RUN_DIR="$tmp/run" sh "$top/deploy/host/serve-images.sh" stop "$tmp/images" "$port" >/dev/null 2>&1
	ip netns del "$ns" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ip netns add "$ns" && ip -n "$ns" link set lo up || fail "ip netns add"
in_ns() { ip netns exec "$ns" env STRATUS_HOST_STATE="$tmp/state" STRATUS_RUN_DIR="$tmp/run" "$@"; }

in_ns sh "$top/deploy/host/prepare-host.sh" --hugepages 0 --no-libvirt >"$tmp/p1" 2>&1 || { cat "$tmp/p1"; fail "prepare-host"; }
cat "$tmp/p1"
in_ns ip -d link show dev stratusbr0 | grep -q 'bridge ' || fail "no bridge stratusbr0"
in_ns ip addr show dev stratusbr0 | grep -q 'inet 10.77.0.1/24 ' || fail "no 10.77.0.1/24 on stratusbr0"
in_ns ip addr show dev stratusbr0 | grep -q 'inet 169.254.169.254/32 ' || fail "no 169.254.169.254/32 on stratusbr0"
[ "$(in_ns cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || fail "ip_forward is not 1"

in_ns sh "$top/deploy/host/prepare-host.sh" --hugepages 0 --no-libvirt >"$tmp/p2" 2>&1 || { cat "$tmp/p2"; fail "second prepare-host"; }
grep -q created "$tmp/p2" && fail "second run created something again: $(cat "$tmp/p2")"
[ "$(in_ns ip -o addr show dev stratusbr0 | grep -c 'inet ')" = 2 ] || fail "second run changed the bridge addresses"

mkdir -p "$tmp/images"
head -c 100000 /dev/urandom >"$tmp/images/disk.qcow2"
chmod 0755 "$tmp" "$tmp/images"
in_ns sh "$top/deploy/host/serve-images.sh" start "$tmp/images" "$port" || fail "serve-images start"
in_ns sh "$top/deploy/host/serve-images.sh" start "$tmp/images" "$port" | grep -q 'already serving' || fail "second start did not keep the running server"
for host in 127.0.0.1 10.77.0.1; do
	in_ns curl -sf -o "$tmp/got" "http://$host:$port/disk.qcow2" || fail "GET from $host:$port"
	cmp -s "$tmp/got" "$tmp/images/disk.qcow2" || fail "served file differs ($host)"
done
in_ns curl -sf -r 99990- -o "$tmp/tail" "http://127.0.0.1:$port/disk.qcow2" || fail "range GET"
[ "$(wc -c <"$tmp/tail")" = 10 ] || fail "range GET returned $(wc -c <"$tmp/tail") bytes, not 10"
code=$(in_ns curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/disk.qcow2")
[ "$code" = 403 ] || fail "POST answered $code, not 403"
in_ns sh "$top/deploy/host/serve-images.sh" stop "$tmp/images" "$port" || fail "serve-images stop"
in_ns curl -s -o /dev/null "http://127.0.0.1:$port/" && fail "still serving after stop"

in_ns sh "$top/deploy/host/prepare-host.sh" --undo || fail "--undo"
in_ns ip link show dev stratusbr0 >/dev/null 2>&1 && fail "stratusbr0 still there after --undo"
[ "$(in_ns cat /proc/sys/net/ipv4/ip_forward)" = 0 ] || fail "ip_forward not restored"
echo "PASS: prepare-host (bridge, addresses, forwarding, idempotent, undo) and serve-images"
