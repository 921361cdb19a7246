# Sourced by the e2e tests: the agent environment of tests/agent/lib.sh on
# real libvirtd + QEMU, the tiny guest (tests/guest/build-tiny.sh), the
# Debian cloud-init guest as a scheduler image (guest_debian_build), a bridge of the
# test's own with dnsmasq (deploy/host/prepare-host.sh) and the rest of the
# control plane (scheduler, metadata service) for stratusctl.
. "$STRATUS_TOP/tests/lib/libvirt.sh"
. "$STRATUS_TOP/tests/agent/lib.sh"
# libvirtd on these machines may re-probe QEMU before a define: minutes, not
# seconds, so the waits below are generous
E2E_WAIT=${E2E_WAIT:-600}
e2e_down() {
	# every domain this test made carries its pid in the uuid (e2e_uuid)
	for d in $(virsh -c qemu:///system list --all --name 2>/dev/null |
		grep "^stratus-e2e0.*-$(printf '%012d' $$)\$"); do
		virsh -c qemu:///system destroy "$d" >/dev/null 2>&1
		virsh -c qemu:///system undefine "$d" >/dev/null 2>&1
	done
	# instances the scheduler named (e2e_stack_up tests record their uuids)
	for u in $(cat "$T/e2e-uuids" 2>/dev/null); do
		guest_destroy "stratus-$u"
	done
	for p in scheduler metadata; do
		[ -f "$T/$p.pid" ] && kill "$(cat "$T/$p.pid")" 2>/dev/null
	done
	e2e_bridge_down
	agent_env_down
	[ -n "${E2E_HUGEPAGES:-}" ] && hugepages_restore
	libvirt_down
}
e2e_up() {
	eval "$(sh "$STRATUS_TOP/tests/guest/build-tiny.sh" 2>"$T/tiny.log" | grep -E '^(kernel|initrd|disk|cmdline)=')" ||
		fail "tiny guest build: $(tail -n 5 "$T/tiny.log")"
	TINY_DISK=$disk TINY_KERNEL=$kernel TINY_INITRD=$initrd TINY_CMDLINE=$cmdline
	libvirt_up || fail "libvirtd did not start"
	agent_env_up qemu:///system
}
_sum() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
# tiny_spec UUID [jq-expression]: the tiny guest as an instance spec
tiny_spec() {
	jq -nc --arg u "$1" --arg disk "file://$TINY_DISK" --arg dsum "$(_sum "$TINY_DISK")" \
		--arg k "file://$TINY_KERNEL" --arg ksum "$(_sum "$TINY_KERNEL")" \
		--arg i "file://$TINY_INITRD" --arg isum "$(_sum "$TINY_INITRD")" \
		--arg cmd "$TINY_CMDLINE" '{
		uuid: $u, name: "tiny", project: "e2e",
		flavor: {name: "m1.tiny", vcpus: 1, ram_mb: 128, disk_gb: 1},
		image: {name: "tiny", url: $disk, checksum: $dsum, disk_format: "qcow2",
			kernel: {url: $k, checksum: $ksum}, initrd: {url: $i, checksum: $isum},
			cmdline: $cmd},
		seed: "nocloud"} | '"${2:-.}"
}
e2e_uuid() { printf 'e2e0%04x-0000-4000-8000-%012d' "$1" $$; }

# debian_image_line: the Debian guest as a scheduler images: entry (file URLs)
debian_image_line() {
	echo "url=file://$DEB_IMAGE checksum=$(_sum "$DEB_IMAGE") disk_format=qcow2 min_disk_gb=2" \
		"kernel=file://$DEB_KERNEL kernel_checksum=$(_sum "$DEB_KERNEL")" \
		"initrd=file://$DEB_INITRD initrd_checksum=$(_sum "$DEB_INITRD")" \
		"cmdline=$(echo "${DEB_CMDLINE:-root=/dev/vda console=ttyS0}" | sed 's/ /%20/g')"
}

# e2e_bridge_up: a bridge of this test (E2E_BRIDGE, 10.79.N.1/24 with N from
# the pid: E2E_NET is 10.79.N) carrying 169.254.169.254, with dnsmasq
# handing out the static leases of $T/dhcp-hosts, by prepare-host.sh with its
# own state in $T/host (no hugepages, no libvirt). Sets AGENT_BRIDGE and
# AGENT_NETWORK for agent_env_up. e2e_down undoes it.
e2e_bridge_up() {
	E2E_BRIDGE=stre2e$$
	E2E_NET=10.79.$(($$ % 200 + 20))
	ip -o addr show | grep -q "inet $E2E_NET\." && fail "$E2E_NET.0/24 is in use on this machine"
	mkdir -p "$T/host"
	STRATUS_BRIDGE=$E2E_BRIDGE STRATUS_BRIDGE_CIDR=$E2E_NET.1/24 STRATUS_HOST_STATE=$T/host \
		STRATUS_DHCP_HOSTS_DIR=$T/dhcp-hosts \
		sh "$STRATUS_TOP/deploy/host/prepare-host.sh" --hugepages 0 --no-libvirt >"$T/prepare-host.log" 2>&1 ||
		fail "prepare-host: $(tail -n 5 "$T/prepare-host.log")"
	echo "$E2E_BRIDGE" >"$T/e2e-bridge"
	AGENT_BRIDGE=$E2E_BRIDGE
	AGENT_NETWORK="{cidr: $E2E_NET.0/24, range_start: $E2E_NET.10, range_end: $E2E_NET.50, gateway: $E2E_NET.1, dhcp_hosts_dir: $T/dhcp-hosts, dhcp_pid_file: $T/host/dnsmasq-$E2E_BRIDGE.pid}"
}
e2e_bridge_down() {
	[ -s "$T/e2e-bridge" ] || return 0
	STRATUS_BRIDGE=$(cat "$T/e2e-bridge") STRATUS_HOST_STATE=$T/host \
		sh "$STRATUS_TOP/deploy/host/prepare-host.sh" --undo >>"$T/prepare-host.log" 2>&1
	# the agent's port filters outlive it by design; the test's bridge does not
	nft delete table bridge "stratus-$(cat "$T/e2e-bridge")" 2>/dev/null
	rm -f "$T/e2e-bridge"
}

# e2e_stack_up SCHEDULER_IMAGES_LINES: stratus-scheduler and stratus-metadata
# (on 169.254.169.254:80, the agent's store) beside agent_env_up's bus and
# agent; ctl runs stratusctl as project e2e. Call after agent_start (the
# metadata service opens the store the agent made).
e2e_stack_up() {
	if ss -Hltn 2>/dev/null | awk '{print $4}' | grep -Eq '^(169\.254\.169\.254|0\.0\.0\.0|\*):80$'; then
		echo "skip: something already listens on 169.254.169.254:80 (a dev cloud?)"
		exit 77
	fi
	cat >>"$T/stratus.yaml" <<EOF
scheduler:
  state_path: $T/scheduler.db
  key_dir: $T/sched
  heartbeat_interval: 2s
  missed_heartbeats: 30
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=3
  images:
$1
metadata:
  listen: 169.254.169.254:80
  store: $T/state/agent.db
EOF
	"$B/stratus-scheduler" -c "$T/stratus.yaml" >"$T/scheduler.log" 2>&1 &
	echo $! >"$T/scheduler.pid"
	# stratusctl signs with the admin credential the scheduler creates on first start
	export STRATUS_CREDENTIAL="$T/admin.credential"
	for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
	"$B/stratus-metadata" -c "$T/stratus.yaml" >"$T/metadata.log" 2>&1 &
	echo $! >"$T/metadata.pid"
	for _ in $(seq 50); do curl -s -o /dev/null "http://169.254.169.254/healthz" && break; sleep 0.1; done
	curl -s -o /dev/null "http://169.254.169.254/healthz" || fail "stratus-metadata: $(tail -n 3 "$T/metadata.log")"
}
ctl() { "$B/stratusctl" -c "$T/stratus.yaml" -p e2e "$@"; }
