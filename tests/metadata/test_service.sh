#!/bin/sh
# stratus-metadata as a user runs it, on loopback: each 127.0.0.N source
# address is a distinct guest. Real cloud-init code crawls it
# (service_check.py); then reloads (SIGHUP), IMDSv2 required mode, proxied
# mode, rate limits and config errors through the binary.
set -u
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
PY=/usr/bin/python3 # Debian's python, where the cloud-init package lives
T=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP PIPE
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# instances at 127.0.0.1-4 (spec-basic with its own uuid, name, address, MAC)
mkinstances() { # FILE HOSTNAME2
	$PY - "$1" "$2" <<'PYEOF'
import json, sys
s = json.load(open("tests/data/spec-basic.json"))
out = []
for n in range(1, 5):
    t = json.loads(json.dumps(s))
    t["uuid"] = "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c%02x" % n
    t["name"] = "web %d" % n
    t["hostname"] = sys.argv[2] if n == 2 else "web-%d" % n
    t["network"]["address"] = "127.0.0.%d/8" % n
    t["network"]["mac"] = "52:54:00:12:34:%02x" % n
    if n == 3:  # the flavor's local disks: in the block-device-mapping
        t["flavor"].update(ephemeral_gb=2, swap_mb=512)
    if n == 4:
        t["flavor"]["swap_mb"] = 256
    out.append(t)
json.dump(out, open(sys.argv[1], "w"), indent=1)
PYEOF
}

# start NAME [ARGS...]: runs the daemon on a free port; sets $port and $pid
start() {
	name=$1
	shift
	"$B/stratus-metadata" --listen 127.0.0.1:0 --port-mark 0 "$@" >"$T/$name.log" 2>&1 &
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

# stop PID NAME: SIGTERM, expect a clean exit (the sanitizer build checks leaks here)
stop() {
	kill "$1"
	wait "$1"
	rc=$?
	[ $rc -eq 0 ] || fail "$2 exited $rc: $(tail -5 "$T/$2.log")"
}

get() { # SOURCE PATH [curl args]: prints the body and the status
	src=$1 p=$2
	shift 2
	curl -s --interface "$src" -w ' [%{http_code}]' "$@" "http://127.0.0.1:$port$p"
}

mkinstances "$T/instances.json" web-2

# ---- tokens optional (the default config) ----
start plain --instances "$T/instances.json" || exit 1
$PY tests/metadata/service_check.py "http://127.0.0.1:$port" "$T/instances.json" optional ||
	fail "cloud-init crawl (tokens optional)"

# SIGHUP: the changed instance is rendered afresh on both APIs
mkinstances "$T/instances.json" renamed-2
kill -HUP $pid
sleep 0.3
[ "$(get 127.0.0.2 /latest/meta-data/hostname)" = "renamed-2 [200]" ] || fail "EC2 hostname after SIGHUP"
get 127.0.0.2 /openstack/latest/meta_data.json | grep -q '"hostname": "renamed-2"' ||
	fail "OpenStack hostname after SIGHUP"
[ "$(get 127.0.0.1 /latest/meta-data/hostname)" = "web-1 [200]" ] || fail "unchanged instance after SIGHUP"
grep -q "reloaded" "$T/plain.log" || fail "no reload logged"
# a broken file: logged, the previous instances keep being served
echo '[{"uuid":' >"$T/instances.json"
kill -HUP $pid
sleep 0.3
grep -q "reload failed" "$T/plain.log" || fail "broken reload not logged"
[ "$(get 127.0.0.2 /latest/meta-data/hostname)" = "renamed-2 [200]" ] || fail "instances lost on a broken reload"
stop $pid plain

# ---- tokens required ----
mkinstances "$T/instances.json" web-2
printf 'metadata:\n  tokens: required\n' >"$T/required.yaml"
start required -c "$T/required.yaml" --instances "$T/instances.json" || exit 1
$PY tests/metadata/service_check.py "http://127.0.0.1:$port" "$T/instances.json" required ||
	fail "cloud-init crawl (tokens required)"
stop $pid required

# ---- proxied mode (Nova's X-Instance-ID + signature) and rate limits ----
secret="0123456789abcdef-shared"
printf 'metadata:\n  proxy: true\n  shared_secret: "%s"\n  rate_limit: 1\n  rate_burst: 3\n' "$secret" >"$T/proxy.yaml"
start proxy -c "$T/proxy.yaml" --instances "$T/instances.json" || exit 1
id=0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c03
sig=$(printf '%s' "$id" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
badsig=$(printf '%s' "$id" | openssl dgst -sha256 -hmac "wrong-secret" -r | cut -d' ' -f1)
# from any address: the headers decide
[ "$(get 127.0.0.9 /latest/meta-data/hostname -H "X-Instance-ID: $id" -H "X-Instance-ID-Signature: $sig")" = "web-3 [200]" ] ||
	fail "proxied request"
get 127.0.0.9 /latest/meta-data/hostname -H "X-Instance-ID: $id" -H "X-Instance-ID-Signature: $badsig" |
	grep -q '\[403\]' || fail "proxied: bad signature not 403"
get 127.0.0.9 /latest/meta-data/hostname -H "X-Instance-ID: $id" | grep -q '\[400\]' ||
	fail "proxied: missing signature not 400"
get 127.0.0.3 /latest/meta-data/hostname | grep -q '\[400\]' || fail "proxied: no headers not 400"
# burst 3 then 429 with Retry-After (the requests above used one of id's bucket)
codes=""
for i in 1 2 3 4; do
	codes="$codes $(curl -s -o /dev/null -w '%{http_code}' -H "X-Instance-ID: $id" \
		-H "X-Instance-ID-Signature: $sig" "http://127.0.0.1:$port/latest/meta-data/")"
done
echo "$codes" | grep -q 429 || fail "no 429 after the burst: $codes"
curl -s -D "$T/h" -o /dev/null -H "X-Instance-ID: $id" -H "X-Instance-ID-Signature: $sig" \
	"http://127.0.0.1:$port/latest/meta-data/"
grep -qi '^Retry-After: [1-9]' "$T/h" || fail "429 without Retry-After: $(cat "$T/h")"
stop $pid proxy

# ---- the agent's SQLite store as the source (read-only) ----
mkinstances "$T/instances.json" web-2
"$B/tests/metadata/mkstore" "$T/store.db" "$T/instances.json" || fail "mkstore"
start store --store "$T/store.db" || exit 1
$PY tests/metadata/service_check.py "http://127.0.0.1:$port" "$T/instances.json" optional ||
	fail "cloud-init crawl (agent store)"
# what the agent commits is served on the next request, no SIGHUP
mkinstances "$T/instances.json" from-store-2
"$B/tests/metadata/mkstore" "$T/store.db" "$T/instances.json" || fail "mkstore update"
[ "$(get 127.0.0.2 /latest/meta-data/hostname)" = "from-store-2 [200]" ] || fail "store update not served"
get 127.0.0.2 /openstack/latest/meta_data.json | grep -q '"hostname": "from-store-2"' ||
	fail "store update not served on the OpenStack API"
stop $pid store

# ---- configuration errors ----
printf 'metadata:\n  tokens: sometimes\n' >"$T/bad.yaml"
"$B/stratus-metadata" -n -c "$T/bad.yaml" 2>"$T/err" && fail "tokens: sometimes accepted"
grep -q "metadata.tokens: expected one of optional, required, got 'sometimes'" "$T/err" ||
	fail "bad tokens message: $(cat "$T/err")"
printf 'metadata:\n  proxy: true\n' >"$T/nosecret.yaml"
"$B/stratus-metadata" -c "$T/nosecret.yaml" --instances "$T/instances.json" 2>"$T/err" &&
	fail "proxy without a secret started"
grep -q "shared_secret" "$T/err" || fail "no-secret message: $(cat "$T/err")"
"$B/stratus-metadata" --listen 127.0.0.1:0 2>"$T/err" && fail "started without instances"
grep -q "instances" "$T/err" || fail "no-instances message: $(cat "$T/err")"
"$B/stratus-metadata" --instances "$T/instances.json" --listen nonsense 2>"$T/err" && fail "bad --listen accepted"
grep -q "expected IPV4ADDR:PORT" "$T/err" || fail "bad listen message: $(cat "$T/err")"

[ $fails -eq 0 ] && echo "service: all checks passed"
[ $fails -eq 0 ]
