#!/bin/sh
# deploy/host/prepare-host.sh and serve-images.sh, inside a network namespace
# this test creates (the host's own interfaces are never touched):
#   prepare-host creates stratusbr0 with 10.77.0.1/24 and 169.254.169.254/32,
#   turns on ip_forward, starts dnsmasq on the bridge, is idempotent, and
#   --undo removes what it made; a DHCP client (busybox udhcpc) in a second
#   namespace on the bridge gets the address of its host entry (the agent's
#   format, picked up by inotify), the router, the classless route to the
#   metadata address and the DNS server; a MAC without an entry gets nothing;
#   serve-images serves a directory on 127.0.0.1 and the bridge address with
#   Range support, keeps a running instance, and stops.
# Hugepages and libvirtd are host-wide: this test runs prepare-host with
# --hugepages 0 --no-libvirt (test_tiny_guest.sh covers libvirt).
set -u
top=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "skip: needs root (network namespaces)"; exit 77; }

ns=stratus-hosttest-$$
cns=stratus-hostcli-$$
tmp=$(mktemp -d) || fail mktemp
chmod 0755 "$tmp" # dnsmasq reads the host entries as nobody
port=$((18100 + $$ % 1000))
cleanup() {
	ip netns exec "$ns" env STRATUS_RUN_DIR="$tmp/run" sh "$top/deploy/host/serve-images.sh" stop "$tmp/images" "$port" >/dev/null 2>&1
	ip netns exec "$ns" env STRATUS_HOST_STATE="$tmp/state" sh "$top/deploy/host/prepare-host.sh" --undo >/dev/null 2>&1
	ip netns del "$cns" 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ip netns add "$ns" && ip -n "$ns" link set lo up || fail "ip netns add"
in_ns() { ip netns exec "$ns" env STRATUS_HOST_STATE="$tmp/state" STRATUS_RUN_DIR="$tmp/run" STRATUS_DHCP_HOSTS_DIR="$tmp/dhcp-hosts" "$@"; }

# a new namespace may inherit the host's value (net.core.devconf_inherit_init_net)
fwd0=$(in_ns cat /proc/sys/net/ipv4/ip_forward)
in_ns sh "$top/deploy/host/prepare-host.sh" --hugepages 0 --no-libvirt --dns 10.77.0.53 >"$tmp/p1" 2>&1 || { cat "$tmp/p1"; fail "prepare-host"; }
cat "$tmp/p1"
in_ns ip -d link show dev stratusbr0 | grep -q 'bridge ' || fail "no bridge stratusbr0"
in_ns ip addr show dev stratusbr0 | grep -q 'inet 10.77.0.1/24 ' || fail "no 10.77.0.1/24 on stratusbr0"
in_ns ip addr show dev stratusbr0 | grep -q 'inet 169.254.169.254/32 ' || fail "no 169.254.169.254/32 on stratusbr0"
[ "$(in_ns cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || fail "ip_forward is not 1"

in_ns sh "$top/deploy/host/prepare-host.sh" --hugepages 0 --no-libvirt >"$tmp/p2" 2>&1 || { cat "$tmp/p2"; fail "second prepare-host"; }
grep -q created "$tmp/p2" && fail "second run created something again: $(cat "$tmp/p2")"
[ "$(in_ns ip -o addr show dev stratusbr0 | grep -c 'inet ')" = 2 ] || fail "second run changed the bridge addresses"
grep -q "dnsmasq on stratusbr0: running" "$tmp/p2" || fail "second run did not keep dnsmasq: $(cat "$tmp/p2")"
dpid=$(cat "$tmp/state/dnsmasq-stratusbr0.pid") || fail "no dnsmasq pid file"
kill -0 "$dpid" || fail "dnsmasq not running"
[ -d "$tmp/dhcp-hosts" ] || fail "no DHCP hosts directory"

# DHCP: a client namespace on the bridge through a veth pair
ip netns add "$cns" && ip -n "$cns" link set lo up || fail "ip netns add $cns"
in_ns ip link add vh0 type veth peer name vc0 netns "$cns" || fail "veth"
in_ns ip link set vh0 master stratusbr0 up
ip -n "$cns" link set vc0 address 52:54:00:4d:00:0a up
cat >"$tmp/udhcpc.sh" <<EOF
#!/bin/sh
[ "\$1" = bound ] && env | grep -E '^(ip|subnet|router|staticroutes|dns|hostname)=' | sort >"$tmp/lease"
exit 0
EOF
chmod +x "$tmp/udhcpc.sh"
dhcp_client() { # a lease into $tmp/lease, or exit 1
	rm -f "$tmp/lease"
	ip netns exec "$cns" busybox udhcpc -i vc0 -f -q -n -t 4 -T 2 -O staticroutes -s "$tmp/udhcpc.sh" >"$tmp/udhcpc.log" 2>&1
}
# an entry written after dnsmasq started, the way the agent writes it
echo "52:54:00:4d:00:0a,10.77.0.10,web-1" >"$tmp/dhcp-hosts/.e.tmp"
mv "$tmp/dhcp-hosts/.e.tmp" "$tmp/dhcp-hosts/11111111-1111-4111-8111-111111111111"
sleep 0.5
dhcp_client || fail "no DHCP lease: $(cat "$tmp/udhcpc.log"; tail -n 5 "$tmp/state/dnsmasq-stratusbr0.log")"
cat "$tmp/lease"
for want in ip=10.77.0.10 subnet=255.255.255.0 router=10.77.0.1 dns=10.77.0.53 hostname=web-1 \
	'staticroutes=169.254.169.254/32 10.77.0.1 0.0.0.0/0 10.77.0.1'; do
	grep -qx "$want" "$tmp/lease" || fail "lease lacks '$want': $(cat "$tmp/lease")"
done
# DNS on the bridge: the instance's name from its lease
ip -n "$cns" addr add 10.77.0.10/24 dev vc0
ip netns exec "$cns" busybox nslookup web-1 10.77.0.1 >"$tmp/nslookup" 2>&1
grep -Eq 'Address( 1)?:[[:space:]]*10\.77\.0\.10$' "$tmp/nslookup" ||
	fail "DNS on 10.77.0.1 does not answer web-1: $(cat "$tmp/nslookup")"
ip -n "$cns" addr flush dev vc0
# a MAC with no entry: no address (static leases only)
ip -n "$cns" link set vc0 address 52:54:00:4d:00:0b
dhcp_client && fail "a MAC without a host entry got a lease: $(cat "$tmp/lease")"
rm -f "$tmp/dhcp-hosts/11111111-1111-4111-8111-111111111111"

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
# the store's snapshots/ (tenants' private images): the agents on 127.0.0.1
# put, read and delete; a guest on the bridge can do none of it, nor list
code() { "$@" -s -o /dev/null -w '%{http_code}'; }
snap=http://127.0.0.1:$port/snapshots/s1.qcow2
[ "$(code in_ns curl -T "$tmp/images/disk.qcow2" "$snap")" = 201 ] || fail "PUT from 127.0.0.1 refused"
[ "$(code in_ns curl "$snap")" = 200 ] || fail "GET of a snapshot from 127.0.0.1 refused"
ip -n "$cns" addr add 10.77.0.10/24 dev vc0
gsnap=http://10.77.0.1:$port/snapshots
for req in "-T $tmp/images/disk.qcow2 $gsnap/evil.qcow2" "-X DELETE $gsnap/s1.qcow2" \
	"$gsnap/s1.qcow2" "$gsnap/"; do
	# shellcheck disable=SC2086
	c=$(code ip netns exec "$cns" curl $req)
	[ "$c" = 403 ] || fail "a guest's curl $req answered $c, not 403"
done
[ "$(code ip netns exec "$cns" curl "http://10.77.0.1:$port/disk.qcow2")" = 200 ] ||
	fail "a guest cannot read the public images any more"
ip -n "$cns" addr flush dev vc0
[ ! -e "$tmp/images/snapshots/evil.qcow2" ] && cmp -s "$tmp/images/snapshots/s1.qcow2" "$tmp/images/disk.qcow2" ||
	fail "a guest's refused request changed the store: $(ls "$tmp/images/snapshots")"
[ "$(code in_ns curl -X DELETE "$snap")" = 204 ] || fail "DELETE from 127.0.0.1 refused"
STRATUS_STORE_CLIENTS="10.0.0.0/8 bad;addr" in_ns sh "$top/deploy/host/serve-images.sh" start "$tmp/images" "$((port + 1))" 2>"$tmp/bad.err" &&
	fail "a bad STRATUS_STORE_CLIENTS was taken"
grep -q "STRATUS_STORE_CLIENTS: 'bad;addr' is not an address or CIDR" "$tmp/bad.err" || fail "bad clients: $(cat "$tmp/bad.err")"
in_ns sh "$top/deploy/host/serve-images.sh" stop "$tmp/images" "$port" || fail "serve-images stop"
in_ns curl -s -o /dev/null "http://127.0.0.1:$port/" && fail "still serving after stop"

in_ns sh "$top/deploy/host/prepare-host.sh" --undo || fail "--undo"
in_ns ip link show dev stratusbr0 >/dev/null 2>&1 && fail "stratusbr0 still there after --undo"
[ "$(in_ns cat /proc/sys/net/ipv4/ip_forward)" = "$fwd0" ] || fail "ip_forward not restored to $fwd0"
kill -0 "$dpid" 2>/dev/null && fail "dnsmasq still running after --undo"
[ -e "$tmp/dhcp-hosts" ] && fail "the DHCP hosts directory it created is still there after --undo"
echo "PASS: prepare-host (bridge, addresses, forwarding, DHCP, idempotent, undo) and serve-images"
