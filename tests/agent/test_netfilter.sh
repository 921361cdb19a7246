#!/bin/sh
# Anti-spoofing port filters (agent/netfilter.c), fast: no guest, no system
# libvirtd. Runs in network namespaces of its own (prefix nia).
#   1. golden files: tests/agent/data/netfilter/NAME.json (a spec with its
#      network) -> NAME.nft, the script `stratus-agent port-filter render`
#      prints (REGENERATE=1 rewrites them); fail-NAME.json -> fail-NAME.err,
#      the exact refusal, nothing on stdout; every golden script loads (nft -c).
#   2. the agent on libvirt's test driver with vmm.bridge set, the bus and
#      the agent inside a namespace; a veth stands in for the instance's tap
#      (its name is the domain's <target dev>), its peer in a "guest"
#      namespace with the instance's MAC and address: the guest's traffic
#      passes; with another address, then another MAC, it is dropped at the
#      host and counted (`port-filter drops`), the own traffic still passes.
#   3. reconcile: a port chain removed by hand is restored (log line and
#      stratus_agent_port_filters_restored_total), a deleted table (a host
#      restart) is rebuilt, a stale port chain removed; kill -9 of the agent
#      leaves the filter in place; delete removes it; a missing nft stops
#      the agent with a message naming it.
set -u
NSA=${NSA:-nia-ag$$} NSG=${NSG:-nia-gu$$}
if [ -z "${NIA_INSIDE:-}" ]; then
	command -v nft >/dev/null || { echo "SKIP: nft is not installed (deps/test-agent.txt)"; exit 77; }
	ip netns add "$NSA" || { echo "SKIP: cannot create network namespaces"; exit 77; }
	ip netns add "$NSG" || { ip netns del "$NSA"; exit 77; }
	NIA_INSIDE=1 NSA=$NSA NSG=$NSG ip netns exec "$NSA" sh "$0"
	rc=$?
	ip netns del "$NSG"
	ip netns del "$NSA"
	exit $rc
fi
ip link set lo up
. "$STRATUS_TOP/tests/agent/lib.sh"
trap agent_env_down EXIT
D=$STRATUS_TOP/tests/agent/data/netfilter
BR=nia-br0

# ---- 1. golden files and refusals -------------------------------------------
for j in "$D"/*.json; do
	n=${j%.json}
	case $(basename "$n") in
	fail-*)
		"$B/stratus-agent" port-filter render --bridge $BR "$j" >"$T/out" 2>"$T/err"
		rc=$?
		[ $rc -eq 1 ] || fail "$j: exit $rc, expected 1 (refused)"
		[ ! -s "$T/out" ] || fail "$j: refused but printed a script"
		sed "s|$D/||" "$T/err" >"$T/err.rel"
		if [ -n "${REGENERATE:-}" ]; then cp "$T/err.rel" "$n.err"; fi
		diff -u "$n.err" "$T/err.rel" || fail "$j: message differs"
		;;
	*)
		"$B/stratus-agent" port-filter render --bridge $BR "$j" >"$T/out" 2>"$T/err" ||
			fail "$j: $(cat "$T/err")"
		if [ -n "${REGENERATE:-}" ]; then cp "$T/out" "$n.nft"; fi
		diff -u "$n.nft" "$T/out" || fail "$j: script differs from $n.nft"
		nft -c -f "$n.nft" 2>"$T/err" || fail "$n.nft does not load: $(cat "$T/err")"
		;;
	esac
done
"$B/stratus-agent" port-filter render --bridge 'br;x' "$D/basic.json" >/dev/null 2>"$T/err" &&
	fail "a bridge name with ';' was accepted"
grep -q "bridge 'br;x': not a name nft accepts" "$T/err" || fail "bad bridge message: $(cat "$T/err")"

# ---- 2. the agent applies the filter before the guest starts ----------------
ip link add $BR type bridge && ip link set $BR up && ip addr add 10.77.0.1/24 dev $BR ||
	fail "bridge $BR"
AGENT_BRIDGE=$BR
agent_env_up
agent_start
metric() {
	curl -s "http://127.0.0.1:$METRICS_PORT/metrics" |
		sed -n "s/^$1{host=\"hv1\"} \([0-9]*\)$/\1/p"
}
[ "$(cat /proc/sys/net/ipv4/tcp_fwmark_accept)" = 1 ] || fail "agent did not set tcp_fwmark_accept"
U1=e2e00001-0000-4000-8000-00000000a001
TAP=stxe2e00001a001
send instance.build "$(spec $U1)"
ev=$(wait_event ".type==\"instance.state\" and .body.uuid==\"$U1\" and .body.state==\"active\"") ||
	fail "no active event"
MAC=$(echo "$ev" | jq -r .body.mac)
IP=$(echo "$ev" | jq -r .body.address | cut -d/ -f1)
nft list chain bridge stratus-$BR port-$TAP >"$T/chain" 2>&1 || fail "no port chain: $(cat "$T/chain")"
grep -q "ether saddr != $MAC .*drop comment \"spoof-mac\"" "$T/chain" || fail "chain lacks the MAC rule"
grep -q "ip saddr != $IP .*drop comment \"spoof-ip\"" "$T/chain" || fail "chain lacks the address rule"
grep -q "filter.*port filter applied instance=$U1 port=$TAP" "$T/agent.log" ||
	grep -q "port filter applied instance=$U1 port=$TAP" "$T/agent.log" || fail "apply not logged"
# the build step ran before define/start: its row says so
[ "$(metric stratus_agent_port_filters_applied_total)" = 1 ] || fail "applied metric"

# the tap (a veth here) and the guest behind it
ip link add $TAP type veth peer name eth0 netns "$NSG" && ip link set $TAP master $BR up || fail "veth"
G() { ip netns exec "$NSG" "$@"; }
G ip link set lo up
G ip link set eth0 address "$MAC"
G ip addr add "$IP/24" dev eth0
G ip link set eth0 up
drops() { "$B/stratus-agent" port-filter drops --bridge $BR "$U1" | sed -n "s/^$1 //p"; }
G busybox ping -c 2 -W 2 10.77.0.1 >/dev/null || fail "the guest with its own MAC and address cannot reach the host"
[ "$(drops spoof-ip)" = 0 ] && [ "$(drops spoof-mac)" = 0 ] || fail "drops counted for own traffic"

# another address (a neighbour's): dropped at the host, counted
G ip addr add 10.77.0.99/24 dev eth0
G busybox ping -c 2 -W 1 -I 10.77.0.99 10.77.0.1 >/dev/null 2>&1 && fail "a spoofed source address reached the host"
[ "$(drops spoof-ip)" -ge 1 ] || fail "no spoof-ip drops counted: $(drops spoof-ip)"
# a gratuitous ARP for the neighbour's address
G busybox arping -c 2 -U -I eth0 -s 10.77.0.99 10.77.0.99 >/dev/null 2>&1 ||
	G python3 -c 'import socket,struct
s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); s.bind(("eth0",0))
mac=bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":",""))
ip=socket.inet_aton("10.77.0.99")
arp=struct.pack("!HHBBH6s4s6s4s",1,0x800,6,4,2,mac,ip,b"\xff"*6,ip)
s.send(b"\xff"*6+mac+b"\x08\x06"+arp)'
[ "$(drops spoof-arp-ip)" -ge 1 ] || fail "a gratuitous ARP for another address was not dropped"
G ip addr del 10.77.0.99/24 dev eth0
G busybox ping -c 1 -W 2 10.77.0.1 >/dev/null || fail "own traffic dropped after the spoofing attempt"
# a DHCP server reply from the guest
G python3 -c 'import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)
s.bind(("'"$IP"'",67)); s.sendto(b"\x02"+b"\0"*299,("255.255.255.255",68))' || fail "send dhcp"
[ "$(drops dhcp-server)" -ge 1 ] || fail "a DHCP server reply from the guest was not dropped"
# another MAC
G ip link set eth0 down
G ip link set eth0 address 52:54:00:99:99:99
G ip link set eth0 up
G ip neigh flush all
G busybox ping -c 2 -W 1 10.77.0.1 >/dev/null 2>&1 && fail "a spoofed MAC reached the host"
[ "$(drops spoof-mac)" -ge 1 ] || fail "no spoof-mac drops counted"
G ip link set eth0 down
G ip link set eth0 address "$MAC"
G ip link set eth0 up

# ---- 3. reconcile restores, rebuilds, removes --------------------------------
restored0=$(metric stratus_agent_port_filters_restored_total)
nft delete element bridge stratus-$BR ports "{ \"$TAP\" }" && nft delete chain bridge stratus-$BR port-$TAP ||
	fail "removing the filter by hand"
ok=""
for _ in $(seq 60); do
	nft list chain bridge stratus-$BR port-$TAP >/dev/null 2>&1 &&
		nft list map bridge stratus-$BR ports | grep -q "$TAP" && { ok=1; break; }
	sleep 0.1
done
[ -n "$ok" ] || fail "reconcile did not restore the removed filter"
grep -q "port filter: port $TAP of instance=$U1 was missing or changed, restoring it" "$T/agent.log" ||
	fail "restore not logged"
[ "$(metric stratus_agent_port_filters_restored_total)" -gt "$restored0" ] || fail "restored metric"
# a rule deleted from the chain counts as changed
h=$(nft -a list chain bridge stratus-$BR port-$TAP | sed -n 's/.*comment "spoof-ip" # handle \([0-9]*\)/\1/p')
nft delete rule bridge stratus-$BR port-$TAP handle "$h" || fail "deleting a rule"
for _ in $(seq 60); do
	nft list chain bridge stratus-$BR port-$TAP | grep -q '"spoof-ip"' && break
	sleep 0.1
done
nft list chain bridge stratus-$BR port-$TAP | grep -q '"spoof-ip"' || fail "a deleted rule was not restored"
# the whole table gone (as after a host restart), and a stale port of no instance
nft delete table bridge stratus-$BR
for _ in $(seq 60); do nft list chain bridge stratus-$BR port-$TAP >/dev/null 2>&1 && break; sleep 0.1; done
"$B/stratus-agent" port-filter drops --bridge $BR "$U1" >/dev/null || fail "the table was not rebuilt"
printf 'add chain bridge stratus-%s port-stxdeadbeefdead\n' $BR | nft -f - || fail "stale chain"
for _ in $(seq 60); do nft list chain bridge stratus-$BR port-stxdeadbeefdead >/dev/null 2>&1 || break; sleep 0.1; done
nft list chain bridge stratus-$BR port-stxdeadbeefdead >/dev/null 2>&1 && fail "a stale port chain was not removed"
G busybox ping -c 1 -W 2 10.77.0.1 >/dev/null || fail "own traffic after the rebuild"

# kill -9: the kernel keeps the filter; the restarted agent finds it intact
# (the test driver's domain dies with the agent: the instance is in error
# then, and keeps its filter until it is deleted)
agent_kill 9
nft list chain bridge stratus-$BR port-$TAP >/dev/null 2>&1 || fail "filter gone with the agent"
G busybox ping -c 1 -W 1 -I 10.77.0.99 10.77.0.1 >/dev/null 2>&1 && fail "spoofing while the agent is down"
agent_start
sleep 2.5
[ "$(metric stratus_agent_port_filters_restored_total)" = 0 ] || fail "an intact filter was restored after restart"
[ "$(metric stratus_agent_port_filters)" = 1 ] || fail "port filter gauge: $(metric stratus_agent_port_filters)"
[ "$(nft list chain bridge stratus-$BR port-$TAP | grep -c comment)" = 13 ] || fail "rules duplicated"

# delete removes it
send instance.delete "{\"uuid\":\"$U1\"}"
wait_event ".type==\"instance.state\" and .body.uuid==\"$U1\" and .body.state==\"deleted\"" >/dev/null ||
	fail "no deleted event"
nft list chain bridge stratus-$BR port-$TAP >/dev/null 2>&1 && fail "delete left the port chain"
nft list map bridge stratus-$BR ports | grep -q "$TAP" && fail "delete left the map element"
agent_kill TERM

# a missing nft: the agent refuses to start and says why; nothing changed
sed -i "s|^  reconcile_interval: 2s|  reconcile_interval: 2s\n  network: {nft: /nonexistent/nft}|" "$T/stratus.yaml"
timeout 20 "$B/stratus-agent" -c "$T/stratus.yaml" >"$T/nonft.log" 2>&1 && fail "the agent ran without nft"
grep -q "agent.network.filter: nftables: nft: cannot run '/nonexistent/nft'" "$T/nonft.log" ||
	fail "no clear message without nft: $(tail -n 2 "$T/nonft.log")"
echo "netfilter: ok"
