#!/bin/sh
# The fresh machine: what `make demo` and `make check` install, on a minimal
# Debian 12 (debootstrap --variant=minbase bookworm, cached) with nothing
# else, must be enough to build Stratus and run what the demo runs.
#
#   1. A fresh copy of the cached root (tests/lib/fresh-root.sh) with this
#      repository's HEAD in /root/stratus (git archive: committed work only).
#   2. demo: `sh deploy/demo.sh deps` (make demo's install step) and
#      `make -j2 all`, as root in the root (host network for the mirror).
#   3. demo's services, in a network namespace of their own: prepare-host.sh
#      (bridge, dnsmasq, virtlogd -d, libvirtd -d answering qemu:///system;
#      no hugepages: they are the host's), the image server, stratus-bus,
#      -scheduler, -agent (qemu driver), -metadata on the demo's
#      configuration; a domain rendered by stratus-agent render-domain
#      defined in libvirt (not booted); `stratusctl host list` shows the host
#      up; the metadata service and the image server answer.
#   4. check: `make -j2 check TESTS="$FRESH_CHECK_TESTS"` (the build, the test
#      lists' install, a few unit tests) in the same root; first
#      `apt-get install make` when make is missing (make demo's install step
#      brings it: build-essential), as a user on a fresh machine would.
# FRESH_ORDER=check runs 4 before 2 and 3 (then the check lists alone must do;
# by default the demo lists alone must). Takes about 10 minutes with a warm
# cache (.debs are kept in /var/cache/stratus/fresh-root/apt-archives), the
# first run more (debootstrap, downloads). KEEP=1 keeps the root and logs.
#
# The root has no init: package scripts may not start services in it
# (policy-rc.d), the test starts what the demo starts. The host's /run,
# /dev and daemons are never touched: the root gets its own /proc (pid
# namespace), /run, /tmp and /dev (a tmpfs with null, zero, full, random,
# urandom, tty; no /dev/kvm: the domain is only defined); everything started
# in it dies with its pid namespace, and the test checks that nothing is
# left running with its root in the copy.
# test-host: none
set -u
STRATUS_TOP=${STRATUS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
export STRATUS_TOP
. "$STRATUS_TOP/tests/lib/fresh-root.sh"

skip() { echo "skip: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, namespaces)"
for t in debootstrap unshare chroot git tar; do
	command -v "$t" >/dev/null 2>&1 || skip "$t not found (apt-get install debootstrap util-linux git)"
done
git -C "$STRATUS_TOP" rev-parse --verify -q HEAD >/dev/null || skip "not a git checkout: no HEAD to copy"

ORDER=${FRESH_ORDER:-demo}
CHECK_TESTS=${FRESH_CHECK_TESTS:-model/test_spec store/test_store core/test_core}
T=$(mktemp -d /var/tmp/stratus-fresh-root.XXXXXX)
R=$T/root
start=$(date +%s)

say() { echo "== $* ($(($(date +%s) - start)) s)"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# processes whose root is the copy: none may outlive their pid namespace
leftovers() {
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && echo "${p#/proc/}"
	done
}
cleanup() {
	left=$(leftovers)
	if [ -n "$left" ]; then
		echo "FAIL: processes left running in the root: $(for p in $left; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done)" >&2
		kill -9 $left 2>/dev/null
		status=1
	fi
	if [ -n "${KEEP:-}" ]; then
		echo "kept: $T (root $R, logs $T/*.log)"
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
	grep -E '^(== |FAIL|ok: |PASS  |SKIP  |[0-9]+ passed, )' "$T/$name.log" | sed 's/^/   /'
	[ $rc = 0 ] || fail "$name (exit $rc), last lines of $T/$name.log:
$(tail -n 25 "$T/$name.log")"
}

say "the fresh root"
cached=$(fresh_root_cached) || fail "no Debian 12 root"
fresh_root_copy "$cached" "$R" || fail "copy of $cached"
printf '#!/bin/sh\n# no init in this root: services start only by hand\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"
mkdir -p "$R/root/stratus"
git -C "$STRATUS_TOP" archive HEAD | tar -x -C "$R/root/stratus" || fail "git archive HEAD"
echo "   $cached ($(cat "$cached/.complete")) + $(git -C "$STRATUS_TOP" log -1 --format='%h %s' HEAD | cut -c1-70)"
git -C "$STRATUS_TOP" diff --quiet HEAD -- deps deploy Makefile 2>/dev/null ||
	echo "   note: uncommitted changes in deps/, deploy/ or Makefile are not in the copy (HEAD only)"

demo_install() {
	say "make demo's install step and build: sh deploy/demo.sh deps; make -j2 all"
	run_phase demo-install '
		set -e
		cd /root/stratus
		echo "== sh deploy/demo.sh deps"
		sh deploy/demo.sh deps
		echo "== make -j2 all"
		make -s -j2 all
		echo "ok: built $(ls build | grep -c "^stratus")"'
}

# what deploy/demo.sh start runs after its install step, but the Debian guest
# image (debootstrap and a loop device in the root): a tiny image instead
demo_services() {
	say "the demo's services in a network namespace"
	run_phase demo-services --net '
		set -u
		cd /root/stratus
		B=build DEMO=/var/lib/stratus-demo RUN=/run/stratus HOST=$(hostname -s)
		export STRATUS_CONFIG=$DEMO/stratus.yaml
		fail() { echo "FAIL: $*"; for l in $DEMO/logs/*.log; do echo "-- $l"; tail -n 5 "$l"; done; exit 1; }
		down() {
			for d in metadata agent scheduler bus; do
				[ -f "$RUN/$d.pid" ] && kill "$(cat "$RUN/$d.pid")" 2>/dev/null
			done
			sh deploy/host/serve-images.sh stop - 8099 >/dev/null 2>&1
			STRATUS_BRIDGE=stratusbr0 sh deploy/host/prepare-host.sh --undo >/dev/null 2>&1
		}
		trap down EXIT
		mkdir -p "$DEMO/logs" "$DEMO/images" "$RUN"

		echo "== deploy/host/prepare-host.sh --hugepages 0 (make demo: --hugepages 256)"
		STRATUS_BRIDGE=stratusbr0 sh deploy/host/prepare-host.sh --hugepages 0 || fail "prepare-host"
		virsh -c qemu:///system version || fail "qemu:///system does not answer"
		echo "ok: virsh -c qemu:///system version"

		echo "== deploy/host/serve-images.sh start $DEMO/images 8099"
		qemu-img create -q -f qcow2 "$DEMO/images/tiny.qcow2" 16M || fail "qemu-img"
		sh deploy/host/serve-images.sh start "$DEMO/images" 8099 || fail "serve-images"
		curl -fsS -o /dev/null http://127.0.0.1:8099/tiny.qcow2 || fail "the image server does not serve the image"
		echo "ok: the image server answers"

		echo "== the demo configuration (deploy/demo/stratus.yaml.in) and its daemons"
		sum=$(sha256sum "$DEMO/images/tiny.qcow2" | cut -d" " -f1)
		sed -e "s|@DEMO@|$DEMO|g" -e "s|@HOST@|$HOST|g" \
			-e "s|@IMAGE_LINE@|url=http://127.0.0.1:8099/tiny.qcow2 checksum=sha256:$sum disk_format=qcow2 min_disk_gb=1|" \
			-e "s|@DIRECT_IMAGE_LINE@|url=http://127.0.0.1:8099/tiny.qcow2 checksum=sha256:$sum disk_format=qcow2 min_disk_gb=1|" \
			-e "s|@DEDICATED@||" -e "s|@SHARED@|0|" \
			deploy/demo/stratus.yaml.in >"$DEMO/stratus.yaml"
		for d in bus scheduler agent metadata; do
			"$B/stratus-$d" -n -c "$DEMO/stratus.yaml" >/dev/null || fail "config rejected by stratus-$d"
			setsid "$B/stratus-$d" -c "$DEMO/stratus.yaml" >>"$DEMO/logs/$d.log" 2>&1 </dev/null &
			echo $! >"$RUN/$d.pid"
			if [ $d = bus ]; then
				for _ in $(seq 50); do [ -s "$RUN/bus.addr" ] && break; sleep 0.1; done
			fi
			sleep 0.5
			kill -0 "$(cat "$RUN/$d.pid")" 2>/dev/null || fail "stratus-$d did not start"
		done
		echo "ok: stratus-bus, -scheduler, -agent, -metadata running"

		up=""
		for _ in $(seq 150); do
			if "$B/stratusctl" --json host list 2>/dev/null |
				jq -e --arg h "$HOST" ".[] | select(.name == \$h and .state == \"up\")" >/dev/null; then
				up=1
				break
			fi
			sleep 0.2
		done
		"$B/stratusctl" host list
		[ -n "$up" ] || fail "stratusctl host list does not show $HOST up"
		echo "ok: stratusctl host list shows $HOST up"
		curl -fsS -o /dev/null http://169.254.169.254/healthz || fail "stratus-metadata does not answer on 169.254.169.254:80"
		echo "ok: stratus-metadata answers"

		echo "== a domain rendered by stratus-agent render-domain, defined in libvirt"
		"$B/stratus-agent" -c "$DEMO/stratus.yaml" render-domain --accel qemu \
			tests/vmm/data/shared-qemu.json >/tmp/domain.xml || fail "render-domain"
		dom=$(sed -n "s|^ *<name>\(.*\)</name>|\1|p" /tmp/domain.xml | head -n 1)
		virsh -c qemu:///system define /tmp/domain.xml || fail "virsh define"
		virsh -c qemu:///system domstate "$dom" || fail "domstate $dom"
		virsh -c qemu:///system undefine "$dom" || fail "virsh undefine $dom"
		echo "ok: defined and undefined $dom"'
}

check_steps() {
	say "make check: make -j2 check TESTS=\"$CHECK_TESTS\""
	run_phase check "
		set -e
		cd /root/stratus
		# make itself is not on a fresh Debian: the one package a user
		# installs by hand first (docs/operations.md)
		if ! command -v make >/dev/null; then
			echo '== apt-get install make'
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends make
		fi
		echo '== make -j2 check TESTS=\"$CHECK_TESTS\"'
		make -s -j2 check TESTS='$CHECK_TESTS' >/tmp/check.out 2>&1 || { cat /tmp/check.out; exit 1; }
		cat /tmp/check.out
		# a pattern that matches no test would pass with nothing run
		grep -Eq '^[1-9][0-9]* passed, 0 failed' /tmp/check.out || { echo 'FAIL: make check ran no test'; exit 1; }
		echo 'ok: make check'"
}

case "$ORDER" in
demo) demo_install; demo_services; check_steps ;;
check) check_steps; demo_install; demo_services ;;
*) fail "FRESH_ORDER is demo or check, not '$ORDER'" ;;
esac
say "passed"
