#!/bin/sh
# The man pages (beside the code, OpenBSD style: cli/stratusctl.1,
# core/stratus.yaml.5, agent/ scheduler/ metadata/ bus/ *.8) are mandoc
# -Tlint clean, every config key the code knows (the cfg_field tables, as
# build/tests/ops/cfg_keys walks them) is documented in stratus.yaml(5)
# with its default, and every stratusctl command (its --help, from the
# command table) has its entry in stratusctl(1).
set -u
cd "${STRATUS_TOP:-.}" || exit 1
B=${BUILD:-build}
command -v mandoc >/dev/null || { echo "SKIP: no mandoc (deps/test-ops.txt)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
PAGES="cli/stratusctl.1 core/stratus.yaml.5 agent/stratus-agent.8 scheduler/stratus-scheduler.8
metadata/stratus-metadata.8 bus/stratus-bus.8"

for p in $PAGES; do
	[ -f "$p" ] || { fail "$p: missing"; continue; }
	mandoc -Tlint -Wwarning "$p" >"$T/lint" 2>&1 || fail "$p: mandoc -Tlint: $(cat "$T/lint")"
done

# every key, in its section (.Ss SECTION ... .It Ic KEY), with its default
"$B/tests/ops/cfg_keys" >"$T/keys" || fail "cfg_keys"
[ "$(wc -l <"$T/keys")" -gt 90 ] || fail "cfg_keys lists only $(wc -l <"$T/keys") keys"
Y=core/stratus.yaml.5
while IFS="$(printf '\t')" read -r key type def; do
	sec=${key%%.*} rest=${key#*.}
	# the page's lines of that section
	awk -v s="$sec" '/^\.Ss /{on = ($2 == s)} on' "$Y" >"$T/sec"
	grep -qx "\.It Ic $rest Ar $type" "$T/sec" || { fail "stratus.yaml(5): $key ($type) not in section $sec"; continue; }
	if [ -n "$def" ]; then
		d=$(printf '%s' "$def" | sed 's/"/\\(dq/g')
		grep -A1 -x "\.It Ic $rest Ar $type" "$T/sec" | grep -qF "(default: $d)" ||
			fail "stratus.yaml(5): $key: default '$def' not given"
	fi
done <"$T/keys"
# and no key the code does not know
awk '/^\.Ss /{s=$2} /^\.It Ic /{print s "." $3}' "$Y" | sort >"$T/page-keys"
cut -f1 "$T/keys" | sort >"$T/code-keys"
comm -23 "$T/page-keys" "$T/code-keys" | while read -r k; do echo "FAIL: stratus.yaml(5) documents $k, which the code does not know"; done >"$T/extra"
[ -s "$T/extra" ] && { cat "$T/extra"; fails=$((fails + 1)); }

# every stratusctl command
"$B/stratusctl" --help | sed -n '/^Commands:/,/^$/p' | sed '1d;$d' | awk '{print $1}' >"$T/cmds"
[ "$(wc -l <"$T/cmds")" -ge 10 ] || fail "stratusctl --help lists $(wc -l <"$T/cmds") commands"
while read -r c; do
	grep -qx "\.It Cm $c" cli/stratusctl.1 || fail "stratusctl(1): command $c missing"
done <"$T/cmds"

# the check can fail: a page without one key is caught
grep -v -x '\.It Ic metrics_listen Ar string' "$Y" >"$T/short.5"
awk '/^\.Ss /{s=$2} /^\.It Ic /{print s "." $3}' "$T/short.5" | sort | comm -13 - "$T/code-keys" |
	grep -q '^scheduler.metrics_listen$' || fail "a missing key would not be noticed"
[ $fails = 0 ] && echo "ok: $(echo $PAGES | wc -w) pages lint-clean, $(wc -l <"$T/keys") keys, $(wc -l <"$T/cmds") commands"
exit $((fails > 0))
