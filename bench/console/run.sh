#!/bin/sh
# bench/console: keystroke-to-echo round trip on the tiny guest's serial
# console (real libvirtd + QEMU), through the agent's console proxy
# (`stratusctl console NAME --attach`: stratusctl -> TCP -> proxy thread ->
# libvirt stream -> the guest's pty) against `virsh console` on the same
# domain in the same run. Both clients run under the same pseudo-terminal
# driver (tests/e2e/console_pty.py): one character typed, the time until the
# guest's shell echoes it, N times; the figure is the median.
# Target: at most 1.2x virsh console's median plus 1 ms (computed from the
# reference measured here). Prints a BENCH line (bench/lib.sh).
set -eu
STRATUS_TOP=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$STRATUS_TOP"
. bench/lib.sh
BUILD=${BUILD:-build}
export STRATUS_TOP BUILD
N=${CONSOLE_PROBES:-200}
set +e
. tests/e2e/lib.sh
set -e
trap e2e_down EXIT
e2e_up
CPORT=$(free_port)
sed -i "s|^  host: hv1|  host: hv1\n  console: {listen: \"127.0.0.1:$CPORT\"}|" "$T/stratus.yaml"
cat >>"$T/stratus.yaml" <<EOC
scheduler:
  state_path: $T/scheduler.db
  key_dir: $T/sched
  heartbeat_interval: 2s
  missed_heartbeats: 30
  flavors:
    m1.tiny: vcpus=1 ram_mb=128 disk_gb=1
  images:
    tiny: url=file://$TINY_DISK checksum=$(_sum "$TINY_DISK") disk_format=qcow2 kernel=file://$TINY_KERNEL kernel_checksum=$(_sum "$TINY_KERNEL") initrd=file://$TINY_INITRD initrd_checksum=$(_sum "$TINY_INITRD") cmdline=$(echo "$TINY_CMDLINE" | sed 's/ /%20/g')
EOC
"$B/stratus-scheduler" -c "$T/stratus.yaml" >"$T/scheduler.log" 2>&1 &
echo $! >"$T/scheduler.pid"
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
agent_start
for _ in $(seq 100); do ctl --json host list 2>/dev/null | jq -e 'length > 0' >/dev/null && break; sleep 0.2; done
ctl boot bench-con --flavor m1.tiny --image tiny --timeout "$E2E_WAIT" >/dev/null || fail "boot"
u=$(ctl --json show bench-con | jq -r .uuid)
echo "$u" >>"$T/e2e-uuids"
guest_console_wait "$T/inst/$u.log" "stratus-tiny login:" "$E2E_WAIT" || fail "no login prompt"
pty() { python3 tests/e2e/console_pty.py --timeout 300 "$@"; }
# log in once through the proxy, then probe; the shell stays logged in
ours=$(pty 'expect:Escape character' 'send:\r' 'expect:login: ' 'send:root\r' 'expect:~# ' \
	"rtt:$N" 'sleep:0.5' 'send:\x1d' 'expect:disconnected' \
	-- "$B/stratusctl" -c "$T/stratus.yaml" -p e2e console bench-con --attach) || fail "proxy session"
echo "through the proxy: $ours"
ref=$(pty 'expect:Escape character' 'send:\r' 'expect:~# ' "rtt:$N" 'sleep:0.5' 'send:\x1d' \
	-- virsh -c qemu:///system console "stratus-$u") || fail "virsh console session"
o_med=$(echo "$ours" | sed -n 's/^rtt_ms [^ ]* \([^ ]*\) .*/\1/p')
r_med=$(echo "$ref" | sed -n 's/^rtt_ms [^ ]* \([^ ]*\) .*/\1/p')
limit=$(echo "$r_med * 1.2 + 1" | bc -l | xargs printf %.3f)
echo "console keystroke -> echo, median of $N (ms):"
echo "  through the proxy (stratusctl console --attach)  $(echo "$ours" | sed -n 's/^rtt_ms //p')  (min median p90)"
echo "  virsh console                                    $(echo "$ref" | sed -n 's/^rtt_ms //p')"
echo "  target: <= 1.2 x $r_med + 1 = $limit ms"
set +e # the EXIT trap's clean-up must not turn a finished run into a failure
bench_line name=console.keystroke_rtt figure="$o_med" unit=ms target="<=$limit" \
	reference="$r_med" ref_unit=ms ref_name="virsh console"
