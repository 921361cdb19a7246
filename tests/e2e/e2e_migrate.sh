#!/bin/sh
# Live migration between two hosts on one machine (issue 15): two
# namespaced libvirtds (tests/lib/twohost.sh), a stratus-agent inside each
# host's namespaces, stratus-bus and the scheduler in the root namespace on
# the hosts' bridge; driven with stratusctl as an operator would.
#   boot the tiny guest (a console counter from its user-data) on h1;
#   `stratusctl migrate web --host h2`: ends with the total time and
#   libvirt's downtime; the counter carries on on h2 (never restarts, no
#   reboot); `show` says h2, `host list` usage moved, h1 clean (no domain,
#   no files, no store row); h1's /metrics has the duration and downtime;
#   migrate back with no --host (the scheduler picks h1);
#   an aborted migration: h2 without room (its only dedicated pCPU held by
#   another guest) -> refused, the guest runs on in h1.
# Needs root, QEMU, libvirt: exit 77 otherwise. Under 5 minutes.
set -u
. "${STRATUS_TOP:-$(pwd)}/tests/e2e/twohost-stack.sh"

# the guest: a console counter from its user-data, every 0.2 s
printf '#!/bin/sh\n( i=0; while :; do i=$((i+1)); echo "TICK $i"; sleep 0.2; done ) &\n' >"$T/ud.sh"
ctl boot web --flavor m1.tiny --image tiny --user-data "$T/ud.sh" --timeout 180 >"$T/boot.out" 2>&1 ||
	fail "boot: $(cat "$T/boot.out")"
uuid=$(ctl --json show web | jq -r .uuid)
src=$(ctl --json show web | jq -r .host)
[ "$src" = h1 ] || [ "$src" = h2 ] || fail "web on '$src'"
dst=h2
[ "$src" = h2 ] && dst=h1
sn=${src#h} dn=${dst#h}
log_of() { echo "$TH_DIR/h$1/inst/$uuid.log"; }
for _ in $(seq 900); do grep -q "TICK 5" "$(log_of $sn)" 2>/dev/null && break; sleep 0.2; done
grep -q "TICK 5" "$(log_of $sn)" || fail "no counter on $src: $(tail -n 5 "$(log_of $sn)")"
echo "web on $src, counting ($(($(date +%s) - t0)) s)"

# ---- live migration while the counter runs ----
before=$(grep -o 'TICK [0-9]*' "$(log_of $sn)" | tail -n 1 | cut -d' ' -f2)
ctl migrate web --host "$dst" --timeout 180 >"$T/mig.out" 2>&1 || fail "migrate: $(cat "$T/mig.out")"
grep -E "migrated from $src to $dst in [0-9.]+ s, downtime [0-9]+ ms" "$T/mig.out" ||
	fail "no total and downtime: $(cat "$T/mig.out")"
[ "$(ctl --json show web | jq -r '.host + " " + .state')" = "$dst active" ] ||
	fail "show: $(ctl --json show web)"
# the counter carries on over there: the same process, no reboot
for _ in $(seq 50); do grep -q "TICK" "$(log_of $dn)" 2>/dev/null && break; sleep 0.2; done
sleep 1
first_dst=$(grep -o 'TICK [0-9]*' "$(log_of $dn)" | head -n 1 | cut -d' ' -f2)
[ -n "$first_dst" ] || fail "no counter on $dst: $(tail -n 5 "$(log_of $dn)")"
grep -q "STRATUS-GUEST: ready" "$(log_of $dn)" && fail "the guest booted again on $dst"
[ "$first_dst" -gt "$before" ] || fail "the counter restarted on $dst (first $first_dst, $before before)"
echo "counter: $before on $src before the migration, first on $dst $first_dst"
virsh -c "$(th_uri $dn)" domstate "stratus-$uuid" | grep -q running || fail "not running on $dst"
virsh -c "$(th_uri $sn)" list --all --name | grep -q "$uuid" && fail "domain left on $src"
[ -e "$TH_DIR/h$sn/inst/$uuid.qcow2" ] && fail "overlay left on $src"
[ "$(sqlite3 "$T/h$sn/state/agent.db" "SELECT count(*) FROM instances")" = 0 ] || fail "store row left on $src"
usage() { ctl --json host list | jq -r --arg h "$1" '.[] | select(.name == $h) | .instances'; }
[ "$(usage "$src") $(usage "$dst")" = "0 1" ] || fail "usage: $(ctl host list)"
curl -sf "http://$(th_addr $sn):9180/metrics" >"$T/metrics.txt" || fail "no /metrics on $src"
grep -q "stratus_migration_downtime_seconds_count{host=\"$src\"} 1" "$T/metrics.txt" ||
	fail "no downtime histogram: $(grep migration "$T/metrics.txt")"
grep -q "stratus_migration_duration_seconds_count{host=\"$src\"} 1" "$T/metrics.txt" || fail "no duration histogram"
echo "migrated: $(grep migrated "$T/mig.out") ($(($(date +%s) - t0)) s)"

# ---- back, the scheduler picks the host ----
ctl migrate web --timeout 180 >"$T/back.out" 2>&1 || fail "migrate back: $(cat "$T/back.out")"
grep -q "migrated from $dst to $src" "$T/back.out" || fail "back: $(cat "$T/back.out")"
[ "$(ctl --json show web | jq -r .host)" = "$src" ] || fail "back: $(ctl --json show web)"
sleep 1
grep -q "STRATUS-GUEST: ready" "$(log_of $sn)" && [ "$(grep -c "STRATUS-GUEST: ready" "$(log_of $sn)")" -gt 1 ] &&
	fail "the guest booted again on $src"
echo "back: $(grep migrated "$T/back.out")"

# ---- no room on the destination: refused, the guest stays ----
ctl boot other --flavor m1.tiny --image tiny --timeout 180 >"$T/boot2.out" 2>&1 || fail "boot other: $(cat "$T/boot2.out")"
[ "$(ctl --json show other | jq -r .host)" = "$dst" ] || fail "other on $(ctl --json show other | jq -r .host)"
if ctl migrate web --host "$dst" --timeout 60 >"$T/full.out" 2>&1; then fail "migrate to a full host: $(cat "$T/full.out")"; fi
grep -q "host $dst cannot take it: PCPU" "$T/full.out" || fail "full: $(cat "$T/full.out")"
[ "$(ctl --json show web | jq -r '.host + " " + .state')" = "$src active" ] || fail "web after refusal: $(ctl --json show web)"
virsh -c "$(th_uri $sn)" domstate "stratus-$uuid" | grep -q running || fail "web stopped on $src"
echo "refused to a full host; web runs on $src"
echo "PASS ($(($(date +%s) - t0)) s)"
