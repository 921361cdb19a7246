#!/bin/sh
# The agent's DHCP host entries (agent.network.dhcp_hosts_dir, dnsmasq's
# --dhcp-hostsdir format), on libvirt's test driver: an entry "MAC,IP,host"
# named by the uuid is written by the build with the address and MAC the
# active event announces, removed when a later build step fails (undo) and
# on delete; reconcile writes a missing entry again and removes a stale one,
# leaving files that are not ours alone; every removal sends SIGHUP to the
# process of dhcp_pid_file (dnsmasq forgets removed entries only then). A
# dhcp_hosts_dir that is not a directory, or not writable, stops the agent
# with a message naming it.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
down() {
	[ -f "$T/hupper.pid" ] && kill "$(cat "$T/hupper.pid")" 2>/dev/null
	agent_env_down
}
trap down EXIT
H=$T/dhcp-hosts
# stands in for dnsmasq: counts its SIGHUPs
sh -c "trap 'echo hup >>$T/hups' HUP; while :; do sleep 0.1; done" &
echo $! >"$T/hupper.pid"
hups() { [ -f "$T/hups" ] && wc -l <"$T/hups" || echo 0; }
AGENT_NETWORK="{dhcp_hosts_dir: $H, dhcp_pid_file: $T/hupper.pid}"
agent_env_up
agent_start
[ -d "$H" ] || fail "the agent did not create $H"

U1=11111111-1111-4111-8111-111111111111
send instance.build "$(spec $U1 '.hostname = "web-1.example.org"')"
ev=$(wait_event ".type==\"instance.state\" and .body.uuid==\"$U1\" and .body.state==\"active\"") ||
	fail "no active event"
mac=$(echo "$ev" | jq -r .body.mac)
ip=$(echo "$ev" | jq -r .body.address | cut -d/ -f1)
[ "$mac" = 52:54:00:4d:00:0a ] && [ "$ip" = 10.77.0.10 ] || fail "address $ip mac $mac"
[ -f "$H/$U1" ] || fail "no DHCP host entry $H/$U1: $(ls -a "$H")"
[ "$(cat "$H/$U1")" = "$mac,$ip,web-1" ] || fail "entry: '$(cat "$H/$U1")', expected '$mac,$ip,web-1'"
[ "$(stat -c %a "$H/$U1")" = 644 ] || fail "entry mode $(stat -c %a "$H/$U1")"
[ "$(ls -A "$H" | wc -l)" = 1 ] || fail "temporary files left: $(ls -A "$H")"
[ "$(hups)" = 0 ] || fail "SIGHUP without a removal"

# a build that fails after the network step (a bad image checksum): the
# undo removes the entry it wrote
U3=33333333-3333-4333-8333-333333333333
send instance.build "$(spec $U3 '.image.checksum = "sha256:0000000000000000000000000000000000000000000000000000000000000000"')"
wait_event ".type==\"instance.reschedule\" and .body.uuid==\"$U3\"" >/dev/null || fail "no reschedule"
[ ! -e "$H/$U3" ] || fail "failed build left its DHCP host entry"
sleep 0.3
[ "$(hups)" = 1 ] || fail "$(hups) SIGHUPs after the undo, expected 1"

# reconcile (every 2 s here): a missing entry is written again, a stale
# one (no such instance) removed, a file that is not ours left alone
rm -f "$H/$U1"
S=55555555-5555-4555-8555-555555555555
echo "52:54:00:00:00:63,10.77.0.99,stale" >"$H/$S"
echo "52:54:00:aa:bb:cc,10.77.0.5,printer" >"$H/operator-entry"
for _ in $(seq 100); do [ -f "$H/$U1" ] && [ ! -e "$H/$S" ] && break; sleep 0.1; done
[ "$(cat "$H/$U1" 2>/dev/null)" = "$mac,$ip,web-1" ] || fail "reconcile did not write the missing entry"
[ ! -e "$H/$S" ] || fail "reconcile did not remove the stale entry"
[ -f "$H/operator-entry" ] || fail "reconcile removed a file that is not ours"
grep -q "removing stale DHCP host entry instance=$S" "$T/agent.log" || fail "stale removal not logged"
# signals do not queue: two SIGHUPs close together may reach the stand-in
# as one (dnsmasq needs only one), so each removal is awaited on its own
wait_hups() { for _ in $(seq 50); do [ "$(hups)" -ge "$1" ] && return 0; sleep 0.1; done; return 1; }
wait_hups 2 || fail "$(hups) SIGHUPs after the undo and the stale removal, expected 2"

# delete: the entry goes with the instance
send instance.delete "{\"uuid\":\"$U1\"}"
wait_event ".body.uuid==\"$U1\" and .body.state==\"deleted\"" >/dev/null || fail "no deleted event"
[ ! -e "$H/$U1" ] || fail "delete left the DHCP host entry"
wait_hups 3 || fail "$(hups) SIGHUPs after undo, stale removal and delete, expected 3"
agent_kill TERM

# a dhcp_hosts_dir that is a file: the agent refuses to start, naming it
: >"$T/not-a-dir"
sed -i "s|dhcp_hosts_dir: $H|dhcp_hosts_dir: $T/not-a-dir|" "$T/stratus.yaml"
"$B/stratus-agent" -c "$T/stratus.yaml" >"$T/bad.log" 2>&1 && fail "agent started with a file as dhcp_hosts_dir"
grep -q "agent.network.dhcp_hosts_dir $T/not-a-dir: not a directory" "$T/bad.log" ||
	fail "message: $(tail -n 3 "$T/bad.log")"

# not writable: a read-only file system (root writes anywhere else)
mkdir -p "$T/ro"
if mount -t tmpfs -o ro,size=1m tmpfs "$T/ro" 2>/dev/null; then
	sed -i "s|dhcp_hosts_dir: $T/not-a-dir|dhcp_hosts_dir: $T/ro|" "$T/stratus.yaml"
	"$B/stratus-agent" -c "$T/stratus.yaml" >"$T/ro.log" 2>&1
	rc=$?
	umount "$T/ro"
	[ $rc -ne 0 ] || fail "agent started with a read-only dhcp_hosts_dir"
	grep -q "agent.network.dhcp_hosts_dir $T/ro: not writable: .*Read-only file system" "$T/ro.log" ||
		fail "message: $(tail -n 3 "$T/ro.log")"
elif [ "$(id -u)" != 0 ]; then
	chmod 0555 "$T/ro"
	sed -i "s|dhcp_hosts_dir: $T/not-a-dir|dhcp_hosts_dir: $T/ro|" "$T/stratus.yaml"
	"$B/stratus-agent" -c "$T/stratus.yaml" >"$T/ro.log" 2>&1 && fail "agent started with a read-only dhcp_hosts_dir"
	grep -q "agent.network.dhcp_hosts_dir $T/ro: not writable" "$T/ro.log" ||
		fail "message: $(tail -n 3 "$T/ro.log")"
else
	echo "note: cannot mount a read-only tmpfs here: the not-writable case is not checked"
fi
echo "PASS: DHCP host entries written, undone, deleted, reconciled; bad directories refused"
