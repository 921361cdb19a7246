#!/bin/sh
# /metrics on every daemon, as an operator checks it: stratus-bus, the
# scheduler, the agent (libvirt's test driver) and the metadata service run
# with their metrics_listen keys; stratusctl makes decisions (a boot, a
# quota refusal, a boot no host can take), curl asks the metadata service
# as a guest and as a stranger. Each /metrics must pass `promtool check
# metrics` and show those events; then a real Prometheus (Debian's, on
# loopback, a temp config) scrapes all four and the series are read back
# through its HTTP API. Last, a bad metrics_listen is refused by -n.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
command -v promtool >/dev/null && command -v prometheus >/dev/null ||
	{ echo "SKIP: no promtool/prometheus (deps/test-ops.txt)"; exit 77; }
ops_down() {
	for p in prometheus scheduler metadata; do
		[ -f "$T/$p.pid" ] && kill "$(cat "$T/$p.pid")" 2>/dev/null
	done
	agent_env_down
}
trap ops_down EXIT
BUS_M=$(free_port) SCHED_M=$(free_port) MD_M=$(free_port) MD_PORT=$(free_port) PROM=$(free_port)
AGENT_NETWORK="{cidr: 127.0.0.0/8, range_start: 127.0.0.10, range_end: 127.0.0.20, gateway: 127.0.0.1}"
agent_env_up
sed -i "s|^broker: {address_file: $T/bus.addr, partitions: 2}|broker: {address_file: $T/bus.addr, partitions: 2, metrics_listen: 127.0.0.1:$BUS_M}|" \
	"$T/stratus.yaml"
cat >>"$T/stratus.yaml" <<YAML
$(stack_scheduler_yaml)
  metrics_listen: 127.0.0.1:$SCHED_M
  default_quotas: {instances: 1, cores: 4, ram_mb: 4096}
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
    m1.huge: vcpus=1 ram_mb=999999 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
metadata:
  listen: 127.0.0.1:$MD_PORT
  metrics_listen: 127.0.0.1:$MD_M
  store: $T/state/agent.db
  port_mark: 0 # loopback: no port filters mark these connections
YAML
# stratus-bus was started before the key was there: start it again with it
old=$(cat "$T/bus.pid")
kill "$old" # it holds its lock until it has exited
for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
"$B/stratus-bus" -c "$T/stratus.yaml" >"$T/bus.log" 2>&1 &
echo $! >"$T/bus.pid"
for _ in $(seq 200); do [ -s "$T/bus.addr" ] && break; sleep 0.1; done
[ -s "$T/bus.addr" ] || fail "stratus-bus did not start again: $(cat "$T/bus.log")"
"$B/stratus-scheduler" -c "$T/stratus.yaml" >"$T/scheduler.log" 2>&1 &
echo $! >"$T/scheduler.pid"
agent_start
# stratusctl signs with the admin credential the scheduler creates on first start
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
stack_host_known

# decisions: one boot placed, one over quota, one no host can take
ctl boot web-1 --flavor m1.small --image tiny --timeout 60 >"$T/boot.out" 2>&1 ||
	fail "boot: $(cat "$T/boot.out")"
ctl boot web-2 --flavor m1.small --image tiny --timeout 30 >"$T/quota.out" 2>&1 &&
	fail "boot over quota accepted"
grep -q "quota" "$T/quota.out" || fail "over quota: $(cat "$T/quota.out")"
ctl quota set acme --instances 5 --ram-mb 2000000 >"$T/qset.out" 2>&1 || fail "quota set: $(cat "$T/qset.out")"
ctl boot big --flavor m1.huge --image tiny --timeout 30 >"$T/nvh.out" 2>&1 && fail "huge boot accepted"
grep -q "no valid host" "$T/nvh.out" || fail "no valid host: $(cat "$T/nvh.out")"
# signature refusals: an unsigned request (what any client of the broker can
# write), a member acting as an admin
"$B/stratusctl" -c "$T/stratus.yaml" bus send instance.list '{"project":"acme"}' >/dev/null 2>&1 ||
	fail "bus send"
ctl credential create --project acme --role member --output "$T/member.cred" >/dev/null ||
	fail "credential create"
STRATUS_CREDENTIAL="$T/member.cred" ctl quota set acme --instances 9 >"$T/mq.out" 2>&1 &&
	fail "a member's quota set was accepted"
grep -q "admin only" "$T/mq.out" || fail "member quota set: $(cat "$T/mq.out")"

# the metadata service: a guest (the instance's address), a token, a stranger
"$B/stratus-metadata" -c "$T/stratus.yaml" >"$T/metadata.log" 2>&1 &
echo $! >"$T/metadata.pid"
for _ in $(seq 50); do curl -s "http://127.0.0.1:$MD_PORT/healthz" >/dev/null && break; sleep 0.1; done
uuid=$(ctl --json show web-1 | jq -r .uuid)
ip=$(db "SELECT address FROM instances WHERE uuid='$uuid'" | cut -d/ -f1)
[ -n "$ip" ] || fail "no address for web-1"
curl -sf --interface "$ip" "http://127.0.0.1:$MD_PORT/openstack/latest/meta_data.json" >/dev/null ||
	fail "metadata for $ip"
curl -sf --interface "$ip" -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
	"http://127.0.0.1:$MD_PORT/latest/api/token" >/dev/null || fail "token"
code=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.250 "http://127.0.0.1:$MD_PORT/latest/meta-data/")
[ "$code" = 404 ] || fail "a stranger got $code, not 404"

sleep 1.5 # the scheduler samples its gauges once a second
for d in bus:$BUS_M scheduler:$SCHED_M agent:$METRICS_PORT metadata:$MD_M; do
	n=${d%%:*} p=${d#*:}
	curl -sf "http://127.0.0.1:$p/metrics" >"$T/$n.prom" || fail "$n: no /metrics on $p"
	promtool check metrics <"$T/$n.prom" >"$T/$n.lint" 2>&1 || fail "$n: promtool: $(cat "$T/$n.lint")"
done
has() { # FILE REGEX
	grep -Eq "$2" "$T/$1.prom" || fail "$1: no line matching '$2'"
}
has scheduler '^stratus_scheduler_requests_total\{type="instance.boot",outcome="ok"\} 1$'
has scheduler '^stratus_scheduler_requests_total\{type="instance.boot",outcome="rejected"\} 2$'
has scheduler '^stratus_scheduler_quota_refusals_total\{resource="instances"\} 1$'
has scheduler '^stratus_scheduler_auth_refusals_total\{stage="verify"\} 1$'
has scheduler '^stratus_scheduler_auth_refusals_total\{stage="authorize"\} 1$'
has scheduler '^stratus_scheduler_no_valid_host_total\{reason="ram"\} 1$'
has scheduler '^stratus_scheduler_host_rejections_total\{filter="ram"\} 1$'
has scheduler '^stratus_scheduler_decision_duration_seconds_count 3$'
has scheduler '^stratus_scheduler_decisions_total 1$'
has scheduler '^stratus_scheduler_hosts\{state="up"\} 1$'
has scheduler '^stratus_scheduler_host_instances\{host="hv1"\} 1$'
has scheduler '^stratus_scheduler_claims_pending 0$'
has scheduler '^stratus_scheduler_consumer_lag_messages [0-9]+$'
has metadata '^stratus_metadata_requests_total\{api="openstack",status="200"\} 1$'
has metadata '^stratus_metadata_requests_total\{api="token",status="200"\} 1$'
has metadata '^stratus_metadata_requests_total\{api="ec2",status="404"\} 1$'
has metadata '^stratus_metadata_tokens_issued_total 1$'
has metadata '^stratus_metadata_unknown_source_total 1$'
has bus '^stratus_bus_up 1$'
has bus '^stratus_bus_topic_messages_total\{topic="stratus.api"\} [1-9][0-9]*$'
has bus '^stratus_bus_topic_partitions\{topic="stratus.events"\} 2$'
has agent '^stratus_agent_up\{host="hv1"\} 1$'

# a real Prometheus scrapes the four and answers queries about them
cat >"$T/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - {job_name: stratus-bus, static_configs: [{targets: ["127.0.0.1:$BUS_M"]}]}
  - {job_name: stratus-scheduler, static_configs: [{targets: ["127.0.0.1:$SCHED_M"]}]}
  - {job_name: stratus-agent, static_configs: [{targets: ["127.0.0.1:$METRICS_PORT"]}]}
  - {job_name: stratus-metadata, static_configs: [{targets: ["127.0.0.1:$MD_M"]}]}
YAML
prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/prom" \
	--web.listen-address="127.0.0.1:$PROM" >"$T/prometheus.log" 2>&1 &
echo $! >"$T/prometheus.pid"
q() { # PROMQL -> the first sample's value, or nothing
	curl -sfG "http://127.0.0.1:$PROM/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
		jq -r '.data.result[0].value[1] // empty'
}
for _ in $(seq 60); do [ "$(q 'count(up == 1)')" = 4 ] && break; sleep 0.5; done
[ "$(q 'count(up == 1)')" = 4 ] ||
	fail "Prometheus: not 4 targets up: $(curl -s "http://127.0.0.1:$PROM/api/v1/targets" | jq -c '[.data.activeTargets[] | {job: .labels.job, health, lastError}]')"
[ "$(q 'stratus_scheduler_no_valid_host_total{reason="ram"}')" = 1 ] || fail "query: no_valid_host"
[ "$(q 'stratus_scheduler_quota_refusals_total{resource="instances"}')" = 1 ] || fail "query: quota"
[ "$(q 'stratus_metadata_tokens_issued_total')" = 1 ] || fail "query: tokens"
[ "$(q 'stratus_scheduler_hosts{state="up"}')" = 1 ] || fail "query: hosts up"
[ "$(q 'stratus_agent_up{host="hv1"}')" = 1 ] || fail "query: agent up"
v=$(q 'stratus_bus_topic_messages_total{topic="stratus.api",job="stratus-bus"}')
[ -n "$v" ] && [ "$v" -ge 3 ] || fail "query: bus messages on stratus.api: '$v'"

# refusals: a bad metrics_listen is named by -n, and nothing starts
for d in scheduler:scheduler metadata:metadata bus:broker; do
	bin=stratus-${d%%:*} sec=${d#*:}
	printf '%s:\n  metrics_listen: 10.0.0.300:9100\n' "$sec" >"$T/bad-$sec.yaml"
	[ "$sec" = metadata ] && printf '  instances: /nonexistent.json\n' >>"$T/bad-$sec.yaml"
	"$B/$bin" -n -c "$T/bad-$sec.yaml" >"$T/bad.out" 2>&1 && fail "$bin -n accepted a bad metrics_listen"
	grep -q "$sec.metrics_listen: '10.0.0.300' is not an IPv4 address" "$T/bad.out" ||
		fail "$bin -n: $(cat "$T/bad.out")"
	printf '%s:\n  metrics_listen: 127.0.0.1:99999\n' "$sec" >"$T/bad-$sec.yaml"
	"$B/$bin" -n -c "$T/bad-$sec.yaml" >"$T/bad.out" 2>&1 && fail "$bin -n accepted port 99999"
	grep -q "$sec.metrics_listen: '127.0.0.1:99999': port must be" "$T/bad.out" ||
		fail "$bin -n: $(cat "$T/bad.out")"
done
echo "ok: 4 daemons' /metrics promtool-clean, scraped and queried back"
