#!/bin/sh
# The scheduler: section, pass/fail pairs through `stratus-scheduler -n`:
# every tests/scheduler/config/pass-*.yaml accepted, every fail-*.yaml
# rejected with exit 1 and exactly the message in fail-*.err.
# REGENERATE=1 rewrites the .err files (review them in the diff).
set -u
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
d=tests/scheduler/config
fails=0 n=0
for f in $d/pass-*.yaml; do
	n=$((n + 1))
	if ! out=$("$B/stratus-scheduler" -n -c "$f" 2>&1); then
		echo "FAIL $f: rejected: $out"; fails=$((fails + 1))
	fi
done
for f in $d/fail-*.yaml; do
	n=$((n + 1))
	err=${f%.yaml}.err
	"$B/stratus-scheduler" -n -c "$f" >/dev/null 2>"$B/sched-config-test.err"
	rc=$?
	if [ "${REGENERATE:-}" = 1 ]; then
		cp "$B/sched-config-test.err" "$err"; continue
	fi
	if [ $rc -ne 1 ]; then
		echo "FAIL $f: exit $rc, expected 1"; fails=$((fails + 1))
	elif ! diff -u "$err" "$B/sched-config-test.err"; then
		echo "FAIL $f: message differs (above)"; fails=$((fails + 1))
	fi
done
echo "scheduler config cases: $n, failures: $fails"
[ $fails -eq 0 ]
