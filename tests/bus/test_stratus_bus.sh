#!/bin/sh
# stratus-bus as a user runs it, with clients in separate processes:
# stratusctl bus send/tail, kcat both ways, exit codes, a consumer killed
# before storing its offset, SIGTERM; broker.listen with fixed ports.
set -u
BUILD=${BUILD:-build}
tmp=$(mktemp -d /tmp/stratus-bus-test.XXXXXX)
bus_pid=
cleanup() {
	[ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null
	[ -n "${hang_pid:-}" ] && kill -9 "$hang_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.err; do echo "== $f"; tail -n 20 "$f"; done; exit 1; }
ctl() { "$BUILD/stratusctl" "$@"; }

export STRATUS_BUS_ADDR_FILE="$tmp/run/stratus/bus.addr"
unset STRATUS_CONFIG
# wait_addr_file FILE WHAT: stratus-bus ($bus_pid) writes its address there
wait_addr_file() {
	i=0
	while [ ! -s "$1" ]; do
		i=$((i + 1)); [ $i -gt 100 ] && fail "$2: no address file after 10 s"
		kill -0 $bus_pid 2>/dev/null || fail "$2: stratus-bus died: $(tail -n 3 "$tmp"/*.err 2>/dev/null)"
		sleep 0.1
	done
}

cat >"$tmp/stratus.yaml" <<YAML
log: {level: warn}
broker:
  partitions: 2
  topics: {stratus.events: 3, stratus.host.kt: 1}
YAML
"$BUILD/stratus-bus" -n -c "$tmp/stratus.yaml" >/dev/null || fail "stratus-bus -n rejects a good config"

"$BUILD/stratus-bus" -c "$tmp/stratus.yaml" >"$tmp/bus.out" 2>"$tmp/bus.err" &
bus_pid=$!
wait_addr_file "$STRATUS_BUS_ADDR_FILE" "stratus-bus"
addr=$(cat "$STRATUS_BUS_ADDR_FILE")
case "$addr" in 127.0.0.1:*) ;; *) fail "address '$addr' is not on loopback" ;; esac
sleep 0.2
[ "$(head -n 1 "$tmp/bus.out")" = "$addr" ] || fail "stdout does not print the address"
echo "stratus-bus at $addr"

# topics with their configured partition counts (kcat's metadata)
kcat -L -b "$addr" >"$tmp/meta" 2>"$tmp/kcat.err" || fail "kcat -L"
grep -q 'topic "stratus.events" with 3 partitions' "$tmp/meta" || fail "stratus.events partitions"
grep -q 'topic "stratus.api" with 2 partitions' "$tmp/meta" || fail "stratus.api partitions"
grep -q 'topic "stratus.metrics" with 2 partitions' "$tmp/meta" || fail "stratus.metrics partitions"

# stratusctl send -> stratusctl tail (separate processes, no options: the address file)
id=$(ctl bus send instance.boot '{"project":"acme","name":"web-1","flavor":"m1","image":"debian-12"}' 2>"$tmp/send.err") \
	|| fail "bus send"
echo "sent $id"
ctl --json bus tail stratus.api --from-beginning --count 1 --timeout 20 >"$tmp/tail.json" 2>"$tmp/tail.err" \
	|| fail "bus tail --json"
grep -q "\"id\":\"$id\",\"type\":\"instance.boot\"" "$tmp/tail.json" || fail "tail --json: $(cat "$tmp/tail.json")"
ctl bus tail stratus.api --from-beginning --count 1 --timeout 20 >"$tmp/tail.txt" 2>>"$tmp/tail.err" || fail "bus tail"
grep -q "stratus.api\[[0-9]\]@0 instance.boot id=$id .* key=acme body=" "$tmp/tail.txt" \
	|| fail "tail line: $(cat "$tmp/tail.txt")"

# kcat reads what stratusctl sent, with the design's key
kcat -C -b "$addr" -t stratus.api -e -q -f '%k %s\n' >"$tmp/kcat.out" 2>>"$tmp/kcat.err" || fail "kcat -C"
grep -q "^acme {\"v\":1,\"id\":\"$id\"" "$tmp/kcat.out" || fail "kcat -C: $(cat "$tmp/kcat.out")"

# kcat writes an envelope (and garbage); stratusctl tail shows the one, reports the other
env='{"v":1,"id":"9d6e2f7a-1b2c-4d3e-8f90-a1b2c3d4e5f6","type":"instance.state","ts":"2026-11-23T09:15:08.123Z","source":"kcat","request_id":"0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d","body":{"uuid":"0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d","project":"acme","state":"active"}}'
printf '%s\n' 'not json' "$env" | kcat -P -b "$addr" -t stratus.events -p 1 2>>"$tmp/kcat.err" || fail "kcat -P"
ctl --json bus tail stratus.events --from-beginning --count 1 --timeout 20 >"$tmp/tail2.json" 2>"$tmp/tail2.err" \
	|| fail "tail of kcat's envelope"
grep -q '"id":"9d6e2f7a-1b2c-4d3e-8f90-a1b2c3d4e5f6"' "$tmp/tail2.json" || fail "kcat's envelope not shown"
grep -q 'stratus.events\[1\]@0: invalid message: envelope: not valid JSON' "$tmp/tail2.err" \
	|| fail "garbage not reported: $(cat "$tmp/tail2.err")"

# exit codes and errors a user reads
out=$(ctl bus send instance.build '{"uuid":"0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d","name":"w","project":"a","flavor":{"name":"m","vcpus":0,"ram_mb":1,"disk_gb":1},"image":{"url":"http://x/d.raw","checksum":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","disk_format":"raw"}}' --host n1 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "invalid body: exit $rc"
[ "$out" = "stratusctl: instance.build: body.flavor.vcpus: expected an integer from 1 to 1024, got 0" ] || fail "error text: $out"
out=$(ctl bus send instance.nuke '{}' 2>&1); rc=$?
[ $rc -eq 1 ] && [ "$out" = "stratusctl: unknown message type 'instance.nuke'" ] || fail "unknown type: $rc $out"
out=$(ctl bus send instance.list '{"project":' 2>&1); rc=$?
[ $rc -eq 1 ] || fail "bad JSON: exit $rc"
out=$(ctl bus send instance.build '{}' 2>&1); rc=$?
[ $rc -eq 2 ] && [ "$out" = "stratusctl: instance.build travels on stratus.host.<host>: give --host HOST or --topic" ] \
	|| fail "host command without --host: $rc $out"
ctl bus send >/dev/null 2>&1; [ $? -eq 2 ] || fail "missing arguments: not exit 2"
ctl frobnicate >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown command: not exit 2"
ctl --help | grep -q "^  bus " || fail "--help lists no bus command"
ctl --bootstrap "$addr" bus send host.list '{}' >/dev/null 2>&1 || fail "--bootstrap"

# at least once across processes: a consumer SIGKILLed before its handler
# finished sees the message again when it restarts; what it acknowledged, not
h="$BUILD/tests/bus/consumer_helper"
a=$(ctl bus send instance.delete '{"uuid":"0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d"}' --host kt) || fail "send A"
"$h" killgroup stratus.host.kt ack >"$tmp/h1.out" 2>"$tmp/h1.err" || fail "helper ack"
grep -qx "got $a" "$tmp/h1.out" || fail "first consumer did not get A"
b=$(ctl bus send instance.delete '{"uuid":"0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d"}' --host kt) || fail "send B"
"$h" killgroup stratus.host.kt hang >"$tmp/h2.out" 2>"$tmp/h2.err" &
hang_pid=$!
i=0
until grep -qx "got $b" "$tmp/h2.out" 2>/dev/null; do
	i=$((i + 1)); [ $i -gt 300 ] && fail "hanging consumer never got B"
	sleep 0.1
done
sleep 1.5 # past an auto-commit interval: only stored offsets are committed
kill -9 $hang_pid
wait $hang_pid 2>/dev/null
hang_pid=
"$h" killgroup stratus.host.kt ack >"$tmp/h3.out" 2>"$tmp/h3.err" || fail "restarted consumer got nothing"
grep -qx "got $b" "$tmp/h3.out" || fail "restarted consumer did not see B again: $(cat "$tmp/h3.out")"
echo "killed consumer: B ($b) delivered again"

# SIGTERM: clean exit, address file removed
kill -TERM $bus_pid
wait $bus_pid; rc=$?
bus_pid=
[ $rc -eq 0 ] || fail "stratus-bus exit $rc on SIGTERM"
[ ! -e "$STRATUS_BUS_ADDR_FILE" ] || fail "address file left behind"

# broker.listen with a port: two brokers on PORT and PORT+1, advertised so,
# and the same ports again at once after a restart
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
[ "$port" -lt 65535 ] || port=40000
cat >"$tmp/listen.yaml" <<YAML
log: {level: warn}
broker: {brokers: 2, listen: "127.0.0.1:$port", address_file: $tmp/listen.addr}
YAML
for round in 1 2; do
	"$BUILD/stratus-bus" -c "$tmp/listen.yaml" >"$tmp/listen.out" 2>"$tmp/listen.err" &
	bus_pid=$!
	wait_addr_file "$tmp/listen.addr" "broker.listen (round $round)"
	[ "$(cat "$tmp/listen.addr")" = "127.0.0.1:$port,127.0.0.1:$((port + 1))" ] ||
		fail "broker.listen: address $(cat "$tmp/listen.addr")"
	kcat -L -b "127.0.0.1:$port" >"$tmp/meta" 2>>"$tmp/kcat.err" || fail "kcat -L on the fixed port"
	grep -q "broker 2 at 127.0.0.1:$((port + 1))" "$tmp/meta" || fail "advertised: $(cat "$tmp/meta")"
	kill -TERM $bus_pid
	wait $bus_pid || fail "stratus-bus (broker.listen) exit status"
	bus_pid=
done
# an address this machine does not have (TEST-NET-1): a clear error, exit 1
printf 'broker: {listen: "192.0.2.1:%s", address_file: %s}\n' "$port" "$tmp/none.addr" >"$tmp/bad.yaml"
"$BUILD/stratus-bus" -c "$tmp/bad.yaml" >/dev/null 2>"$tmp/bad.err"
rc=$?
[ $rc = 1 ] || fail "broker.listen on a foreign address: exit $rc"
grep -q "cannot listen on 192.0.2.1:$port: Cannot assign requested address (broker.listen must be an address of this machine)" \
	"$tmp/bad.err" || fail "foreign address error: $(cat "$tmp/bad.err")"
[ ! -e "$tmp/none.addr" ] || fail "a failed start wrote an address file"
echo "broker.listen: fixed ports, restart, foreign address refused"
echo "PASS"
