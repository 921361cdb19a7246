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
#   another guest) -> refused, the guest runs on in h1;
#   `migrate web --cold --host h2` (the other guest deleted): stopped on
#   h1, disk copied, a fresh boot on h2 (one more boot banner, the counter
#   from 1), the total and the stop-to-boot downtime printed, h1 clean;
#   stopped, `migrate web --cold --host h1`: it stays stopped on h1 (domain
#   shut off), h2 clean; started, it boots from the copied disk;
#   evacuate: h1's agent, libvirtd and QEMUs killed (only this test's),
#   once h1 is down `host evacuate h1` rebuilds web on h2 with the same
#   uuid, name and address, and it boots there.
# Needs root, QEMU, libvirt: exit 77 otherwise. Under 6 minutes.
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

# ---- cold: stopped on $src, disk copied, booted fresh on $dst ----
ctl delete other --timeout 120 >"$T/del.out" 2>&1 || fail "delete other: $(cat "$T/del.out")"
boots() { n=$(grep -c "STRATUS-GUEST: ready" "$(log_of "$1")" 2>/dev/null); echo "${n:-0}"; }
ticks1() { n=$(grep -cw "TICK 1" "$(log_of "$1")" 2>/dev/null); echo "${n:-0}"; }
boots_before=$(boots $dn) ticks1_before=$(ticks1 $dn)
ctl migrate web --cold --host "$dst" --timeout 240 >"$T/cold.out" 2>&1 || fail "migrate --cold: $(cat "$T/cold.out")"
grep -q "web: cold-migrating (stop, copy, start) from $src to $dst" "$T/cold.out" || fail "cold start line: $(cat "$T/cold.out")"
grep -E "web: cold-migrated from $src to $dst in [0-9.]+ s, downtime [0-9]+ ms \(stopped on $src to booted on $dst\)" "$T/cold.out" ||
	fail "no cold total and downtime: $(cat "$T/cold.out")"
[ "$(ctl --json show web | jq -r '.host + " " + .state')" = "$dst active" ] || fail "show after cold: $(ctl --json show web)"
virsh -c "$(th_uri $dn)" domstate "stratus-$uuid" | grep -q running || fail "not running on $dst after cold"
# a fresh boot on $dst: one more boot banner, the counter from 1 again
for _ in $(seq 600); do [ "$(boots $dn)" -gt "$boots_before" ] && break; sleep 0.2; done
[ "$(boots $dn)" -gt "$boots_before" ] || fail "no fresh boot on $dst: $(tail -n 5 "$(log_of $dn)")"
for _ in $(seq 100); do [ "$(ticks1 $dn)" -gt "$ticks1_before" ] && break; sleep 0.2; done
[ "$(ticks1 $dn)" -gt "$ticks1_before" ] || fail "the counter did not start again from 1 on $dst"
virsh -c "$(th_uri $sn)" list --all --name | grep -q "$uuid" && fail "domain left on $src after cold"
[ -e "$TH_DIR/h$sn/inst/$uuid.qcow2" ] && fail "overlay left on $src after cold"
[ "$(sqlite3 "$T/h$sn/state/agent.db" "SELECT count(*) FROM instances")" = 0 ] || fail "store row left on $src after cold"
[ "$(usage "$src") $(usage "$dst")" = "0 1" ] || fail "usage after cold: $(ctl host list)"
echo "cold: $(grep cold-migrated "$T/cold.out") ($(($(date +%s) - t0)) s)"

# ---- cold, stopped: back to $src shut off, it stays stopped; started there, it boots ----
ctl stop web --timeout 120 >"$T/stop.out" 2>&1 || fail "stop: $(cat "$T/stop.out")"
[ "$(ctl --json show web | jq -r .state)" = stopped ] || fail "web not stopped: $(ctl --json show web)"
boots_src=$(boots $sn)
ctl migrate web --cold --host "$src" --timeout 240 >"$T/cold2.out" 2>&1 || fail "migrate --cold stopped: $(cat "$T/cold2.out")"
grep -E "web: cold-migrated from $dst to $src in [0-9.]+ s \(stopped: it stays stopped\)" "$T/cold2.out" ||
	fail "stopped cold end: $(cat "$T/cold2.out")"
[ "$(ctl --json show web | jq -r '.host + " " + .state')" = "$src stopped" ] || fail "show after stopped cold: $(ctl --json show web)"
virsh -c "$(th_uri $sn)" domstate "stratus-$uuid" | grep -q "shut off" || fail "not shut off on $src"
virsh -c "$(th_uri $dn)" list --all --name | grep -q "$uuid" && fail "domain left on $dst after stopped cold"
[ -e "$TH_DIR/h$dn/inst/$uuid.qcow2" ] && fail "overlay left on $dst after stopped cold"
[ "$(sqlite3 "$T/h$dn/state/agent.db" "SELECT count(*) FROM instances")" = 0 ] || fail "store row left on $dst"
[ "$(usage "$src") $(usage "$dst")" = "1 0" ] || fail "usage after stopped cold: $(ctl host list)"
ctl start web --timeout 180 >"$T/start.out" 2>&1 || fail "start on $src: $(cat "$T/start.out")"
for _ in $(seq 600); do [ "$(boots $sn)" -gt "$boots_src" ] && break; sleep 0.2; done
[ "$(boots $sn)" -gt "$boots_src" ] || fail "web did not boot from its copied disk on $src: $(tail -n 5 "$(log_of $sn)")"
echo "cold, stopped: $(grep cold-migrated "$T/cold2.out"); started, booted on $src ($(($(date +%s) - t0)) s)"
# web is on $src now: the host that dies below is $src
x=$src src=$dst dst=$x
sn=${src#h} dn=${dst#h}

# ---- evacuate: $dst dies (its agent, libvirtd and guests), web rebuilt on $src ----
addr() { sqlite3 "$T/scheduler.db" "SELECT address FROM instance_ports WHERE uuid = '$uuid'"; }
addr_before=$(addr) boots_src=$(boots $sn)
[ -n "$addr_before" ] || fail "web has no address recorded"
# only what this test started: the agent of $T/h$dn.yaml, host $dn's libvirtd and QEMUs
for p in $(pgrep -f "stratus-agent -c $T/h$dn.yaml"); do kill -9 "$p"; done
kill -9 "$(cat "$TH_DIR/h$dn/libvirtd.pid")" 2>/dev/null
for q in "$TH_DIR/h$dn"/run/qemu/*.pid; do [ -f "$q" ] && kill -9 "$(cat "$q")" 2>/dev/null; done
for _ in $(seq 300); do
	[ "$(ctl --json host list | jq -r --arg h "$dst" '.[] | select(.name == $h) | .state')" = down ] && break
	sleep 0.2
done
[ "$(ctl --json host list | jq -r --arg h "$dst" '.[] | select(.name == $h) | .state')" = down ] || fail "$dst not down: $(ctl host list)"
ctl host evacuate "$dst" --timeout 240 >"$T/evac.out" 2>&1 || fail "evacuate: $(cat "$T/evac.out")"
grep -q "local disk contents are lost" "$T/evac.out" || fail "evacuate does not warn: $(cat "$T/evac.out")"
grep -q "web: active on $src" "$T/evac.out" || fail "evacuate: $(cat "$T/evac.out")"
ctl --json show web >"$T/evac.json"
[ "$(jq -r '.uuid + " " + .name + " " + .host + " " + .state' "$T/evac.json")" = "$uuid web $src active" ] ||
	fail "after evacuate: $(cat "$T/evac.json")"
[ "$(addr)" = "$addr_before" ] || fail "address changed: $addr_before -> $(addr)"
jq -r .reason "$T/evac.json" | grep -q "address $addr_before kept" || fail "reason: $(jq -r .reason "$T/evac.json")"
virsh -c "$(th_uri $sn)" domstate "stratus-$uuid" | grep -q running || fail "not running on $src after evacuate"
for _ in $(seq 600); do [ "$(boots $sn)" -gt "$boots_src" ] && break; sleep 0.2; done
[ "$(boots $sn)" -gt "$boots_src" ] || fail "evacuated web did not boot on $src: $(tail -n 5 "$(log_of $sn)")"
echo "evacuated: web ($uuid, $addr_before) rebuilt on $src ($(($(date +%s) - t0)) s)"
echo "PASS ($(($(date +%s) - t0)) s)"
