#!/bin/sh
# deploy/prometheus: the rules are valid (promtool check rules), every alert
# has a unit test that passes (promtool test rules), the example scrape
# config is valid, and the tests can fail: a rule with its threshold
# moved makes them fail.
set -u
cd "${STRATUS_TOP:-.}" || exit 1
command -v promtool >/dev/null || { echo "SKIP: no promtool (deps/test-ops.txt)"; exit 77; }
D=deploy/prometheus
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

promtool check rules "$D/stratus-rules.yml" >"$T/check.out" 2>&1 || fail "check rules: $(cat "$T/check.out")"
promtool test rules "$D/stratus-rules.test.yml" >"$T/test.out" 2>&1 || fail "test rules: $(cat "$T/test.out")"
promtool check config "$D/prometheus.yml" >"$T/config.out" 2>&1 || fail "check config: $(cat "$T/config.out")"
# each alert has at least one unit test that expects it
for a in $(sed -n 's/^ *- alert: *//p' "$D/stratus-rules.yml"); do
	grep -q "alertname: $a\$" "$D/stratus-rules.test.yml" || fail "alert $a has no unit test"
done
[ "$(grep -c '^ *- alert:' "$D/stratus-rules.yml")" -ge 8 ] || fail "fewer alerts than shipped"
# the tests can fail: the overcommit threshold moved to 50 % makes them fail
cp "$D/stratus-rules.test.yml" "$T/"
sed 's/stratus_host_steal_ratio > 0.05/stratus_host_steal_ratio > 0.5/' "$D/stratus-rules.yml" >"$T/stratus-rules.yml"
if promtool test rules "$T/stratus-rules.test.yml" >"$T/mut.out" 2>&1; then
	fail "unit tests pass with the overcommit threshold at 50 %"
fi
grep -q StratusHostOvercommitted "$T/mut.out" || fail "mutation: $(cat "$T/mut.out")"
[ $fails = 0 ] && echo "ok: rules valid, every alert unit-tested"
exit $((fails > 0))
