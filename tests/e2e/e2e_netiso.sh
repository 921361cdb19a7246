#!/bin/sh
# Anti-spoofing and metadata identity with real guests and real packets
# (libvirtd + QEMU, the tiny guest, a bridge of this test with dnsmasq,
# stratus-metadata on 169.254.169.254 reading the agent's store). Run it
# under the libvirt lock: flock /tmp/stratus-libvirt.lock make check TESTS=e2e_netiso
#   A (project a) takes its own address from its command line
#     (stratus.ip=) and reads its metadata from the service;
#   B (project b) claims A's address: no metadata of A (it gets nothing,
#     its frames are dropped at its port, counted as spoof-ip);
#   C (project b) claims A's address and A's MAC (stratus.mac=): no metadata
#     either, counted as spoof-mac; the bridge keeps A's MAC on A's port;
#   A keeps its traffic: the host reaches it at its MAC throughout;
#   a third machine on the bridge that is no instance port (a netns and a
#     veth) with A's address gets 404 from the metadata service, logged;
#   the filters survive kill -9 of the agent and a libvirtd restart, a
#   filter removed by hand is restored by reconcile; delete removes them.
set -u
. "$STRATUS_TOP/tests/e2e/lib.sh"
NS=nia-e2e$$
down() {
	ip netns del "$NS" 2>/dev/null
	ip link del nia-v$$ 2>/dev/null
	e2e_down
}
trap down EXIT
trap 'exit 1' INT TERM
command -v nft >/dev/null || { echo "SKIP: nft is not installed"; exit 77; }
eval "$(sh "$STRATUS_TOP/tests/guest/build-tiny.sh" 2>"$T/tiny.log" | grep -E '^(kernel|initrd|disk|cmdline)=')" ||
	fail "tiny guest build: $(tail -n 5 "$T/tiny.log")"
TINY_DISK=$disk TINY_KERNEL=$kernel TINY_INITRD=$initrd TINY_CMDLINE=$cmdline
libvirt_up || fail "libvirtd did not start"
e2e_bridge_up # sets AGENT_BRIDGE and AGENT_NETWORK
agent_env_up qemu:///system
cat >>"$T/stratus.yaml" <<EOF
metadata:
  listen: 169.254.169.254:80
  store: $T/state/agent.db
  rate_limit: 0
EOF
agent_start
if ss -Hltn | awk '{print $4}' | grep -Eq '^(169\.254\.169\.254|0\.0\.0\.0|\*):80$'; then
	echo "SKIP: something already listens on 169.254.169.254:80"
	exit 77
fi
"$B/stratus-metadata" -c "$T/stratus.yaml" >"$T/metadata.log" 2>&1 &
echo $! >"$T/metadata.pid"
for _ in $(seq 50); do curl -s -o /dev/null http://169.254.169.254/healthz && break; sleep 0.1; done
curl -s -o /dev/null http://169.254.169.254/healthz || fail "stratus-metadata: $(tail -n 3 "$T/metadata.log")"

TABLE=stratus-$E2E_BRIDGE
# the agent allocates the lowest free address (the metadata service finds
# instances through the store's allocations): A, booted first, gets .10
IPA=$E2E_NET.10
UA=$(e2e_uuid 1) UB=$(e2e_uuid 2) UC=$(e2e_uuid 3)
tap() { echo "stx$(echo "$1" | cut -c1-8)$(echo "$1" | cut -c33-36)"; }
# boot UUID PROJECT CMDLINE-EXTRA; waits for active, sets $addr and $mac
boot() {
	send instance.build "$(tiny_spec "$1" ".project = \"$2\" | .seed = \"none\" |
		.image.cmdline += \" $3\"")"
	ev=$(wait_event ".body.uuid==\"$1\" and .body.state==\"active\"" "$E2E_WAIT") ||
		fail "$1 not active: $(grep "$1" "$EVENTS" | tail -n 1)"
	addr=$(echo "$ev" | jq -r .body.address | cut -d/ -f1)
	mac=$(echo "$ev" | jq -r .body.mac)
}
drops() { "$B/stratus-agent" port-filter drops --bridge "$E2E_BRIDGE" "$1" | sed -n "s/^$2 //p"; }
a_reachable() {
	busybox ping -c 2 -W 2 "$IPA" >/dev/null 2>&1 || return 1
	ip neigh show "$IPA" dev "$E2E_BRIDGE" | grep -q "lladdr $MACA"
}

boot "$UA" a "stratus.ip=$IPA/24 stratus.gw=$E2E_NET.1"
[ "$addr" = "$IPA" ] || fail "A got $addr, not $IPA"
MACA=$mac
virsh -c qemu:///system dumpxml "stratus-$UA" | grep -q "<target dev='$(tap "$UA")'/>" ||
	fail "A's NIC is not on its filtered port $(tap "$UA")"
guest_console_wait "$T/inst/$UA.log" "STRATUS-GUEST: (metadata-service|ready)" "$E2E_WAIT" || fail "A did not boot"
grep -q "STRATUS-GUEST: metadata-service uuid=$UA" "$T/inst/$UA.log" ||
	fail "A did not get its own metadata: $(grep STRATUS-GUEST "$T/inst/$UA.log" | tail -n 3); metadata: $(tail -n 3 "$T/metadata.log")"
a_reachable || fail "the host cannot reach A"

# B claims A's address
boot "$UB" b "stratus.ip=$IPA/24 stratus.gw=$E2E_NET.1"
guest_console_wait "$T/inst/$UB.log" "STRATUS-GUEST: ready" "$E2E_WAIT" || fail "B did not boot"
grep -q "uuid=$UA" "$T/inst/$UB.log" && fail "B got A's metadata with A's address"
grep -q "STRATUS-GUEST: metadata-service unreachable" "$T/inst/$UB.log" ||
	fail "B's metadata fetch: $(grep STRATUS-GUEST "$T/inst/$UB.log" | tail -n 2)"
# B's ARP for the gateway claims A's address and is dropped: without an
# answer it never sends an IP packet (spoof-ip stays 0 unless it guesses)
[ "$(drops "$UB" spoof-arp-ip)" -ge 1 ] || fail "no spoof-arp-ip drops on B's port (its ARP for A's address)"
a_reachable || fail "A lost its traffic to B's claim"

# C claims A's address and A's MAC
boot "$UC" b "stratus.mac=$MACA stratus.ip=$IPA/24 stratus.gw=$E2E_NET.1"
guest_console_wait "$T/inst/$UC.log" "STRATUS-GUEST: ready" "$E2E_WAIT" || fail "C did not boot"
grep -q "STRATUS-GUEST: nic .* mac=$MACA (stratus.mac)" "$T/inst/$UC.log" || fail "C did not take A's MAC"
grep -q "uuid=$UA" "$T/inst/$UC.log" && fail "C got A's metadata with A's MAC and address"
[ "$(drops "$UC" spoof-mac)" -ge 1 ] || fail "no spoof-mac drops on C's port"
bridge fdb show br "$E2E_BRIDGE" | grep -i "$MACA" | grep -q "dev $(tap "$UA")" ||
	fail "A's MAC moved off A's port: $(bridge fdb show br "$E2E_BRIDGE" | grep -i "$MACA")"
a_reachable || fail "A lost its traffic to C's claim"
echo "drops: B spoof-ip=$(drops "$UB" spoof-ip) spoof-arp-ip=$(drops "$UB" spoof-arp-ip); C spoof-mac=$(drops "$UC" spoof-mac)"

# a machine on the bridge that is no instance port, with A's address
ip netns add "$NS" && ip link add nia-v$$ type veth peer name eth0 netns "$NS" &&
	ip link set nia-v$$ master "$E2E_BRIDGE" up || fail "third machine"
ip netns exec "$NS" sh -c "ip link set lo up; ip link set eth0 up; ip addr add $E2E_NET.60/24 dev eth0;
	ip route add 169.254.169.254/32 dev eth0" || fail "third machine address"
code=$(ip netns exec "$NS" curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
	http://169.254.169.254/openstack/latest/meta_data.json)
[ "$code" = 404 ] || fail "a machine that is no instance port got $code, want 404"
ip netns exec "$NS" ip addr add "$IPA/24" dev eth0
# its port is no instance's, so nothing stops it from taking A's address on
# the host (that port is the operator's business): the answer must still be 404
ip netns exec "$NS" busybox arping -U -c 2 -I eth0 -s "$IPA" "$IPA" >/dev/null 2>&1
code=$(ip netns exec "$NS" curl -s -o /dev/null -w '%{http_code}' --max-time 5 --interface "$IPA" \
	http://169.254.169.254/openstack/latest/meta_data.json)
[ "$code" = 404 ] || fail "a machine on the bridge with A's address got $code, want 404"
grep -q "request refused source=$IPA mark=0: not from an instance port" "$T/metadata.log" ||
	fail "no log line for the third machine: $(tail -n 3 "$T/metadata.log")"
ip netns del "$NS"
ip neigh del "$IPA" dev "$E2E_BRIDGE" 2>/dev/null
a_reachable || fail "A's traffic once the third machine is gone"

# kill -9 of the agent, then a libvirtd restart while it is down: the filters
# stay (nothing could have put them back), and the restarted agent finds them
agent_kill 9
[ "$(drops "$UB" spoof-arp-ip)" -ge 1 ] || fail "B's filter gone with the agent"
libvirt_restart || fail "libvirtd restart"
mv "$T/agent.log" "$T/agent.log.1" # agent_start waits for the new "agent running"
agent_start
sleep 3
for u in "$UA" "$UB" "$UC"; do
	"$B/stratus-agent" port-filter drops --bridge "$E2E_BRIDGE" "$u" >/dev/null ||
		fail "filter of $u gone after kill -9 and a libvirtd restart"
done
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -q '^stratus_agent_port_filters{host="hv1"} 3$' ||
	fail "port filter gauge: $(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep port_filters)"
# removed by hand: restored by reconcile (every 2 s here)
nft delete element bridge "$TABLE" ports "{ \"$(tap "$UB")\" }"
nft delete chain bridge "$TABLE" "port-$(tap "$UB")"
ok=""
for _ in $(seq 100); do
	"$B/stratus-agent" port-filter drops --bridge "$E2E_BRIDGE" "$UB" >/dev/null 2>&1 && { ok=1; break; }
	sleep 0.1
done
[ -n "$ok" ] || fail "reconcile did not restore B's filter"
grep -q "port filter: port $(tap "$UB") of instance=$UB was missing or changed, restoring it" "$T/agent.log" ||
	fail "the restore was not logged"
a_reachable || fail "A's traffic after the restarts"

for u in "$UA" "$UB" "$UC"; do send instance.delete "{\"uuid\":\"$u\"}"; done
for u in "$UA" "$UB" "$UC"; do
	wait_event ".body.uuid==\"$u\" and .body.state==\"deleted\"" "$E2E_WAIT" >/dev/null || fail "delete $u"
	nft list chain bridge "$TABLE" "port-$(tap "$u")" >/dev/null 2>&1 && fail "delete left the filter of $u"
done
echo "e2e netiso: ok"
