#!/bin/sh
# stratus-agent through stratus-bus on libvirt's test driver: build, duplicate
# and redelivered messages, stop/start/reboot, console, a fit it cannot make,
# malformed input, metrics checked by promtool, delete leaving nothing behind.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
trap agent_env_down EXIT
agent_env_up
agent_start

U1=11111111-1111-4111-8111-111111111111
R1=aaaaaaaa-0000-4000-8000-000000000001

# build -> active, with the time spent in each step
send instance.build "$(spec $U1)" --request-id $R1
ev=$(wait_event ".type==\"instance.state\" and .body.uuid==\"$U1\" and .body.state==\"active\"") ||
	fail "no active event"
echo "$ev" | jq -e '.body.timings_ms | has("claim") and has("image") and has("seed") and has("define") and has("start")' >/dev/null ||
	fail "active event without step timings: $ev"
echo "$ev" | jq -e ".request_id == \"$R1\"" >/dev/null || fail "event lacks the request id"
addr=$(echo "$ev" | jq -r .body.address)
[ "$addr" = "10.77.0.10/24" ] || fail "address $addr"
[ -f "$T/inst/$U1.qcow2" ] || fail "no overlay"
[ -f "$T/inst/$U1.seed.iso" ] || fail "no seed disk"
isoinfo -d -i "$T/inst/$U1.seed.iso" | grep -qi "Volume id: cidata" || fail "seed is not a cidata ISO"
[ "$(db "SELECT state FROM instances WHERE uuid='$U1'")" = active ] || fail "store state"

# the same message again (redelivery): nothing changes, the state is re-announced
send instance.build "$(spec $U1)" --request-id $R1
wait_event ".body.uuid==\"$U1\" and .body.reason==\"duplicate request\"" >/dev/null ||
	fail "duplicate not re-announced"
# the same instance under a new request id: still one instance
send instance.build "$(spec $U1)"
wait_event ".body.uuid==\"$U1\" and .body.reason==\"already on this host\"" >/dev/null ||
	fail "second build of the same uuid not refused"
[ "$(db "SELECT COUNT(*) FROM instances")" = 1 ] || fail "duplicate created an instance"
[ "$(db "SELECT COUNT(*) FROM addresses")" = 1 ] || fail "duplicate allocated an address"

# stop, start, reboot
send instance.stop "{\"uuid\":\"$U1\"}"
wait_event ".body.uuid==\"$U1\" and .body.state==\"stopped\"" >/dev/null || fail "no stopped event"
send instance.start "{\"uuid\":\"$U1\"}"
wait_event ".body.uuid==\"$U1\" and .body.state==\"active\" and .body.timings_ms==null" >/dev/null ||
	fail "no active event after start"
send instance.reboot "{\"uuid\":\"$U1\"}"
wait_event ".body.uuid==\"$U1\" and .body.state==\"rebooting\"" >/dev/null || fail "no rebooting event"
# the test driver sends no reboot event: reset after vmm.reboot_timeout (1s)
wait_event ".body.uuid==\"$U1\" and .body.state==\"active\" and .body.reason==\"hard reboot after 1 s without a guest reboot\"" >/dev/null ||
	fail "no active event after reboot"
[ "$(db "SELECT state FROM instances WHERE uuid='$U1'")" = active ] || fail "not active after reboot"

# console: a request.result carrying the lines
RC=cccccccc-0000-4000-8000-000000000001
send instance.console "{\"uuid\":\"$U1\"}" --request-id $RC
wait_event ".type==\"request.result\" and .request_id==\"$RC\" and .body.ok==true and (.body.data.lines|type)==\"array\"" >/dev/null ||
	fail "no console result"

# a command for an unknown instance: a clear error, nothing else
U9=99999999-9999-4999-8999-999999999999
send instance.stop "{\"uuid\":\"$U9\"}"
wait_event ".type==\"request.result\" and .body.ok==false and (.body.error|test(\"$U9\"))" >/dev/null ||
	fail "no error for an unknown instance"

# a flavor that cannot fit: a reschedule request with the reason, nothing left
U2=22222222-2222-4222-8222-222222222222
send instance.build "$(spec $U2 '.flavor.vcpus = 512 | .flavor.extra_specs = {"hw:cpu_policy": "dedicated"}')"
ev=$(wait_event ".type==\"instance.reschedule\" and .body.uuid==\"$U2\"") || fail "no reschedule"
echo "$ev" | jq -e '.body.reason | test("cannot fit")' >/dev/null || fail "reschedule reason: $ev"
[ "$(db "SELECT COUNT(*) FROM instances WHERE uuid='$U2'")" = 0 ] || fail "failed build left a row"
[ "$(db "SELECT COUNT(*) FROM addresses")" = 1 ] || fail "failed build leaked an address"

# a broken image: checksum mismatch -> reschedule naming expected and got, nothing left
U3=33333333-3333-4333-8333-333333333333
send instance.build "$(spec $U3 '.image.checksum = "sha256:0000000000000000000000000000000000000000000000000000000000000000"')"
ev=$(wait_event ".type==\"instance.reschedule\" and .body.uuid==\"$U3\"") || fail "no reschedule for a bad image"
echo "$ev" | jq -e '.body.reason | test("checksum")' >/dev/null || fail "bad image reason: $ev"
[ ! -e "$T/inst/$U3.qcow2" ] || fail "bad image left an overlay"

# malformed input on the host topic: logged, answered, skipped; the agent lives on
printf 'this is not json' | kcat -P -b "$(cat "$T/bus.addr")" -t stratus.host.hv1 2>/dev/null
wait_event '.type=="request.result" and .body.ok==false and (.body.error|test("JSON|json"))' >/dev/null ||
	fail "no error event for a malformed message"
# stratusctl refuses an instance.build body that is not a spec, naming the field
if "$B/stratusctl" -c "$T/stratus.yaml" bus send instance.build '{"uuid":"44444444-4444-4444-8444-444444444444","name":"x"}' --host hv1 2>"$T/send.err"; then
	fail "stratusctl sent an invalid spec"
fi
grep -q "instance.build: body.project: missing" "$T/send.err" || fail "invalid spec error: $(cat "$T/send.err")"
# ... and a raw envelope with that body gets an error event from the agent's consumer
printf '{"v":1,"id":"55555555-5555-4555-8555-555555555555","type":"instance.build","ts":"2026-11-23T09:00:00Z","source":"test","request_id":"55555555-5555-4555-8555-555555555556","body":{"uuid":"44444444-4444-4444-8444-444444444444","name":"x"}}' |
	kcat -P -b "$(cat "$T/bus.addr")" -t stratus.host.hv1 2>/dev/null
wait_event '.type=="request.result" and .request_id=="55555555-5555-4555-8555-555555555556" and .body.ok==false' >/dev/null ||
	fail "no error event for an invalid spec"
kill -0 "$(cat "$T/agent.pid")" || fail "agent died on bad input"

# Prometheus metrics, as promtool reads them
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >"$T/metrics.txt" || fail "no /metrics"
promtool check metrics <"$T/metrics.txt" || fail "promtool rejects /metrics"
grep -q "stratus_instances{host=\"hv1\",state=\"active\"} 1" "$T/metrics.txt" || fail "instances metric"
grep -q '^stratus_build_duration_seconds_count{host="hv1"} [1-9]' "$T/metrics.txt" || fail "build histogram"
grep -q "^stratus_instance_cpu_seconds_total{host=\"hv1\",instance=\"$U1\"}" "$T/metrics.txt" ||
	fail "per-instance series"
# host reports on stratus.metrics (every second here): the latest one
"$B/stratusctl" -c "$T/stratus.yaml" --json bus tail stratus.metrics --from-beginning --count 1000 \
	--timeout 3 >"$T/reports.jsonl"
tail -n 1 "$T/reports.jsonl" >"$T/report.json"
jq -e '.body.host=="hv1" and (.body.inventory.VCPU.total > 0) and (.body.inventory.numa|length > 0) and .body.usage.instances==1' \
	"$T/report.json" >/dev/null || fail "host report: $(cat "$T/report.json")"

# delete: deleted, and every file, address and claim is gone
send instance.delete "{\"uuid\":\"$U1\"}"
wait_event ".body.uuid==\"$U1\" and .body.state==\"deleting\"" >/dev/null || fail "no deleting event"
wait_event ".body.uuid==\"$U1\" and .body.state==\"deleted\"" >/dev/null || fail "no deleted event"
[ "$(db "SELECT COUNT(*) FROM instances")" = 0 ] || fail "instance row left"
[ "$(db "SELECT COUNT(*) FROM addresses")" = 0 ] || fail "address leaked"
[ -z "$(ls "$T/inst")" ] || fail "files left: $(ls "$T/inst")"
# deleting again is harmless
send instance.delete "{\"uuid\":\"$U1\"}"
[ "$(wait_event ".body.uuid==\"$U1\" and .body.state==\"deleted\"" >/dev/null; count_events ".body.uuid==\"$U1\" and .body.state==\"deleted\"")" -ge 1 ] ||
	fail "second delete"

# SIGTERM: a clean stop, the producer flushed
agent_kill TERM
grep -q "agent stopped" "$T/agent.log" || fail "no clean stop"
echo "agent bus test: ok"
