# Sourced by the migration tests on the test driver: stratus-bus, the
# scheduler and two agents (hv1, hv2), each agent process with its own
# test:///default (two hosts). mig_agent_start N [ENV...] (re)starts agent N.
# AGENT_BRIDGE=BR: host N's bridge is BRN (its own nft table); MIG_MISSED_HEARTBEATS
# (default 5): the scheduler's missed_heartbeats.
. "$STRATUS_TOP/tests/agent/lib.sh"
trap 'for p in $a1 $a2 $sched; do kill $p 2>/dev/null; done; sleep 0.5
	for p in $a1 $a2 $sched; do kill -9 $p 2>/dev/null; done; agent_env_down' EXIT
a1= a2= sched=
for c in jq sqlite3 qemu-img; do command -v $c >/dev/null || { echo "SKIP: $c missing"; exit 77; }; done

agent_env_up
cat >>"$T/stratus.yaml" <<EOF
scheduler:
  state_path: $T/sched/scheduler.db
  key_dir: $T/sched
  heartbeat_interval: 1s
  missed_heartbeats: ${MIG_MISSED_HEARTBEATS:-5}
  # both agents read this one machine's /proc/stat: their steal figures
  # differ only by when each sampled, and the steal weigher (normalized
  # between the hosts, as Nova's) made that noise pick the host on a
  # machine with steal; the tests expect the tie to go to hv1 by name
  steal_weight_multiplier: 0
  default_quotas: {instances: 20, cores: 40, ram_mb: 40960, pcpus: 8}
  flavors:
    m1.pin: vcpus=1 ram_mb=256 disk_gb=1 hw:cpu_policy=dedicated
  images:
    base: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
  migration: {downtime: 300ms, downtime_steps: 3, downtime_delay: 2s, prepare_timeout: ${MIG_PREPARE_TIMEOUT:-300s}}
EOF
# two hosts: each its own state, instance directory and dedicated pCPU
for i in 1 2; do
	ded=$((2 - i)) shared=$((i - 1))
	sed -e "s|host: hv1|host: hv$i|" -e "s|state_dir: $T/state|state_dir: $T/h$i/state|" \
		-e "s|instances_dir: $T/inst, console_log_dir: $T/inst|instances_dir: $T/h$i/inst, console_log_dir: $T/h$i/inst|" \
		-e "s|cache_dir: $T/cache|cache_dir: $T/h$i/cache|" \
		-e "s|bridge: \"\([^\"][^\"]*\)\"|bridge: \"\1$i\"|" \
		-e "s|cpu_dedicated_set: \"1\", cpu_shared_set: \"0\"|cpu_dedicated_set: \"$ded\", cpu_shared_set: \"$shared\"|" \
		-e "s|metrics_listen: 127.0.0.1:$METRICS_PORT|metrics_listen: 127.0.0.1:$(free_port)\\
  migration_uri: \"test:///default\"|" \
		"$T/stratus.yaml" >"$T/h$i.yaml"
	grep -q "cpu_dedicated_set: \"$ded\"" "$T/h$i.yaml" || fail "h$i.yaml: $(cat "$T/h$i.yaml")"
done
"$B/stratus-scheduler" -c "$T/stratus.yaml" >"$T/sched.log" 2>&1 &
sched=$!
export STRATUS_CREDENTIAL="$T/sched/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
[ -s "$STRATUS_CREDENTIAL" ] || fail "no admin credential: $(tail -n 5 "$T/sched.log")"
mig_agent_start() { # N [ENV...]
	n=$1
	shift
	env "$@" "$B/stratus-agent" -c "$T/h$n.yaml" >>"$T/h$n.log" 2>&1 &
	eval "a$n=\$!"
}
mig_agent_start 1
mig_agent_start 2
ctl() { "$B/stratusctl" -c "$T/stratus.yaml" -p acme "$@"; }
for _ in $(seq 100); do
	[ "$(ctl --json host list 2>/dev/null | jq -r '[.[] | select(.state == "up")] | length')" = 2 ] && break
	sleep 0.2
done
[ "$(ctl --json host list | jq -r '[.[] | select(.state == "up")] | length')" = 2 ] ||
	fail "hosts: $(ctl host list 2>&1)"

