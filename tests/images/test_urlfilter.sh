#!/bin/sh
# The image URL filter at download time (images.url_filter, enforce: true),
# through `stratus-agent image fetch` as an operator runs it, against two
# real HTTP servers that count the requests they get:
#   an allowed host (allow_hosts: 127.0.0.1) is fetched;
#   a loopback address not allowed (127.0.0.2), a link-local address and a
#   denied port are refused before any byte: the server saw no request;
#   a redirect from the allowed host to the denied address is refused before
#   the second server sees anything.
set -u
BUILD=${BUILD:-build}
tmp=$(mktemp -d /tmp/stratus-urlfilter.XXXXXX)
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P1=$(port) P2=$(port)
head -c 65536 /dev/urandom >"$tmp/ok.raw"
SUM="sha256:$(sha256sum "$tmp/ok.raw" | cut -d' ' -f1)"
serve() { # ADDR PORT LOG: serves $tmp, /redir -> 127.0.0.2:P2/ok.raw, logs each request
	python3 - "$1" "$2" "$3" "$tmp" "$P2" <<'PY' &
import http.server, sys, functools
addr, port, log, root, p2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
class H(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as f:
            f.write(self.path + "\n")
        if self.path == "/redir":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.2:%s/ok.raw" % p2)
            self.end_headers()
            return
        super().do_GET()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((addr, port), functools.partial(H, directory=root)).serve_forever()
PY
	pids="$pids $!"
}
serve 127.0.0.1 "$P1" "$tmp/s1.log"
serve 127.0.0.2 "$P2" "$tmp/s2.log"
for _ in $(seq 50); do
	curl -s -o /dev/null "http://127.0.0.1:$P1/" && curl -s -o /dev/null "http://127.0.0.2:$P2/" && break
	sleep 0.1
done
: >"$tmp/s1.log"; : >"$tmp/s2.log"
cat >"$tmp/agent.yaml" <<YAML
images:
  url_filter: {enforce: true, allow_hosts: [127.0.0.1], deny_ports: ["8443"]}
YAML
fetch() { # URL: exit status; stderr in $tmp/err
	"$BUILD/stratus-agent" -c "$tmp/agent.yaml" image fetch "$1" --checksum "$SUM" --format raw \
		--cache "$tmp/cache" >/dev/null 2>"$tmp/err"
}
refused() { # URL EXPECTED
	fetch "$1" && fail "$1 fetched"
	grep -q "$2" "$tmp/err" || fail "$1: $(cat "$tmp/err"), expected '$2'"
	echo "refused: $1 ($2)"
}
fetch "http://127.0.0.1:$P1/ok.raw" || fail "allowed host: $(cat "$tmp/err")"
grep -qx /ok.raw "$tmp/s1.log" || fail "the allowed server saw no request"
echo "fetched from the allowed host"
rm -rf "$tmp/cache"
refused "http://127.0.0.2:$P2/ok.raw" "127.0.0.2, a loopback address: denied by the URL filter"
[ -s "$tmp/s2.log" ] && fail "the denied server got a request: $(cat "$tmp/s2.log")"
refused "http://169.254.169.254/latest" "a link-local address"
refused "http://127.0.0.1:9092/x" "port 9092 is denied"
refused "http://127.0.0.1:8443/x" "port 8443 is denied"
refused "ftp://127.0.0.1/x" "scheme ftp is not allowed"
: >"$tmp/s1.log"
refused "http://127.0.0.1:$P1/redir" "127.0.0.2:$P2/ok.raw: port\|a loopback address"
grep -qx /redir "$tmp/s1.log" || fail "the redirect was not asked for"
[ -s "$tmp/s2.log" ] && fail "the redirect target got a request: $(cat "$tmp/s2.log")"
[ -z "$(ls "$tmp/cache/partial" 2>/dev/null)" ] || fail "a refused fetch left a partial"
echo "refused: a redirect to a denied address, before any byte"
echo PASS
