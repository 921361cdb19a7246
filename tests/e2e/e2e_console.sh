#!/bin/sh
# The interactive console on real libvirtd + QEMU, through the binaries:
# stratusctl boots the tiny guest (scheduler, agent with its console proxy),
# then `stratusctl console NAME --attach` under a pseudo-terminal logs into
# the guest's serial console, runs a command, reads its output and leaves
# with Ctrl-] (terminal restored, exit 0). Then headless Chromium opens the
# console page (xterm.js vendored from the npm registry) with a fresh token,
# types a command and sees its answer. Both sessions are counted in the
# agent's /metrics; each token opened one session only.
set -u
. "$STRATUS_TOP/tests/e2e/lib.sh"
trap e2e_down EXIT
e2e_up
CPORT=$(free_port)
PROXY=127.0.0.1:$CPORT
# the page's xterm.js: vendored once per build dir, copied for this agent
sh "$STRATUS_TOP/tools/vendor-xterm.sh" "$B/console" >"$T/vendor.log" 2>&1 ||
	fail "vendor xterm.js: $(tail -n 3 "$T/vendor.log")"
mkdir -p "$T/web" && cp "$B/console/xterm.js" "$B/console/xterm.css" "$T/web/"
sed -i "s|^  host: hv1|  host: hv1\n  console: {listen: \"$PROXY\", token_ttl: 60s, web_dir: $T/web}|" "$T/stratus.yaml"
cmdline=$(echo "$TINY_CMDLINE" | sed 's/ /%20/g')
cat >>"$T/stratus.yaml" <<EOF
scheduler:
  state_path: $T/scheduler.db
  key_dir: $T/sched
  heartbeat_interval: 2s
  missed_heartbeats: 30
  flavors:
    m1.tiny: vcpus=1 ram_mb=128 disk_gb=1
  images:
    tiny: url=file://$TINY_DISK checksum=$(_sum "$TINY_DISK") disk_format=qcow2 kernel=file://$TINY_KERNEL kernel_checksum=$(_sum "$TINY_KERNEL") initrd=file://$TINY_INITRD initrd_checksum=$(_sum "$TINY_INITRD") cmdline=$cmdline
EOF
"$B/stratus-scheduler" -c "$T/stratus.yaml" >"$T/scheduler.log" 2>&1 &
echo $! >"$T/scheduler.pid"
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
agent_start
for _ in $(seq 100); do ctl --json host list 2>/dev/null | jq -e 'length > 0' >/dev/null && break; sleep 0.2; done
ctl boot con-1 --flavor m1.tiny --image tiny --timeout "$E2E_WAIT" >"$T/boot.out" 2>&1 ||
	fail "boot: $(cat "$T/boot.out")"
u=$(ctl --json show con-1 | jq -r .uuid)
echo "$u" >>"$T/e2e-uuids"
guest_console_wait "$T/inst/$u.log" "stratus-tiny login:" "$E2E_WAIT" || fail "no login prompt"

# a user at a terminal: attach, log in, run a command, read its answer, leave
python3 "$STRATUS_TOP/tests/e2e/console_pty.py" --timeout 120 --log "$T/pty.log" \
	'expect:Escape character is ^]' 'send:\r' 'expect:login: ' 'send:root\r' \
	'expect:root@stratus-tiny:~# ' 'send:echo CLI-$((6*7))-OK; uname -s\r' \
	'expect:CLI-42-OK' 'expect:Linux' 'send:\x1d' 'expect:disconnected' \
	-- "$B/stratusctl" -c "$T/stratus.yaml" -p e2e console con-1 --attach ||
	fail "console --attach session"
grep -q "console session opened instance=$u via=raw" "$T/agent.log" || fail "no raw session logged"
# the guest saw the login on its serial (the console log is the same serial)
grep -q "STRATUS-GUEST: console login user=root" "$T/inst/$u.log" || fail "guest saw no login"

# the browser: the page with a fresh token, keystrokes into xterm.js
url=$(ctl console con-1 --url --timeout 30) || fail "console --url"
/usr/bin/python3 "$STRATUS_TOP/tests/e2e/console_browser.py" "$url" "$T/chrome" \
	'echo WEB-$((7*6))-OK' 'WEB-42-OK' 120 >"$T/browser.out" 2>&1 ||
	fail "browser: $(cat "$T/browser.out"; tail -n 5 "$T/chrome.log" 2>/dev/null)"
grep -q "console session opened instance=$u via=websocket" "$T/agent.log" || fail "no websocket session"
# that page's token is spent: a second upgrade with it is refused
tok=$(printf '%s' "$url" | sed 's/.*token=//')
out=$(python3 "$STRATUS_TOP/tests/agent/console_client.py" ws "$PROXY" "$u" "$tok")
printf '%s' "$out" | grep -q "HTTP/1.1 403" || fail "spent token reused: $out"
printf '%s' "$out" | grep -q "already used" || fail "spent token: $out"

m=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics")
printf '%s\n' "$m" | grep -q '^stratus_console_sessions_total{host="hv1"} 2$' ||
	fail "sessions: $(printf '%s\n' "$m" | grep console)"
printf '%s\n' "$m" | grep -q '^stratus_console_refused_total{host="hv1",reason="reused"} 1$' ||
	fail "reused: $(printf '%s\n' "$m" | grep console)"
ctl delete con-1 --timeout "$E2E_WAIT" >/dev/null || fail "delete"
echo "e2e console: ok"
