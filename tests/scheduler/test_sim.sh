#!/bin/sh
# The three-host simulation: stratus-bus, stratus-scheduler and three
# scripted agents (build/tests/scheduler/fake_agent) in separate processes,
# driven with stratusctl as a user would:
#   spread over three hosts; a dedicated flavor sent first to h3, which
#   rejects it (NUMA fit), rescheduled to an alternate; anti-affinity;
#   h2 goes silent -> down -> avoided, then back; the scheduler killed
#   (SIGKILL) in the middle of builds and restarted with placement: pack;
#   delete releases the quota; over-quota and unknown flavor errors and
#   exit codes.
set -u
. "$(dirname "$0")/lib.sh"
sl_init sched-sim
ctl() { "$BUILD/stratusctl" -p acme "$@"; }
write_config() { # $1 = placement
	{
		sl_config_head
		cat <<YAML
  missed_heartbeats: 3
  max_attempts: 3
  placement: $1
  default_quotas: {instances: 14}
  flavors:
    m1.small: vcpus=1 ram_mb=1024 disk_gb=5
    m1.pinned: vcpus=2 ram_mb=1024 disk_gb=5 hw:cpu_policy=dedicated
  images:
    debian: url=http://127.0.0.1/d.qcow2 checksum=sha256:$H disk_format=qcow2 min_disk_gb=2
YAML
	} >"$STRATUS_CONFIG"
}
start_sched() {
	sl_sched_start
	export STRATUS_CREDENTIAL="$ADMIN"
}
hosts_up() { # prints the names of the hosts that are up
	out=$(ctl --json host list --timeout 10) || return 1
	jget "$out" "' '.join(sorted(h['name'] for h in j if h['state'] == 'up'))"
}
wait_hosts() { # $1 = expected "h1 h2 h3"
	i=0
	while [ "$(hosts_up)" != "$1" ]; do
		i=$((i + 1)); [ $i -gt 40 ] && fail "hosts up: '$(hosts_up)', expected '$1'"
		sleep 0.25
	done
}
host_of() { out=$(ctl --json show "$1") || fail "show $1"; jget "$out" "j['host']"; }
state_of() { out=$(ctl --json show "$1" --timeout 10) || return 1; jget "$out" "j['state']"; }

write_config spread
"$BUILD/stratus-scheduler" -n -c "$tmp/stratus.yaml" >/dev/null || fail "config rejected"
sl_bus_start
start_sched
sl_agent h1 --pcpus 4
sl_agent h2 --pcpus 4 --silent-file "$tmp/h2.silent"
sl_agent h3 --pcpus 8 --reject-dedicated
wait_hosts "h1 h2 h3"
echo "three hosts up"

# 1. spread: three instances on three hosts
for n in s1 s2 s3; do
	ctl boot $n --flavor m1.small --image debian >"$tmp/boot-$n.out" 2>&1 || fail "boot $n: $(cat "$tmp/boot-$n.out")"
done
grep -q "^s1: active on h" "$tmp/boot-s1.out" || fail "boot progress: $(cat "$tmp/boot-s1.out")"
spread="$(host_of s1) $(host_of s2) $(host_of s3)"
[ "$(echo $spread | tr ' ' '\n' | sort -u | wc -l)" = 3 ] || fail "spread: $spread"
echo "spread: $spread"

# 2. a dedicated flavor: h3 has the most free pCPUs, rejects the NUMA fit,
#    the instance goes to the alternate
ctl boot p1 --flavor m1.pinned --image debian >"$tmp/boot-p1.out" 2>&1 || fail "boot p1: $(cat "$tmp/boot-p1.out")"
out=$(ctl --json show p1)
[ "$(jget "$out" "j['attempts']")" = 2 ] || fail "p1 attempts: $out"
jget "$out" "j['faults']['h3']" | grep -q "NUMA fit" || fail "p1 faults: $out"
case "$(jget "$out" "j['host']")" in h1|h2) ;; *) fail "p1 host: $out" ;; esac
grep -q "^reject $(jget "$out" "j['uuid']")" "$tmp/h3.log" || fail "h3 did not see the build"
grep -q "^p1: scheduling on h3" "$tmp/boot-p1.out" || fail "p1 progress: $(cat "$tmp/boot-p1.out")"
echo "rescheduled: p1 h3 -> $(jget "$out" "j['host']")"

# 3. anti-affinity: three members on three hosts, a fourth has nowhere to go
ctl boot g --count 3 --group db --group-policy anti-affinity --flavor m1.small --image debian \
	>"$tmp/boot-g.out" 2>&1 || fail "boot g: $(cat "$tmp/boot-g.out")"
anti="$(host_of g-1) $(host_of g-2) $(host_of g-3)"
[ "$(echo $anti | tr ' ' '\n' | sort -u | wc -l)" = 3 ] || fail "anti-affinity: $anti"
ctl boot g-4 --group db --flavor m1.small --image debian >"$tmp/boot-g4.out" 2>&1
rc=$?
[ $rc = 1 ] || fail "4th member: exit $rc"
grep -q "server group anti-affinity" "$tmp/boot-g4.out" || fail "4th member: $(cat "$tmp/boot-g4.out")"
echo "anti-affinity: $anti"

# 4. h2 goes silent: down after 3 missed reports, avoided; back when it reports
touch "$tmp/h2.silent"
wait_hosts "h1 h3"
for n in d1 d2 d3; do
	ctl boot $n --flavor m1.small --image debian >/dev/null 2>"$tmp/boot-$n.err" || fail "boot $n"
	[ "$(host_of $n)" != h2 ] || fail "$n placed on the silent host"
done
ctl --json host list | grep -q '"name":"h2","availability_zone":"az1","state":"down"' || fail "host list: h2 not down"
rm -f "$tmp/h2.silent"
wait_hosts "h1 h2 h3"
echo "silent host avoided"

# 5. the scheduler killed in the middle of builds, restarted with pack
ctl boot r --count 2 --no-wait --flavor m1.small --image debian >"$tmp/boot-r.out" 2>&1 || fail "boot r"
kill -9 $sched_pid
wait $sched_pid 2>/dev/null
write_config pack
start_sched
for n in r-1 r-2; do
	i=0
	while [ "$(state_of $n)" != active ]; do
		i=$((i + 1)); [ $i -gt 60 ] && fail "$n not active after the restart: $(state_of $n)"
		sleep 0.25
	done
	u=$(jget "$(ctl --json show $n)" "j['uuid']")
	[ "$(cat "$tmp"/h?.log | grep -c "^build $u ")" = 1 ] || fail "$n built more than once"
done
echo "restart: builds in flight finished"
ctl boot k1 --flavor m1.small --image debian >"$tmp/k1.out" 2>&1 || fail "boot k1: $(cat "$tmp/k1.out")"
ctl boot k2 --flavor m1.small --image debian >/dev/null 2>&1 || fail "boot k2"
[ "$(host_of k1)" = "$(host_of k2)" ] || fail "pack: k1 on $(host_of k1), k2 on $(host_of k2)"
echo "pack: k1 and k2 on $(host_of k1)"

# 6. quota: 14 instances used; delete releases only when the agent confirms
out=$(ctl --json quota show)
[ "$(jget "$out" "j['usage']['instances']")" = 14 ] || fail "usage: $out"
ctl boot over --flavor m1.small --image debian >"$tmp/over.out" 2>&1
rc=$?
[ $rc = 1 ] || fail "over quota: exit $rc"
grep -q "stratusctl: quota exceeded for project acme: instances: requested 1, used 14, limit 14" \
	"$tmp/over.out" || fail "over quota: $(cat "$tmp/over.out")"
ctl delete s1 >"$tmp/delete.out" 2>&1 || fail "delete: $(cat "$tmp/delete.out")"
grep -q "^s1: deleted" "$tmp/delete.out" || fail "delete progress: $(cat "$tmp/delete.out")"
out=$(ctl --json quota show)
[ "$(jget "$out" "j['usage']['instances']")" = 13 ] || fail "usage after delete: $out"
ctl boot over --flavor m1.small --image debian >/dev/null 2>&1 || fail "boot after delete"
echo "quota: refused at the limit, released by delete"

# 7. errors and exit codes
ctl boot x --flavor m9.huge --image debian >"$tmp/e.out" 2>&1; rc=$?
[ $rc = 1 ] && grep -q "flavor 'm9.huge' not found (known: m1.small, m1.pinned)" "$tmp/e.out" \
	|| fail "unknown flavor: exit $rc $(cat "$tmp/e.out")"
ctl boot x --flavor m1.small --image arch >"$tmp/e.out" 2>&1; rc=$?
[ $rc = 1 ] && grep -q "image 'arch' not found" "$tmp/e.out" || fail "unknown image: exit $rc"
ctl show nothing >/dev/null 2>&1; rc=$?
[ $rc = 1 ] || fail "show of an unknown instance: exit $rc"
ctl boot >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || fail "usage: exit $rc"
[ "$(ctl --json list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 14 ] || fail "list"
ctl list | head -1 | grep -q "^NAME *STATE *HOST" || fail "list table"
ctl console s2 | grep -q "serial log of" || fail "console"
echo "errors and exit codes"

# a clean stop (SIGTERM) exits 0 (under SANITIZE: without leaks)
kill -TERM $sched_pid
wait $sched_pid
rc=$?
sched_pid=
[ $rc = 0 ] || fail "scheduler exit status $rc after SIGTERM"
echo "PASS"
