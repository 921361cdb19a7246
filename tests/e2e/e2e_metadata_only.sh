#!/bin/sh
# Metadata service only (seed: none), like a Nova instance without a config
# drive: stratusctl boots the Debian 12 guest (real cloud-init 22.4) with no
# seed disk on a bridge of this test where prepare-host.sh's dnsmasq serves
# the agent's DHCP host entries. cloud-init's ds-identify picks OpenStack
# from the SMBIOS product, DataSourceOpenStackLocal takes an ephemeral DHCP
# lease and reads 169.254.169.254 (stratus-metadata on the agent's store).
# Checks: ACTIVE; the host entry (MAC,IP,hostname) while the instance lives;
# the user-data's runcmd marker with our instance-id on the console; the
# datasource line saying OpenStackLocal; after delete no entry, no domain.
set -u
. "$STRATUS_TOP/tests/e2e/lib.sh"
trap e2e_down EXIT
trap 'exit 1' INT TERM
guest_debian_build || fail "the Debian guest"
libvirt_up || fail "libvirtd did not start"
e2e_bridge_up
agent_env_up qemu:///system
agent_start
e2e_stack_up "    debian-12: $(debian_image_line)"

for _ in $(seq 100); do ctl --json host list 2>/dev/null | jq -e 'length > 0' >/dev/null && break; sleep 0.2; done
mark=metadata-only-$$-$(date +%s)
cat >"$T/user-data" <<UD
#cloud-config
runcmd:
  - [sh, -c, 'echo "STRATUS-E2E: $mark iid=\$(cat /var/lib/cloud/data/instance-id) host=\$(hostname)" > /dev/ttyS0']
UD
ctl boot meta-1 --flavor m1.small --image debian-12 --seed none --user-data "$T/user-data" \
	--timeout "$E2E_WAIT" >"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out")"
ctl --json show meta-1 >"$T/show.json" || fail "show"
uuid=$(jq -r .uuid "$T/show.json")
echo "$uuid" >>"$T/e2e-uuids"
jq -e '.state == "active"' "$T/show.json" >/dev/null || fail "not active: $(cat "$T/show.json")"
[ ! -e "$T/inst/$uuid.seed.iso" ] || fail "seed: none made a seed disk"

# the agent's DHCP host entry, which dnsmasq answers from
ip=$(db "SELECT address FROM instances WHERE uuid='$uuid'" | cut -d/ -f1)
mac=$(db "SELECT mac FROM instances WHERE uuid='$uuid'")
[ "$(cat "$T/dhcp-hosts/$uuid" 2>/dev/null)" = "$mac,$ip,meta-1" ] ||
	fail "DHCP host entry: '$(cat "$T/dhcp-hosts/$uuid" 2>/dev/null)', expected '$mac,$ip,meta-1'"
virsh -c qemu:///system dumpxml "stratus-$uuid" | grep -q "<source bridge='$E2E_BRIDGE'/>" ||
	fail "the domain's NIC is not on $E2E_BRIDGE"

start=$(date +%s)
c=$T/inst/$uuid.log
guest_console_wait "$c" 'Cloud-init v\. [0-9.]+ finished at' "$E2E_WAIT" ||
	fail "cloud-init did not finish within $E2E_WAIT s (dnsmasq: $(tail -n 5 "$T/host/dnsmasq-$E2E_BRIDGE.log" 2>/dev/null); metadata: $(tail -n 5 "$T/metadata.log"))"
secs=$(($(date +%s) - start))
grep -E 'Cloud-init v\. [0-9.]+ finished at' "$c" | tail -n 1
grep -q "STRATUS-E2E: $mark iid=$uuid host=meta-1" "$c" ||
	fail "runcmd marker with instance-id $uuid not on the console: $(grep 'STRATUS-E2E' "$c")"
grep -E 'finished at' "$c" | grep -q 'Datasource DataSourceOpenStackLocal' ||
	fail "cloud-init did not use the OpenStack metadata service: $(grep -E 'finished at|Datasource' "$c" | tail -n 2)"
grep -q "DHCPACK(.*) $ip $mac meta-1" "$T/host/dnsmasq-$E2E_BRIDGE.log" ||
	fail "dnsmasq did not hand $ip to $mac: $(tail -n 5 "$T/host/dnsmasq-$E2E_BRIDGE.log")"

ctl delete meta-1 --timeout "$E2E_WAIT" >"$T/delete.out" 2>&1 || fail "delete: $(cat "$T/delete.out")"
[ ! -e "$T/dhcp-hosts/$uuid" ] || fail "delete left the DHCP host entry"
virsh -c qemu:///system domstate "stratus-$uuid" >/dev/null 2>&1 && fail "domain still defined after delete"
echo "PASS: seed none: ACTIVE, DHCP $ip for $mac, cloud-init ran the user-data from the metadata service (DataSourceOpenStackLocal, instance-id $uuid) $secs s after ACTIVE; delete removed the entry"
