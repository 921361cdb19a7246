#!/bin/sh
# stratus-metadata's edges, through the binary: who may ask (the mark the
# agent's port filters put on a guest's traffic), paths with encoded control
# characters, Forwarded: on the token PUT, a deadline for request heads, a
# cap on connections per source. Runs in a network namespace of its own
# (loopback only): 127.0.0.N sources are guests; an nftables output rule
# marks 127.0.0.3's connections as a port filter marks a guest's.
set -u
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
PY=/usr/bin/python3
T=$(mktemp -d)
NS=nia-md$$
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	ip netns del "$NS" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP PIPE
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
command -v nft >/dev/null || { echo "SKIP: nft is not installed (deps/test-agent.txt)"; exit 77; }
ip netns add "$NS" || { echo "SKIP: cannot create a network namespace"; exit 77; }
X() { ip netns exec "$NS" "$@"; }
X ip link set lo up

# instances at 127.0.0.1-4 (spec-basic with its own uuid, address and MAC)
$PY - "$T/instances.json" <<'PYEOF'
import json, sys
s = json.load(open("tests/data/spec-basic.json"))
out = []
for n in range(1, 5):
    t = json.loads(json.dumps(s))
    t["uuid"] = "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c%02x" % n
    t["hostname"] = "web-%d" % n
    t["network"]["address"] = "127.0.0.%d/8" % n
    t["network"]["mac"] = "52:54:00:12:34:%02x" % n
    out.append(t)
json.dump(out, open(sys.argv[1], "w"))
PYEOF

# start NAME CONFIG-YAML [ARGS...]: the daemon in the namespace; sets $port $pid
start() {
	name=$1
	printf 'metadata:\n%s\n' "$2" >"$T/$name.yaml"
	shift 2
	ip netns exec "$NS" "$B/stratus-metadata" -c "$T/$name.yaml" --listen 127.0.0.1:0 \
		--instances "$T/instances.json" "$@" >"$T/$name.log" 2>&1 &
	pid=$!
	pids="$pids $pid"
	port=""
	for _ in $(seq 50); do
		port=$(sed -n 's/.*listening .*port=\([0-9]*\).*/\1/p' "$T/$name.log")
		[ -n "$port" ] && break
		sleep 0.1
	done
	[ -n "$port" ] || { fail "$name did not start: $(cat "$T/$name.log")"; return 1; }
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null; }
get() { # SOURCE PATH [curl args]: the body and the status
	src=$1 p=$2
	shift 2
	X curl -s --max-time 5 --interface "$src" -w ' [%{http_code}]' "$@" "http://127.0.0.1:$port$p"
}
status() { get "$@" -o /dev/null; }

# ---- identity: only marked connections (the default port_mark 21332) ----
X nft "add table ip $NS; add chain ip $NS out { type filter hook output priority mangle; };
	add rule ip $NS out ip saddr 127.0.0.3 meta mark set 21332" ||
	fail "nft output rule in the namespace"
start marks "  rate_limit: 0" || exit 1
[ "$(X cat /proc/sys/net/ipv4/tcp_fwmark_accept)" = 1 ] ||
	fail "stratus-metadata did not turn on net.ipv4.tcp_fwmark_accept"
[ "$(get 127.0.0.3 /latest/meta-data/hostname)" = "web-3 [200]" ] ||
	fail "a marked source (an instance port) is not answered: $(get 127.0.0.3 /latest/meta-data/hostname)"
# 127.0.0.4 is an instance's address too, but its traffic crossed no port filter
[ "$(status 127.0.0.4 /latest/meta-data/hostname)" = " [404]" ] ||
	fail "an unmarked source with an instance's address was answered"
[ "$(status 127.0.0.4 /openstack/latest/meta_data.json)" = " [404]" ] ||
	fail "an unmarked source got meta_data.json"
grep -q 'request refused source=127.0.0.4 mark=0: not from an instance port' "$T/marks.log" ||
	fail "no log line for the refused source: $(tail -n 3 "$T/marks.log")"
[ "$(status 127.0.0.1 /healthz)" = " [200]" ] || fail "/healthz needs no identity"
stop

# ---- the rest with port_mark 0 (no filters on loopback) ----
start edges "  port_mark: 0
  rate_limit: 0
  header_timeout: 1s
  per_source_limit: 8" || exit 1

# paths: an encoded NUL must not end the path early, control characters 404
[ "$(status 127.0.0.1 /latest/meta-data/)" = " [200]" ] || fail "plain listing"
for p in '/latest/meta-data%00.json' '/latest/meta-data/%00' '/latest/meta-data/host%00name' \
	'/latest/meta-data/hostname%0a' '/latest/meta%01-data/' '/latest/meta-data/%7f' \
	'/openstack/latest/meta_data.json%00' '/latest/meta-data/%1F'; do
	[ "$(status 127.0.0.1 "$p")" = " [404]" ] || fail "path $p: $(status 127.0.0.1 "$p"), want 404"
done
[ "$(get 127.0.0.1 /latest/meta-data/host%6eame)" = "web-1 [200]" ] ||
	fail "an encoded ordinary character is decoded"

# Forwarded: refused on the token PUT like X-Forwarded-For
tok() { status 127.0.0.1 /latest/api/token -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$@"; }
[ "$(tok)" = " [200]" ] || fail "token PUT: $(tok)"
[ "$(tok -H 'Forwarded: for=10.0.0.9')" = " [403]" ] || fail "token PUT with Forwarded: $(tok -H 'Forwarded: for=10.0.0.9')"
[ "$(tok -H 'X-Forwarded-For: 10.0.0.9')" = " [403]" ] || fail "token PUT with X-Forwarded-For"

# a head dripped a byte at a time is cut off at header_timeout (1 s), and
# per_source_limit (8) caps what one source holds open; another source is
# still served while the first one tries 200 connections
X $PY - "$port" >"$T/slow.out" 2>&1 <<'PYEOF' || fail "slow clients: $(cat "$T/slow.out")"
import socket, sys, time
port = int(sys.argv[1])
def conn(src):
    s = socket.socket()
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s
# drip: one byte every 0.2 s; the server must close within ~1 s (+ reaper tick)
s = conn("127.0.0.2")
t0 = time.monotonic()
closed = None
for ch in b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
    try:
        s.send(bytes([ch]))
    except OSError:
        closed = time.monotonic() - t0
        break
    s.settimeout(0.2)
    try:
        if s.recv(1) == b"":
            closed = time.monotonic() - t0
            break
    except socket.timeout:
        pass
    except OSError:
        closed = time.monotonic() - t0
        break
if closed is None or closed > 2.5:
    sys.exit("a dripped head was held open %s s (header_timeout 1s)" % closed)
# 200 idle connections from one source: at most 8 stay open
held = []
for _ in range(200):
    try:
        held.append(conn("127.0.0.2"))
    except OSError:
        pass
time.sleep(0.3)
alive = 0
for c in held:
    c.setblocking(False)
    try:
        alive += c.recv(1) != b""
    except BlockingIOError:
        alive += 1
    except OSError:
        pass
if alive > 8:
    sys.exit("%d connections of one source stay open, cap is 8" % alive)
# another source is served meanwhile
o = conn("127.0.0.3")
o.sendall(b"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
o.settimeout(5)
resp = b""
while True:
    d = o.recv(4096)
    if not d:
        break
    resp += d
if b" 200 " not in resp.split(b"\r\n")[0] or not resp.endswith(b"web-3"):
    sys.exit("another source was not served: %r" % resp[:100])
print("drip closed after %.2f s, %d of 200 connections open" % (closed, alive))
PYEOF
cat "$T/slow.out"
# the held ones are cut at the deadline too: the server serves the first source again
sleep 1.5
[ "$(get 127.0.0.2 /latest/meta-data/hostname)" = "web-2 [200]" ] ||
	fail "the first source is not served once its idle connections were cut"
kill -0 "$pid" 2>/dev/null || fail "stratus-metadata died: $(tail -n 5 "$T/edges.log")"
stop

if [ $fails -ne 0 ]; then
	echo "$fails failure(s)"
	exit 1
fi
echo "metadata edges: ok"
