#!/bin/sh
# make install PREFIX=... DESTDIR=...: the files land where a user looks
# (binaries, units naming $PREFIX/bin, man pages, rules, example configs,
# /etc/stratus/stratus.yaml), the installed binaries pass -n on the
# installed config, and a second install keeps an edited config.
set -u
cd "${STRATUS_TOP:-.}" || exit 1
B=${BUILD:-build}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
for prefix in /usr /usr/local; do
	D=$T/root$prefix
	make -s install BUILD="$B" PREFIX="$prefix" DESTDIR="$D" >"$T/install.log" 2>&1 ||
		{ fail "make install PREFIX=$prefix: $(tail -5 "$T/install.log")"; continue; }
	units=$D/etc/systemd/system
	[ "$prefix" = /usr ] && units=$D/lib/systemd/system
	for b in stratus-agent stratus-scheduler stratus-metadata stratus-bus; do
		[ -x "$D$prefix/bin/$b" ] || fail "$prefix: $b not installed"
		grep -q "^ExecStart=$prefix/bin/$b -c /etc/stratus/stratus.yaml$" "$units/$b.service" ||
			fail "$prefix: $b.service does not run $prefix/bin/$b"
		out=$("$D$prefix/bin/$b" -n -c "$D/etc/stratus/stratus.yaml" 2>&1) ||
			fail "$prefix: $b -n on the installed config: $out"
	done
	[ -x "$D$prefix/bin/stratusctl" ] || fail "$prefix: stratusctl not installed"
	for f in man/man1/stratusctl.1 man/man5/stratus.yaml.5 man/man8/stratus-agent.8 \
		stratus/prometheus/stratus-rules.yml doc/stratus/examples/hypervisor.yaml doc/stratus/operations.md; do
		[ -f "$D$prefix/share/$f" ] || fail "$prefix: share/$f not installed"
	done
	echo "# edited" >>"$D/etc/stratus/stratus.yaml"
	make -s install BUILD="$B" PREFIX="$prefix" DESTDIR="$D" >/dev/null 2>&1
	tail -n 1 "$D/etc/stratus/stratus.yaml" | grep -q "^# edited$" || fail "$prefix: a second install replaced the edited config"
done
[ $fails = 0 ] && echo "ok: make install for /usr and /usr/local"
exit $((fails > 0))
