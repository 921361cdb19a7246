#!/bin/sh
# Fuzz the metadata service's request handling and the renderer for a
# bounded time (FUZZ_SECONDS each, default 10) with clang's libFuzzer under
# ASan and UBSan. The library sources are compiled here with clang and
# coverage instrumentation (the normal build is gcc, uninstrumented).
# A crash, leak, UB report or abort() in the harness fails the test; the
# reproducer is kept under $BUILD/fuzz/.
set -eu
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
secs=${FUZZ_SECONDS:-10}
out=$B/fuzz
mkdir -p "$out"
command -v clang >/dev/null || { echo "clang not installed (deps/test-metadata.txt)"; exit 1; }

srcs="core/config.c core/daemon.c core/err.c core/log.c core/net.c core/util.c core/http.c
      core/prom.c model/spec.c model/imageprops.c metadata/render.c metadata/source.c metadata/service.c
      metadata/config.c metadata/metrics.c"
libs=$(pkg-config --libs jansson yaml-0.1 libcrypto libmicrohttpd)
cflags="-g -O1 -std=gnu11 -D_GNU_SOURCE -pthread -I. $(pkg-config --cflags jansson yaml-0.1 libmicrohttpd)"
san="-fsanitize=address,undefined -fno-sanitize-recover=all"

for h in request spec; do
	bin=$out/fuzz_$h
	# rebuild when any source is newer than the binary
	if [ ! -x "$bin" ] || [ -n "$(find $srcs metadata/*.h model/model.h core/core.h \
		tests/metadata/fuzz/fuzz_$h.c -newer "$bin" 2>/dev/null)" ]; then
		echo "building $bin"
		# shellcheck disable=SC2086
		clang $cflags $san -fsanitize=fuzzer -o "$bin" tests/metadata/fuzz/fuzz_$h.c $srcs $libs -lm
	fi
	corpus=$out/corpus-$h
	mkdir -p "$corpus"
	echo "fuzzing $h for ${secs}s"
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-max_len=4096 -print_final_stats=1 -artifact_prefix="$out/" "$corpus" \
		"tests/metadata/fuzz/corpus-$h" 2>"$out/fuzz_$h.log" || {
		tail -40 "$out/fuzz_$h.log"
		echo "FAIL: fuzz_$h found a problem (log: $out/fuzz_$h.log)"
		exit 1
	}
	grep -E "stat::number_of_executed_runs|Done" "$out/fuzz_$h.log" | tail -2
done
echo "fuzz: no crash, leak or UB"
