#!/bin/sh
# Prepare this machine to run Stratus guests (the dev cloud calls it; an
# operator may too). Idempotent: a second run changes nothing. Everything it
# changes is recorded in $STRATUS_HOST_STATE and undone by --undo; what it
# found already in place it leaves alone, on --undo too.
#
#   deploy/host/prepare-host.sh [--hugepages N] [--no-libvirt] [--no-dhcp]
#                               [--dhcp-hosts-dir DIR] [--dns ADDR[,ADDR]]
#   deploy/host/prepare-host.sh --undo
#
#   1. 2 MiB hugepages: at least N in the pool (default $STRATUS_HUGEPAGES or
#      256 = 512 MiB), hugetlbfs on /dev/hugepages; 0 leaves both alone.
#   2. A Linux bridge $STRATUS_BRIDGE (stratusbr0) carrying the gateway
#      address $STRATUS_BRIDGE_CIDR (10.77.0.1/24) and the metadata address
#      169.254.169.254/32. Addresses go only on a bridge this script created;
#      no other interface, route or firewall rule is touched.
#   3. net.ipv4.ip_forward=1 (in this network namespace).
#   4. A DHCP and DNS server for the instances on the bridge (unless --no-dhcp),
#      like Neutron's DHCP agent: dnsmasq --bind-interfaces,
#      static leases only, one host per file in --dhcp-hosts-dir
#      ($STRATUS_DHCP_HOSTS_DIR, default /run/stratus/dhcp-hosts: set the
#      agent's agent.network.dhcp_hosts_dir to the same directory; the agent
#      writes "MAC,IP,hostname" per instance and dnsmasq reads it by inotify).
#      It offers the bridge's address as router, a classless static route
#      (option 121) to 169.254.169.254/32 and 0.0.0.0/0 through it, and the
#      --dns servers ($STRATUS_DHCP_DNS) when given, else itself. Its DNS, on
#      the bridge's addresses only, answers the instances' names and forwards
#      the rest to the host's resolvers (/etc/resolv.conf); --no-dns-server,
#      or port 53 there taken by another server, leaves DNS off (--port=0).
#      Needed by guests booted without a seed disk (seed: none), which find
#      the metadata service by DHCP; harmless to the others.
#   5. virtlogd and libvirtd running (started with -d when not running;
#      libvirtd is restarted only when it ran before hugetlbfs was mounted).
#      /dev/kvm, when present, gets udev's usual root:kvm 0660: without udev
#      it stays root 0600, libvirtd then finds KVM unusable for its qemu user
#      while its capability probe saw KVM, and it re-probes QEMU (tens of
#      seconds) before every define and start (docs/operations.md).
set -eu

bridge=${STRATUS_BRIDGE:-stratusbr0}
cidr=${STRATUS_BRIDGE_CIDR:-10.77.0.1/24}
mdaddr=169.254.169.254/32
pages=${STRATUS_HUGEPAGES:-256}
state=${STRATUS_HOST_STATE:-/run/stratus/prepare-host}
hostsdir=${STRATUS_DHCP_HOSTS_DIR:-/run/stratus/dhcp-hosts}
dns=${STRATUS_DHCP_DNS:-}
libvirt=1
dhcp=1
dnsserver=1
undo=0

usage() { echo "usage: $0 [--hugepages N] [--no-libvirt] [--no-dhcp] [--dhcp-hosts-dir DIR] [--dns ADDR[,ADDR]] [--no-dns-server] | --undo" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case "$1" in
	--undo) undo=1 ;;
	--no-libvirt) libvirt=0 ;;
	--no-dhcp) dhcp=0 ;;
	--no-dns-server) dnsserver=0 ;;
	--hugepages) [ $# -ge 2 ] || usage; pages=$2; shift ;;
	--dhcp-hosts-dir) [ $# -ge 2 ] || usage; hostsdir=$2; shift ;;
	--dns) [ $# -ge 2 ] || usage; dns=$2; shift ;;
	*) usage ;;
	esac
	shift
done
case "$pages" in ''|*[!0-9]*) echo "prepare-host: --hugepages wants a number of 2 MiB pages, got '$pages'" >&2; exit 2 ;; esac
case "$hostsdir" in /*) ;; *) echo "prepare-host: --dhcp-hosts-dir wants an absolute path, got '$hostsdir'" >&2; exit 2 ;; esac
case "$dns" in *[!0-9.,]*) echo "prepare-host: --dns wants IPv4 addresses separated by commas, got '$dns'" >&2; exit 2 ;; esac

die() { echo "prepare-host: error: $*" >&2; exit 1; }
say() { echo "prepare-host: $*"; }

[ "$(id -u)" = 0 ] || die "needs root"
command -v ip >/dev/null 2>&1 || die "ip not found (apt-get install iproute2)"
mkdir -p "$state" || die "cannot create $state"
exec 9>"$state/lock"
flock 9 || die "cannot lock $state/lock"

pid_of() { # pid_of DAEMON
	for f in "/run/$1.pid" "/var/run/$1.pid"; do
		p=$(cat "$f" 2>/dev/null || true)
		if [ -n "$p" ] && kill -0 "$p" 2>/dev/null && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "$1"; then
			echo "$p"
			return 0
		fi
	done
	pidof "$1" 2>/dev/null | cut -d' ' -f1
}
hugetlbfs_mounted() { awk '$2 == "/dev/hugepages" && $3 == "hugetlbfs" { f = 1 } END { exit !f }' /proc/mounts; }
stop_pid() { # stop_pid PID NAME SECONDS: SIGTERM, wait
	kill -TERM "$1"
	n=0
	while kill -0 "$1" 2>/dev/null; do
		n=$((n + 1))
		[ $n -lt $(($3 * 5)) ] || die "$2 (pid $1) did not exit within $3 s of SIGTERM"
		sleep 0.2
	done
}
stop_daemon() { # stop_daemon NAME: SIGTERM, wait up to 60 s
	p=$(pid_of "$1")
	[ -n "$p" ] || return 0
	stop_pid "$p" "$1" 60
}
wait_libvirt() {
	n=0
	until virsh -c qemu:///system version >/dev/null 2>&1; do
		n=$((n + 1))
		[ $n -lt 150 ] || die "libvirtd started but qemu:///system does not answer (see /var/log/libvirt/libvirtd.log)"
		sleep 0.2
	done
}

# dnsmasq of this bridge: its pid file names it
dnsmasq_pidfile=$state/dnsmasq-$bridge.pid
dnsmasq_pid() {
	p=$(cat "$dnsmasq_pidfile" 2>/dev/null || true)
	if [ -n "$p" ] && kill -0 "$p" 2>/dev/null && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "dnsmasq.*--interface=$bridge "; then
		echo "$p"
	fi
}
ip2int() { # a.b.c.d -> integer
	echo "$1" | { IFS=. read -r a b c d; echo $(((a << 24) | (b << 16) | (c << 8) | d)); }
}
int2ip() { echo "$((($1 >> 24) & 255)).$((($1 >> 16) & 255)).$((($1 >> 8) & 255)).$(($1 & 255))"; }

if [ $undo = 1 ]; then
	if [ -e "$state/started-dnsmasq" ]; then
		b=$(cat "$state/started-dnsmasq")
		bridge=$b dnsmasq_pidfile=$state/dnsmasq-$b.pid
		p=$(dnsmasq_pid)
		if [ -n "$p" ]; then
			say "stopping dnsmasq on $b (pid $p)"
			stop_pid "$p" dnsmasq 20
		fi
		rm -f "$state/started-dnsmasq" "$state/dnsmasq-$b.pid" "$state/dnsmasq-$b.leases"
	fi
	if [ -e "$state/created-dhcp-hosts-dir" ]; then
		d=$(cat "$state/created-dhcp-hosts-dir")
		# entries of instances that still exist stay (and so does the directory)
		rmdir "$d" 2>/dev/null && say "removed $d" || say "$d is not empty: left in place"
		rm -f "$state/created-dhcp-hosts-dir"
	fi
	if [ -e "$state/started-libvirtd" ]; then
		say "stopping libvirtd (started by prepare-host; running guests keep running)"
		stop_daemon libvirtd
		rm -f "$state/started-libvirtd"
	fi
	if [ -e "$state/started-virtlogd" ]; then
		say "stopping virtlogd"
		stop_daemon virtlogd
		rm -f "$state/started-virtlogd"
	fi
	if [ -e "$state/created-bridge" ]; then
		b=$(cat "$state/created-bridge")
		if ip link show dev "$b" >/dev/null 2>&1; then
			say "deleting bridge $b"
			ip link del dev "$b" type bridge
		fi
		rm -f "$state/created-bridge"
	fi
	if [ -e "$state/ip_forward" ]; then
		say "net.ipv4.ip_forward back to $(cat "$state/ip_forward")"
		cat "$state/ip_forward" >/proc/sys/net/ipv4/ip_forward
		rm -f "$state/ip_forward"
	fi
	if [ -e "$state/hugepages-added" ]; then
		added=$(cat "$state/hugepages-added")
		now=$(cat /proc/sys/vm/nr_hugepages)
		new=$((now - added))
		[ $new -ge 0 ] || new=0
		say "hugepages: giving back $added pages (pool $now -> $new; pages in use stay until freed)"
		echo $new >/proc/sys/vm/nr_hugepages
		rm -f "$state/hugepages-added"
	fi
	if [ -e "$state/mounted-hugetlbfs" ]; then
		if umount /dev/hugepages 2>/dev/null; then
			say "unmounted hugetlbfs from /dev/hugepages"
			rm -f "$state/mounted-hugetlbfs"
		else
			say "hugetlbfs on /dev/hugepages is busy (guests use it): left mounted"
		fi
	fi
	say "undone"
	exit 0
fi

# 1. Hugepages and hugetlbfs.
if [ "$pages" -gt 0 ]; then
	total=$(cat /proc/sys/vm/nr_hugepages)
	if [ "$total" -lt "$pages" ]; then
		echo "$pages" >/proc/sys/vm/nr_hugepages
		got=$(cat /proc/sys/vm/nr_hugepages)
		if [ "$got" -lt "$pages" ]; then
			echo "$total" >/proc/sys/vm/nr_hugepages
			die "asked for $pages 2 MiB hugepages, the kernel gave $got (memory too small or fragmented; try --hugepages with fewer)"
		fi
		prev=$(cat "$state/hugepages-added" 2>/dev/null || echo 0)
		echo $((prev + pages - total)) >"$state/hugepages-added"
		say "hugepages: pool $total -> $pages (2 MiB)"
	else
		say "hugepages: pool already has $total >= $pages pages"
	fi
fi
mounted_now=0
if [ "$pages" -gt 0 ] && ! hugetlbfs_mounted; then
	mkdir -p /dev/hugepages
	mount -t hugetlbfs -o pagesize=2M hugetlbfs /dev/hugepages || die "mount -t hugetlbfs hugetlbfs /dev/hugepages failed"
	touch "$state/mounted-hugetlbfs"
	mounted_now=1
	say "mounted hugetlbfs on /dev/hugepages"
fi

# 2. The bridge.
addr=${cidr%/*}
if ip link show dev "$bridge" >/dev/null 2>&1; then
	if [ "$(cat "$state/created-bridge" 2>/dev/null || true)" = "$bridge" ]; then
		for a in "$cidr" "$mdaddr"; do
			ip addr show dev "$bridge" | grep -q "inet $a " || ip addr add "$a" dev "$bridge"
		done
		ip link set dev "$bridge" up
		say "bridge $bridge: present ($cidr, $mdaddr)"
	else
		ip -d link show dev "$bridge" | grep -q 'bridge ' || die "$bridge exists and is not a bridge; set STRATUS_BRIDGE to another name"
		for a in "$cidr" "$mdaddr"; do
			ip addr show dev "$bridge" | grep -q "inet $a " ||
				say "warning: bridge $bridge was not created by prepare-host and lacks $a; not adding it"
		done
	fi
else
	# The gateway address must not be in use anywhere else.
	if ip -o addr show | grep -q "inet $addr/"; then
		die "$addr is already on another interface: $(ip -o addr show | grep "inet $addr/" | cut -d' ' -f2); set STRATUS_BRIDGE_CIDR"
	fi
	ip link add name "$bridge" type bridge || die "ip link add $bridge type bridge failed"
	echo "$bridge" >"$state/created-bridge"
	ip addr add "$cidr" dev "$bridge"
	ip addr add "$mdaddr" dev "$bridge"
	ip link set dev "$bridge" up
	say "bridge $bridge: created with $cidr and $mdaddr"
fi

# 3. Forwarding.
if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 1 ]; then
	[ -e "$state/ip_forward" ] || cat /proc/sys/net/ipv4/ip_forward >"$state/ip_forward"
	echo 1 >/proc/sys/net/ipv4/ip_forward
	say "net.ipv4.ip_forward=1"
fi

# 4. DHCP for the instances: dnsmasq on the bridge, static leases from the
#    agent's host entries.
if [ $dhcp = 1 ]; then
	command -v dnsmasq >/dev/null 2>&1 || die "dnsmasq not found (apt-get install dnsmasq-base), or use --no-dhcp"
	if [ -n "$(dnsmasq_pid)" ]; then
		say "dnsmasq on $bridge: running (pid $(dnsmasq_pid))"
	elif ! ip addr show dev "$bridge" | grep -q "inet $cidr "; then
		say "warning: $bridge lacks $cidr: no DHCP server started on it"
	else
		plen=${cidr#*/}
		mask=$(((0xffffffff << (32 - plen)) & 0xffffffff))
		net=$(int2ip $(($(ip2int "$addr") & mask)))
		if [ ! -d "$hostsdir" ]; then
			mkdir -p "$hostsdir" || die "cannot create $hostsdir"
			chmod 0755 "$hostsdir"
			echo "$hostsdir" >"$state/created-dhcp-hosts-dir"
		fi
		set -- --conf-file=/dev/null --interface="$bridge" --bind-interfaces \
			--dhcp-range="$net,static,$(int2ip $mask),1h" --dhcp-hostsdir="$hostsdir" \
			--dhcp-leasefile="$state/dnsmasq-$bridge.leases" --pid-file="$dnsmasq_pidfile" \
			--dhcp-option=option:router,"$addr" \
			--dhcp-option=option:classless-static-route,169.254.169.254/32,"$addr",0.0.0.0/0,"$addr" \
			--log-dhcp --log-facility="$state/dnsmasq-$bridge.log"
		[ -z "$dns" ] || set -- "$@" --dhcp-option=option:dns-server,"$dns"
		# DNS: instance names from the leases; plain names and private
		# reverse lookups stay here, the rest goes to the host's resolvers
		if [ $dnsserver = 1 ] && dnsmasq "$@" --no-hosts --domain-needed --bogus-priv 9>&- 2>"$state/dnsmasq-start.err"; then
			what="DHCP and DNS"
		else
			[ $dnsserver = 0 ] || say "warning: dnsmasq could not serve DNS on $bridge ($(tr -s "\n" " " <"$state/dnsmasq-start.err")): DHCP only"
			dnsmasq "$@" --port=0 9>&- || die "dnsmasq on $bridge failed to start (see $state/dnsmasq-$bridge.log)"
			what="DHCP"
		fi
		rm -f "$state/dnsmasq-start.err"
		echo "$bridge" >"$state/started-dnsmasq"
		say "dnsmasq on $bridge: started ($what for $net/$plen, hosts from $hostsdir)"
	fi
fi

# 5. libvirt.
if [ $libvirt = 1 ]; then
	for t in virtlogd libvirtd virsh; do
		command -v "$t" >/dev/null 2>&1 || die "$t not found (sh deps/install.sh deps/demo-guest.txt)"
	done
	if [ -c /dev/kvm ] && [ "$(stat -c %G:%a /dev/kvm)" != kvm:660 ] && getent group kvm >/dev/null; then
		chgrp kvm /dev/kvm && chmod 0660 /dev/kvm || die "cannot give /dev/kvm to group kvm"
		say "/dev/kvm: root:kvm 0660 (as udev would)"
	fi
	if [ -z "$(pid_of virtlogd)" ]; then
		virtlogd -d 9>&- || die "virtlogd -d failed"
		touch "$state/started-virtlogd"
		say "started virtlogd"
	fi
	if [ -z "$(pid_of libvirtd)" ]; then
		libvirtd -d 9>&- || die "libvirtd -d failed"
		touch "$state/started-libvirtd"
		say "started libvirtd"
	elif [ $mounted_now = 1 ]; then
		say "restarting libvirtd so it finds hugetlbfs (running guests keep running)"
		stop_daemon libvirtd
		libvirtd -d 9>&- || die "libvirtd -d failed on restart"
	fi
	wait_libvirt
	say "libvirt: qemu:///system answers"
fi
say "ready: bridge $bridge ($cidr, metadata $mdaddr), $([ $dhcp = 1 ] && echo "DHCP hosts from $hostsdir, ")$(cat /proc/sys/vm/nr_hugepages) hugepages, undo with $0 --undo"
