#!/bin/sh
# No message is lost to a neighbour (docs/bus.md "Size limits"), on every
# topic a daemon consumes: stratus.api (scheduler), stratus.host.hv1
# (agent), stratus.events (scheduler), stratus.metrics (scheduler). On each,
# kcat writes a message of exactly bus.max_message_bytes (1 MiB, junk: it
# reaches the consumer, which answers it as invalid JSON, not as too large),
# then 2 MB and 10 MB (refused by stratus-bus: kcat's delivery fails). Then a
# boot through stratusctl, which needs all four consumers, goes active, and
# every junk message has its error answer on stratus.events.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
trap stack_down EXIT
agent_env_up
cat >>"$T/stratus.yaml" <<EOF
$(stack_scheduler_yaml)
  missed_heartbeats: 5
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
EOF
stack_scheduler_start
agent_start
stack_host_known
addr=$(cat "$T/bus.addr")

junk() { # BYTES: one line of that many bytes (no newline inside)
	head -c "$1" /dev/zero | tr '\0' x
}
produce() { # TOPIC BYTES: exit status of kcat's delivery
	junk "$2" | kcat -P -b "$addr" -t "$1" -k oversized -X message.max.bytes=20000000 \
		-X message.timeout.ms=8000 -X socket.timeout.ms=8000 2>>"$T/kcat.err"
}

limit=1048576
for topic in stratus.api stratus.host.hv1 stratus.events stratus.metrics; do
	produce "$topic" "$limit" || fail "$topic: a message of exactly the limit was refused: $(tail -n 3 "$T/kcat.err")"
	for big in 2000000 10000000; do
		if produce "$topic" "$big"; then
			fail "$topic: stratus-bus accepted a $big-byte message (limit $limit)"
		fi
	done
done

# the next good requests on those partitions are answered
ctl boot web-1 --flavor m1.small --image tiny --timeout 90 >"$T/boot.out" 2>&1 ||
	fail "boot after the oversized messages: $(cat "$T/boot.out")"
[ "$(ctl --json show web-1 | jq -r .state)" = active ] || fail "web-1 not active"
sleep 2
ctl --json host list | jq -e '.[0].name == "hv1" and .[0].state == "up"' >/dev/null ||
	fail "host not up after junk on stratus.metrics: $(ctl --json host list)"

# every exact-limit junk message was answered as what it is: not JSON, not too large
for topic in stratus.api stratus.host.hv1 stratus.events stratus.metrics; do
	jq -e -s --arg t "$topic" 'map(select(.type == "request.result" and .body.ok == false
		and .body.data.topic == $t and (.body.error | test("not valid JSON"))))
		| length >= 1' "$EVENTS" >/dev/null ||
		fail "$topic: no error answer for the junk message: $(grep -c . "$EVENTS") events"
done
if grep -q 'more than the limit' "$EVENTS"; then
	fail "a message of exactly the limit was answered as too large"
fi
for d in scheduler agent; do
	pid=$(cat "$T/$d.pid")
	kill -0 "$pid" 2>/dev/null || fail "$d died"
done
echo "oversized: exact-limit junk answered on 4 topics, 2 MB and 10 MB refused by stratus-bus, the next boot went active"
