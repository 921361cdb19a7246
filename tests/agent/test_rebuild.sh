#!/bin/sh
# Rebuild (issue 18) through the binaries, libvirt's test driver underneath:
# stratus-bus, stratus-scheduler, stratus-agent, stratus-metadata and
# stratusctl as a tenant uses it.
#   - rebuild web-1 --image tiny2 --user-data: same uuid, address and MAC;
#     the disk is a fresh overlay of tiny2; the metadata service serves the
#     new user data and a new instance-id (uuid-r1); no old disk left over;
#   - refused, changing nothing: an unknown image, another project's private
#     image (as "not found"), a deleting instance;
#   - kill -9 of the agent in the middle of a rebuild (after the new disk):
#     at restart reconcile rolls back to the disk, spec and image before,
#     active; nothing left over; the scheduler shows the image before.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
trap stack_down EXIT
agent_env_up
MD_PORT=$(free_port)
qemu-img create -q -f qcow2 "$T/base2.qcow2" 96M
sum2=$(sha256sum "$T/base2.qcow2" | cut -d' ' -f1)
cat >>"$T/stratus.yaml" <<EOF
$(stack_scheduler_yaml)
  missed_heartbeats: 5
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/base.qcow2 checksum=sha256:$IMAGE_SUM disk_format=qcow2
    tiny2: url=file://$T/base2.qcow2 checksum=sha256:$sum2 disk_format=qcow2
metadata:
  listen: 127.0.0.1:$MD_PORT
  store: $T/state/agent.db
  port_mark: 0
EOF
sed -i 's/^  host: hv1/  host: hv1\n  network: {cidr: 127.0.0.0\/8, range_start: 127.0.0.10, range_end: 127.0.0.20, gateway: 127.0.0.1}/' "$T/stratus.yaml"
stack_scheduler_start
# armed from the start (the test driver forgets its domains when the agent
# restarts): the first rebuild kills the agent right after its new disk
AGENT_ENV="STRATUS_FAULT=rebuild:image" agent_start
stack_host_known
"$B/stratus-metadata" -c "$T/stratus.yaml" >"$T/metadata.log" 2>&1 &
echo $! >"$T/metadata.pid"

printf '#cloud-config\nruncmd: [echo FIRST-UD-41]\n' >"$T/ud1.yaml"
printf '#cloud-config\nruncmd: [echo SECOND-UD-77]\n' >"$T/ud2.yaml"
ctl boot web-1 --flavor m1.small --image tiny --user-data "$T/ud1.yaml" --timeout 60 \
	>"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out")"
uuid=$(ctl --json show web-1 | jq -r .uuid)
row() { db "SELECT address || ' ' || mac FROM instances WHERE uuid='$uuid'"; }
before=$(row)
ip=$(echo "$before" | cut -d/ -f1)
[ -n "$ip" ] || fail "no address"
md() { curl -sf --interface "$ip" "http://127.0.0.1:$MD_PORT/$1"; }
for _ in $(seq 50); do md latest/meta-data/instance-id >/dev/null && break; sleep 0.1; done
[ "$(md latest/meta-data/instance-id)" = "$uuid" ] || fail "instance-id before: $(md latest/meta-data/instance-id)"
md openstack/latest/user_data | grep -q FIRST-UD-41 || fail "first user data not served"
backing() { qemu-img info --output=json "$T/inst/$uuid.qcow2" | jq -r '."backing-filename"'; }
case "$(backing)" in *"$IMAGE_SUM"*) ;; *) fail "disk not on tiny: $(backing)" ;; esac
# something written to the disk (its end, past the qcow2 tables), to tell disks apart
mark() { printf '%s' "$1" >>"$T/inst/$uuid.qcow2"; }
mark OLD-DISK-MARK

# ---- refusals: nothing changes
state_of() { ctl --json show web-1 | jq -r '.state + " " + .image'; }
out=$(ctl rebuild web-1 --image nope 2>&1) && fail "rebuild to an unknown image accepted"
echo "$out" | grep -q "image 'nope' not found (known: tiny, tiny2)" || fail "unknown image: $out"
ctl image add other-img --private --project other --url http://10.0.0.1/o.qcow2 \
	--checksum sha256:$sum2 >/dev/null || fail "image add other-img"
# an admin sees every image: ask as a member of acme
ctl credential create --project acme --role member --output "$T/acme.cred" >/dev/null || fail "credential"
out=$("$B/stratusctl" -c "$T/stratus.yaml" -C "$T/acme.cred" rebuild web-1 --image other-img 2>&1) &&
	fail "rebuild to another project's private image accepted"
echo "$out" | grep -q "image 'other-img' not found (known: tiny, tiny2)" || fail "private image: $out"
[ "$(state_of)" = "active tiny" ] || fail "refusals changed the instance: $(state_of)"
[ "$(row)" = "$before" ] || fail "refusals changed the network"
echo "refused: unknown image, another project's private image"

# ---- kill -9 in the middle: the agent dies right after the new disk
ctl rebuild web-1 --image tiny2 --user-data "$T/ud2.yaml" --timeout 20 >"$T/rb0.out" 2>&1 &
ctlpid=$!
for _ in $(seq 150); do kill -0 "$(cat "$T/agent.pid")" 2>/dev/null || break; sleep 0.1; done
kill -0 "$(cat "$T/agent.pid")" 2>/dev/null && fail "the fault point was not reached"
[ -f "$T/inst/$uuid.qcow2.prev" ] || fail "no kept old disk at the fault: $(ls "$T/inst")"
case "$(backing)" in *"$sum2"*) ;; *) fail "the fault came before the new disk: $(backing)" ;; esac
AGENT_ENV= agent_start
for _ in $(seq 100); do
	[ "$(db "SELECT state FROM instances WHERE uuid='$uuid'")" = active ] && break; sleep 0.1
done
[ "$(db "SELECT state FROM instances WHERE uuid='$uuid'")" = active ] || fail "not rolled back"
grep -q "rolling back instance=$uuid" "$T/agent.log" || fail "no rollback in the log"
case "$(backing)" in *"$IMAGE_SUM"*) ;; *) fail "rolled back disk not on tiny: $(backing)" ;; esac
grep -q OLD-DISK-MARK "$T/inst/$uuid.qcow2" || fail "the disk before the rebuild is lost"
ls "$T/inst" | grep -q 'prev\|rebuild' && fail "left over after rollback: $(ls "$T/inst")"
[ "$(md latest/meta-data/instance-id)" = "$uuid" ] || fail "instance-id after rollback: $(md latest/meta-data/instance-id)"
md openstack/latest/user_data | grep -q FIRST-UD-41 || fail "user data after rollback"
for _ in $(seq 50); do [ "$(state_of)" = "active tiny" ] && break; sleep 0.2; done
[ "$(state_of)" = "active tiny" ] || fail "scheduler after rollback: $(state_of)"
wait $ctlpid && fail "the interrupted rebuild's stratusctl says it worked: $(cat "$T/rb0.out")"
[ "$(row)" = "$before" ] || fail "rollback changed the network"
echo "kill -9 mid-rebuild: rolled back to the disk, spec and image before, nothing left over"

# ---- rebuild with a new image and user data
ctl rebuild web-1 --image tiny2 --user-data "$T/ud2.yaml" --timeout 60 >"$T/rb.out" 2>&1 ||
	fail "rebuild: $(cat "$T/rb.out")"
grep -q "web-1: rebuilding on hv1" "$T/rb.out" && grep -q "web-1: active on hv1" "$T/rb.out" ||
	fail "rebuild progress: $(cat "$T/rb.out")"
[ "$(ctl --json show web-1 | jq -r '.uuid + " " + .state + " " + .image')" = "$uuid active tiny2" ] ||
	fail "after rebuild: $(ctl --json show web-1)"
[ "$(row)" = "$before" ] || fail "address or MAC changed: $before -> $(row)"
case "$(backing)" in *"$sum2"*) ;; *) fail "disk not on tiny2: $(backing)" ;; esac
grep -q OLD-DISK-MARK "$T/inst/$uuid.qcow2" && fail "the new disk holds the old disk's data"
[ "$(md latest/meta-data/instance-id)" = "$uuid-r1" ] || fail "instance-id after: $(md latest/meta-data/instance-id)"
md openstack/latest/user_data | grep -q SECOND-UD-77 || fail "new user data not served"
ls "$T/inst" | grep -q 'prev\|rebuild' && fail "left over: $(ls "$T/inst")"
[ "$(db "SELECT state FROM instances WHERE uuid='$uuid'")" = active ] || fail "agent store state"
echo "rebuilt: same uuid, address and MAC, disk of tiny2, instance-id $uuid-r1, new user data"

# ---- a deleting instance: the agent is away, the delete waits for it
ctl boot web-2 --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "boot web-2"
agent_kill TERM
ctl delete web-2 --no-wait >/dev/null || fail "delete web-2"
out=$(ctl rebuild web-2 2>&1) && fail "rebuild of a deleting instance accepted"
echo "$out" | grep -q "instance web-2 is deleting: rebuild needs it active or stopped" ||
	fail "deleting: $out"
agent_start
echo "refused: rebuild of a deleting instance"
echo "rebuild test: ok"
