#!/bin/sh
# Real cloud-init 22.4 in a Debian 12 guest (qemu TCG, about 40 s a boot)
# reads our metadata three ways and must end with our hostname, instance-id,
# network and user-data:
#   nocloud      our cidata ISO as a virtio disk
#   configdrive  our config-2 ISO as an IDE cdrom
#   service      no seed: DMI says "OpenStack Nova", so cloud-init's OpenStack
#                datasource asks http://169.254.169.254, which qemu forwards
#                (guestfwd) to stratus-metadata on loopback, from 127.0.0.7
#   ec2          the same with DMI "Amazon EC2": cloud-init's EC2 datasource,
#                with `tokens: required` (IMDSv2)
# Not part of make check: it needs the Debian guest image of the guest module
# (/var/cache/stratus/guest/debian12, built by its build-debian.sh).
#   tests/metadata/cloudinit-guest.sh [nocloud] [configdrive] [service] [ec2]
set -u
cd "${STRATUS_TOP:-$(dirname "$0")/../..}"
B=${BUILD:-build}
PY=/usr/bin/python3
img=${STRATUS_CACHE:-/var/cache/stratus}/guest/debian12
[ -f "$img/debian12.qcow2" ] || { echo "no Debian guest image in $img"; exit 1; }
modes=${*:-nocloud configdrive service ec2}
T=$(mktemp -d)
qpid="" mpid=""
cleanup() {
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null
	[ -n "$mpid" ] && kill "$mpid" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP PIPE
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# the guest: slirp's first DHCP address, our MAC, a runcmd that reports what
# it got. For the service, slirp's network is 169.254.169.0/24 (qemu only
# forwards guest connections to addresses inside it, and the metadata
# address must be 169.254.169.254).
mkspec() { # NET(10.0.2|169.254.169) SPEC INSTANCES
$PY - "$@" <<'PYEOF'
import base64, json, sys
net, spec_out, inst_out = sys.argv[1:4]
s = json.load(open("tests/data/spec-basic.json"))
s["hostname"] = "ci-guest-7"
s["network"] = {"mac": "52:54:00:12:34:56", "address": net + ".15/24",
                "gateway": net + ".2", "dns": [net + ".3"]}
s["user_data"] = base64.b64encode(b"""#cloud-config
runcmd:
  - [sh, -c, 'echo STRATUS-RUNCMD host=$(hostname) iid=$(cat /var/lib/cloud/data/instance-id) ip=$(ip -4 -o addr show dev $(ip -o link | grep -i 52:54:00:12:34:56 | cut -d: -f2 | tr -d " ") | tr -s " " | cut -d" " -f4 | head -n 1) keys=$(grep -c laptop /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys 2>/dev/null | tr "\\n" " ") > /dev/ttyS0']
""").decode()
json.dump(s, open(spec_out, "w"))
t = json.loads(json.dumps(s))
t["network"]["address"] = "127.0.0.7/8"  # as the service sees the guest
json.dump([t], open(inst_out, "w"))
PYEOF
}

for mode in $modes; do
	qemu-img create -q -f qcow2 -F qcow2 -b "$img/debian12.qcow2" "$T/root.qcow2"
	# extra qemu arguments go in "$@" (some hold spaces)
	set -- -netdev user,id=n0
	net=10.0.2
	case $mode in service|ec2) net=169.254.169 ;; esac
	mkspec $net "$T/spec.json" "$T/instances.json"
	case $mode in
	nocloud)
		"$B/stratus-agent" seed --instance "$T/spec.json" --format nocloud -o "$T/seed.iso"
		set -- "$@" -drive "file=$T/seed.iso,if=virtio,format=raw,readonly=on"
		want_ds="DataSourceNoCloud"
		;;
	configdrive)
		"$B/stratus-agent" seed --instance "$T/spec.json" --format configdrive -o "$T/seed.iso"
		set -- "$@" -drive "file=$T/seed.iso,media=cdrom,if=ide,format=raw,readonly=on"
		want_ds="DataSourceConfigDrive"
		;;
	service|ec2)
		# ec2: IMDSv2 tokens required, which cloud-init's EC2 datasource does
		printf 'metadata:\n  tokens: %s\n  port_mark: 0\n' "$([ $mode = ec2 ] && echo required || echo optional)" >"$T/md.yaml"
		"$B/stratus-metadata" -c "$T/md.yaml" --listen 127.0.0.1:0 --instances "$T/instances.json" -d >"$T/md.log" 2>&1 &
		mpid=$!
		sleep 0.5
		port=$(sed -n 's/.*listening .*port=\([0-9]*\).*/\1/p' "$T/md.log")
		set -- -netdev "user,id=n0,net=169.254.169.0/24,host=169.254.169.2,dns=169.254.169.3,dhcpstart=169.254.169.15,guestfwd=tcp:169.254.169.254:80-cmd:$PY $PWD/tests/metadata/guestfwd_bridge.py $port 127.0.0.7" \
			-smbios "type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova"
		want_ds="DataSourceOpenStack"
		if [ $mode = ec2 ]; then
			set -- "$1" "$2" -smbios "type=1,manufacturer=Amazon EC2,product=m5.large,uuid=ec2e1916-9099-7caf-fd21-012345abcdef,serial=ec2e1916-9099-7caf-fd21-012345abcdef"
			want_ds="DataSourceEc2"
		fi
		;;
	*) echo "unknown mode $mode"; exit 2 ;;
	esac
	con=$T/$mode.console
	: >"$con"
	start=$(date +%s)
	timeout 300 qemu-system-x86_64 -machine accel=tcg -m 1024 -smp 1 -nographic -no-reboot \
		-kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
		-append "root=LABEL=stratus-root rw console=ttyS0" \
		-drive "file=$T/root.qcow2,if=virtio,format=qcow2" "$@" \
		-device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 \
		-serial "file:$con" -display none -monitor none 2>"$T/qemu.err" &
	qpid=$!
	n=0
	while [ $n -lt ${GUEST_WAIT:-150} ] && ! grep -aq "Cloud-init v.* finished" "$con"; do
		sleep 1
		n=$((n + 1))
	done
	sleep 1
	kill "$qpid" 2>/dev/null
	wait "$qpid" 2>/dev/null
	qpid=""
	[ -n "$mpid" ] && { kill "$mpid"; wait "$mpid" 2>/dev/null; mpid=""; }
	echo "== $mode ($(($(date +%s) - start)) s)"
	grep -a "STRATUS-RUNCMD\|Cloud-init v.* finished" "$con" | sed 's/^.*\(STRATUS-RUNCMD\)/\1/' | sed 's/^/  /'
	# the address the spec gives: for the service that is 127.0.0.7, the
	# address the service sees the guest at behind qemu's forwarding
	want_ip=$net.15/24
	[ $mode = service ] && want_ip=127.0.0.7/8
	[ $mode = ec2 ] && want_ip=169.254.169.15/24 # EC2 (2009-04-04) has no network config: DHCP
	grep -aq "STRATUS-RUNCMD host=ci-guest-7 iid=0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d ip=$want_ip" "$con" ||
		fail "$mode: cloud-init did not apply our hostname, instance-id and address"
	grep -aq "STRATUS-RUNCMD .*keys=.*:1" "$con" || fail "$mode: our SSH key was not installed"
	grep -aq "finished at .*$want_ds" "$con" || fail "$mode: not read through $want_ds"
	case $mode in service|ec2) echo "  service answered $(grep -c 'status=200' "$T/md.log") requests with 200, $(grep -c 'status=[45]' "$T/md.log") with 4xx/5xx: $(grep -o 'method=[A-Z]* path="[^"]*" source=[0-9.]* status=[45][0-9]*' "$T/md.log" | sort | uniq -c | tr '\n' ';')" ;; esac
	[ "${KEEP_CONSOLE:-}" ] && cp "$con" "/tmp/cloudinit-guest-$mode.console"
	rm -f "$T/root.qcow2" "$T/seed.iso"
done
[ $fails -eq 0 ] && echo "cloud-init in a Debian guest read our metadata: $modes"
[ $fails -eq 0 ]
