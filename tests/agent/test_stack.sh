#!/bin/sh
# The whole control plane on one machine, libvirt's test driver underneath:
# stratus-bus, stratus-scheduler, stratus-agent, stratus-metadata (on the
# agent's store) and stratusctl as a tenant uses it. boot -> active with an
# address; the metadata service answers for that address; list/show/console;
# stop/start; over quota refused naming the resource; delete gives the
# quota back.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
trap stack_down EXIT
agent_env_up
MD_PORT=$(free_port)
sum=$IMAGE_SUM
cat >>"$T/stratus.yaml" <<EOF
$(stack_scheduler_yaml)
  missed_heartbeats: 5
  default_quotas: {instances: 2, cores: 4, ram_mb: 4096}
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$sum disk_format=qcow2
metadata:
  listen: 127.0.0.1:$MD_PORT
  store: $T/state/agent.db
  port_mark: 0
EOF
sed -i 's/^  host: hv1/  host: hv1\n  network: {cidr: 127.0.0.0\/8, range_start: 127.0.0.10, range_end: 127.0.0.20, gateway: 127.0.0.1}/' "$T/stratus.yaml" 2>/dev/null
stack_scheduler_start
agent_start

# the scheduler knows the host once it has reported
stack_host_known
ctl --json host list >"$T/hosts.json"; jq -e ".[0].host == \"hv1\" or .[0].name == \"hv1\"" "$T/hosts.json" >/dev/null || fail "host not known: $(cat "$T/hosts.json")"

# user data and a key with markers no other bus client may read
printf '#cloud-config\nruncmd: [echo UDMARK-7f3a]\n' >"$T/ud.yaml"
echo "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKEYMARK9c1e tester@stack" >"$T/id.pub"
ctl boot web-1 --flavor m1.small --image tiny --meta role=web --user-data "$T/ud.yaml" \
	--key "$T/id.pub" --timeout 60 >"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out")"
# kcat, as any client of the broker: no clear user data, key or metadata
# value on stratus.api or the host topic (sealed to the scheduler, then to hv1)
ud64=$(base64 -w0 "$T/ud.yaml")
for topic in stratus.api stratus.host.hv1; do
	kcat -C -b "$(cat "$T/bus.addr")" -t $topic -o beginning -e -q >"$T/kcat-$topic.txt" 2>/dev/null
	grep -q '"instance.boot"\|"instance.build"' "$T/kcat-$topic.txt" || fail "kcat saw no boot on $topic"
	grep -q '"sealed"' "$T/kcat-$topic.txt" || fail "$topic: no sealed field"
	for m in "$ud64" UDMARK-7f3a KEYMARK9c1e '"role"'; do
		grep -qF -- "$m" "$T/kcat-$topic.txt" && fail "$topic carries '$m' in clear"
	done
done
# every command to the host (the build, the project's secgroup.apply) is signed
jq -s -e 'map(select(.type=="instance.build")) | length == 1 and
	(.[0] | .auth.key and .auth.sig and .source=="stratus-scheduler")' \
	"$T/kcat-stratus.host.hv1.txt" >/dev/null || fail "build not signed"
jq -s -e 'length > 0 and all(.auth.key and .auth.sig and .source=="stratus-scheduler")' \
	"$T/kcat-stratus.host.hv1.txt" >/dev/null || fail "a command to the host is not signed"
ctl --json show web-1 >"$T/show.json" || fail "show"
jq -e '.state == "active" and .host == "hv1"' "$T/show.json" >/dev/null || fail "show: $(cat "$T/show.json")"
ctl --json list | jq -e 'length == 1 and .[0].name == "web-1"' >/dev/null || fail "list"
# global options after the command, and --json is one JSON document
ctl list --json >"$T/list-after.json" 2>"$T/list-after.err" || fail "list --json: $(cat "$T/list-after.err")"
jq -s -e 'length == 1 and (.[0] | length == 1 and .[0].name == "web-1")' "$T/list-after.json" >/dev/null ||
	fail "list --json: not one document: $(cat "$T/list-after.json")"
[ "$(ctl --json list | jq -S -c 'map(.name)')" = "$(jq -S -c 'map(.name)' "$T/list-after.json")" ] ||
	fail "list --json differs from --json list"
ctl show web-1 --json | jq -s -e 'length == 1 and .[0].state == "active"' >/dev/null || fail "show --json"
ctl host list --json | jq -s -e 'length == 1' >/dev/null || fail "host list --json"
if ctl list --bootstrap >/dev/null 2>"$T/noval.err"; then fail "list --bootstrap without a value accepted"; fi
grep -q "option --bootstrap needs a value" "$T/noval.err" || fail "missing value: $(cat "$T/noval.err")"
uuid=$(jq -r .uuid "$T/show.json")
ip=$(db "SELECT address FROM instances WHERE uuid='$uuid'" | cut -d/ -f1)
[ -n "$ip" ] || fail "no address in the agent's store"

# the metadata service answers the instance's address from the agent's store
"$B/stratus-metadata" -c "$T/stratus.yaml" >"$T/metadata.log" 2>&1 &
echo $! >"$T/metadata.pid"
for _ in $(seq 50); do curl -s "http://127.0.0.1:$MD_PORT/healthz" >/dev/null && break; sleep 0.1; done
curl -sf --interface "$ip" "http://127.0.0.1:$MD_PORT/openstack/latest/meta_data.json" >"$T/md.json" ||
	fail "metadata for $ip: $(tail -n 3 "$T/metadata.log")"
jq -e ".uuid == \"$uuid\" and .meta.role == \"web\" and .project_id == \"acme\"" "$T/md.json" >/dev/null ||
	fail "metadata: $(cat "$T/md.json")"
# ... the metadata service sees the clear text again: user data and key
curl -sf --interface "$ip" "http://127.0.0.1:$MD_PORT/openstack/latest/user_data" | grep -q UDMARK-7f3a ||
	fail "user data not served in clear to the instance"
jq -e '.public_keys | to_entries | map(.value) | any(test("KEYMARK9c1e"))' "$T/md.json" >/dev/null ||
	fail "ssh key not in meta_data.json: $(cat "$T/md.json")"

# console: the last lines of the instance's serial log, through the scheduler
printf 'boot line 1\nboot line 2\nlogin: web-1\n' >"$T/inst/$uuid.log"
[ "$(ctl console web-1 --lines 2)" = "$(printf 'boot line 2\nlogin: web-1')" ] ||
	fail "console --lines 2: $(ctl console web-1 --lines 2 2>&1)"
ctl console web-1 | grep -q "boot line 1" || fail "console"
# the console is tenant data: sealed to the credential that asked, so a
# kcat consumer of stratus.events (any client of the broker) never reads it;
# a member of another project cannot ask for it at all
kcat -C -b "$(cat "$T/bus.addr")" -t stratus.events -o beginning -e -q >"$T/kcat-events.txt" 2>/dev/null
grep -q '"request.result"' "$T/kcat-events.txt" || fail "kcat saw no results on stratus.events"
for m in "boot line" "login: web-1"; do
	grep -qF -- "$m" "$T/kcat-events.txt" && fail "stratus.events carries console line '$m' in clear"
done
grep -qF '"sealed"' "$T/kcat-events.txt" || fail "no sealed result on stratus.events"
ctl console web-1 --lines 0 >"$T/lines.out" 2>&1; rc=$?
[ $rc = 2 ] && grep -q -- "--lines: expected a count from 1 to 9999, got '0'" "$T/lines.out" ||
	fail "console --lines 0: rc=$rc $(cat "$T/lines.out")"
ctl stop web-1 --timeout 30 >/dev/null || fail "stop"
[ "$(ctl --json show web-1 | jq -r .state)" = stopped ] || fail "not stopped"
ctl start web-1 --timeout 30 >/dev/null || fail "start"
[ "$(ctl --json show web-1 | jq -r .state)" = active ] || fail "not active again"

# quota: instances 2 -> the second fits, the third is refused naming the resource
ctl boot web-2 --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "second boot"
if ctl boot web-3 --flavor m1.small --image tiny --timeout 30 >"$T/over.out" 2>&1; then
	fail "third boot over the quota succeeded"
fi
grep -qi "instances" "$T/over.out" || fail "over-quota message: $(cat "$T/over.out")"
ctl delete web-2 --timeout 60 >/dev/null || fail "delete"
ctl --json list | jq -e 'length == 1' >/dev/null || fail "list after delete: $(ctl list)"
ctl --json quota show acme | jq -e '.usage.instances == 1' >/dev/null ||
	fail "quota not released: $(ctl --json quota show acme)"
# with the room back, the third boot fits
ctl boot web-3 --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "boot after delete"
echo "stack test: ok"
