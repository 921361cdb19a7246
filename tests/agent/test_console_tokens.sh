#!/bin/sh
# The console proxy's refusals, through the binaries on libvirt's test
# driver: stratus-bus, stratus-scheduler, stratus-agent (agent.console.listen
# set) and stratusctl. `stratusctl console NAME --attach --json` gets a
# token sealed to the credential; a token never crosses the bus in the
# clear. Refused, with the reason in the answer, the log and
# stratus_console_refused_total: a forged token, a malformed one, a token
# for another instance (and it is burnt), a reused one, an expired one;
# a member of another project gets no token at all. A good token reaches
# virDomainOpenConsole (the test driver has no console: its error comes
# back, through stratusctl too). The page and HTTP errors of the proxy.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
trap stack_down EXIT
agent_env_up
CPORT=$(free_port)
PROXY=127.0.0.1:$CPORT
cat >>"$T/stratus.yaml" <<EOF
$(stack_scheduler_yaml)
  default_quotas: {instances: 4, cores: 8, ram_mb: 8192}
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
EOF
# the console proxy, with a short token lifetime for the expiry case
sed -i "s|^  host: hv1|  host: hv1\n  console: {listen: \"$PROXY\", token_ttl: 8s, web_dir: $T/web}|" "$T/stratus.yaml"
stack_scheduler_start
agent_start
grep -q "console proxy listening address=$PROXY" "$T/agent.log" || fail "proxy not listening"
cc() { python3 "$STRATUS_TOP/tests/agent/console_client.py" "$@"; }
metric() { # REASON: stratus_console_refused_total{reason=REASON}
	curl -s "http://127.0.0.1:$METRICS_PORT/metrics" |
		sed -n "s/^stratus_console_refused_total{host=\"hv1\",reason=\"$1\"} //p"
}
stack_host_known
ctl boot web-1 --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "boot web-1"
ctl boot web-2 --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "boot web-2"
ctl --json list >"$T/list.json" || fail "list"
u1=$(jq -r '.[] | select(.name == "web-1") | .uuid' "$T/list.json")
u2=$(jq -r '.[] | select(.name == "web-2") | .uuid' "$T/list.json")

token() { # NAME: a fresh token (its JSON answer in $T/tok.json)
	ctl --json console "$1" --attach --timeout 20 >"$T/tok.json" 2>"$T/tok.err" ||
		fail "console $1 --attach --json: $(cat "$T/tok.err")"
	jq -r .token "$T/tok.json"
}
expect() { # WHAT OUTPUT PATTERN
	printf '%s\n' "$2" | grep -qF -- "$3" || fail "$1: expected '$3', got: $2"
}
# batch: console_client.py requests, one per stdin line (fields split at
# tabs), in one process; answer N: the lines after "== N"
batch() { cc batch "$PROXY" >"$T/batch.out" || fail "console_client batch"; }
answer() { awk -v n="$1" '/^== /{on = ($2 == n); next} on' "$T/batch.out"; }
tab=$(printf '\t')

# tokens live 8 s: this one is used at the end, expired
t3=$(token web-2)
t3_at=$(date +%s)

# (each of these is used right after it is issued)
# the answer: the proxy's address, the token, a URL for the browser
t1=$(token web-1)
jq -e --arg a "$PROXY" --arg u "$u1" '.address == $a and .uuid == $u and (.token | length) == 43
	and .expires_in == 8 and (.url | startswith("http://" + $a + "/console?instance=" + $u))' \
	"$T/tok.json" >/dev/null || fail "token answer: $(cat "$T/tok.json")"
# another instance's token (CVE-2013-0335): refused, and burnt
printf 'raw\t%s\t%s\nraw\t%s\t%s\n' "$u2" "$t1" "$u1" "$t1" | batch
expect "token for web-1 used on web-2" "$(answer 1)" "ERR instance $u2: console token refused: issued for another instance"
expect "token after a wrong-instance try" "$(answer 2)" "console token refused: already used"
grep -q "console token refused instance=$u2 reason=instance" "$T/agent.log" || fail "instance refusal not logged"

# a good token reaches libvirt (the test driver has no consoles), once
t2=$(token web-1)
printf 'raw\t%s\t%s\nraw\t%s\t%s\n' "$u1" "$t2" "$u1" "$t2" | batch
expect "good token" "$(answer 1)" "ERR instance $u1: open console:"
expect "reused token" "$(answer 2)" "ERR instance $u1: console token refused: already used"
# the same through stratusctl: its error names the instance and the reason
ctl console web-1 --attach --timeout 20 >"$T/att.out" 2>&1 && fail "attach on the test driver succeeded"
grep -q "instance web-1: console: instance $u1: open console: .*not supported" "$T/att.out" ||
	fail "attach error: $(cat "$T/att.out")"

# --url prints just the page's address
ctl console web-1 --url --timeout 20 | grep -q "^http://$PROXY/console?instance=$u1&token=" ||
	fail "console --url"
# usage errors change nothing
ctl console web-1 --attach --lines 3 >"$T/u.out" 2>&1 && fail "--attach --lines accepted"
grep -q "exclude each other" "$T/u.out" || fail "--attach --lines: $(cat "$T/u.out")"

# forged, malformed, a bad WebSocket token; the page and the HTTP errors
mkdir -p "$T/web" && echo "/* xterm */" >"$T/web/xterm.js"
big=$(head -c 5000 /dev/zero | tr '\0' a)
crlf='\r\n'
{
	printf 'raw\t%s\t%s\n' "$u1" AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
	printf 'raw\t%s\t%s\n' "$u1" short
	printf 'raw\t%s\t%s\n' "$u1" "$(printf 'A%.0s' $(seq 43))\"'"
	printf 'ws\t%s\t%s\n' "$u1" BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB
	printf 'http\tGET /console?instance=x HTTP/1.1%sHost: a%s%s\n' "$crlf" "$crlf" "$crlf"
	printf 'http\tGET /xterm.js HTTP/1.1%s%s\n' "$crlf" "$crlf"
	printf 'http\tGET /xterm.css HTTP/1.1%s%s\n' "$crlf" "$crlf"
	printf 'http\tGET /../etc/passwd HTTP/1.1%s%s\n' "$crlf" "$crlf"
	printf 'http\tPOST / HTTP/1.1%s%s\n' "$crlf" "$crlf"
	printf 'http\tGET /ws?instance=%s&token=%s HTTP/1.1%s%s\n' "$u1" "$t1" "$crlf" "$crlf"
	printf 'http\tGET / HTTP/1.1%sX: %s%s%s\n' "$crlf" "$big" "$crlf" "$crlf"
	printf 'http\tHELLO THERE%s%s\n' "$crlf" "$crlf"
} | batch
expect "forged token" "$(answer 1)" "ERR instance $u1: console token refused: no such token"
expect "malformed token" "$(answer 2)" "ERR console request: token: malformed"
expect "token with quotes" "$(answer 3)" "ERR console request: token: malformed"
expect "websocket bad token" "$(answer 4)" "HTTP/1.1 403 Forbidden"
expect "websocket bad token" "$(answer 4)" "console token refused: no such token"
expect "page" "$(answer 5)" "HTTP/1.1 200 OK"
expect "page" "$(answer 5)" '<script src="/xterm.js"></script>'
expect "xterm.js" "$(answer 6)" "/* xterm */"
expect "xterm.css missing" "$(answer 7)" "HTTP/1.1 404"
expect "xterm.css missing" "$(answer 7)" "xterm.css: not installed (agent.console.web_dir $T/web"
expect "no page" "$(answer 8)" "HTTP/1.1 404"
expect "POST" "$(answer 9)" "HTTP/1.1 405"
expect "ws without upgrade" "$(answer 10)" "HTTP/1.1 426"
expect "oversized request" "$(answer 11)" "HTTP/1.1 431"
expect "not HTTP" "$(answer 12)" "HTTP/1.1 405"
grep -q "console token refused reason=malformed" "$T/agent.log" || fail "malformed not logged"

# a member of another project gets no token for acme's instance
ctl credential create --project other --role member --output "$T/other.cred" >/dev/null ||
	fail "credential create"
STRATUS_CREDENTIAL="$T/other.cred" "$B/stratusctl" -c "$T/stratus.yaml" -p other console web-1 \
	--attach --json --timeout 20 >"$T/other.out" 2>&1 && fail "other project got a token"
grep -q "web-1" "$T/other.out" || fail "other project: $(cat "$T/other.out")"
grep -q '"token"' "$T/other.out" && fail "other project: a token in $(cat "$T/other.out")"

# expired: t3 was issued 8 s ago or more
left=$((t3_at + 9 - $(date +%s)))
[ "$left" -gt 0 ] && sleep "$left"
printf 'raw\t%s\t%s\n' "$u2" "$t3" | batch
expect "expired token" "$(answer 1)" "console token refused: expired"

# the counts a user sees in /metrics
[ "$(metric unknown)" = 2 ] || fail "unknown: $(metric unknown)"
[ "$(metric malformed)" = 2 ] || fail "malformed: $(metric malformed)"
[ "$(metric instance)" = 1 ] || fail "instance: $(metric instance)"
[ "$(metric reused)" = 2 ] || fail "reused: $(metric reused)"
[ "$(metric expired)" = 1 ] || fail "expired: $(metric expired)"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$T/metrics.txt"
grep -q '^stratus_console_tokens_issued_total{host="hv1"} 5$' "$T/metrics.txt" ||
	fail "tokens issued: $(grep console_tokens "$T/metrics.txt")"
grep -q '^stratus_console_sessions_total{host="hv1"} 0$' "$T/metrics.txt" || fail "sessions"

# no token in the clear on the bus: host topic, events, api
for topic in stratus.api stratus.host.hv1 stratus.events; do
	kcat -C -b "$(cat "$T/bus.addr")" -t $topic -o beginning -e -q >"$T/kcat.txt" 2>/dev/null
	for t in "$t1" "$t2" "$t3"; do
		grep -qF -- "$t" "$T/kcat.txt" && fail "$topic carries a console token in the clear"
	done
done
kill -0 "$(cat "$T/agent.pid")" || fail "agent died"
echo "console tokens: ok"
