#!/bin/sh
# The `metadata:` config section through `stratus-metadata -n`: every
# tests/metadata/config/pass-*.yaml is accepted, every fail-*.yaml rejected
# with exit 1 and exactly the message in fail-*.err (REGENERATE=1 rewrites
# them for review in the diff).
set -u
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
fails=0 n=0
for f in tests/metadata/config/pass-*.yaml; do
	n=$((n + 1))
	out=$("$B/stratus-metadata" -n -c "$f" 2>&1) || { echo "FAIL $f rejected: $out"; fails=$((fails + 1)); }
done
for f in tests/metadata/config/fail-*.yaml; do
	n=$((n + 1))
	err=${f%.yaml}.err
	"$B/stratus-metadata" -n -c "$f" >/dev/null 2>"$B/md-config.err"
	rc=$?
	if [ "${REGENERATE:-}" = 1 ]; then
		cp "$B/md-config.err" "$err"
		continue
	fi
	if [ $rc -ne 1 ]; then
		echo "FAIL $f: exit $rc, expected 1"
		fails=$((fails + 1))
	elif ! diff -u "$err" "$B/md-config.err"; then
		echo "FAIL $f: message differs (above)"
		fails=$((fails + 1))
	fi
done
echo "metadata config cases: $n, failures: $fails"
[ $fails -eq 0 ]
