#!/bin/sh
# day-2 benchmark (issue 18): a snapshot of a 1 GiB disk through
# `stratusctl snapshot` (the whole stack on libvirt's test driver, nginx as
# the image store via deploy/host/serve-images.sh: the guest held while its
# overlay is copied, qemu-img convert of the chain, sha256 while the PUT
# streams, HEAD + GET sha256 verification of what the store serves,
# registration) against the same work by hand on the same disk in the same
# run: `qemu-img convert` + `sha256sum` + `curl -T` (no verification).
# Best of 2 each, alternated. Figure: MiB/s of the disk's virtual size.
# Target: at least 0.8x the hand-made pipeline's throughput.
# Also prints how long the guest was paused (info).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
. "$top/bench/lib.sh"
export STRATUS_TOP=$top
BUILD=${BUILD:-build}
B=$BUILD
[ -x "$B/stratus-agent" ] && [ -x "$B/stratusctl" ] || { echo "run make first"; exit 1; }
command -v nginx >/dev/null || { echo "nginx is needed (deps/test-agent.txt)"; exit 1; }
[ -x /usr/bin/python3 ] && PATH=/usr/bin:$PATH
SIZE_MB=${SIZE_MB:-1024}
. "$top/tests/agent/lib.sh"
NGINX_PORT=$(free_port)
bench_down() {
	[ -f "$T/scheduler.pid" ] && kill "$(cat "$T/scheduler.pid")" 2>/dev/null
	STRATUS_RUN_DIR=$T/run sh "$top/deploy/host/serve-images.sh" stop - "$NGINX_PORT" >/dev/null 2>&1
	agent_env_down
}
trap bench_down EXIT
trap 'exit 1' INT TERM HUP
agent_env_up
echo "making a ${SIZE_MB} MiB disk (random data, fully allocated) in $T ..."
head -c $((SIZE_MB * 1048576)) /dev/urandom >"$T/big.raw"
qemu-img convert -q -O qcow2 "$T/big.raw" "$T/big.qcow2" && rm -f "$T/big.raw"
sum=$(sha256sum "$T/big.qcow2" | cut -d' ' -f1)
cat >>"$T/stratus.yaml" <<EOF
scheduler:
  state_path: $T/scheduler.db
  key_dir: $T/sched
  image_url_filter: {allow_hosts: [127.0.0.1]}
  flavors:
    m1.big: vcpus=1 ram_mb=512 disk_gb=$(( (SIZE_MB + 1023) / 1024 ))
  images:
    big: url=file://$T/big.qcow2 checksum=sha256:$sum disk_format=qcow2
EOF
sed -i "s|^images: {cache_dir: $T/cache, allow_file_urls: true}|images: {cache_dir: $T/cache, allow_file_urls: true, max_image_size: 4G, store_url: http://127.0.0.1:$NGINX_PORT/snapshots}|" "$T/stratus.yaml"
mkdir -p "$T/www"
STRATUS_RUN_DIR=$T/run sh "$top/deploy/host/serve-images.sh" start "$T/www" "$NGINX_PORT" >/dev/null ||
	fail "serve-images"
"$B/stratus-scheduler" -c "$T/stratus.yaml" >"$T/scheduler.log" 2>&1 &
echo $! >"$T/scheduler.pid"
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
agent_start
ctl() { "$B/stratusctl" -c "$T/stratus.yaml" -p acme "$@"; }
for _ in $(seq 100); do ctl --json host list 2>/dev/null | jq -e 'length > 0' >/dev/null && break; sleep 0.2; done
ctl boot web-1 --flavor m1.big --image big --timeout 300 >/dev/null || fail "boot"
uuid=$(ctl --json show web-1 | jq -r .uuid)
overlay=$T/inst/$uuid.qcow2
# the guest's own writes: 16 MiB in its overlay (what the pause copies)
qemu-io -c "write -P 0x5a 0 16M" "$overlay" >/dev/null || fail "qemu-io"

ours() { # N: one snapshot through stratusctl; prints seconds
	t0=$(date +%s.%N)
	ctl snapshot web-1 "bench-$1" --timeout 600 >"$T/snap-$1.out" 2>&1 || fail "snapshot: $(cat "$T/snap-$1.out")"
	t1=$(date +%s.%N)
	echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'
}
theirs() { # N: the same by hand; prints seconds
	t0=$(date +%s.%N)
	qemu-img convert -O qcow2 "$overlay" "$T/ref.qcow2" || fail "qemu-img convert"
	sha256sum "$T/ref.qcow2" >/dev/null || fail "sha256sum"
	curl -sf -T "$T/ref.qcow2" "http://127.0.0.1:$NGINX_PORT/snapshots/ref-$1.qcow2" -o /dev/null ||
		fail "curl -T"
	t1=$(date +%s.%N)
	rm -f "$T/ref.qcow2" "$T/www/snapshots/ref-$1.qcow2"
	echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'
}
best_o=999999 best_t=999999
for i in 1 2; do
	o=$(ours "$i")
	rm -f "$T"/www/snapshots/*.qcow2 # the store's copies (the catalog keeps their names)
	t=$(theirs "$i")
	echo "run $i: stratusctl snapshot $o s, qemu-img convert + sha256sum + curl -T $t s"
	best_o=$(echo "$best_o $o" | awk '{print ($2 < $1) ? $2 : $1}')
	best_t=$(echo "$best_t $t" | awk '{print ($2 < $1) ? $2 : $1}')
done
pause=$(sed -n 's/.*: paused \([0-9]*\) ms, uploaded.*/\1/p' "$T/snap-1.out" "$T/snap-2.out" | sort -n | tail -n 1)
fig=$(echo "$SIZE_MB $best_o" | awk '{printf "%.1f", $1 / $2}')
ref=$(echo "$SIZE_MB $best_t" | awk '{printf "%.1f", $1 / $2}')
echo "snapshot of a $SIZE_MB MiB disk: $fig MiB/s (best $best_o s), by hand $ref MiB/s (best $best_t s); guest paused at most ${pause:-?} ms"
bench_line name=day2.snapshot figure="$fig" unit=MiB/s reference="$ref" ref_unit=MiB/s \
	ref_name="qemu-img convert + sha256sum + curl -T" target=">=0.8x"
bench_line name=day2.snapshot_pause figure="${pause:-}" unit=ms
