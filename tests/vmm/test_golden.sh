#!/bin/sh
# Golden files for `stratus-agent render-domain` and `host-info`:
#   tests/vmm/data/NAME.json (+ NAME.yaml, the vmm: config, when present)
#     -> NAME.xml  (the domain XML; also checked with virt-xml-validate)
#     or NAME.err  (the exact error: an invalid extra spec or a fit that
#                   cannot be made)
#   tests/vmm/sysfs/FIXTURE -> tests/vmm/data/host/FIXTURE.json (host-info)
# REGENERATE=1 rewrites the expected files (review them in the diff).
set -u
BUILD=${BUILD:-build}
agent=$BUILD/stratus-agent
data=tests/vmm/data
sysfs=tests/vmm/sysfs
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0 n=0

command -v virt-xml-validate >/dev/null || { echo "virt-xml-validate missing (apt-get install libvirt-clients)"; exit 1; }

# name                     fixture    accel  expect (xml: the domain; err: exit 1 and the message)
cases="
shared-qemu                1node      qemu   xml
shared-kvm                 1node      kvm    xml
shared-config              2node-ht   qemu   xml
dedicated                  1node      qemu   xml
dedicated-prefer           2node-ht   kvm    xml
dedicated-isolate          2node-ht   kvm    xml
dedicated-require          2node-ht   kvm    xml
emulator-isolate           2node-ht   kvm    xml
emulator-share             2node-ht   kvm    xml
two-nodes                  2node-ht   kvm    xml
pages-2mb                  1node      qemu   xml
pages-1gb                  1g         kvm    xml
pages-large                1g         kvm    xml
pages-any                  1node      qemu   xml
pages-small                2node-ht   qemu   xml
numa-shared                2node-ht   qemu   xml
metachars                  1node      qemu   xml
seed-none                  1node      qemu   xml
bad-cpu-policy             1node      qemu   err
bad-thread-policy          1node      qemu   err
bad-emulator-policy        1node      qemu   err
bad-page-size              1node      qemu   err
bad-numa-nodes             1node      qemu   err
thread-policy-shared       1node      qemu   err
emulator-isolate-shared    1node      qemu   err
uneven-split               2node-ht   qemu   err
nofit-pages                2node-ht   qemu   err
nofit-require-no-smt       1node      qemu   err
nofit-numa-nodes           1node      qemu   err
nofit-pool-disabled        1g         qemu   err
nofit-isolate              2node-ht   qemu   err
nofit-no-dedicated-set     1node      qemu   err
pci-required               pci-2node  kvm    xml
pci-preferred              pci-2node  kvm    xml
pci-legacy-shared          pci-2node  kvm    xml
nofit-pci-required         pci-2node  kvm    err
nofit-pci-unusable         pci-2node  kvm    err
nofit-pci-alias            pci-2node  kvm    err
bad-pci-alias              1node      qemu   err
bad-pci-count              1node      qemu   err
bad-pci-numa-policy        1node      qemu   err
cpu-host-passthrough       pci-2node  kvm    xml
cpu-custom-nested          pci-2node  kvm    xml
cpu-custom-qemu            1node      qemu   xml
cpu-flags-qemu             1node      qemu   xml
cpu-config                 pci-2node  kvm    xml
nofit-nested-tcg           pci-2node  qemu   err
nofit-nested-no-svm        pci-2node  kvm    err
nofit-host-model-tcg       1node      qemu   err
bad-cpu-mode               1node      qemu   err
bad-cpu-custom-no-model    1node      qemu   err
bad-cpu-model-mode         1node      qemu   err
bad-cpu-flag               1node      qemu   err
image-bios                 1node      qemu   xml
image-uefi                 1node      qemu   xml
image-uefi-q35             1node      qemu   xml
image-uefi-metadata-only   1node      qemu   xml
image-secure-boot          1node      kvm    xml
image-secure-boot-disabled 1node      qemu   xml
image-q35                  1node      qemu   xml
image-scsi                 1node      qemu   xml
image-virtio               1node      qemu   xml
image-e1000                1node      qemu   xml
image-guest-agent          1node      qemu   xml
image-no-guest-agent       1node      qemu   xml
image-windows              1node      kvm    xml
image-linux                1node      qemu   xml
bad-firmware               1node      qemu   err
bad-property               1node      qemu   err
bad-disk-bus               1node      qemu   err
bad-vif-model              1node      qemu   err
bad-guest-agent            1node      qemu   err
bad-os-type                1node      qemu   err
bad-machine                1node      qemu   err
secure-boot-bios           1node      qemu   err
secure-boot-pc             1node      qemu   err
local-disks                1node      qemu   xml
local-disks-scsi-q35       1node      qemu   xml
local-swap-only            1node      qemu   xml
bad-ephemeral              1node      qemu   err
bad-swap                   1node      qemu   err"

check() { # check EXPECTED ACTUAL WHAT
	if [ "${REGENERATE:-}" = 1 ]; then
		cp "$2" "$1"
		return 0
	fi
	if ! diff -u "$1" "$2"; then
		echo "FAIL $3: output differs from $1"
		fail=$((fail + 1))
		return 1
	fi
}

echo "$cases" | while read -r name fixture accel expect; do
	[ -n "$name" ] || continue
	echo "$name" >>"$tmp/seen"
	cfg=""
	[ -f "$data/$name.yaml" ] && cfg="-c $data/$name.yaml"
	# shellcheck disable=SC2086
	"$agent" render-domain $cfg --sysfs "$sysfs/$fixture" --accel "$accel" \
		"$data/$name.json" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	if [ "$expect" = err ]; then
		if [ $rc -ne 1 ]; then
			echo "FAIL $name: expected exit 1, got $rc"; echo x >>"$tmp/failed"; continue
		fi
		check "$data/$name.err" "$tmp/err" "$name" || echo x >>"$tmp/failed"
		echo "ok   $name (rejected)"
		continue
	fi
	if [ $rc -ne 0 ]; then
		echo "FAIL $name: exit $rc: $(cat "$tmp/err")"; echo x >>"$tmp/failed"; continue
	fi
	check "$data/$name.xml" "$tmp/out" "$name" || { echo x >>"$tmp/failed"; continue; }
	if ! virt-xml-validate "$data/$name.xml" domain >"$tmp/v" 2>&1; then
		echo "FAIL $name: virt-xml-validate: $(cat "$tmp/v")"; echo x >>"$tmp/failed"; continue
	fi
	echo "ok   $name"
done

for fixture in 1node 2node-ht 1g; do
	mkdir -p "$data/host"
	if ! "$agent" host-info --sysfs "$sysfs/$fixture" >"$tmp/host" 2>"$tmp/err"; then
		echo "FAIL host-info $fixture: $(cat "$tmp/err")"; echo x >>"$tmp/failed"; continue
	fi
	check "$data/host/$fixture.json" "$tmp/host" "host-info $fixture" || echo x >>"$tmp/failed"
	echo "ok   host-info $fixture"
done

# the PCI devices a config declares: usable, or why not (split IOMMU group, no IOMMU)
if ! "$agent" host-info -c "$data/pci-required.yaml" --sysfs "$sysfs/pci-2node" >"$tmp/host" 2>"$tmp/err"; then
	echo "FAIL host-info pci-2node: $(cat "$tmp/err")"; echo x >>"$tmp/failed"
else
	check "$data/host/pci-2node.json" "$tmp/host" "host-info pci-2node" || echo x >>"$tmp/failed"
	echo "ok   host-info pci-2node"
fi

# every data file has a case (a golden nobody runs is a defect)
for f in "$data"/*.json; do
	b=$(basename "$f" .json)
	grep -qx "$b" "$tmp/seen" || { echo "FAIL $f has no line in the case table"; echo x >>"$tmp/failed"; }
done

n=$(wc -l <"$tmp/seen")
if [ -s "$tmp/failed" ]; then
	echo "$(wc -l <"$tmp/failed") of $n golden cases failed"
	exit 1
fi
echo "all $n golden cases pass"
