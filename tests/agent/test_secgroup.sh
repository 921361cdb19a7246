#!/bin/sh
# Security groups (scheduler/secgroups.c, agent/secgroup.c), fast: no guest,
# no system libvirtd. Network namespaces of its own (prefix sg).
#   1. golden files: tests/agent/data/secgroup/NAME.json (secgroup.apply
#      inputs) -> NAME.nft, what `stratus-agent secgroup render` prints
#      (REGENERATE=1 rewrites them); fail-NAME.json -> fail-NAME.err, the
#      exact refusal; every golden script loads (nft -c).
#   2. the whole stack (bus, scheduler, agent on the test driver with a
#      bridge) in a namespace, driven by stratusctl: two instances of
#      project alpha, one of beta, one of beta in a group without rules;
#      veths stand in for their taps, their peers in "guest" namespaces with
#      the instances' MAC and address. Real TCP and ICMP:
#      same default group allowed; the other project refused both ways; a
#      rule added opens a port within seconds, and return traffic of that
#      connection passes although no rule admits it (established); the rule
#      deleted closes it; DHCP, DNS and metadata pass from a port whose
#      groups allow nothing; bad rules and requests refused, nothing changed;
#      a member cannot act on another project's groups; a group in use or
#      `default` cannot be deleted; a membership change is a set change;
#      reconcile restores a removed chain and a set's members changed by hand;
#      a restarted agent removes shared chains and sets no port uses.
set -u
START=$(date +%s)
step() { echo "[$(( $(date +%s) - START ))s] $*"; }
NSA=${NSA:-sg-ag$$}
if [ -z "${SG_INSIDE:-}" ]; then
	command -v nft >/dev/null || { echo "SKIP: nft is not installed (deps/test-agent.txt)"; exit 77; }
	ip netns add "$NSA" || { echo "SKIP: cannot create network namespaces"; exit 77; }
	SG_INSIDE=1 SG_ID=$$ NSA=$NSA ip netns exec "$NSA" sh "$0"
	rc=$?
	# whatever still runs in the namespaces (the guests' listeners are
	# children of subshells): it would keep the runner's lock fd open
	for ns in "sg-a1$$" "sg-a2$$" "sg-b1$$" "sg-b2$$" "$NSA"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
	done
	for g in a1 a2 b1 b2; do ip netns del "sg-$g$$" 2>/dev/null; done
	ip netns del "$NSA"
	exit $rc
fi
ip link set lo up
. "$STRATUS_TOP/tests/agent/lib.sh"
# a directory of our own prefix (others' clean-ups take stratus-agent-test.*)
rmdir "$T"
T=$(mktemp -d /tmp/stratus-sg-test.XXXXXX)
chmod 755 "$T"
EVENTS=$T/events.jsonl
D=$STRATUS_TOP/tests/agent/data/secgroup
BR=sg-br0
PARENT=$SG_ID
stack_down() {
	for p in scheduler md dns dhcp; do
		[ -f "$T/$p.pid" ] && kill "$(cat "$T/$p.pid")" 2>/dev/null
	done
	for g in a1 a2 b1 b2; do [ -f "$T/lis-$g.pid" ] && kill $(cat "$T/lis-$g.pid") 2>/dev/null; done
	agent_env_down
}
trap stack_down EXIT

# ---- 1. golden files and refusals -------------------------------------------
for j in "$D"/*.json; do
	n=${j%.json}
	case $(basename "$n") in
	fail-*)
		"$B/stratus-agent" secgroup render --bridge $BR "$j" >"$T/out" 2>"$T/err"
		rc=$?
		[ $rc -eq 1 ] || fail "$j: exit $rc, expected 1 (refused)"
		[ ! -s "$T/out" ] || fail "$j: refused but printed a script"
		if [ -n "${REGENERATE:-}" ]; then cp "$T/err" "$n.err"; fi
		diff -u "$n.err" "$T/err" || fail "$j: message differs"
		;;
	*)
		"$B/stratus-agent" secgroup render --bridge $BR "$j" >"$T/out" 2>"$T/err" ||
			fail "$j: $(cat "$T/err")"
		if [ -n "${REGENERATE:-}" ]; then cp "$T/out" "$n.nft"; fi
		diff -u "$n.nft" "$T/out" || fail "$j: script differs from $n.nft"
		nft -c -f "$n.nft" 2>"$T/err" || fail "$n.nft does not load: $(cat "$T/err")"
		;;
	esac
done

# ---- 2. the stack --------------------------------------------------------------
step stack
ip link add $BR type bridge && ip link set $BR up && ip addr add 10.77.0.1/24 dev $BR ||
	fail "bridge $BR"
ip addr add 169.254.169.254/32 dev $BR
AGENT_BRIDGE=$BR
agent_env_up
cat >>"$T/stratus.yaml" <<EOF
$(stack_scheduler_yaml)
  missed_heartbeats: 5
  default_quotas: {instances: 10, cores: 20, ram_mb: 20480}
  flavors:
    m1.small: vcpus=1 ram_mb=256 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
EOF
stack_scheduler_start
agent_start
ctl() { "$B/stratusctl" -c "$T/stratus.yaml" "$@"; }
stack_host_known

step refusals
# refusals before anything exists: an unknown group at boot, before placement
ctl -p alpha boot x --flavor m1.small --image tiny --security-group nosuch --timeout 20 \
	>"$T/out" 2>&1 && fail "boot with an unknown security group accepted"
grep -q "security group 'nosuch' not found in project alpha (known: default)" "$T/out" ||
	fail "unknown group message: $(cat "$T/out")"
ctl -p alpha --json list | jq -e 'length == 0' >/dev/null || fail "a refused boot left an instance"

# beta: a group that allows nothing (no egress either)
ctl -p beta secgroup create locked --description "no rules" >/dev/null || fail "secgroup create"
ctl -p beta secgroup create locked >"$T/out" 2>&1 && fail "a duplicate group was created"
grep -q "security group locked already exists in project beta" "$T/out" || fail "dup: $(cat "$T/out")"
ctl -p beta --json secgroup show locked | jq -e '.rules == [] and .name == "locked"' >/dev/null ||
	fail "show locked"
ctl -p beta --json secgroup show default | jq -e '.rules | length == 4' >/dev/null ||
	fail "default group: not Neutron's four rules"

for n in a1 a2; do
	ctl -p alpha boot $n --flavor m1.small --image tiny --timeout 60 >"$T/boot-$n" 2>&1 ||
		fail "boot $n: $(cat "$T/boot-$n")"
done
ctl -p beta boot b1 --flavor m1.small --image tiny --timeout 60 >"$T/boot-b1" 2>&1 ||
	fail "boot b1: $(cat "$T/boot-b1")"
ctl -p beta boot b2 --flavor m1.small --image tiny --security-group locked --timeout 60 \
	>"$T/boot-b2" 2>&1 || fail "boot b2: $(cat "$T/boot-b2")"
ctl -p beta --json show b2 >"$T/show-b2" || fail "show b2"

# the guests: a veth per instance (named as the agent names its tap)
G() { n=$1; shift; ip netns exec "sg-$n$PARENT" "$@"; }
for n in a1 a2 b1 b2; do
	p=alpha
	case $n in b*) p=beta ;; esac
	u=$(ctl -p $p --json show $n | jq -r .uuid)
	eval "U_$n=$u"
	uuid_valid=$(echo "$u" | grep -c '^[0-9a-f-]\{36\}$')
	[ "$uuid_valid" = 1 ] || fail "$n: show gave no uuid: '$u'"
	for _ in $(seq 50); do
		ip=$(db "SELECT address FROM instances WHERE uuid='$u'" | cut -d/ -f1)
		mac=$(db "SELECT mac FROM instances WHERE uuid='$u'")
		[ -n "$ip" ] && [ -n "$mac" ] && break
		sleep 0.1
	done
	[ -n "$ip" ] && [ -n "$mac" ] || fail "$n: no address in the agent's store"
	eval "IP_$n=$ip"
	tap=stx$(echo "$u" | cut -c1-8)$(echo "$u" | cut -c33-36)
	eval "TAP_$n=$tap"
	nft list chain bridge stratus-$BR sg-$tap-in >/dev/null 2>&1 || fail "$n: no sg chain for $tap"
	ip netns add "sg-$n$PARENT" || fail "netns $n"
	ip link add $tap type veth peer name eth0 netns "sg-$n$PARENT" && ip link set $tap master $BR up ||
		fail "veth $n"
	G $n ip link set lo up
	G $n ip link set eth0 address "$mac"
	G $n ip addr add "$ip/24" dev eth0
	G $n ip link set eth0 up
	G $n ip route add 169.254.169.254 via 10.77.0.1
done

# listeners: TCP on 22, 8080 and 9090 in every guest (busybox: python
# starts slowly on a loaded CI machine)
for n in a1 a2 b1 b2; do
	for port in 22 8080 9090; do
		# not through G: $! must be the listener itself (a backgrounded
		# function is a subshell, and killing it leaves nc running)
		ip netns exec "sg-$n$PARENT" busybox nc -ll -p $port -e /bin/echo hello &
		echo $! >>"$T/lis-$n.pid"
	done
done
sleep 0.5
step listeners
tcp() { # FROM IP PORT: 0 when a connection opens and the greeting comes back
	[ "$(G "$1" busybox nc -w 1 "$2" "$3" </dev/null 2>/dev/null)" = hello ]
}
ping1() { G "$1" busybox ping -c 1 -W 1 "$2" >/dev/null 2>&1; }

step traffic
# same project, default group: allowed (TCP and ICMP)
step t1
tcp a1 "$IP_a2" 22 || fail "a1 -> a2:22 refused (same default group)"
step t2
tcp a2 "$IP_a1" 9090 || fail "a2 -> a1:9090 refused (same default group)"
ping1 a1 "$IP_a2" || fail "a1 cannot ping a2 (same default group)"
step t3
# another project: refused both ways, on every port
tcp b1 "$IP_a1" 22 && fail "b1 (beta) reached a1 (alpha) on 22"
tcp a1 "$IP_b1" 22 && fail "a1 (alpha) reached b1 (beta) on 22"
ping1 b1 "$IP_a1" && fail "b1 (beta) pings a1 (alpha)"
tcp b1 "$IP_a1" 8080 && fail "b1 reached a1:8080 before any rule"
step t4
# a1's port chain jumps to the shared chain of its groups, which counts the drops
SGC_a1=$(nft list chain bridge stratus-$BR sg-$TAP_a1-in | sed -n 's/.*jump \(sgc-[0-9a-f]*-in\).*/\1/p')
[ -n "$SGC_a1" ] || fail "a1's port chain does not jump to a group chain"
drops=$(nft list chain bridge stratus-$BR "$SGC_a1" | sed -n 's/.*counter packets \([0-9]*\) .*"sg-ingress".*/\1/p')
[ "${drops:-0}" -ge 1 ] || fail "no ingress drops counted on a1's chain"

step bad-rules
# bad rules: refused with the accepted values, nothing changed
rules() { nft list chain bridge stratus-$BR "$1" | sed 's/counter packets [0-9]* bytes [0-9]*/counter/'; }
before=$(rules "$SGC_a1" | md5sum)
bad() { # WANT-MESSAGE ARGS...
	want=$1; shift
	ctl -p alpha secgroup rule add "$@" >"$T/out" 2>&1 && fail "rule accepted: $*"
	grep -qF -- "$want" "$T/out" || fail "rule $*: message: $(cat "$T/out")"
}
bad "protocol: invalid value 'gre' (accepted: tcp, udp, icmp, any)" default --direction ingress --protocol gre
bad "direction: invalid value 'in' (accepted: ingress, egress)" default --direction in
bad "remote_ip_prefix: '10.0.0.300/8' is not an IPv4 CIDR" default --direction ingress --remote-ip 10.0.0.300/8
bad "remote_ip_prefix: 10.1.2.3/8 has host bits set" default --direction ingress --remote-ip 10.1.2.3/8
bad "port range 90-80: port_range_min is above port_range_max" default --direction ingress --protocol tcp --port 90:80
bad "protocol any has no ports" default --direction ingress --port 22
bad "secgroup.rule.add: security group 'nosuchgroup' not found in project alpha" nosuchgroup --direction ingress
bad "ethertype: invalid value 'IPX' (accepted: IPv4, IPv6)" default --direction ingress --ethertype IPX
# a group of another project as remote group
bad "remote_group: security group 'locked' not found in project alpha" default --direction ingress --remote-group locked
[ "$(rules "$SGC_a1" | md5sum)" = "$before" ] || fail "a refused rule changed the chain"

# a member of alpha cannot touch beta's groups
ctl credential create --project alpha --role member --output "$T/alpha.cred" >/dev/null || fail "credential create"
STRATUS_CREDENTIAL=$T/alpha.cred ctl -p beta secgroup list >"$T/out" 2>&1 && fail "alpha's member listed beta's groups"
grep -q "is a member of project alpha, not of beta" "$T/out" || fail "member refusal: $(cat "$T/out")"
STRATUS_CREDENTIAL=$T/alpha.cred ctl -p beta secgroup rule add default --direction ingress >"$T/out" 2>&1 &&
	fail "alpha's member changed beta's rules"
STRATUS_CREDENTIAL=$T/alpha.cred ctl -p alpha --json secgroup list | jq -e 'map(.name) == ["default"]' >/dev/null ||
	fail "a member cannot list its own groups"

step rule-add
# a rule opens a port within seconds (through scheduler, bus, agent, nft)
t0=$(date +%s%N)
ctl -p alpha --json secgroup rule add default --direction ingress --protocol tcp --port 8080 \
	--remote-ip 0.0.0.0/0 >"$T/rule.json" || fail "rule add: $(cat "$T/rule.json")"
RULE=$(jq -r .id "$T/rule.json")
ok=""
for _ in $(seq 50); do tcp b1 "$IP_a1" 8080 && { ok=1; break; }; sleep 0.1; done
t1=$(date +%s%N)
[ -n "$ok" ] || fail "rule tcp 8080 added: b1 still cannot reach a1:8080"
ms=$(( (t1 - t0) / 1000000 ))
echo "rule add -> port open: ${ms} ms"
[ $ms -lt 10000 ] || fail "the rule took ${ms} ms to open the port"
# ... only that port; and the replies to b1 pass b1's ingress although no
# rule of beta admits a1: established return traffic
tcp b1 "$IP_a1" 9090 && fail "b1 reached a1:9090 (only 8080 was opened)"
tcp a1 "$IP_b1" 8080 && fail "a1 reached b1:8080 (the rule is alpha's, on alpha's ports)"
grep -q "security groups applied project=alpha ports=2 members_only=no" "$T/agent.log" ||
	fail "apply not logged"
# the rule deleted closes it
ctl -p alpha secgroup rule delete "$RULE" >/dev/null || fail "rule delete"
closed=""
for _ in $(seq 50); do tcp b1 "$IP_a1" 8080 || { closed=1; break; }; sleep 0.1; done
[ -n "$closed" ] || fail "rule deleted: a1:8080 still open to b1"
ctl -p alpha secgroup rule delete "$RULE" >"$T/out" 2>&1 && fail "a deleted rule deleted again"
grep -q "security group rule $RULE not found in project alpha" "$T/out" || fail "$(cat "$T/out")"
# ICMP per rule: beta lets alpha's network ping b1
ctl -p beta secgroup rule add default --direction ingress --protocol icmp --port 8:0 \
	--remote-ip 10.77.0.0/24 >/dev/null || fail "icmp rule"
ok=""
for _ in $(seq 50); do ping1 a1 "$IP_b1" && { ok=1; break; }; sleep 0.1; done
[ -n "$ok" ] || fail "icmp echo rule: a1 cannot ping b1"
tcp a1 "$IP_b1" 22 && fail "the icmp rule opened tcp"

step services
# DHCP, DNS and metadata from a port whose groups allow nothing
python3 -c 'import http.server,socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self): self.send_response(200); self.end_headers(); self.wfile.write(b"metadata-ok\n")
    def log_message(self,*a): pass
socketserver.TCPServer.allow_reuse_address=True
socketserver.TCPServer(("169.254.169.254",80),H).serve_forever()' &
echo $! >"$T/md.pid"
python3 -c 'import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("10.77.0.1",53))
while True:
    d,a=s.recvfrom(512); s.sendto(b"dns-ok",a)' &
echo $! >"$T/dns.pid"
python3 -c 'import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(("0.0.0.0",67))
d,a=s.recvfrom(1024); open("'"$T"'/dhcp.got","w").write("%d\n"%len(d))' &
echo $! >"$T/dhcp.pid"
sleep 0.5
G b2 busybox ping -c 1 -W 1 10.77.0.1 >/dev/null 2>&1 && fail "b2 (no egress rule) pings the host"
tcp b2 "$IP_b1" 22 && fail "b2 (no egress rule) reached b1"
G b2 python3 -c 'import urllib.request,sys
sys.exit(0 if urllib.request.urlopen("http://169.254.169.254/",timeout=2).read()==b"metadata-ok\n" else 1)' ||
	fail "b2: metadata (169.254.169.254:80) blocked by its groups"
G b2 python3 -c 'import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2); s.sendto(b"q",("10.77.0.1",53))
sys.exit(0 if s.recv(16)==b"dns-ok" else 1)' || fail "b2: DNS to the host blocked by its groups"
G b2 ip route add default via 10.77.0.1 # a route for 255.255.255.255
G b2 python3 -c 'import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)
s.bind(("0.0.0.0",68)); s.sendto(b"\x01"+b"\0"*299,("255.255.255.255",67))' || fail "send dhcp"
for _ in $(seq 20); do [ -s "$T/dhcp.got" ] && break; sleep 0.1; done
[ -s "$T/dhcp.got" ] || fail "b2: a DHCP request did not reach the host"

# groups in use and `default` cannot be deleted; nothing changes
ctl -p beta secgroup delete locked >"$T/out" 2>&1 && fail "a group in use was deleted"
grep -q "security group locked is in use by instance b2" "$T/out" || fail "in use: $(cat "$T/out")"
ctl -p beta secgroup delete default >"$T/out" 2>&1 && fail "default was deleted"
grep -q "security group default of project beta cannot be deleted" "$T/out" || fail "$(cat "$T/out")"
ctl -p beta --json secgroup list | jq -e 'map(.name) == ["default","locked"]' >/dev/null || fail "list after refusals"

step membership
# a membership change is a set element change: a2 deleted, its address leaves
# alpha's default set on a1's host, a1's chains stay as they were
ctl -p alpha delete a2 --timeout 30 >/dev/null || fail "delete a2"
gid=$(ctl -p alpha --json secgroup show default | jq -r .id)
for _ in $(seq 50); do
	nft list set bridge stratus-$BR rg4-$gid | grep -q "$IP_a2" || break
	sleep 0.1
done
nft list set bridge stratus-$BR rg4-$gid | grep -q "$IP_a2" && fail "a2's address still in default's set"
nft list set bridge stratus-$BR rg4-$gid | grep -q "$IP_a1" || fail "a1's address left default's set"
grep -q "security groups applied project=alpha ports=1 members_only=yes" "$T/agent.log" ||
	fail "the membership change rewrote chains: $(grep 'security groups applied' "$T/agent.log" | tail -n 2)"
nft list chain bridge stratus-$BR sg-$TAP_a2-in >/dev/null 2>&1 && fail "a2's chains stayed after its delete"

step reconcile
# reconcile restores a chain removed by hand; kill -9 + restart keeps them
nft delete element bridge stratus-$BR sg_in "{ \"$TAP_a1\" }" && nft delete chain bridge stratus-$BR sg-$TAP_a1-in ||
	fail "removing a1's chain by hand"
ok=""
for _ in $(seq 60); do
	nft list chain bridge stratus-$BR sg-$TAP_a1-in >/dev/null 2>&1 && { ok=1; break; }
	sleep 0.1
done
[ -n "$ok" ] || fail "reconcile did not restore a1's sg chain"
grep -q "security groups: the chains in table bridge stratus-$BR were missing or changed" "$T/agent.log" ||
	fail "restore not logged"
tcp b1 "$IP_a1" 22 && fail "b1 reaches a1 after the restore"
# the members, element by element: a1 taken out of alpha's default set and
# b1 (beta) put in by hand: reconcile puts back what it applied
SET=rg4-$gid
nft delete element bridge stratus-$BR $SET "{ $IP_a1 }" && nft add element bridge stratus-$BR $SET "{ $IP_b1 }" ||
	fail "editing $SET by hand"
ok=""
for _ in $(seq 60); do
	m=$(nft list set bridge stratus-$BR $SET)
	printf '%s' "$m" | grep -q "$IP_a1" && ! printf '%s' "$m" | grep -q "$IP_b1" && { ok=1; break; }
	sleep 0.1
done
[ -n "$ok" ] || fail "reconcile did not restore the members of $SET: $(nft list set bridge stratus-$BR $SET | grep elements)"
grep -q "security groups: set $SET in table bridge stratus-$BR has other members than applied (applied 1, found 1), restoring them" "$T/agent.log" ||
	fail "members restore not logged: $(grep 'security groups' "$T/agent.log" | tail -n 2)"
tcp b1 "$IP_a1" 22 && fail "b1 reaches a1 after the members' restore"
agent_kill 9
tcp b1 "$IP_a1" 22 && fail "b1 reaches a1 while the agent is down"
# what a crash between transactions can leave: the shared chains of a
# combination of groups no port uses any more, a group's set
STALE=sgc-00000000deadbeef
nft -f - <<NFT || fail "stale chains by hand"
add chain bridge stratus-$BR $STALE-in
add rule bridge stratus-$BR $STALE-in counter accept
add chain bridge stratus-$BR $STALE-out
add set bridge stratus-$BR rg4-5e00dead-0000-4000-8000-000000000001 { type ipv4_addr; }
NFT
agent_start
sleep 2.5
for o in "chain bridge stratus-$BR $STALE-in" "chain bridge stratus-$BR $STALE-out" \
	"set bridge stratus-$BR rg4-5e00dead-0000-4000-8000-000000000001"; do
	nft list $o >/dev/null 2>&1 && fail "a restarted agent left the stale $o"
done
grep -q "security groups: removing 3 chains and sets of groups no port uses table=stratus-$BR" "$T/agent.log" ||
	fail "stale chains' removal not logged: $(grep 'security groups' "$T/agent.log" | tail -n 2)"
nft list set bridge stratus-$BR $SET >/dev/null 2>&1 || fail "the live set $SET went with the stale ones"
tcp b1 "$IP_a1" 22 && fail "b1 reaches a1 after the agent's restart"
ping1 a1 "$IP_b1" || fail "a1 cannot ping b1 after the agent's restart (icmp rule lost)"
echo "secgroup: ok"
