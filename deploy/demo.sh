#!/bin/sh
# The single-machine dev cloud: make demo / make demo-stop.
#
#   sh deploy/demo.sh start   install what is missing, build, prepare the host,
#                             start stratus-bus, -scheduler, -metadata, -agent,
#                             build and serve a Debian 12 guest image with
#                             cloud-init, boot one instance with user-data and
#                             show its console proving cloud-init ran it.
#   sh deploy/demo.sh deps    only install the Debian packages start needs
#                             (deps/build*.txt, deps/demo*.txt), as start does.
#   sh deploy/demo.sh stop    delete the demo instance, stop what start started.
#   sh deploy/demo.sh status
#
# A second start reuses what is already running. Needs root.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
DEMO=${STRATUS_DEMO_DIR:-/var/lib/stratus-demo}
RUN=/run/stratus
B=$TOP/build
IMG_PORT=8099
BR=stratusbr0
CTL="$B/stratusctl"
export STRATUS_CONFIG="$DEMO/stratus.yaml"
# the admin credential the scheduler writes on its first start signs our requests
export STRATUS_CREDENTIAL="${STRATUS_CREDENTIAL:-$DEMO/admin.credential}"

say() { printf '\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

start_daemon() { # NAME BINARY ARGS...
	name=$1
	shift
	if running "$name" && [ "$DEMO/stratus.yaml" -nt "$RUN/$name.pid" ]; then
		echo "   $name runs with an older configuration: restarting it"
		stop_daemon "$name"
	fi
	if running "$name"; then
		echo "   $name already running (pid $(cat "$RUN/$name.pid"))"
		return 0
	fi
	# its own session: the services outlive this script and its terminal
	setsid "$@" >>"$DEMO/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$RUN/$name.pid"
	sleep 0.5
	running "$name" || die "$name did not start: $(tail -n 5 "$DEMO/logs/$name.log")"
	echo "   $name started (pid $(cat "$RUN/$name.pid"), log $DEMO/logs/$name.log)"
}

stop_daemon() {
	running "$1" || { rm -f "$RUN/$1.pid"; return 0; }
	pid=$(cat "$RUN/$1.pid")
	kill "$pid"
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null
	rm -f "$RUN/$1.pid"
	echo "   $1 stopped"
}

# stratus-bus, and when it had died with the others running (kill -9, OOM):
# the new one on the same address file. It writes a new port there; the
# scheduler, agent and metadata service follow the file by themselves and
# the agent re-announces its instances (docs/operations.md), so nothing
# else is restarted. A stale file of the dead broker is not taken for the
# new one's: we wait until the file changes.
REPAIRED=""
start_bus() {
	old_addr=""
	if ! running bus; then
		old_addr=$(cat "$RUN/bus.addr" 2>/dev/null || true)
		if [ -n "$old_addr" ] && { running scheduler || running agent; }; then
			echo "   stratus-bus is not running but the cloud is (its last address $old_addr):"
			echo "   starting it again on $RUN/bus.addr; the others follow by themselves"
			REPAIRED=1
		fi
	fi
	start_daemon bus "$B/stratus-bus" -c "$DEMO/stratus.yaml"
	for _ in $(seq 50); do
		addr=$(cat "$RUN/bus.addr" 2>/dev/null || true)
		# the dead broker's file: the new one rewrites it (maybe the same port)
		if [ -n "$addr" ] && { [ -z "$old_addr" ] || [ "$addr" != "$old_addr" ] ||
			[ "$RUN/bus.addr" -nt "$RUN/bus.pid" ]; }; then
			return 0
		fi
		sleep 0.1
	done
	die "stratus-bus wrote no new address to $RUN/bus.addr: $(tail -n 5 "$DEMO/logs/bus.log")"
}

# After a repair: every host has reported to the scheduler again (host list
# RECOVERY is no longer `stale`).
wait_reannounced() {
	say "waiting for the hosts to re-announce to the scheduler"
	for _ in $(seq 60); do
		if "$CTL" --json host list 2>/dev/null |
			jq -e 'length > 0 and all(.[]; .recovery != "stale" and .state == "up")' >/dev/null; then
			"$CTL" host list | sed 's/^/   /'
			echo "   the cloud is repaired: the new stratus-bus is $(cat "$RUN/bus.addr")"
			return 0
		fi
		sleep 1
	done
	die "hosts did not re-announce within 60 s: $("$CTL" host list 2>&1)"
}

prepare_host() {
	say "preparing the host: bridge $BR (10.77.0.1/24 + 169.254.169.254), hugepages, libvirtd"
	STRATUS_BRIDGE=$BR sh deploy/host/prepare-host.sh --hugepages 256 || die "host preparation failed"
}

guest_image() {
	say "guest images: Debian 12 with cloud-init, GRUB-booted (debian-12) and direct-kernel (debian-12-direct), built once, then cached"
	out=$(sh "$TOP/tests/guest/build-cloudimg.sh") || die "guest image build failed"
	image=$(echo "$out" | sed -n 's/^image=//p')
	[ -n "$image" ] || die "guest image: no image path in the builder's output"
	# the direct-kernel build the GRUB image was made from (its latest links)
	deb=$(dirname "$(dirname "$image")")/../debian12
	kernel=$(readlink -f "$deb/vmlinuz") initrd=$(readlink -f "$deb/initrd.img")
	direct=$(readlink -f "$deb/debian12.qcow2")
	IMG_DIR=$(cd "$(dirname "$(dirname "$(dirname "$image")")")" && pwd) # .../guest: both builds
	sum() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
	url() { echo "http://127.0.0.1:$IMG_PORT/${1#"$IMG_DIR"/}"; }
	IMAGE_LINE="url=$(url "$image") checksum=$(sum "$image") disk_format=qcow2 min_disk_gb=2"
	DIRECT_IMAGE_LINE="url=$(url "$direct") checksum=$(sum "$direct") disk_format=qcow2 min_disk_gb=2 kernel=$(url "$kernel") kernel_checksum=$(sum "$kernel") initrd=$(url "$initrd") initrd_checksum=$(sum "$initrd") cmdline=root=/dev/vda%20console=ttyS0"
}

serve_images() {
	say "serving the image over HTTP on 127.0.0.1:$IMG_PORT, snapshots uploaded to its snapshots/ (deploy/host/serve-images.sh)"
	sh deploy/host/serve-images.sh start "$IMG_DIR" "$IMG_PORT" || die "cannot serve the images"
}

write_config() {
	ncpu=$(nproc)
	if [ "$ncpu" -ge 2 ]; then
		shared="0"
		dedicated="1-$((ncpu - 1))"
	else
		shared="0"
		dedicated=""
	fi
	sed -e "s|@DEMO@|$DEMO|g" -e "s|@IMG_PORT@|$IMG_PORT|g" -e "s|@HOST@|$(hostname -s)|g" -e "s|@IMAGE_LINE@|$IMAGE_LINE|" -e "s|@DIRECT_IMAGE_LINE@|$DIRECT_IMAGE_LINE|" \
		-e "s|@DEDICATED@|$dedicated|" -e "s|@SHARED@|$shared|" \
		deploy/demo/stratus.yaml.in >"$DEMO/stratus.yaml.new"
	for d in stratus-bus stratus-scheduler stratus-metadata stratus-agent; do
		"$B/$d" -n -c "$DEMO/stratus.yaml.new" >/dev/null || die "generated config rejected by $d"
	done
	if cmp -s "$DEMO/stratus.yaml" "$DEMO/stratus.yaml.new"; then
		rm -f "$DEMO/stratus.yaml.new" # unchanged: keep its time
	else
		mv "$DEMO/stratus.yaml.new" "$DEMO/stratus.yaml"
	fi
}

# what start installs; tests/e2e/e2e_fresh_root.sh runs it on a fresh root
install_deps() {
	sh deps/install.sh deps/build*.txt deps/demo*.txt || die "package installation failed"
}

# The admin credential (the scheduler's first start writes it) and one member of
# project default, made once with stratusctl as an operator would.
credentials() {
	for _ in $(seq 100); do [ -s "$DEMO/admin.credential" ] && break; sleep 0.1; done
	[ -s "$DEMO/admin.credential" ] || die "the scheduler wrote no admin credential ($DEMO/logs/scheduler.log)"
	if [ ! -s "$DEMO/member.credential" ]; then
		STRATUS_CREDENTIAL="$DEMO/admin.credential" "$CTL" credential create --project default \
			--role member --output "$DEMO/member.credential" >/dev/null ||
			die "cannot create the member credential"
	fi
	echo "   credentials: admin $DEMO/admin.credential, member of default $DEMO/member.credential (mode 0600)"
}

start() {
	[ "$(id -u)" = 0 ] || die "run as root (it installs packages, makes a bridge, starts libvirtd)"
	say "installing what is missing (Debian packages) and building"
	install_deps
	make -s -j2 all || die "build failed"
	mkdir -p "$DEMO/logs" "$RUN"
	prepare_host
	guest_image
	serve_images
	write_config
	say "starting the services"
	start_bus
	# the scheduler's keys before the agent, which trusts scheduler-sign.pub
	"$B/stratus-scheduler" -c "$DEMO/stratus.yaml" keys >"$DEMO/scheduler-keys.txt" ||
		die "stratus-scheduler keys failed"
	echo "   scheduler signing key $(sed -n 's/^key_id: //p' "$DEMO/scheduler-keys.txt")"
	start_daemon scheduler "$B/stratus-scheduler" -c "$DEMO/stratus.yaml"
	credentials
	start_daemon agent "$B/stratus-agent" -c "$DEMO/stratus.yaml"
	start_daemon metadata "$B/stratus-metadata" -c "$DEMO/stratus.yaml"
	[ -n "$REPAIRED" ] && wait_reannounced

	say "booting demo-1 (m1.small, debian-12, user-data deploy/demo/user-data.yaml)"
	if "$CTL" show demo-1 >/dev/null 2>&1; then
		echo "   demo-1 exists already: $("$CTL" --json show demo-1 2>/dev/null | jq -r .state)"
	else
		"$CTL" boot demo-1 --flavor m1.small --image debian-12 \
			--user-data deploy/demo/user-data.yaml || die "boot failed"
	fi

	say "waiting for cloud-init in the guest to run our user-data (TCG: about a minute)"
	ok=""
	for _ in $(seq 120); do
		if "$CTL" console demo-1 2>/dev/null | grep -q "STRATUS-DEMO hello from cloud-init"; then
			ok=1
			break
		fi
		sleep 3
	done
	"$CTL" console demo-1 2>/dev/null |
		grep -E "Cloud-init v\.|STRATUS-DEMO|login:" | tail -n 6 | sed 's/^/   console: /'
	[ -n "$ok" ] || die "cloud-init did not report our user-data in time (see $CTL console demo-1)"
	cat <<EOF

The cloud is up. Requests are signed with a credential (docs/stratusctl.md):
  admin:             export STRATUS_CREDENTIAL=$DEMO/admin.credential
  member of default: export STRATUS_CREDENTIAL=$DEMO/member.credential
  (or --credential FILE, or copy one to ~/.config/stratus/credential, mode 0600)
Try:
  $CTL list                       instances of your project
  $CTL show demo-1                its state, host, address
  $CTL console demo-1 --lines 20  the end of its serial console
  $CTL boot web-1 --flavor m1.tiny --image debian-12 --meta role=web
  $CTL boot md-1 --flavor m1.small --image debian-12 --seed none
                                  no seed disk: DHCP, then the metadata service
  $CTL host list                  hosts with usage and steal
  $CTL quota show default
  $CTL credential list            (admin) create, list, revoke credentials
  curl -s 127.0.0.1:9180/metrics   the agent's Prometheus metrics
  $CTL bus tail                   every message on the bus
Logs: $DEMO/logs/. Stop it all: make demo-stop
EOF
}

stop() {
	[ "$(id -u)" = 0 ] || die "run as root"
	say "stopping the dev cloud"
	if running agent && running scheduler; then
		for name in $("$CTL" --json list 2>/dev/null | jq -r '.[].name' 2>/dev/null); do
			"$CTL" delete "$name" >/dev/null 2>&1 && echo "   deleted $name"
		done
	fi
	for d in metadata agent scheduler bus; do stop_daemon "$d"; done
	sh deploy/host/serve-images.sh stop - "$IMG_PORT"
	# the bridge, hugepages and services that prepare-host.sh itself added
	STRATUS_BRIDGE=$BR sh deploy/host/prepare-host.sh --undo
}

status() {
	sh deploy/host/serve-images.sh status - "$IMG_PORT"
	for d in bus scheduler agent metadata; do
		if running "$d"; then echo "$d: running (pid $(cat "$RUN/$d.pid"))"; else echo "$d: stopped"; fi
	done
}

case "${1:-start}" in
start) start ;;
deps) install_deps ;;
stop) stop ;;
status) status ;;
*) echo "usage: $0 start|deps|stop|status" >&2; exit 2 ;;
esac
