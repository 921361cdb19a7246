#!/bin/sh
# PCI passthrough and the guest CPU through the binaries a user runs:
# stratus-bus, stratus-scheduler, stratus-agent (libvirt's test driver, the
# sysfs fixture tests/vmm/sysfs/pci-2node as its host: two usable gpus, one
# in a split IOMMU group) and stratusctl. A bad flavor is refused at create;
# two gpu guests get the two usable devices (the agent's stored placement);
# a third finds no host (the scheduler's reason); a delete gives a device
# back; a nested-virt flavor on this TCG host fails with the agent's reason.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
trap stack_down EXIT
agent_env_up
fixture=$STRATUS_TOP/tests/vmm/sysfs/pci-2node
sed -i "s|cpu_dedicated_set: \"1\", cpu_shared_set: \"0\",|cpu_dedicated_set: \"2-7,10-15\", cpu_shared_set: \"0-1,8-9\", sysfs_root: \"$fixture\", pci_alias: {gpu: \"vendor_id=10de product_id=1eb8\"},|" \
	"$T/stratus.yaml"
grep -q pci_alias "$T/stratus.yaml" || fail "test set-up: no pci_alias in the config"
cat >>"$T/stratus.yaml" <<EOF
$(stack_scheduler_yaml)
  missed_heartbeats: 5
  default_quotas: {instances: 10, cores: 20, ram_mb: 8192}
  flavors:
    g1.gpu: vcpus=1 ram_mb=256 disk_gb=1 pci_passthrough:alias=gpu:1
    m1.nested: vcpus=1 ram_mb=256 disk_gb=1 hw:cpu_model_extra_flags=vmx
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
EOF
"$B/stratus-agent" -n -c "$T/stratus.yaml" >/dev/null || fail "config refused"
stack_scheduler_start
agent_start
stack_host_known

# a bad alias count is refused at create, and nothing is added
if ctl flavor add g1.bad --vcpus 1 --ram-mb 256 --spec pci_passthrough:alias=gpu:0 >"$T/bad.out" 2>&1; then
	fail "flavor with gpu:0 accepted"
fi
grep -q "pci_passthrough:alias: 'gpu:0': expected NAME:COUNT with COUNT from 1 to 8" "$T/bad.out" ||
	fail "bad flavor: unexpected error: $(cat "$T/bad.out")"
ctl --json flavor list | jq -e 'map(select(.name == "g1.bad")) | length == 0' >/dev/null || fail "g1.bad was added"

# two gpu guests: the two usable devices, never the split group's
for n in 1 2; do
	ctl boot gpu-$n --flavor g1.gpu --image tiny --timeout 60 >"$T/boot$n.out" 2>&1 ||
		fail "boot gpu-$n: $(cat "$T/boot$n.out")"
done
db "SELECT placement_json FROM instances" >"$T/placements"
grep -q '"address":"0000:3b:00.0"' "$T/placements" || fail "no guest has 0000:3b:00.0: $(cat "$T/placements")"
grep -q '"address":"0000:d8:00.0"' "$T/placements" || fail "no guest has 0000:d8:00.0: $(cat "$T/placements")"
grep -q '0000:af:00.0' "$T/placements" && fail "the split group's device was given out"

# a third: the scheduler says why
if ctl boot gpu-3 --flavor g1.gpu --image tiny --timeout 60 >"$T/boot3.out" 2>&1; then
	fail "a third gpu guest was placed"
fi
grep -q "hv1: PCI: needs 1 gpu, 0 of 2 free" "$T/boot3.out" || fail "third boot: $(cat "$T/boot3.out")"

# a delete gives its device back
ctl delete gpu-1 --timeout 60 >/dev/null || fail "delete gpu-1"
ctl boot gpu-4 --flavor g1.gpu --image tiny --timeout 60 >"$T/boot4.out" 2>&1 ||
	fail "boot gpu-4 after the delete: $(cat "$T/boot4.out")"

# nested virtualization on a TCG host: the agent refuses with the reason
ctl boot nest --flavor m1.nested --image tiny --timeout 60 >"$T/nest.out" 2>&1 &&
	fail "a vmx guest became active under TCG"
ctl --json show nest >"$T/nest.json" 2>&1
grep -q "CPU flag vmx (hardware virtualization for the guest) needs KVM" "$T/nest.json" "$T/nest.out" ||
	fail "nested: no reason: $(cat "$T/nest.out" "$T/nest.json")"
echo "ok: PCI passthrough and the guest CPU through stratusctl"
