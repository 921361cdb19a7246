#!/bin/sh
# stratus-agent image ...: what an operator runs. The hostile corpus made
# with qemu-img is refused by `image inspect` with its reason (exit 1);
# `image fetch` from a private nginx shows a progress line and prints the
# cached path; `image list` and `image evict` report the cache.
set -u
BUILD=${BUILD:-build}
agent="$BUILD/stratus-agent"
[ -x "$agent" ] || { echo "missing $agent (run make)"; exit 1; }
tmp=$(mktemp -d /tmp/stratus-imgcmd-XXXXXX)
chmod 755 "$tmp"
ngx_pid=""
cleanup() {
	[ -n "$ngx_pid" ] && kill "$ngx_pid" 2>/dev/null && wait "$ngx_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# ---- inspect: the hostile corpus -------------------------------------------
c="$tmp/corpus"
mkdir -p "$c"
(
	cd "$c" || exit 1
	qemu-img create -q -f qcow2 good.qcow2 64M
	qemu-img create -q -f qcow2 -F qcow2 -b good.qcow2 backing.qcow2
	qemu-img create -q -f qcow2 -o data_file=data.raw datafile.qcow2 16M
	qemu-img create -q -f raw plain.raw 8M
	qemu-img create -q -f qcow2 huge.qcow2 4T
	qemu-img create -q -f vmdk disk.vmdk 16M
	qemu-img create -q -f vhdx disk.vhdx 16M
) || { echo "cannot build the corpus with qemu-img"; exit 1; }

# FILE FORMAT EXPECTED-EXIT TEXT (in stdout for 0, stderr for 1)
while read -r file fmt want text; do
	out=$("$agent" image inspect "$c/$file" --format "$fmt" 2>"$tmp/err")
	rc=$?
	[ "$rc" = "$want" ] || fail "inspect $file as $fmt: exit $rc, want $want ($(cat "$tmp/err"))"
	if [ "$want" = 0 ]; then
		echo "$out" | grep -qF -- "$text" || fail "inspect $file: '$out' lacks '$text'"
	else
		grep -qF -- "$text" "$tmp/err" || fail "inspect $file: '$(cat "$tmp/err")' lacks '$text'"
	fi
done <<EOF
good.qcow2 qcow2 0 format qcow2 (version 3, cluster size 65536), virtual size 64.0 MiB
plain.raw raw 0 format raw, virtual size 8.0 MiB
backing.qcow2 qcow2 1 qcow2 has a backing file ('good.qcow2'): refused
datafile.qcow2 qcow2 1 qcow2 uses an external data file: refused
plain.raw qcow2 1 declared qcow2 but the file is raw: refused
good.qcow2 raw 1 declared raw but the file is qcow2: refused
huge.qcow2 qcow2 1 virtual size 4.0 TiB (4398046511104 bytes) is above the cap of 1.0 TiB: refused
disk.vmdk raw 1 the file is vmdk, which is not accepted (only raw or qcow2)
disk.vhdx qcow2 1 the file is vhdx, which is not accepted (only raw or qcow2)
EOF
"$agent" image inspect "$c/huge.qcow2" --format qcow2 --max-virtual-size 8T >/dev/null ||
	fail "inspect huge.qcow2 with an 8T cap should pass"
"$agent" image inspect "$c/good.qcow2" >/dev/null 2>&1
[ $? = 2 ] || fail "inspect without --format should be a usage error (2)"

# ---- fetch, list, evict through a private nginx ------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$tmp/www" "$tmp/ngx"
head -c 3145728 /dev/urandom >"$tmp/www/a.raw"
cp "$c/good.qcow2" "$tmp/www/b.qcow2"
cat >"$tmp/ngx/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1;
pid $tmp/ngx/nginx.pid; error_log $tmp/ngx/error.log;
events { worker_connections 16; }
http {
  log_format t '\$uri \$status'; access_log $tmp/ngx/access.log t;
  client_body_temp_path $tmp/ngx; proxy_temp_path $tmp/ngx; fastcgi_temp_path $tmp/ngx;
  uwsgi_temp_path $tmp/ngx; scgi_temp_path $tmp/ngx;
  server { listen 127.0.0.1:$port; root $tmp/www;
           location /slow/ { alias $tmp/www/; limit_rate 4m; } }
}
EOF
nginx -p "$tmp/ngx" -e stderr -c "$tmp/ngx/nginx.conf" &
ngx_pid=$!
i=0
until curl -s -o /dev/null "http://127.0.0.1:$port/"; do
	i=$((i + 1)); [ $i -gt 200 ] && { echo "nginx did not start"; exit 1; }; sleep 0.05
done

cache="$tmp/cache"
sa="sha256:$(sha256sum "$tmp/www/a.raw" | cut -d' ' -f1)"
sb="sha256:$(sha256sum "$tmp/www/b.qcow2" | cut -d' ' -f1)"
path=$("$agent" image fetch "http://127.0.0.1:$port/a.raw" --checksum "$sa" --format raw \
	--cache "$cache" --name a 2>"$tmp/err") || fail "fetch a.raw: $(cat "$tmp/err")"
[ "$path" = "$cache/sha256/${sa#sha256:}" ] || fail "fetch printed '$path'"
cmp -s "$path" "$tmp/www/a.raw" || fail "cached a.raw differs"
grep -q "a: 3.0 MiB / 3.0 MiB .*/s  ETA" "$tmp/err" || fail "no progress line: $(cat "$tmp/err")"
"$agent" image fetch "http://127.0.0.1:$port/b.qcow2" --checksum "$sb" --format qcow2 \
	--cache "$cache" --name b >/dev/null 2>"$tmp/err" || fail "fetch b.qcow2: $(cat "$tmp/err")"
# declared raw, is qcow2: refused, nothing cached
bad="sha256:$(sha256sum "$c/good.qcow2" | cut -d' ' -f1)"
"$agent" image fetch "http://127.0.0.1:$port/b.qcow2" --checksum "$bad" --format raw \
	--cache "$tmp/cache2" >/dev/null 2>"$tmp/err"
[ $? = 1 ] && grep -q "declared raw but the file is qcow2" "$tmp/err" || fail "qcow2 as raw: $(cat "$tmp/err")"
# wrong checksum: the expected one, never the hash of what was fetched
"$agent" image fetch "http://127.0.0.1:$port/a.raw" --checksum "sha256:$(printf '%064d' 0)" \
	--format raw --cache "$tmp/cache2" >/dev/null 2>"$tmp/err"
grep -q "checksum mismatch: the fetched file's checksum differs from the expected sha256:0000" "$tmp/err" || fail "mismatch: $(cat "$tmp/err")"
grep "checksum mismatch:" "$tmp/err" | grep -q "$sa" && fail "mismatch names the hash of what was fetched: $(cat "$tmp/err")"
# size cap
"$agent" image fetch "http://127.0.0.1:$port/a.raw" --checksum "$sa" --format raw \
	--cache "$tmp/cache2" --max-size 1M >/dev/null 2>"$tmp/err"
grep -q "larger than max_image_size" "$tmp/err" || fail "size cap: $(cat "$tmp/err")"
[ -z "$(ls -A "$tmp/cache2/partial")" ] || fail "partial files left behind"

"$agent" image list --cache "$cache" >"$tmp/list" || fail "list"
grep -q "raw .* 3.0 MiB .* a$" "$tmp/list" || fail "list lacks a: $(cat "$tmp/list")"
"$agent" image list --cache "$cache" --json >"$tmp/list.json" || fail "list --json"
python3 - "$tmp/list.json" "$sa" "$sb" <<'EOF' || fail "list --json content"
import json, sys
v = json.load(open(sys.argv[1]))
assert [e["checksum"] for e in v] == [sys.argv[2], sys.argv[3]], v   # LRU first
assert v[1]["format"] == "qcow2" and v[1]["virtual_size"] == 64 << 20, v
EOF
out=$("$agent" image evict --cache "$cache" --budget 1M) || fail "evict"
echo "$out" | grep -q "evicted 1 image (3.0 MiB)" || fail "evict said: $out"
[ -e "$path" ] && fail "evicted file still there"
"$agent" image list --cache "$cache" --json | python3 -c 'import json,sys; assert len(json.load(sys.stdin)) == 1' ||
	fail "list after evict"
# two processes fetching one image at once: one download (the .part flock)
head -c 2097152 /dev/urandom >"$tmp/www/c.raw"
sc="sha256:$(sha256sum "$tmp/www/c.raw" | cut -d' ' -f1)"
pids=""
for n in 1 2; do
	"$agent" image fetch "http://127.0.0.1:$port/slow/c.raw" --checksum "$sc" --format raw \
		--cache "$tmp/cache3" >"$tmp/out$n" 2>"$tmp/err$n" &
	pids="$pids $!"
done
for p in $pids; do wait "$p"; done # not a bare wait: nginx is a child too
[ "$(cat "$tmp/out1")" = "$tmp/cache3/sha256/${sc#sha256:}" ] || fail "process 1: $(cat "$tmp/err1")"
[ "$(cat "$tmp/out2")" = "$(cat "$tmp/out1")" ] || fail "process 2: $(cat "$tmp/err2")"
n=$(grep -c "^/slow/c.raw " "$tmp/ngx/access.log")
[ "$n" = 1 ] || fail "two processes made $n downloads of c.raw"
"$agent" image frobnicate >/dev/null 2>&1
[ $? = 2 ] || fail "unknown image command should exit 2"

[ $fails = 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all image command checks passed"
