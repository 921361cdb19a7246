#!/bin/bash
# Runs every test: the cmocka binaries built from tests/**/test_*.c and the
# scripts tests/**/test_*.sh. A test passes with exit 0, is skipped with 77
# (a failure under CI=true: CI must run everything), fails otherwise.
#   TESTS="P1 P2"  only tests whose path contains one of the patterns
#   BUILD=DIR      build directory (build or build-san)
#   SUITE=e2e      the end-to-end tests instead: tests/e2e/e2e_*.sh and the
#                  scripts with a line "# suite: e2e" (they boot a real guest:
#                  run once, not again under the sanitizers)
#   JOBS=N         tests run at once (default 2)
#   STRATUS_TEST_LOCK=FILE  host tests run under flock FILE (engineers
#                  sharing one machine; do not set it under a flock of FILE)
# Most tests wait on daemons more than they compute, so make check runs two
# at a time. A test that touches the machine itself (the system libvirtd,
# host bridges and namespaces, installed files: a "# test-host" line, or
# virsh, qemu:///system, tests/lib/libvirt.sh, ip netns, unshare, stratusbr,
# make install, the tiny guest or qemu-system in its text) never runs
# beside another such test.
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
jobs=${JOBS:-2}
if [ "${SUITE:-}" = e2e ]; then
	# end-to-end tests: real libvirtd, QEMU guests (make e2e); ten guests
	# under TCG behind a libvirtd that re-probes QEMU on each define are slow
	# and the tests elsewhere that boot a real guest ("# suite: e2e")
	list=$( (find tests/e2e -name 'e2e_*.sh'; grep -lx '# suite: e2e' $(find tests -name 'test_*.sh')) | sort)
	script_limit=2400
	# one guest-booting test at a time (host tests never run side by side);
	# the second slot is for the "# test-host: none" tests
	jobs=${JOBS:-2}
else
	list=$( (find "$BUILD/tests" -type f -name 'test_*' -perm -u+x 2>/dev/null
		find tests -name 'test_*.sh' | xargs grep -Lx '# suite: e2e') | sort)
fi
case "$jobs" in '' | *[!0-9]* | 0) echo "run-tests: JOBS=$jobs: expected a number >= 1" >&2; exit 2 ;; esac

queue=()
for t in $list; do
	if [ -n "$pattern" ]; then
		match=""
		for p in $pattern; do
			case "$t" in *"$p"*) match=1 ;; esac
		done
		[ -n "$match" ] || continue
	fi
	queue+=("$t")
done

touches_host() {
	# a test that makes its own machine (a root of its own, pid, mount and
	# network namespaces; nothing of the host's touched): "# test-host: none"
	case "$1" in *.sh) grep -qx '# test-host: none' "$1" && return 1 ;; esac
	[ "${SUITE:-}" = e2e ] && return 0 # every other e2e test boots real guests
	case "$1" in
	*.sh) grep -qE '^# test-host|virsh|qemu:///system|tests/lib/libvirt\.sh|ip netns|unshare|stratusbr|make .*install|build-tiny|qemu-system' "$1" ;;
	*) return 1 ;;
	esac
}

declare -A running_test=() running_start=() running_host=()
nrunning=0
host_busy=""
rcdir=$(mktemp -d "${TMPDIR:-/tmp}/stratus-run-tests.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$rcdir"' EXIT

start() {
	local t=$1 host=$2 name lock=()
	name=$(echo "$t" | sed -e "s|^$BUILD/||" -e 's|/|_|g')
	[ "$host" = 1 ] && [ -n "${STRATUS_TEST_LOCK:-}" ] && lock=(flock -o "$STRATUS_TEST_LOCK") # -o: what the test leaves running does not keep the lock
	(
		case "$t" in
		*.sh) "${lock[@]}" timeout "$script_limit" sh "$t" >"$logdir/$name.log" 2>&1 ;;
		*) "${lock[@]}" timeout 600 "$t" >"$logdir/$name.log" 2>&1 ;;
		esac
		echo $? >"$rcdir/$name"
	) &
	running_test[$!]=$t
	nrunning=$((nrunning + 1))
	running_start[$!]=$(date +%s)
}

finish() {
	local pid=$1 t name rc secs
	t=${running_test[$pid]}
	name=$(echo "$t" | sed -e "s|^$BUILD/||" -e 's|/|_|g')
	rc=$(cat "$rcdir/$name" 2>/dev/null || echo 1)
	secs=$(( $(date +%s) - running_start[$pid] ))
	[ "${running_host[$pid]:-}" = 1 ] && host_busy=""
	unset "running_test[$pid]" "running_start[$pid]" "running_host[$pid]"
	nrunning=$((nrunning - 1))
	if [ "$rc" -eq 0 ]; then
		pass=$((pass + 1)); echo "PASS  $t (${secs}s)"
	elif [ "$rc" -eq 77 ] && [ "${CI:-}" != true ]; then
		skip=$((skip + 1)); echo "SKIP  $t: $(tail -n 1 "$logdir/$name.log")"
	else
		fail=$((fail + 1)); failed="$failed $t"
		echo "FAIL  $t (exit $rc, ${secs}s) — its FAIL lines, then the last lines of $logdir/$name.log:"
		# the reason first: the dumps a failing test prints after it
		# (daemon logs) push it out of the tail
		# (FAIL: from the shell tests, cmocka's ERROR and LINE lines)
		grep -m 6 -E '^FAIL|^\[  ERROR   \]|^\[   LINE   \]' \
			"$logdir/$name.log" | sed 's/^/  > /'
		tail -n 30 "$logdir/$name.log" | sed 's/^/    /'
	fi
}

while [ ${#queue[@]} -gt 0 ] || [ "$nrunning" -gt 0 ]; do
	# start what may start: the first tests in order, a host test only
	# while no other host test runs
	while [ "$nrunning" -lt "$jobs" ] && [ ${#queue[@]} -gt 0 ]; do
		pick=-1
		for i in "${!queue[@]}"; do
			if touches_host "${queue[$i]}"; then
				[ -z "$host_busy" ] || continue
			fi
			pick=$i; break
		done
		[ "$pick" -ge 0 ] || break
		t=${queue[$pick]}
		unset "queue[$pick]"
		queue=("${queue[@]}")
		if touches_host "$t"; then
			start "$t" 1
			running_host[$!]=1; host_busy=1
		else
			start "$t" 0
		fi
	done
	done_pid=""
	wait -n -p done_pid
	[ -n "$done_pid" ] && [ -n "${running_test[$done_pid]:-}" ] && finish "$done_pid"
done
echo
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
