#!/bin/sh
# Fuzz the console proxy's parsers of untrusted input (agent/ws.c: the first
# request, WebSocket frames, the accept key) for a bounded time
# (FUZZ_SECONDS, default 10) with clang's libFuzzer under ASan and UBSan, as
# tests/metadata/test_fuzz.sh does. A crash, leak, UB report or abort() in
# the harness fails the test; the reproducer is kept under $BUILD/fuzz/.
set -eu
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
secs=${FUZZ_SECONDS:-10}
out=$B/fuzz
mkdir -p "$out"
command -v clang >/dev/null || { echo "clang not installed (deps/test-metadata.txt)"; exit 1; }
srcs="agent/ws.c core/err.c core/log.c core/util.c"
libs=$(pkg-config --libs jansson libcrypto)
cflags="-g -O1 -std=gnu11 -D_GNU_SOURCE -pthread -I. $(pkg-config --cflags jansson)"
san="-fsanitize=address,undefined -fno-sanitize-recover=all"
bin=$out/fuzz_console
if [ ! -x "$bin" ] || [ -n "$(find $srcs agent/console.h core/core.h \
	tests/agent/fuzz/fuzz_console.c -newer "$bin" 2>/dev/null)" ]; then
	echo "building $bin"
	# shellcheck disable=SC2086
	clang $cflags $san -fsanitize=fuzzer -o "$bin" tests/agent/fuzz/fuzz_console.c $srcs $libs -lm
fi
corpus=$out/corpus-console
mkdir -p "$corpus"
echo "fuzzing the console parsers for ${secs}s"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
	-print_final_stats=1 -artifact_prefix="$out/" "$corpus" tests/agent/fuzz/corpus-console \
	2>"$out/fuzz_console.log" || {
	tail -40 "$out/fuzz_console.log"
	echo "FAIL: fuzz_console found a problem (log: $out/fuzz_console.log)"
	exit 1
}
grep -E "stat::number_of_executed_runs|Done" "$out/fuzz_console.log" | tail -2
echo "fuzz console: no crash, leak or UB"
