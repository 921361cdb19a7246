#!/bin/sh
# images benchmark:
#  1. fetch throughput of a 1 GiB image from a local nginx: `stratus-agent
#     image fetch` (download + sha256 while streaming + fsync + inspect +
#     rename) beside the curl command line on the same file in the same
#     run (best of 3 each, alternated). Target: at least 0.9x curl's.
#     Second reference, the same durability: curl -o, then an fsync of
#     the file (coreutils `sync FILE`), timed together; curl -o alone
#     leaves the 1 GiB in dirty memory, the fetch promises it is on disk
#     (docs/images.md), so on a busy disk the first ratio measures the
#     disk. Target: at least 0.9x that too.
#  2. time to make an instance disk (qcow2 overlay) from a cached image,
#     64 MiB vs 1 GiB, beside the bare `qemu-img create` of the same overlay
#     in the same run (the one program it runs; median of 20 each).
#     Targets (issue 17; the old 20 ms depended on the machine): at most 2x
#     the bare qemu-img create, and the 1 GiB image's at most 1.5x the
#     64 MiB one's (independent of the size).
# The 1 GiB files are removed afterwards. Prints a BENCH line per figure
# (bench/lib.sh) for bench/run-all.sh.
set -eu
. "$(dirname "$0")/../lib.sh"
BUILD=${BUILD:-build}
agent="$BUILD/stratus-agent"
obench="$BUILD/bench/images/overlay_bench"
[ -x "$agent" ] && [ -x "$obench" ] || { echo "run make benches first"; exit 1; }
SIZE_MB=${SIZE_MB:-1024}
tmp=$(mktemp -d /var/tmp/stratus-imgbench-XXXXXX)
chmod 755 "$tmp"
ngx_pid=""
cleanup() {
	[ -n "$ngx_pid" ] && kill "$ngx_pid" 2>/dev/null && wait "$ngx_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

mkdir -p "$tmp/www" "$tmp/ngx"
echo "making a ${SIZE_MB} MiB image and a 64 MiB image in $tmp ..."
head -c $((SIZE_MB * 1048576)) /dev/urandom >"$tmp/www/big.raw"
head -c $((64 * 1048576)) /dev/urandom >"$tmp/www/small.raw"
sum_big="sha256:$(sha256sum "$tmp/www/big.raw" | cut -d' ' -f1)"
sum_small="sha256:$(sha256sum "$tmp/www/small.raw" | cut -d' ' -f1)"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/ngx/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1;
pid $tmp/ngx/nginx.pid; error_log $tmp/ngx/error.log;
events { worker_connections 16; }
http {
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path $tmp/ngx; proxy_temp_path $tmp/ngx; fastcgi_temp_path $tmp/ngx;
  uwsgi_temp_path $tmp/ngx; scgi_temp_path $tmp/ngx;
  server { listen 127.0.0.1:$port; root $tmp/www; }
}
EOF
nginx -p "$tmp/ngx" -e stderr -c "$tmp/ngx/nginx.conf" &
ngx_pid=$!
i=0
until curl -s -o /dev/null "http://127.0.0.1:$port/"; do
	i=$((i + 1)); [ $i -gt 200 ] && { echo "nginx did not start"; exit 1; }; sleep 0.05
done
url="http://127.0.0.1:$port/big.raw"
cat "$tmp/www/big.raw" >/dev/null # page cache warm for both

now() { date +%s.%N; }
best_curl=0 best_ours=0 best_durable=0
run_curl() {
	rm -f "$tmp/curl.out"
	t0=$(now)
	curl -s -o "$tmp/curl.out" "$url"
	t1=$(now)
	sync "$tmp/curl.out"
	t2=$(now)
	rm -f "$tmp/curl.out"
	c=$(echo "$SIZE_MB / ($t1 - $t0)" | bc -l)
	d=$(echo "$SIZE_MB / ($t2 - $t0)" | bc -l)
}
run_ours() {
	rm -rf "$tmp/cache"
	t0=$(now)
	"$agent" image fetch "$url" --checksum "$sum_big" --format raw --cache "$tmp/cache" \
		--max-size 2G >/dev/null 2>"$tmp/fetch.err" || { cat "$tmp/fetch.err"; exit 1; }
	t1=$(now)
	o=$(echo "$SIZE_MB / ($t1 - $t0)" | bc -l)
}
sync
for round in 1 2 3; do
	# alternate who goes first: the second runs while the first's writeback drains
	if [ $((round % 2)) = 1 ]; then run_curl; sync; run_ours; else run_ours; sync; run_curl; fi
	sync
	printf "  round %d: curl %7.1f MiB/s (with its fsync %7.1f)   stratus-agent image fetch %7.1f MiB/s\n" \
		"$round" "$c" "$d" "$o"
	best_curl=$(echo "if ($c > $best_curl) $c else $best_curl" | bc -l)
	best_durable=$(echo "if ($d > $best_durable) $d else $best_durable" | bc -l)
	best_ours=$(echo "if ($o > $best_ours) $o else $best_ours" | bc -l)
done
ratio=$(echo "$best_ours / $best_curl" | bc -l)
printf "fetch %d MiB from local nginx (best of 3): stratus %.1f MiB/s vs curl %.1f MiB/s = %.2fx curl (target >= 0.90x)\n" \
	"$SIZE_MB" "$best_ours" "$best_curl" "$ratio"
echo "  (stratus also hashes sha256 while streaming, fsyncs and inspects; curl -o only writes)"
# For context, curl with the same guarantees done afterwards: download, sha256sum, fsync.
sync
t0=$(now)
curl -s -o "$tmp/curl.out" "$url"
sha256sum "$tmp/curl.out" >/dev/null
sync "$tmp/curl.out" 2>/dev/null || sync
t1=$(now)
rm -f "$tmp/curl.out"
printf "  context: curl -o + sha256sum + sync: %.1f MiB/s\n" "$(echo "$SIZE_MB / ($t1 - $t0)" | bc -l)"

bench_line name=images.fetch_1GiB figure="$(printf %.1f "$best_ours")" unit=MiB/s target='>=0.9x' \
	reference="$(printf %.1f "$best_curl")" ref_name="curl -o, best of 3"
bench_line name=images.fetch_1GiB_durable figure="$(printf %.1f "$best_ours")" unit=MiB/s \
	target='>=0.9x' reference="$(printf %.1f "$best_durable")" \
	ref_name="curl -o + fsync of the file, best of 3"

# Instance disks from the cached images: the big one is in $tmp/cache already.
"$obench" "$tmp/cache" "$tmp/instances" \
	"64MiB" "file://$tmp/www/small.raw" "$sum_small" \
	"${SIZE_MB}MiB" "$url" "$sum_big" | tee "$tmp/overlay.out"
# The reference: what img_overlay_create runs, alone, on the same cached
# files, 20 times each (median), into the same directory.
qemu_img_ms() { # BASE -> median ms of 20 `qemu-img create` of an overlay on it
	for i in $(seq 20); do
		t0=$(date +%s%N)
		qemu-img create -q -f qcow2 -F raw -b "$1" "$tmp/instances/ref.qcow2" 20G
		echo $(( $(date +%s%N) - t0 ))
		rm -f "$tmp/instances/ref.qcow2"
	done | sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", v[int(NR / 2) + 1] / 1e6 }'
}
overlay_ms() { sed -n "s/^instance disk from cached $1 *image: median \([0-9.]*\) ms.*/\1/p" "$tmp/overlay.out"; }
small_base=$(find "$tmp/cache" -type f -name "*${sum_small#sha256:}*" | head -n 1)
big_base=$(find "$tmp/cache" -type f -name "*${sum_big#sha256:}*" | head -n 1)
ref_small=$(qemu_img_ms "${small_base:-$tmp/www/small.raw}")
ref_big=$(qemu_img_ms "${big_base:-$tmp/www/big.raw}")
ours_small=$(overlay_ms 64MiB)
ours_big=$(overlay_ms "${SIZE_MB}MiB")
echo "reference: bare qemu-img create of the same overlay, median of 20: 64MiB $ref_small ms, ${SIZE_MB}MiB $ref_big ms"
echo "targets: at most 2x the bare qemu-img create; ${SIZE_MB} MiB at most 1.5x the 64 MiB image's time"
bench_line name=images.overlay_64MiB figure="$ours_small" unit=ms target='<=2x' \
	reference="$ref_small" ref_name="qemu-img create"
bench_line name=images.overlay_${SIZE_MB}MiB figure="$ours_big" unit=ms target='<=2x' \
	reference="$ref_big" ref_name="qemu-img create"
bench_line name=images.overlay_size figure="$ours_big" unit=ms target='<=1.5x' \
	reference="$ours_small" ref_name="the same from the 64 MiB image"
