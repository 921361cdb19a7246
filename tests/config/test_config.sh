#!/bin/sh
# Config pass/fail pairs (STYLE.md), for every folder tests/config and
# tests/*/config: every pass-*.yaml must be accepted by `DAEMON -n`, every
# fail-*.yaml rejected with exit 1 and exactly the message in fail-*.err.
# The daemon: a first line "# daemon: NAME" in the file, else the folder's
# DAEMON file, else stratus-agent. REGENERATE=1 rewrites the .err files.
set -u
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
fails=0 n=0
daemon_of() {
	d=$(sed -n '1s/^# daemon: *//p' "$1")
	[ -z "$d" ] && [ -f "$(dirname "$1")/DAEMON" ] && d=$(cat "$(dirname "$1")/DAEMON")
	echo "${d:-stratus-agent}"
}
dirs="tests/config $(ls -d tests/*/config 2>/dev/null | grep -v '^tests/config$')"
for f in $(for d in $dirs; do ls "$d"/pass-*.yaml 2>/dev/null; done); do
	n=$((n + 1))
	d=$(daemon_of "$f")
	if ! out=$("$B/$d" -n -c "$f" 2>&1); then
		echo "FAIL $f: rejected by $d: $out"
		fails=$((fails + 1))
	fi
done
for f in $(for d in $dirs; do ls "$d"/fail-*.yaml 2>/dev/null; done); do
	n=$((n + 1))
	d=$(daemon_of "$f")
	err=${f%.yaml}.err
	"$B/$d" -n -c "$f" >/dev/null 2>"$B/config-test.err"
	rc=$?
	if [ "${REGENERATE:-}" = 1 ]; then
		cp "$B/config-test.err" "$err"
		continue
	fi
	if [ $rc -ne 1 ]; then
		echo "FAIL $f: $d -n exited $rc, expected 1"
		fails=$((fails + 1))
	elif ! diff -u "$err" "$B/config-test.err"; then
		echo "FAIL $f: message differs (above)"
		fails=$((fails + 1))
	fi
done
# a missing file is an error that names it
if "$B/stratus-agent" -n -c tests/config/does-not-exist.yaml 2>"$B/config-test.err"; then
	echo "FAIL: a missing config file was accepted"; fails=$((fails + 1))
elif ! grep -q "config: tests/config/does-not-exist.yaml: No such file or directory" "$B/config-test.err"; then
	echo "FAIL: missing file message: $(cat "$B/config-test.err")"; fails=$((fails + 1))
fi
echo "config cases: $n, failures: $fails"
[ $fails -eq 0 ]
