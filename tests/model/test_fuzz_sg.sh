#!/bin/sh
# Fuzz the security group rule parser (model/secgroup.c: the tenant's
# secgroup.rule.add body) for a bounded time (FUZZ_SECONDS, default 10)
# with clang's libFuzzer under ASan and UBSan; a crash, leak, UB report or
# a rule that does not survive its own JSON form fails the test.
set -eu
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
secs=${FUZZ_SECONDS:-10}
out=$B/fuzz
mkdir -p "$out"
command -v clang >/dev/null || { echo "clang not installed (deps/test-metadata.txt)"; exit 1; }
srcs="core/err.c core/log.c core/util.c model/secgroup.c"
libs=$(pkg-config --libs jansson libcrypto)
cflags="-g -O1 -std=gnu11 -D_GNU_SOURCE -pthread -I. $(pkg-config --cflags jansson)"
san="-fsanitize=address,undefined -fno-sanitize-recover=all"
bin=$out/fuzz_sg_rule
# shellcheck disable=SC2086
clang $cflags $san -fsanitize=fuzzer -o "$bin" tests/model/fuzz/fuzz_sg_rule.c $srcs $libs -lm
corpus=$out/corpus-sg_rule
mkdir -p "$corpus"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=1024 \
	-artifact_prefix="$out/" "$corpus" tests/model/fuzz/corpus-sg_rule 2>"$out/fuzz_sg_rule.log" || {
	tail -40 "$out/fuzz_sg_rule.log"
	echo "FAIL: fuzz_sg_rule found a problem (reproducer under $out/)"
	exit 1
}
grep -E "^Done|stat::number_of_executed_units" "$out/fuzz_sg_rule.log" | head -2
echo "fuzz_sg_rule: ok"
