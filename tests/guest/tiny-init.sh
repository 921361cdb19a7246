#!/bin/sh
# /init of the Stratus tiny guest (busybox initramfs, Debian kernel).
# Built into initrd.img by tests/guest/build-tiny.sh; see docs/guest-images.md.
#
# Prints "STRATUS-GUEST: ..." marker lines on the console (console=ttyS0) that
# tests grep, in this order:
#   booted kernel=K cmdline=...
#   modules loaded=N failed=M
#   cpus n=N
#   mem total_kb=N hugepages_total=N hugepagesize_kb=N
#   disk NAME size=BYTES ro=0|1 serial=S [image=stratus-tiny]   (one per disk)
#   nic NAME mac=MAC                                               (one per NIC)
#   seed LABEL instance-id=ID dev=DEV   (LABEL is cidata or config-2; or "seed none")
#   seed hostname=H
#   seed user-data bytes=N sha256=H
#   user-data exit=N                    (only when user-data starts with #!)
#   net ADDR via GW                     (only with stratus.ip= on the cmdline)
#   metadata-service uuid=ID            (only with stratus.ip= and no seed)
#   listen PORT                         (one per stratus.listen= port)
#   ready
# and then, with stratus.probe= or stratus.ping=, about every second:
#   probe IP:PORT ok uuid=ID | refused | timeout   (one per stratus.probe= target)
#   ping IP ok | lost                              (one per stratus.ping= target)
# then offers a login on the console (user root, no password) and a shell.
# ACPI power button (virsh shutdown) or SIGTERM to PID 1:
#   poweroff   and the machine powers off.
# Kernel command line options (all optional):
#   stratus.ip=ADDR/PREFIX stratus.gw=GW   configure the first NIC statically
#   stratus.md=URL                          metadata base (default http://169.254.169.254)
#   stratus.mac=MAC                         with stratus.ip: take this MAC first (the
#                                           anti-spoofing tests' neighbour-MAC claim)
#   stratus.listen=PORT[,PORT..]            answer every TCP connection to PORT with
#                                           one line "STRATUS-LISTENER uuid=ID port=PORT"
#                                           (busybox nc -ll -e; ID is the seed's or the
#                                           metadata service's instance id)
#   stratus.probe=IP:PORT[,IP:PORT..]       connect to each (nc -w 1) in a loop: "ok" with
#                                           the listener's uuid, "refused" (a RST),
#                                           "timeout" (no answer: dropped on the way)
#   stratus.ping=IP[,IP..]                  one echo request to each per turn (ping -W 1)
# The listener and the prober are for the security-group test with real traffic
# (tests/e2e/e2e_sgtraffic.sh); a turn of the prober tries every target at once and
# lasts about 1 s (a timeout is 1 s).
PATH=/bin:/sbin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1

say() { echo "STRATUS-GUEST: $*"; }

poweroff_now() {
	echo # the console may stand after the login prompt
	say "poweroff"
	sync
	umount /seed 2>/dev/null
	poweroff -f
}
trap poweroff_now TERM USR2

cmdline=$(cat /proc/cmdline)
say "booted kernel=$(uname -r) cmdline=$cmdline"

arg() { # arg NAME: value of NAME=... on the kernel command line
	for w in $cmdline; do
		case "$w" in "$1"=*) echo "${w#*=}"; return 0 ;; esac
	done
	return 1
}

# Modules: the build wrote their names (and modules.dep) into the image.
ok=0 bad=0
for m in $(cat /etc/stratus-modules); do
	if modprobe "$m" 2>/dev/null; then ok=$((ok + 1)); else bad=$((bad + 1)); say "module $m failed"; fi
done
say "modules loaded=$ok failed=$bad"

# Disks behind AHCI/IDE are scanned asynchronously: wait until the list of
# block devices stops changing (at most about 3 s).
prev="" n=0
while [ $n -lt 30 ]; do
	cur=$(ls /sys/block)
	[ -n "$prev" ] && [ "$cur" = "$prev" ] && [ $n -ge 3 ] && break
	prev=$cur
	usleep 100000
	n=$((n + 1))
done

say "cpus n=$(nproc)"
mi() { sed -n "s/^$1:[[:space:]]*\([0-9]*\).*/\1/p" /proc/meminfo; }
say "mem total_kb=$(mi MemTotal) hugepages_total=$(mi HugePages_Total) hugepagesize_kb=$(mi Hugepagesize)"

iso_label() { # iso_label DEV: prints the ISO 9660 volume id, fails if not ISO
	[ "$(dd if="$1" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || return 1
	dd if="$1" bs=1 skip=32808 count=32 2>/dev/null | sed 's/[[:space:]]*$//'
}

seed_dev="" seed_label="" seed_fs=""
for d in /sys/block/*; do
	n=${d##*/}
	case "$n" in loop*|ram*) continue ;; esac
	extra=""
	head=$(dd if="/dev/$n" bs=32 count=1 2>/dev/null | head -n 1)
	[ "$head" = "STRATUS-TINY-DISK" ] && extra=" image=stratus-tiny"
	say "disk $n size=$(( $(cat "$d/size") * 512 )) ro=$(cat "$d/ro") serial=$(cat "$d/serial" 2>/dev/null)$extra"
	if [ -z "$seed_dev" ] && lab=$(iso_label "/dev/$n"); then
		case "$lab" in
		cidata|CIDATA) seed_dev=/dev/$n seed_label=cidata seed_fs=iso9660 ;;
		config-2|CONFIG-2) seed_dev=/dev/$n seed_label=config-2 seed_fs=iso9660 ;;
		esac
	fi
done
if [ -z "$seed_dev" ]; then # a vfat seed (NoCloud and config drive allow it)
	for lab in cidata CIDATA config-2 CONFIG-2; do
		dev=$(findfs "LABEL=$lab" 2>/dev/null) || continue
		seed_dev=$dev seed_fs=vfat
		case "$lab" in cidata|CIDATA) seed_label=cidata ;; *) seed_label=config-2 ;; esac
		break
	done
fi

for d in /sys/class/net/*; do
	n=${d##*/}
	[ "$n" = lo ] && continue
	ip link set "$n" up 2>/dev/null
	say "nic $n mac=$(cat "$d/address")"
done
ip link set lo up 2>/dev/null

jsonstr() { # jsonstr KEY FILE: the string value of "KEY" in a flat JSON file
	tr ',{}' '\n\n\n' <"$2" | sed -n "s/^[[:space:]]*\"$1\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p" | head -n 1
}
yamlval() { # yamlval KEY FILE: the scalar value of a top-level "KEY:" line
	sed -n "s/^$1:[[:space:]]*//p" "$2" | head -n 1 | sed -e "s/^[\"']//" -e "s/[\"'][[:space:]]*\$//" -e 's/[[:space:]]*$//'
}

userdata=""
if [ -n "$seed_dev" ]; then
	mkdir -p /seed
	if mount -t "$seed_fs" -o ro "$seed_dev" /seed; then
		case "$seed_label" in
		cidata)
			iid=$(yamlval instance-id /seed/meta-data 2>/dev/null)
			host=$(yamlval local-hostname /seed/meta-data 2>/dev/null)
			[ -n "$iid" ] || iid=$(jsonstr instance-id /seed/meta-data 2>/dev/null)
			[ -n "$host" ] || host=$(jsonstr local-hostname /seed/meta-data 2>/dev/null)
			userdata=/seed/user-data
			;;
		config-2)
			md=/seed/openstack/latest/meta_data.json
			iid=$(jsonstr uuid "$md" 2>/dev/null)
			host=$(jsonstr hostname "$md" 2>/dev/null)
			userdata=/seed/openstack/latest/user_data
			;;
		esac
		say "seed $seed_label instance-id=$iid dev=${seed_dev#/dev/}"
		say "seed hostname=$host"
	else
		say "seed $seed_label mount-failed dev=${seed_dev#/dev/}"
	fi
else
	say "seed none"
fi

http_get() { # http_get URL FILE: HTTP/1.0 GET with nc (the static busybox's
	# wget crashes resolving names without NSS); fails unless 200
	_u=${1#http://}
	_hp=${_u%%/*} _path=/
	[ "$_u" = "$_hp" ] || _path=/${_u#*/}
	_h=${_hp%:*} _p=${_hp##*:}
	[ "$_p" = "$_hp" ] && _p=80
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$_path" "$_hp" | nc -w 3 "$_h" "$_p" >/tmp/http.resp 2>/dev/null || return 1
	head -n 1 /tmp/http.resp | grep -q '^HTTP/1\.[01] 200' || return 1
	awk 'b { print; next } /^\r?$/ { b = 1 }' /tmp/http.resp >"$2"
}

# Static network from the kernel command line, and the metadata service when
# there is no seed disk.
if addr=$(arg stratus.ip); then
	nic=""
	for d in /sys/class/net/*; do
		[ "${d##*/}" = lo ] || { nic=${d##*/}; break; }
	done
	gw=$(arg stratus.gw)
	if [ -n "$nic" ] && mac=$(arg stratus.mac); then
		ip link set "$nic" down
		ip link set "$nic" address "$mac" && say "nic $nic mac=$mac (stratus.mac)"
		ip link set "$nic" up
	fi
	if [ -n "$nic" ] && ip addr add "$addr" dev "$nic"; then
		[ -n "$gw" ] && ip route add default via "$gw" dev "$nic"
		say "net $addr via ${gw:-none} dev=$nic"
		if [ -z "$seed_dev" ]; then
			base=$(arg stratus.md) || base=http://169.254.169.254
			mkdir -p /md
			n=0 got=1 # the link may need a few seconds to come up
			while [ $n -lt 10 ]; do
				http_get "$base/openstack/latest/meta_data.json" /md/meta_data.json && { got=0; break; }
				n=$((n + 1))
				sleep 1
			done
			if [ $got = 0 ]; then
				say "metadata-service uuid=$(jsonstr uuid /md/meta_data.json) hostname=$(jsonstr hostname /md/meta_data.json)"
				http_get "$base/openstack/latest/user_data" /md/user_data && userdata=/md/user_data
			else
				say "metadata-service unreachable url=$base"
			fi
		fi
	else
		say "net $addr failed nic=${nic:-none}"
	fi
fi

if [ -n "$userdata" ] && [ -f "$userdata" ]; then
	say "seed user-data bytes=$(wc -c <"$userdata") sha256=$(sha256sum "$userdata" | cut -d' ' -f1)"
	if [ "$(head -c 2 "$userdata")" = "#!" ]; then
		cp "$userdata" /tmp/user-data && chmod +x /tmp/user-data
		/tmp/user-data
		say "user-data exit=$?"
	fi
fi

# Listeners and probers of the kernel command line (security-group traffic).
myid=${iid:-}
[ -n "$myid" ] || myid=$(jsonstr uuid /md/meta_data.json 2>/dev/null)
if ports=$(arg stratus.listen); then
	for p in $(echo "$ports" | tr ',' ' '); do
		printf '#!/bin/sh\necho "STRATUS-LISTENER uuid=%s port=%s"\n' "${myid:-unknown}" "$p" >"/tmp/listen-$p"
		chmod +x "/tmp/listen-$p"
		nc -ll -p "$p" -e "/tmp/listen-$p" </dev/null >/dev/null 2>&1 &
		say "listen $p"
	done
fi
probe_one() { # probe_one IP:PORT: one line on how a connection to it went
	_out=$(nc -w 1 "${1%:*}" "${1##*:}" </dev/null 2>&1)
	case "$_out" in
	*STRATUS-LISTENER*) say "probe $1 ok uuid=$(echo "$_out" | sed -n 's/.*uuid=\([^ ]*\).*/\1/p' | head -n 1)" ;;
	*refused*) say "probe $1 refused" ;;
	*) say "probe $1 timeout" ;;
	esac
}
probes=$(arg stratus.probe | tr ',' ' ')
pings=$(arg stratus.ping | tr ',' ' ')
if [ -n "$probes$pings" ]; then
	(
		while :; do # a turn: every target at once, at least 1 s
			for t in $probes; do probe_one "$t" & done
			for t in $pings; do
				{ if ping -c 1 -W 1 "$t" >/dev/null 2>&1; then say "ping $t ok"; else say "ping $t lost"; fi; } &
			done
			sleep 1
			wait
		done
	) </dev/null &
fi

# ACPI power button -> poweroff (busybox acpid runs /etc/acpi/PWRF/00000080).
mkdir -p /run /var/log
acpid -c /etc/acpi -l /var/log/acpid.log -p /run/acpid.pid

say "ready"

# The serial console's login (stratusctl console --attach, virsh console):
# user root, no password - the guest is a test fixture. A shell after it;
# both start again when the shell exits.
console_login() {
	while :; do
		printf 'stratus-tiny login: '
		read -r user || { sleep 1; continue; }
		[ "$user" = root ] && break
		echo "Login incorrect"
	done
	echo "STRATUS-GUEST: console login user=root"
	PS1='root@stratus-tiny:~# ' exec sh -i
}
while :; do
	(console_login) </dev/console >/dev/console 2>&1 &
	wait $!
	sleep 1
done
