#!/bin/sh
# Snapshots into an HTTP image store (issue 18) through the binaries:
# stratus-bus, stratus-scheduler, stratus-agent on libvirt's test driver,
# stratusctl as a tenant uses it, a real nginx (deploy/host/serve-images.sh)
# as the store, and a misbehaving store (snapshot_store.py) for failures.
#   - refused, changing nothing: a taken name (public image, another
#     project's private image), a bad name, another project's instance
#     (by name, and by --project), a deleting instance;
#   - the store answers 500, keeps a truncated or a corrupted upload, is
#     down: no image registered, no temporary file left, the error names
#     the step, the name free again;
#   - the host down mid-snapshot (agent stopped): abandoned once the
#     scheduler judges the host down, the name free; its late answer
#     registers nothing;
#   - kill -9 of the agent while the guest is held: at restart the intent
#     is settled (failed, interrupted), no temporary file, no image, the
#     instance active, the name free again;
#   - the happy path: a private image of the project whose sha256 is the
#     file's in the store, standalone (no backing file), holding the base's
#     and the overlay's data, with the source image's properties; "paused N
#     ms" / "quiesced by guest agent"; --json prints the record; it boots
#     as a new instance.
set -u
# the system python first: a version manager's shim costs seconds a call
[ -x /usr/bin/python3 ] && PATH=/usr/bin:$PATH
. "$STRATUS_TOP/tests/agent/lib.sh"
NGINX_PORT=$(free_port)
STORE_PORT=$(free_port)
stack_down() {
	[ -f "$T/agent.pid" ] && kill -CONT "$(cat "$T/agent.pid")" 2>/dev/null # stopped by the host-down step
	for p in scheduler store; do
		[ -f "$T/$p.pid" ] && kill "$(cat "$T/$p.pid")" 2>/dev/null
	done
	STRATUS_RUN_DIR=$T/run sh "$STRATUS_TOP/deploy/host/serve-images.sh" stop - "$NGINX_PORT" \
		>/dev/null 2>&1
	agent_env_down
}
trap stack_down EXIT
command -v nginx >/dev/null || { echo "skip: nginx not installed (deps/test-agent.txt)"; exit 77; }
agent_env_up
# a base with data (0x33 at 1 MiB), so a flattened snapshot must hold it
qemu-img create -q -f qcow2 "$T/snapbase.qcow2" 64M
qemu-io -c "write -P 0x33 1M 64k" "$T/snapbase.qcow2" >/dev/null || fail "qemu-io base"
sum=$(sha256sum "$T/snapbase.qcow2" | cut -d' ' -f1)
cat >>"$T/stratus.yaml" <<EOF
scheduler:
  state_path: $T/scheduler.db
  key_dir: $T/sched
  heartbeat_interval: 1s
  missed_heartbeats: 5
  image_url_filter: {allow_hosts: [127.0.0.1]}
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=1
  images:
    tiny: url=file://$T/snapbase.qcow2 checksum=sha256:$sum disk_format=qcow2
    tinyga: url=file://$T/snapbase.qcow2 checksum=sha256:$sum disk_format=qcow2 hw_qemu_guest_agent=yes
EOF
# images.store_url: first the misbehaving store; the scheduler's URL filter
# admits the store on 127.0.0.1 (as deploy/demo does)
sed -i "s|^images: {cache_dir: $T/cache, allow_file_urls: true}|images: {cache_dir: $T/cache, allow_file_urls: true, retries: 1, retry_backoff: 100ms, store_url: http://127.0.0.1:$STORE_PORT/snapshots}|" "$T/stratus.yaml"
grep -q "store_url: http://127.0.0.1:$STORE_PORT" "$T/stratus.yaml" || fail "config edit"
mkdir -p "$T/bad-store" "$T/www"
echo ok >"$T/store.mode"
python3 "$STRATUS_TOP/tests/agent/snapshot_store.py" "$T/bad-store" "$STORE_PORT" "$T/store.mode" \
	2>"$T/store.log" &
echo $! >"$T/store.pid"
STRATUS_RUN_DIR=$T/run sh "$STRATUS_TOP/deploy/host/serve-images.sh" start "$T/www" "$NGINX_PORT" \
	>/dev/null || fail "serve-images start"
"$B/stratus-scheduler" -c "$T/stratus.yaml" >"$T/scheduler.log" 2>&1 &
echo $! >"$T/scheduler.pid"
export STRATUS_CREDENTIAL="$T/admin.credential"
for _ in $(seq 100); do [ -s "$STRATUS_CREDENTIAL" ] && break; sleep 0.1; done
agent_start
ctl() { "$B/stratusctl" -c "$T/stratus.yaml" -p acme "$@"; }
for _ in $(seq 100); do ctl --json host list 2>/dev/null | jq -e 'length > 0' >/dev/null && break; sleep 0.2; done
ctl credential create --project acme --role member --output "$T/acme.cred" >/dev/null || fail "credential"
member() { "$B/stratusctl" -c "$T/stratus.yaml" -C "$T/acme.cred" "$@"; }

member boot web-1 --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "boot web-1"
ctl -p other boot web-o --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "boot web-o"
uuid=$(member --json show web-1 | jq -r .uuid)
# the guest's own writes, in its overlay: 0x5a at 0
qemu-io -c "write -P 0x5a 0 64k" "$T/inst/$uuid.qcow2" >/dev/null || fail "qemu-io overlay"

images() { ctl --json image list | jq -r '[.[].name] | sort | join(" ")'; }
leftovers() { ls "$T/inst" | grep -E 'snap|snapshot' ; }
nothing_changed() { # WHAT [STATE-TOO]
	[ "$(images)" = "$images0" ] || fail "$1: the catalog changed: $(images)"
	[ -z "$(leftovers)" ] || fail "$1: left in the instances dir: $(leftovers)"
	[ "$(sqlite3 "$T/scheduler.db" 'SELECT count(*) FROM snapshots' 2>/dev/null || echo 0)" = 0 ] ||
		fail "$1: a snapshot row stays in the scheduler"
	[ -z "${2:-}" ] || [ "$(member --json show web-1 | jq -r .state)" = active ] ||
		fail "$1: web-1 is not active"
}
ctl image add other-img --private --project other --url http://10.0.0.1/o.qcow2 \
	--checksum sha256:$sum >/dev/null || fail "image add other-img"
images0=$(images)

# ---- refusals
refused() { # EXPECTED-ERROR ARGS...
	want=$1
	shift
	out=$(member snapshot "$@" 2>&1) && fail "snapshot $* accepted"
	echo "$out" | grep -qF "$want" || fail "snapshot $*: $out"
	nothing_changed "snapshot $*"
}
refused "image name 'tiny' is taken: choose another name" web-1 tiny
refused "image name 'other-img' is taken: choose another name" web-1 other-img
refused "image name 'a/b': expected 1 to 64 letters" web-1 a/b
refused "instance web-o not found in project acme" web-o web-o-snap
refused "instance.snapshot: credential" --project other web-o web-o-snap
[ -z "$(find "$T/bad-store" "$T/www/snapshots" -type f)" ] || fail "the refusals uploaded something"
echo "refused: taken names (public, another project's private), a bad name, another project's instance"

# ---- the store fails: nothing registered, nothing left over, the name free
failed() { # MODE EXPECTED-ERROR
	echo "$1" >"$T/store.mode"
	out=$(member snapshot web-1 snap-x --timeout 30 2>&1) && fail "snapshot with a $1 store worked"
	echo "$out" | grep -qF "$2" || fail "store $1: $out"
	nothing_changed "store $1" state
	[ -z "$(ls "$T/bad-store")" ] || fail "store $1: the store's copy stays: $(ls "$T/bad-store")"
}
failed 500 "snapshot snap-x of web-1 failed at upload: upload: PUT http://127.0.0.1:$STORE_PORT/snapshots/"
grep -q "HTTP 500" "$T/agent.log" || fail "no HTTP 500 in the agent's log"
failed truncate "the store holds"
failed corrupt "checksum mismatch"
kill "$(cat "$T/store.pid")"
wait "$(cat "$T/store.pid")" 2>/dev/null
failed down "failed at upload"
echo "store failures: 500, truncated, corrupted, down: no image, no file left, step named"

# ---- the host goes away mid-snapshot (the agent stopped: no word, no
# reports): once the scheduler judges it down the snapshot is abandoned,
# the name free again; what the host does when it comes back registers
# nothing
kill -STOP "$(cat "$T/agent.pid")"
out=$(member snapshot web-1 snap-away --timeout 30 2>&1) && { kill -CONT "$(cat "$T/agent.pid")"; fail "snapshot on a stopped host worked"; }
echo "$out" | grep -qF "snapshot snap-away of web-1 failed at host: host hv1 is down" ||
	fail "host down: $out"
grep -q "snapshot abandoned snapshot=.* name=snap-away host=hv1: host down" "$T/scheduler.log" ||
	fail "no abandon line in the scheduler's log"
nothing_changed "host down"
# (the agent goes on only now: what it does next is the late answer's)
kill -CONT "$(cat "$T/agent.pid")"
# back: it runs the command it was sent (and fails at the store, down),
# which finds no snapshot in progress
for _ in $(seq 150); do
	grep -q "snapshot event for no snapshot in progress" "$T/scheduler.log" && break
	sleep 0.2
done
grep -q "snapshot event for no snapshot in progress" "$T/scheduler.log" ||
	fail "the host's late answer did not reach the scheduler"
nothing_changed "host back" state
echo "host down mid-snapshot: abandoned (failed at host), the name free, the late answer registers nothing"

# ---- the real store (nginx): a new life of the agent. The test driver
# forgets its domains when the agent restarts (those instances go to error:
# "domain vanished"), so every life of the agent boots its own.
sed -i "s|store_url: http://127.0.0.1:$STORE_PORT/snapshots|store_url: http://127.0.0.1:$NGINX_PORT/snapshots|" "$T/stratus.yaml"
agent_kill TERM
agent_start
gone() { # PROJECT NAME: an instance of the agent's last life deleted (its claim back)
	ctl -p "$1" delete "$2" --no-wait >/dev/null || fail "delete $2"
	for _ in $(seq 100); do
		[ "$(sqlite3 "$T/scheduler.db" "SELECT count(*) FROM instances WHERE project = '$1' AND name = '$2' AND state != 'deleted'")" = 0 ] && return 0
		sleep 0.1
	done
	fail "$2 not deleted"
}
gone acme web-1
gone other web-o

# ---- the happy path
member boot web-4 --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "boot web-4"
member boot web-ga --flavor m1.small --image tinyga --timeout 60 >/dev/null || fail "boot web-ga"
uuid=$(member --json show web-4 | jq -r .uuid)
qemu-io -c "write -P 0x5a 0 64k" "$T/inst/$uuid.qcow2" >/dev/null || fail "qemu-io overlay"
member snapshot web-4 snap-k9 --timeout 60 >"$T/snap.out" 2>&1 || fail "snapshot: $(cat "$T/snap.out")"
grep -q "web-4: snapshot snap-k9 started on hv1" "$T/snap.out" || fail "no start line: $(cat "$T/snap.out")"
grep -qE "web-4: paused [0-9]+ ms, uploaded" "$T/snap.out" || fail "no pause line: $(cat "$T/snap.out")"
grep -q "upload \[####################\] 100%" "$T/snap.out" || fail "no progress line: $(cat "$T/snap.out")"
grep -q "image snap-k9 registered (private to acme)" "$T/snap.out" || fail "not registered: $(cat "$T/snap.out")"
[ "$(member --json show web-4 | jq -r .state)" = active ] || fail "web-4 not active after its snapshot"
rec=$(member --json image list | jq -c '.[] | select(.name == "snap-k9")')
[ -n "$rec" ] || fail "snap-k9 not in the member's image list"
file=$T/www/snapshots/$(basename "$(echo "$rec" | jq -r .url)")
[ -f "$file" ] || fail "no file in the store for $(echo "$rec" | jq -r .url)"
[ "$(echo "$rec" | jq -r .checksum)" = "sha256:$(sha256sum "$file" | cut -d' ' -f1)" ] ||
	fail "the catalog's checksum is not the store's file's"
[ "$(echo "$rec" | jq -r '.visibility + " " + .disk_format')" = "private qcow2" ] || fail "record: $rec"
qemu-img info --output=json "$file" | jq -e '."backing-filename" == null and .format == "qcow2"' \
	>/dev/null || fail "not a standalone qcow2: $(qemu-img info "$file")"
check_data() { # FILE: the overlay's 0x5a at 0 and the base's 0x33 at 1 MiB
	out=$(qemu-io -r -c "read -P 0x5a 0 64k" -c "read -P 0x33 1M 64k" "$1" 2>&1)
	[ "$(echo "$out" | grep -c '^read 65536/65536')" = 2 ] || fail "data of $1: $out"
}
check_data "$file"
ctl credential create --project other --role member --output "$T/other.cred" >/dev/null || fail "credential other"
"$B/stratusctl" -c "$T/stratus.yaml" -C "$T/other.cred" --json image list >"$T/other-images.json" || fail "image list as other"
jq -e '[.[].name] | index("tiny") and (index("snap-k9") | not)' "$T/other-images.json" >/dev/null ||
	fail "another project sees the private snapshot: $(cat "$T/other-images.json")"
[ -z "$(leftovers)" ] || fail "left in the instances dir: $(leftovers)"
echo "snapshot: private image, sha256 of the store's file, standalone, base + overlay data, paused"

member --json snapshot web-ga snap-ga --timeout 60 >"$T/ga.json" 2>"$T/ga.err" || fail "snapshot ga: $(cat "$T/ga.err")"
jq -e '.name == "snap-ga" and .owner == "acme" and .visibility == "private" and
	.properties.hw_qemu_guest_agent == "yes" and (.checksum | startswith("sha256:"))' "$T/ga.json" \
	>/dev/null || fail "--json record: $(cat "$T/ga.json")"
grep -q "snapshot uploaded instance=.* quiesced by guest agent" "$T/agent.log" || fail "not quiesced by the guest agent"
echo "snapshot --json: the record, properties kept, quiesced by guest agent"

member boot web-2 --flavor m1.small --image snap-k9 --timeout 60 >"$T/boot2.out" 2>&1 || fail "boot the snapshot: $(cat "$T/boot2.out")"
uuid2=$(member --json show web-2 | jq -r .uuid)
check_data "$T/inst/$uuid2.qcow2"
echo "booted web-2 from the snapshot: its disk holds the snapshot's data"

# ---- a deleting instance: the agent is away, the delete waits for it
agent_kill TERM
member delete web-2 --no-wait >/dev/null || fail "delete web-2"
out=$(member snapshot web-2 snap-del 2>&1) && fail "snapshot of a deleting instance accepted"
echo "$out" | grep -q "instance web-2 is deleting: snapshot needs it active or stopped" || fail "deleting: $out"
# the next life dies in the middle of its first snapshot
AGENT_ENV="STRATUS_FAULT=snapshot:quiesced" agent_start
echo "refused: snapshot of a deleting instance"
images1=$(images)
# ---- kill -9 while the guest is held (last: the killed consumer's group
# session must time out before the next life gets commands)
for _ in $(seq 100); do
	[ "$(sqlite3 "$T/scheduler.db" "SELECT count(*) FROM instances WHERE name = 'web-2' AND state != 'deleted'")" = 0 ] && break
	sleep 0.1
done
gone acme web-4
gone acme web-ga
member boot web-3 --flavor m1.small --image tiny --timeout 60 >/dev/null || fail "boot web-3"
uuid=$(member --json show web-3 | jq -r .uuid)
member snapshot web-3 snap-k9b --timeout 30 >"$T/k9.out" 2>&1 &
ctlpid=$!
for _ in $(seq 150); do kill -0 "$(cat "$T/agent.pid")" 2>/dev/null || break; sleep 0.1; done
kill -0 "$(cat "$T/agent.pid")" 2>/dev/null && fail "the fault point was not reached"
[ -f "$T/inst/$uuid.snapshot.json" ] || fail "no intent at the fault: $(ls "$T/inst")"
jq -e '.phase == "pausing"' "$T/inst/$uuid.snapshot.json" >/dev/null ||
	fail "the fault came elsewhere: $(cat "$T/inst/$uuid.snapshot.json")"
AGENT_ENV= agent_start
wait $ctlpid && fail "the interrupted snapshot's stratusctl says it worked: $(cat "$T/k9.out")"
grep -q "failed at interrupted: interrupted by an agent restart" "$T/k9.out" || fail "k9: $(cat "$T/k9.out")"
grep -q "snapshot interrupted by an agent restart instance=$uuid snapshot=.* phase=pausing" "$T/agent.log" ||
	fail "no reconcile in the log"
[ "$(images)" = "$images1" ] || fail "kill -9: the catalog changed: $(images)"
[ -z "$(leftovers)" ] || fail "kill -9: left in the instances dir: $(leftovers)"
[ "$(sqlite3 "$T/scheduler.db" 'SELECT count(*) FROM snapshots')" = 0 ] || fail "kill -9: a snapshot row stays"
[ "$(find "$T/www/snapshots" -type f | wc -l)" = 2 ] || fail "kill -9: a file in the store: $(ls "$T/www/snapshots")"
echo "kill -9 mid-snapshot: settled at restart (failed, interrupted), no image, no file left (resuming the guest: e2e_day2.sh)"

echo "snapshot test: ok"
