#!/bin/sh
# cloud image benchmark (issue 16): the time from `virsh start` to
# "Cloud-init ... finished" on the serial console (TCG, one vCPU, 768 MiB,
# NoCloud seed) for the GRUB cloud image (tests/guest/build-cloudimg.sh)
# under SeaBIOS and under OVMF (q35, and pc: the agent's default machine
# for hw_firmware_type=uefi alone), beside the direct-kernel Debian image (the
# same root file system, the kernel given by the host) in the same run,
# one after the other. Target: each at most 1.3x the direct-kernel time.
#
# The guests are what a user gets: each kind is an instance spec like the
# dev cloud's catalog entries (deploy/demo/stratus.yaml.in: debian-12,
# debian-12-uefi with hw_firmware_type=uefi hw_machine_type=q35,
# debian-12-direct with the host's kernel and root=/dev/vda console=ttyS0),
# its seed made by `stratus-agent seed` and its domain XML by
# `stratus-agent render-domain` (the agent's own define step), with no
# network (bridge ""). Only the root overlay is made here, as the agent's
# image step would (qcow2 over the cached image, the flavor's 4 GB).
# Needs root, libvirtd (qemu:///system) and a build (BUILD, default
# build/); run it under flock /tmp/stratus-libvirt.lock when others use
# the same libvirtd.
set -eu
. "$(dirname "$0")/../lib.sh"
STRATUS_TOP=$(cd "$(dirname "$0")/../.." && pwd)
. "$STRATUS_TOP/tests/lib/libvirt.sh"
BUILD=${BUILD:-$STRATUS_TOP/build}
agent=$(cd "$BUILD" && pwd)/stratus-agent
[ -x "$agent" ] || { echo "no $agent: run make first"; exit 1; }
for tool in jq qemu-img virsh base64; do
	command -v "$tool" >/dev/null 2>&1 || { echo "$tool not found"; exit 1; }
done
tmp=$(mktemp -d /var/tmp/stratus-cloudimg-bench.XXXXXX)
chmod 755 "$tmp"
# one instance (UUID, domain stratus-UUID) per kind, named here so that
# cleanup finds the domains boot_time (a subshell) left behind
for k in direct bios uefi uefipc; do cat /proc/sys/kernel/random/uuid >"$tmp/$k.uuid"; done
cleanup() {
	for k in direct bios uefi uefipc; do guest_destroy "stratus-$(cat "$tmp/$k.uuid")"; done
	rm -rf "$tmp"
	libvirt_down
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

cloud=$(sh "$STRATUS_TOP/tests/guest/build-cloudimg.sh" 2>"$tmp/build.log" | sed -n 's/^image=//p')
[ -s "$cloud" ] || { echo "cloud image build failed: $(tail -n 3 "$tmp/build.log")"; exit 1; }
# the direct-kernel build it was made from (build-cloudimg.sh made sure of it)
deb=${STRATUS_CACHE:-/var/cache/stratus}/guest/debian12
DEB_IMAGE=$(readlink -f "$deb/debian12.qcow2") DEB_KERNEL=$(readlink -f "$deb/vmlinuz")
DEB_INITRD=$(readlink -f "$deb/initrd.img")
libvirt_up
virsh -c "$LIBVIRT_URI" domcapabilities --virttype qemu >/dev/null # first probe: not ours to time

# sha256 of FILE as its build recorded it in SHA256SUMS beside it
image_sum() {
	s=$(awk -v f="$(basename "$1")" '$2 == f { print $1 }' "$(dirname "$1")/SHA256SUMS" 2>/dev/null)
	[ -n "$s" ] || s=$(sha256sum "$1" | cut -d' ' -f1)
	echo "sha256:$s"
}

# boot_time KIND: seconds from virsh start to cloud-init finished
boot_time() {
	kind=$1
	d=$tmp/$kind
	mkdir -p "$d"
	chmod 755 "$d"
	uuid=$(cat "$tmp/$kind.uuid")
	name=stratus-$uuid
	base=$cloud props='{}' render_opts=""
	case $kind in
	direct)
		base=$DEB_IMAGE
		render_opts="--kernel $DEB_KERNEL --initrd $DEB_INITRD"
		;;
	bios) ;;
	uefi) props='{"hw_firmware_type": "uefi", "hw_machine_type": "q35"}' ;;
	uefipc) props='{"hw_firmware_type": "uefi"}' ;;
	esac
	# the direct kind's kernel, initrd and cmdline as debian-12-direct has them
	jq -n --arg uuid "$uuid" --arg kind "$kind" --arg url "file://$base" \
		--arg sum "$(image_sum "$base")" --argjson props "$props" \
		--arg kurl "file://$DEB_KERNEL" --arg ksum "$(image_sum "$DEB_KERNEL")" \
		--arg iurl "file://$DEB_INITRD" --arg isum "$(image_sum "$DEB_INITRD")" \
		--arg ud "$(printf '#cloud-config\n' | base64 -w0)" '{
		uuid: $uuid, name: ("bench-" + $kind), project: "bench",
		flavor: { name: "bench", vcpus: 1, ram_mb: 768, disk_gb: 4, extra_specs: {} },
		image: ({ name: ("debian-12-" + $kind), url: $url, checksum: $sum,
			  disk_format: "qcow2", min_disk_gb: 2, properties: $props }
			+ if $kind == "direct" then {
				kernel: { url: $kurl, checksum: $ksum },
				initrd: { url: $iurl, checksum: $isum },
				cmdline: "root=/dev/vda console=ttyS0" } else {} end),
		seed: "nocloud", user_data: $ud }' >"$d/spec.json"
	printf 'vmm:\n  instances_dir: %s\n  console_log_dir: %s\n  bridge: ""\n' "$d" "$d" >"$d/stratus.yaml"
	qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$d/$uuid.qcow2" 4G
	"$agent" seed --instance "$d/spec.json" -o "$d/$uuid.seed.iso" || return 1
	# shellcheck disable=SC2086 # render_opts: paths without spaces
	"$agent" render-domain -c "$d/stratus.yaml" --accel qemu $render_opts "$d/spec.json" \
		>"$d/domain.xml" || return 1
	virsh -q -c "$LIBVIRT_URI" define "$d/domain.xml" >/dev/null
	t0=$(date +%s.%N)
	virsh -q -c "$LIBVIRT_URI" start "$name" >/dev/null
	guest_console_wait "$d/$uuid.log" 'Cloud-init v\. [0-9.]+ finished at' 400 >/dev/null || return 1
	t1=$(date +%s.%N)
	guest_destroy "$name"
	echo "$t0 $t1" | awk '{printf "%.1f", $2 - $1}'
}

direct=$(boot_time direct) || direct=
bios=$(boot_time bios) || bios=
uefi=$(boot_time uefi) || uefi=
uefipc=$(boot_time uefipc) || uefipc=
printf '  direct kernel %6s s   GRUB/SeaBIOS %6s s   GRUB/OVMF q35 %6s s   GRUB/OVMF pc %6s s\n  (virsh start -> cloud-init finished, TCG)\n' \
	"${direct:-?}" "${bios:-?}" "${uefi:-?}" "${uefipc:-?}"
bench_line name=cloudimg.boot_bios figure="$bios" unit=s reference="$direct" ref_unit=s \
	ref_name="direct kernel boot" target="<=1.3x"
bench_line name=cloudimg.boot_uefi figure="$uefi" unit=s reference="$direct" ref_unit=s \
	ref_name="direct kernel boot" target="<=1.3x"
bench_line name=cloudimg.boot_uefi_pc figure="$uefipc" unit=s reference="$direct" ref_unit=s \
	ref_name="direct kernel boot" target="<=1.3x"
