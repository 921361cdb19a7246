#!/bin/sh
# The Debian packages (debian/, docs/operations.md "Debian packages"), built
# here and installed on a clean Debian 12 root, as an operator would:
#
#   1. `dpkg-buildpackage -us -uc` in a copy of the work tree (its tracked
#      and untracked, not ignored files), then `lintian` on the .changes:
#      no error, warning or info tag left (debian/*.lintian-overrides say
#      why for each one kept).
#   2. A fresh copy of the cached minimal root (tests/lib/fresh-root.sh).
#      A refusal first: `dpkg -i` of stratus-scheduler alone fails on its
#      missing dependency and creates no user, enables no unit.
#      Then `apt-get install ./stratus-*.deb systemd` (host network, for
#      the dependencies from the mirror).
#   3. In a network namespace (only lo) in the root: every daemon passes
#      `-n` on the installed /etc/stratus/stratus.yaml, the unprivileged
#      ones as their system user (setpriv); a broken copy of the config is
#      refused with its file and line; `systemd-analyze verify` passes on
#      the installed units (with their drop-ins); the units are enabled
#      (multi-user.target.wants); _stratus-scheduler, _stratus-metadata
#      and _stratus-bus exist, have no shell and own their state
#      (/var/lib/stratus/scheduler); the config is a conffile; stratus-bus
#      and stratus-scheduler run as their users and `stratusctl flavor
#      list` answers through them, the scheduler's store owned by its user;
#      stratus-metadata runs as its user, its lock in $RUNTIME_DIRECTORY.
#   4. `dpkg -r` of every package keeps the edited conffile, the users and
#      the scheduler's store; `dpkg -P` removes them: no stratus file, user,
#      group or package is left.
#
# Needs root, debhelper, dpkg-dev, fakeroot, lintian (deps/test-deb.txt),
# debootstrap and util-linux. About 6 minutes with a warm cache; KEEP=1
# keeps the root, the packages and the logs.
set -u
STRATUS_TOP=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
export STRATUS_TOP
. "$STRATUS_TOP/tests/lib/fresh-root.sh"

skip() { echo "skip: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, namespaces)"
for t in dpkg-buildpackage dh lintian fakeroot debootstrap unshare chroot git tar; do
	command -v "$t" >/dev/null 2>&1 || skip "$t not found (make deps: deps/test-deb.txt)"
done

T=$(mktemp -d /var/tmp/stratus-packages.XXXXXX)
R=$T/root
start=$(date +%s)
say() { echo "== $* ($(($(date +%s) - start)) s)"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

leftovers() {
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && echo "${p#/proc/}"
	done
}
cleanup() {
	left=$(leftovers)
	if [ -n "$left" ]; then
		echo "FAIL: processes left running in the root: $left" >&2
		kill -9 $left 2>/dev/null
		status=1
	fi
	if [ -n "${KEEP:-}" ]; then
		echo "kept: $T (root $R, packages and logs in $T)"
	else
		fresh_root_remove "$R" && rm -rf "$T"
	fi
	exit "$status"
}
trap 'status=$?; cleanup' EXIT
trap 'exit 1' INT TERM

# run_phase NAME [--net] SCRIPT: SCRIPT in the root, its output in $T/NAME.log
run_phase() {
	name=$1
	shift
	fresh_root_run "$R" "$@" >"$T/$name.log" 2>&1
	rc=$?
	grep -E '^(== |FAIL|ok: )' "$T/$name.log" | sed 's/^/   /'
	[ $rc = 0 ] || fail "$name (exit $rc), last lines of $T/$name.log:
$(tail -n 25 "$T/$name.log")"
}

say "dpkg-buildpackage -us -uc"
mkdir -p "$T/src"
git -C "$STRATUS_TOP" ls-files -z --cached --others --exclude-standard |
	(cd "$STRATUS_TOP" && tar -c --null -T -) | tar -x -C "$T/src" || fail "copy of the work tree"
# a file that git lists but the tree lacks (deleted, not committed): tar said so above
(cd "$T/src" && dpkg-buildpackage -us -uc -j2) >"$T/build.log" 2>&1 ||
	fail "dpkg-buildpackage, last lines of $T/build.log:
$(tail -n 25 "$T/build.log")"
debs=$(cd "$T" && ls stratus-*.deb | grep -v -- -dbgsym_)
echo "   $(echo $debs)"
[ "$(echo "$debs" | wc -l)" = 6 ] || fail "expected 6 packages, got: $debs"

say "lintian"
lintian --display-info --show-overrides "$T"/stratus_*.changes >"$T/lintian.log" 2>&1
tags=$(grep -E '^[EWI]: ' "$T/lintian.log")
[ -z "$tags" ] || fail "lintian tags (fix, or override with a reason in debian/*.lintian-overrides):
$tags"
echo "ok: lintian: no error, warning or info tag ($(grep -c '^O: ' "$T/lintian.log") overridden, each with its reason)"

say "a fresh Debian 12 root"
cached=$(fresh_root_cached) || fail "no Debian 12 root"
fresh_root_copy "$cached" "$R" || fail "copy of $cached"
printf '#!/bin/sh\n# no init in this root: services start only by hand\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"
mkdir -p "$R/root/debs"
for d in $debs; do cp "$T/$d" "$R/root/debs/" || fail "copy of $d"; done

say "dpkg -i, apt-get install ./stratus-*.deb systemd"
run_phase install '
	set -u
	cd /root/debs
	export DEBIAN_FRONTEND=noninteractive
	fail() { echo "FAIL: $*"; exit 1; }
	echo "== refused: dpkg -i stratus-scheduler alone (no stratus-common, no adduser)"
	if dpkg -i stratus-scheduler_*.deb >/tmp/dpkg.out 2>&1; then
		fail "dpkg -i of stratus-scheduler without its dependencies succeeded"
	fi
	cat /tmp/dpkg.out
	grep -q "depends on stratus-common" /tmp/dpkg.out || fail "dpkg does not name the missing stratus-common"
	getent passwd _stratus-scheduler && fail "the refused install created _stratus-scheduler"
	[ -e /etc/systemd/system/multi-user.target.wants/stratus-scheduler.service ] &&
		fail "the refused install enabled stratus-scheduler.service"
	dpkg -r stratus-scheduler >/dev/null || fail "dpkg -r of the unconfigured stratus-scheduler"
	echo "ok: dpkg -i stratus-scheduler alone refused (stratus-common missing), no user, no unit"

	echo "== apt-get install ./stratus-*.deb systemd"
	# the cached root keeps the mirror lists of its debootstrap; refresh them
	# only when they are too old for the packages asked
	apt-get install -y -q --no-install-recommends ./stratus-*.deb systemd >/tmp/apt.out 2>&1 || {
		apt-get update -q >/dev/null &&
			apt-get install -y -q --no-install-recommends ./stratus-*.deb systemd >/tmp/apt.out 2>&1
	} || { cat /tmp/apt.out; fail "apt-get install"; }
	tail -n 3 /tmp/apt.out
	n=$(dpkg-query -W -f="\${db:Status-Status} \${Package}\n" "stratus-*" | grep -c "^installed ")
	[ "$n" = 6 ] || fail "$n stratus packages installed, not 6"
	echo "ok: 6 packages installed with their dependencies"'

say "the installed packages (network namespace: lo only)"
run_phase checks --net '
	set -u
	C=/etc/stratus/stratus.yaml
	fail() { echo "FAIL: $*"; for l in /tmp/*.log; do [ -f "$l" ] && { echo "-- $l"; tail -n 5 "$l"; }; done; exit 1; }

	echo "== -n on the installed config, as each daemon runs"
	out=$(stratus-agent -n -c $C 2>&1) || fail "stratus-agent -n: $out"
	for d in scheduler metadata bus; do
		out=$(setpriv --reuid=_stratus-$d --regid=_stratus-$d --init-groups -- stratus-$d -n -c $C 2>&1) ||
			fail "stratus-$d -n as _stratus-$d: $out"
	done
	out=$(stratusctl --help 2>&1) || fail "stratusctl --help: $out"
	echo "ok: stratus-agent (root), -scheduler, -metadata, -bus (their users) accept $C"

	sed "s/^  missed_heartbeats: .*/  missed_heartbeats: many/" $C >/tmp/bad.yaml
	if out=$(setpriv --reuid=_stratus-scheduler --regid=_stratus-scheduler --init-groups -- stratus-scheduler -n -c /tmp/bad.yaml 2>&1); then
		fail "stratus-scheduler -n accepted missed_heartbeats: many"
	fi
	line=$(grep -n "missed_heartbeats: many" /tmp/bad.yaml | cut -d: -f1)
	echo "$out" | grep -q "/tmp/bad.yaml:$line" || fail "the refusal does not name /tmp/bad.yaml:$line: $out"
	echo "ok: a broken config refused: $out"

	echo "== systemd-analyze verify on the installed units"
	cd /lib/systemd/system
	out=$(systemd-analyze verify stratus-agent.service stratus-scheduler.service \
		stratus-metadata.service stratus-bus.service 2>&1) || fail "systemd-analyze verify: $out"
	[ -z "$out" ] || fail "systemd-analyze verify says: $out"
	for d in agent scheduler metadata bus; do
		[ -L /etc/systemd/system/multi-user.target.wants/stratus-$d.service ] ||
			fail "stratus-$d.service is not enabled"
	done
	for d in scheduler metadata bus; do
		grep -qx "User=_stratus-$d" stratus-$d.service.d/debian.conf ||
			fail "stratus-$d.service.d/debian.conf does not run it as _stratus-$d"
	done
	echo "ok: units verified and enabled; scheduler, metadata, bus run as their users"

	echo "== system users and their state"
	for d in scheduler metadata bus; do
		ent=$(getent passwd _stratus-$d) || fail "no user _stratus-$d"
		uid=$(echo "$ent" | cut -d: -f3)
		[ "$uid" -lt 1000 ] || fail "_stratus-$d is no system user (uid $uid)"
		case "$ent" in *:/usr/sbin/nologin) ;; *) fail "_stratus-$d has a login shell: $ent" ;; esac
		getent group _stratus-$d >/dev/null || fail "no group _stratus-$d"
	done
	own=$(stat -c "%U:%G %a" /var/lib/stratus/scheduler)
	[ "$own" = "_stratus-scheduler:_stratus-scheduler 750" ] ||
		fail "/var/lib/stratus/scheduler is $own, not _stratus-scheduler:_stratus-scheduler 750"
	for dir in /var/lib/stratus/instances /var/cache/stratus/images /var/log/stratus/console; do
		[ "$(stat -c %U "$dir" 2>/dev/null)" = root ] || fail "$dir missing or not root'"'"'s (the agent'"'"'s)"
	done
	dpkg-query -W -f="\${Conffiles}\n" stratus-common | grep -q "^ /etc/stratus/stratus.yaml " ||
		fail "/etc/stratus/stratus.yaml is not a conffile of stratus-common"
	echo "ok: _stratus-scheduler, _stratus-metadata, _stratus-bus (no shell); scheduler owns its store dir; config is a conffile"

	echo "== stratus-bus and stratus-scheduler as their users, stratusctl through them"
	# what the units'"'"' RuntimeDirectory=stratus would make
	install -d -o _stratus-bus -g _stratus-bus /run/stratus
	as() { echo setpriv --reuid="$1" --regid="$1" --init-groups --; }
	$(as _stratus-bus) stratus-bus -c $C >/tmp/bus.log 2>&1 &
	bus=$!
	for _ in $(seq 50); do [ -s /run/stratus/bus.addr ] && break; sleep 0.1; done
	[ -s /run/stratus/bus.addr ] || fail "stratus-bus wrote no /run/stratus/bus.addr"
	$(as _stratus-scheduler) stratus-scheduler -c $C >/tmp/scheduler.log 2>&1 &
	sched=$!
	# stratusctl signs with the admin credential the scheduler writes beside its
	# store on first start (mode 0600, owned by its user; root reads it)
	export STRATUS_CREDENTIAL=/var/lib/stratus/scheduler/admin.credential
	ok=""
	for _ in $(seq 100); do
		if stratusctl flavor list >/tmp/flavors.out 2>/tmp/stratusctl.log; then ok=1; break; fi
		sleep 0.2
	done
	[ -n "$ok" ] || fail "stratusctl flavor list: $(cat /tmp/stratusctl.log)"
	grep -q m1.small /tmp/flavors.out || fail "stratusctl flavor list lacks m1.small: $(cat /tmp/flavors.out)"
	uid_of() { awk '"'"'/^Uid:/ { print $3 }'"'"' /proc/$1/status; }   # the effective uid
	[ "$(uid_of $bus)" = "$(id -u _stratus-bus)" ] || fail "stratus-bus does not run as _stratus-bus"
	[ "$(uid_of $sched)" = "$(id -u _stratus-scheduler)" ] ||
		fail "stratus-scheduler does not run as _stratus-scheduler"
	[ "$(stat -c %U /var/lib/stratus/scheduler/scheduler.db)" = _stratus-scheduler ] ||
		fail "scheduler.db is not _stratus-scheduler'"'"'s"
	echo "ok: stratusctl flavor list answered by stratus-scheduler (_stratus-scheduler) over stratus-bus (_stratus-bus)"
	kill -TERM $sched $bus
	wait $sched $bus

	echo "== stratus-metadata as _stratus-metadata, its lock in its RuntimeDirectory"
	install -d -o _stratus-metadata -g _stratus-metadata /run/stratus-metadata
	sysctl -q -w net.ipv4.tcp_fwmark_accept=1 # what the root ExecStartPre of the unit does
	echo "[]" >/tmp/instances.json
	RUNTIME_DIRECTORY=/run/stratus-metadata $(as _stratus-metadata) stratus-metadata -c $C \
		--instances /tmp/instances.json --listen 127.0.0.1:0 >/tmp/metadata.log 2>&1 &
	md=$!
	for _ in $(seq 50); do [ -s /run/stratus-metadata/metadata.pid ] && break; sleep 0.1; done
	[ "$(cat /run/stratus-metadata/metadata.pid 2>/dev/null)" = $md ] ||
		fail "stratus-metadata holds no lock /run/stratus-metadata/metadata.pid"
	[ "$(uid_of $md)" = "$(id -u _stratus-metadata)" ] || fail "stratus-metadata does not run as _stratus-metadata"
	kill -TERM $md
	wait $md
	echo "ok: stratus-metadata ran as _stratus-metadata (lock /run/stratus-metadata/metadata.pid)"

	echo "== dpkg -r: the edited conffile, the users and the store stay"
	echo "# edited by the operator" >>$C
	pkgs="stratus-agent stratus-scheduler stratus-metadata stratus-bus stratus-client stratus-common"
	dpkg -r $pkgs >/tmp/remove.log 2>&1 || fail "dpkg -r: $(tail -n 5 /tmp/remove.log)"
	tail -n 1 $C | grep -qx "# edited by the operator" || fail "dpkg -r lost the edited $C"
	[ ! -e /usr/bin/stratus-agent ] && [ ! -e /lib/systemd/system/stratus-bus.service ] ||
		fail "dpkg -r left binaries or units"
	getent passwd _stratus-scheduler >/dev/null || fail "dpkg -r removed _stratus-scheduler (purge does)"
	[ -f /var/lib/stratus/scheduler/scheduler.db ] || fail "dpkg -r removed the scheduler store (purge does)"
	echo "ok: removed; $C (edited), the users and the scheduler store kept"

	echo "== dpkg -P: nothing left"
	dpkg -P $pkgs >/tmp/purge.log 2>&1 || fail "dpkg -P: $(tail -n 5 /tmp/purge.log)"
	[ ! -e $C ] || fail "dpkg -P left $C"
	for d in scheduler metadata bus; do
		getent passwd _stratus-$d >/dev/null && fail "dpkg -P left the user _stratus-$d"
		getent group _stratus-$d >/dev/null && fail "dpkg -P left the group _stratus-$d"
	done
	left=$(find / -xdev \( -path /root -o -path /proc -o -path /tmp -o -path /run -o -path /var/cache/apt \) -prune \
		-o -name "*stratus*" -print 2>/dev/null)
	[ -z "$left" ] || fail "dpkg -P left: $left"
	[ -z "$(dpkg-query -W -f="\${Package}\n" "stratus-*" 2>/dev/null)" ] || fail "dpkg still knows stratus packages"
	echo "ok: purged: no stratus file, user, group or package left"'

say "passed"
