# Two libvirt hosts on one machine, for live migration (issue 15).
# Sourced by tests (POSIX sh), or run: sh tests/lib/twohost.sh up|down|status DIR
#
#   . "$STRATUS_TOP/tests/lib/twohost.sh"
#   TH_DIR=$T/hosts twohost_up || exit 1     # two libvirtds, h1 and h2
#   trap 'twohost_down' EXIT                 # stops them, removes the network
#   th_exec 1 CMD...                          # run CMD inside host 1 (net+mount+uts)
#
# Each host N (1, 2) is a libvirtd (with its own virtlogd) in its own
# network, mount and UTS namespace:
#   network  namespace ${TH_PREFIX}N with eth0 at $TH_NET.1N/24 on the
#            bridge ${TH_PREFIX}br ($TH_NET.1, root namespace: the bus lives there)
#   mount    private /run/libvirt, /var/lib/libvirt, /etc/libvirt,
#            /var/log/libvirt, /var/cache/libvirt and the instance directory
#            $TH_INST, bind-mounted from $TH_DIR/hN/ (so each host has its own
#            disks at the same path, as two machines would)
#   uts      hostname ${TH_PREFIX}hN, in a private /etc/hosts with both hosts'
#            names, and a resolv.conf that fails at once (this machine's DNS
#            does not answer: each lookup waited 20 s)
#   libvirtd.conf: listen_tcp = 1 on $TH_NET.1N, auth_tcp = "none" (tests
#            only: anyone on the bridge may drive these libvirtds), its own
#            host_uuid; qemu.conf: migration_address = $TH_NET.1N
#   qemu+tcp://$TH_NET.1N/system reaches it from anywhere on the bridge;
#   qemu:///system inside th_exec N.
#
# `ip netns exec` remounts /sys (and hides cgroup v1 from libvirtd): the
# daemons are started with nsenter --net + unshare --mount --uts instead, and
# th_exec enters the namespaces of the running libvirtd (its pid file).
# Idempotent: twohost_up first takes down what an earlier run left in TH_DIR;
# twohost_down kills only the daemons whose pids it recorded.

TH_PREFIX=${TH_PREFIX:-mg}
TH_NET=${TH_NET:-10.97.7}
TH_DIR=${TH_DIR:-/tmp/stratus-twohost}
TH_INST=${TH_INST:-/var/lib/stratus-twohost/instances}
TH_BR=${TH_PREFIX}br

_th_err() { echo "twohost: $*" >&2; return 1; }

th_addr() { echo "$TH_NET.1$1"; }
th_uri() { echo "qemu+tcp://$TH_NET.1$1/system"; }

_th_pid() { # N: the pid of host N's libvirtd, when it runs
	_p=$(cat "$TH_DIR/h$1/libvirtd.pid" 2>/dev/null)
	[ -n "$_p" ] && kill -0 "$_p" 2>/dev/null && echo "$_p"
}

th_exec() { # N CMD...: run CMD in host N's namespaces
	_n=$1
	shift
	_p=$(_th_pid "$_n") || { _th_err "host h$_n: libvirtd is not running"; return 1; }
	nsenter --target "$_p" --net --mount --uts -- "$@"
}

# The namespaced part of a host's start: runs inside unshare -m -u.
_th_host_main() { # N
	_d=$TH_DIR/h$1
	mount --make-rprivate / || exit 1
	for _m in run:/run/libvirt lib:/var/lib/libvirt etc:/etc/libvirt log:/var/log/libvirt \
		cache:/var/cache/libvirt inst:$TH_INST; do
		mkdir -p "${_m#*:}" || exit 1
		mount --bind "$_d/${_m%%:*}" "${_m#*:}" || exit 1
	done
	# both hosts' names resolve here, as on a cloud's hosts: libvirt looks
	# its own and its peer's up during a migration, and this machine's
	# resolver answers nothing (each lookup waited 20 s for DNS timeouts,
	# 10 s of it inside the guest's downtime)
	mount --bind "$_d/hosts" /etc/hosts || exit 1
	mount --bind "$_d/resolv.conf" /etc/resolv.conf || exit 1
	hostname "${TH_PREFIX}h$1" || exit 1
	ip link set lo up
	virtlogd -d -p "$_d/virtlogd.pid" 7>&- 8>&- 9>&- || exit 1
	libvirtd -d -l -p "$_d/libvirtd.pid" 7>&- 8>&- 9>&- || exit 1
}

_th_host_up() { # N
	_d=$TH_DIR/h$1
	mkdir -p "$_d/run" "$_d/lib" "$_d/log" "$_d/cache" "$_d/inst" || return 1
	rm -rf "$_d/etc"
	cp -a /etc/libvirt "$_d/etc" || return 1
	# the system's capabilities cache: saves each host a QEMU probe
	[ -d /var/cache/libvirt/qemu ] && cp -a /var/cache/libvirt/qemu "$_d/cache/" 2>/dev/null
	# the instance directory is the same path on both hosts
	mkdir -p "$TH_INST" "$_d/lib/images" || return 1
	{ cat /etc/hosts; printf '%s %sh1\n%s %sh2\n' "$(th_addr 1)" "$TH_PREFIX" "$(th_addr 2)" "$TH_PREFIX"; } \
		>"$_d/hosts" || return 1
	# other names fail at once (nothing listens on the namespace's own port 53)
	echo "nameserver 127.0.0.1" >"$_d/resolv.conf" || return 1
	_uuid=$(cat "$_d/host_uuid" 2>/dev/null)
	[ -n "$_uuid" ] || _uuid=$(cat /proc/sys/kernel/random/uuid)
	echo "$_uuid" >"$_d/host_uuid"
	cat >>"$_d/etc/libvirtd.conf" <<EOF
# twohost.sh (tests only: no authentication on the test bridge)
listen_tcp = 1
listen_tls = 0
listen_addr = "$(th_addr "$1")"
auth_tcp = "none"
host_uuid = "$_uuid"
EOF
	cat >>"$_d/etc/qemu.conf" <<EOF
# twohost.sh
migration_address = "$(th_addr "$1")"
migration_host = "$(th_addr "$1")"
EOF
	ip netns add "${TH_PREFIX}$1" || return 1
	ip link add "${TH_PREFIX}v$1" type veth peer name "${TH_PREFIX}p$1" || return 1
	ip link set "${TH_PREFIX}p$1" netns "${TH_PREFIX}$1" || return 1
	ip link set "${TH_PREFIX}v$1" master "$TH_BR" up || return 1
	ip -n "${TH_PREFIX}$1" link set "${TH_PREFIX}p$1" name eth0 || return 1
	ip -n "${TH_PREFIX}$1" addr add "$(th_addr "$1")/24" dev eth0 || return 1
	ip -n "${TH_PREFIX}$1" link set eth0 up || return 1
	ip -n "${TH_PREFIX}$1" link set lo up || return 1
	ip -n "${TH_PREFIX}$1" route add default via "$TH_NET.1" 2>/dev/null
	nsenter --net="/run/netns/${TH_PREFIX}$1" -- unshare --mount --uts --propagation private \
		sh -c ". '$TH_LIB'; TH_DIR='$TH_DIR' TH_INST='$TH_INST' TH_PREFIX='$TH_PREFIX' _th_host_main $1" \
		>"$_d/start.log" 2>&1 || {
		_th_err "host h$1: libvirtd did not start: $(tail -n 3 "$_d/start.log")"
		return 1
	}
	_i=0
	while [ $_i -lt 150 ]; do
		virsh -c "$(th_uri "$1")" version >/dev/null 2>&1 && return 0
		sleep 0.2
		_i=$((_i + 1))
	done
	_th_err "host h$1: $(th_uri "$1") does not answer after 30 s"
}

_th_kill() { # PIDFILE: TERM, wait up to 30 s, then KILL
	_p=$(cat "$1" 2>/dev/null)
	[ -n "$_p" ] || return 0
	if kill -0 "$_p" 2>/dev/null; then
		kill -TERM "$_p" 2>/dev/null
		_i=0
		while kill -0 "$_p" 2>/dev/null && [ $_i -lt 150 ]; do
			sleep 0.2
			_i=$((_i + 1))
		done
		kill -KILL "$_p" 2>/dev/null
	fi
	rm -f "$1"
}

twohost_down() {
	for _n in 1 2; do
		_d=$TH_DIR/h$_n
		if _p=$(_th_pid $_n); then
			# the guests first: a QEMU outlives its libvirtd
			for _dom in $(virsh -c "$(th_uri $_n)" list --name 2>/dev/null); do
				virsh -c "$(th_uri $_n)" destroy "$_dom" >/dev/null 2>&1
			done
		fi
		_th_kill "$_d/libvirtd.pid"
		_th_kill "$_d/virtlogd.pid"
		# a QEMU whose libvirtd was killed: it runs with -pidfile under our run dir
		for _q in "$_d"/run/qemu/*.pid; do
			[ -f "$_q" ] && _th_kill "$_q"
		done
		ip netns del "${TH_PREFIX}$_n" 2>/dev/null
		ip link del "${TH_PREFIX}v$_n" 2>/dev/null
	done
	ip link del "$TH_BR" 2>/dev/null
	return 0
}

twohost_up() {
	for _t in ip nsenter unshare libvirtd virtlogd virsh; do
		command -v $_t >/dev/null 2>&1 || { _th_err "$_t not found"; return 1; }
	done
	[ "$(id -u)" = 0 ] || { _th_err "needs root (namespaces, bind mounts)"; return 1; }
	twohost_down
	if ip -o -4 addr show | grep -q "inet $TH_NET\."; then
		_th_err "$TH_NET.0/24 is in use on this machine (set TH_NET)"
		return 1
	fi
	mkdir -p "$TH_DIR" || return 1
	ip link add "$TH_BR" type bridge || { _th_err "cannot create bridge $TH_BR"; return 1; }
	ip addr add "$TH_NET.1/24" dev "$TH_BR" && ip link set "$TH_BR" up || return 1
	for _n in 1 2; do
		_th_host_up $_n || { twohost_down; return 1; }
	done
}

twohost_status() {
	for _n in 1 2; do
		if _p=$(_th_pid $_n); then
			echo "h$_n: libvirtd pid $_p, $(th_uri $_n), hostname $(th_exec $_n hostname)"
		else
			echo "h$_n: down"
		fi
	done
}

# where this file is: _th_host_main runs in a new shell that sources it again
TH_LIB=${TH_LIB:-${STRATUS_TOP:-.}/tests/lib/twohost.sh}

case "${0##*/}" in
twohost.sh)
	TH_LIB=$(cd "$(dirname "$0")" && pwd)/twohost.sh
	[ -n "${2:-}" ] && TH_DIR=$2
	case "${1:-}" in
	up) twohost_up && twohost_status ;;
	down) twohost_down ;;
	status) twohost_status ;;
	*) echo "usage: sh tests/lib/twohost.sh up|down|status [DIR]" >&2; exit 2 ;;
	esac
	;;
esac
