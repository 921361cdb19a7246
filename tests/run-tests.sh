#!/bin/sh
# Runs every test: the cmocka binaries built from tests/**/test_*.c and the
# scripts tests/**/test_*.sh. A test passes with exit 0, is skipped with 77
# (a failure under CI=true: CI must run everything), fails otherwise.
#   TESTS="P1 P2"  only tests whose path contains one of the patterns
#   BUILD=DIR      build directory (build or build-san)
#   SUITE=e2e      the end-to-end tests tests/e2e/e2e_*.sh instead
# Ends with the line "N passed, N failed, N skipped".
set -u
BUILD=${BUILD:-build}
export BUILD
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export STRATUS_TOP="$top"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
logdir="$BUILD/test-logs"
mkdir -p "$logdir"
pass=0 fail=0 skip=0 failed=""
pattern=${TESTS:-}
script_limit=900
if [ "${SUITE:-}" = e2e ]; then
	# end-to-end tests: real libvirtd, QEMU guests (make e2e); ten guests
	# under TCG behind a libvirtd that re-probes QEMU on each define are slow
	list=$(find tests/e2e -name 'e2e_*.sh' | sort)
	script_limit=2400
else
	list=$( (find "$BUILD/tests" -type f -name 'test_*' -perm -u+x 2>/dev/null; find tests -name 'test_*.sh') | sort)
fi
for t in $list; do
	if [ -n "$pattern" ]; then
		match=""
		for p in $pattern; do
			case "$t" in *"$p"*) match=1 ;; esac
		done
		[ -n "$match" ] || continue
	fi
	name=$(echo "$t" | sed -e "s|^$BUILD/||" -e 's|/|_|g')
	start=$(date +%s)
	case "$t" in
	*.sh) timeout "$script_limit" sh "$t" >"$logdir/$name.log" 2>&1 ;;
	*) timeout 600 "$t" >"$logdir/$name.log" 2>&1 ;;
	esac
	rc=$?
	secs=$(( $(date +%s) - start ))
	if [ $rc -eq 0 ]; then
		pass=$((pass + 1)); echo "PASS  $t (${secs}s)"
	elif [ $rc -eq 77 ] && [ "${CI:-}" != true ]; then
		skip=$((skip + 1)); echo "SKIP  $t: $(tail -n 1 "$logdir/$name.log")"
	else
		fail=$((fail + 1)); failed="$failed $t"
		echo "FAIL  $t (exit $rc, ${secs}s) — last lines of $logdir/$name.log:"
		tail -n 30 "$logdir/$name.log" | sed 's/^/    /'
	fi
done
echo
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
