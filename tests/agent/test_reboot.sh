#!/bin/sh
# stratusctl reboot through the scheduler and the agent on libvirt's test
# driver, whose virDomainReboot succeeds but sends no reboot event (a guest
# that ignores ACPI): a soft reboot ends in a reset after vmm.reboot_timeout
# and the instance.state says so; --hard resets at once; a "hard" that is not
# a boolean is refused by stratusctl, the scheduler and the agent, with
# nothing changed; the disk is the same file throughout.
set -u
AGENT_REBOOT_TIMEOUT=3s
. "$STRATUS_TOP/tests/agent/lib.sh"
trap stack_down EXIT
agent_env_up
cat >>"$T/stratus.yaml" <<EOT
$(stack_scheduler_yaml)
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
EOT
stack_scheduler_start
agent_start
stack_host_known

ctl boot web-1 --flavor m1.small --image tiny --timeout 60 >"$T/boot.out" 2>&1 ||
	fail "boot: $(cat "$T/boot.out")"
uuid=$(ctl --json show web-1 | jq -r .uuid)
disk=$T/inst/$uuid.qcow2
[ -f "$disk" ] || fail "no disk $disk"
ino=$(stat -c %i "$disk")
now_ms() { echo $(($(date +%s%N) / 1000000)); }
rebooting() { count_events ".type==\"instance.state\" and .body.uuid==\"$uuid\" and .body.state==\"rebooting\""; }
state_with() { # REASON [TIMEOUT]: the instance.state active event with that reason
	wait_event ".type==\"instance.state\" and .body.uuid==\"$uuid\" and .body.state==\"active\" and .body.reason==\"$1\"" "${2:-30}"
}

# ---- soft: no guest reboot within 3 s, then a reset; stratusctl waits ----
t0=$(now_ms)
ctl reboot web-1 >"$T/reboot.out" 2>&1 || fail "reboot: $(cat "$T/reboot.out")"
ms=$(($(now_ms) - t0))
printf 'web-1: rebooting\nweb-1: active (hard reboot after 3 s without a guest reboot)\n' |
	diff -u - "$T/reboot.out" || fail "stratusctl reboot printed the above"
[ "$ms" -ge 3000 ] || fail "stratusctl reboot returned after $ms ms, before the reset"
wait_event ".type==\"instance.state\" and .body.uuid==\"$uuid\" and .body.state==\"rebooting\"" >/dev/null ||
	fail "no rebooting event"
state_with "hard reboot after 3 s without a guest reboot" >/dev/null ||
	fail "no active event saying the reset came after the timeout: $(grep "$uuid" "$EVENTS" | tail -n 2)"
ms=$(($(now_ms) - t0))
[ "$ms" -ge 3000 ] || fail "the reset came after $ms ms, before vmm.reboot_timeout (3 s)"
reason=$(ctl --json show web-1 | jq -r '.state + ": " + .reason')
[ "$reason" = "active: hard reboot after 3 s without a guest reboot" ] || fail "show: $reason"
echo "ok   soft reboot without a guest reboot: reset after the timeout ($ms ms), said so"

# ---- --hard: no soft step, no wait ----
t0=$(now_ms)
ctl reboot web-1 --hard --no-wait >"$T/reboot.out" 2>&1 || fail "reboot --hard: $(cat "$T/reboot.out")"
grep -qx "web-1: reboot requested" "$T/reboot.out" || fail "reboot --no-wait said: $(cat "$T/reboot.out")"
ev=$(state_with "hard reboot") || fail "no active event saying hard reboot"
echo "$ev" | jq -e '.body.rebooted == "hard"' >/dev/null || fail "hard reboot event: $ev"
ms=$(($(now_ms) - t0))
[ "$ms" -lt 3000 ] || fail "reboot --hard took $ms ms: it waited for the guest"
[ "$(rebooting)" = 2 ] || fail "$(rebooting) rebooting events, want 2"
echo "ok   reboot --hard: reset at once ($ms ms)"

# ---- two clients: each follows its own reboot, not the other's ----
# The agent is held (SIGSTOP) while a soft reboot and then a hard one are
# sent, so the hard reboot's stratusctl is already watching when the soft
# one's events come: it must wait for its own.
trap 'kill -CONT "$(cat "$T/agent.pid")" 2>/dev/null; stack_down' EXIT
kill -STOP "$(cat "$T/agent.pid")"
ctl reboot web-1 --no-wait >"$T/soft.out" 2>&1 || { kill -CONT "$(cat "$T/agent.pid")"; fail "soft reboot: $(cat "$T/soft.out")"; }
ctl reboot web-1 --hard >"$T/hard.out" 2>&1 &
hard_pid=$!
sleep 1 # its request forwarded behind the soft one's
kill -CONT "$(cat "$T/agent.pid")"
wait "$hard_pid" || fail "reboot --hard beside a soft one: $(cat "$T/hard.out")"
printf 'web-1: rebooting\nweb-1: active (hard reboot)\n' | diff -u - "$T/hard.out" ||
	fail "reboot --hard took the other client's reboot for its own (above)"
[ "$(rebooting)" = 4 ] || fail "$(rebooting) rebooting events, want 4"
echo "ok   two clients' reboots: each stratusctl reports its own"

# ---- "hard" not a boolean: refused everywhere, nothing changed ----
if "$B/stratusctl" -c "$T/stratus.yaml" bus send instance.reboot \
	'{"project":"acme","instance":"web-1","hard":"yes"}' >/dev/null 2>"$T/send.err"; then
	fail "stratusctl bus send sent a reboot with hard \"yes\""
fi
grep -q 'body.hard: expected true or false' "$T/send.err" || fail "bus send said: $(cat "$T/send.err")"
raw() { # TOPIC REQUEST-ID BODY: an envelope as anyone on the broker can write it
	printf '{"v":1,"id":"%s","type":"instance.reboot","ts":"%s","source":"test","request_id":"%s","body":%s}' \
		"$(cat /proc/sys/kernel/random/uuid)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$2" "$3" |
		kcat -P -b "$(cat "$T/bus.addr")" -t "$1" 2>/dev/null || fail "kcat"
}
R1=aaaaaaaa-0000-4000-8000-0000000000a1 R2=aaaaaaaa-0000-4000-8000-0000000000a2
raw stratus.api $R1 '{"project":"acme","instance":"web-1","hard":"yes"}'
ev=$(wait_event ".type==\"request.result\" and .request_id==\"$R1\"") || fail "scheduler: no answer to hard \"yes\""
echo "$ev" | jq -e '.body.ok == false and (.body.error | test("body.hard: expected true or false"))' >/dev/null ||
	fail "scheduler answered: $ev"
raw stratus.host.hv1 $R2 "{\"uuid\":\"$uuid\",\"hard\":1}"
ev=$(wait_event ".type==\"request.result\" and .request_id==\"$R2\"") || fail "agent: no answer to hard 1"
echo "$ev" | jq -e '.body.ok == false and (.body.error | test("body.hard: expected true or false"))' >/dev/null ||
	fail "agent answered: $ev"
if ctl stop web-1 --hard >"$T/stop.out" 2>&1; then fail "stop --hard accepted"; fi
grep -q "unknown option --hard" "$T/stop.out" || fail "stop --hard said: $(cat "$T/stop.out")"
sleep 1 # a reboot the refusals had started would show by now
[ "$(rebooting)" = 4 ] || fail "a refused request rebooted: $(rebooting) rebooting events"
[ "$(ctl --json show web-1 | jq -r .state)" = active ] || fail "not active after the refusals"
echo "ok   hard that is not a boolean: refused by stratusctl, the scheduler and the agent"

[ "$(stat -c %i "$disk")" = "$ino" ] || fail "the disk was replaced over the reboots"
echo "ok   the same disk file over soft and hard reboots"
echo "PASS"
