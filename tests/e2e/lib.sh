# Sourced by the e2e tests: the agent environment of tests/agent/lib.sh on
# real libvirtd + QEMU, and the tiny guest (tests/guest/build-tiny.sh).
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
