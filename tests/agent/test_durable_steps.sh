#!/bin/sh
# A build's files are durable, names included: under strace, every rename of
# the build's overlay and seed into the instances directory is followed by
# an fsync of that directory (a rename alone can be lost in a crash); so is
# every rename of the host's key files into its state directory.
set -u
. "$STRATUS_TOP/tests/agent/lib.sh"
# agent.pid is strace's: the agent under it is killed by its config's path
trap 'agent_env_down; pkill -9 -f "stratus-agent -c $T/stratus.yaml"' EXIT
command -v strace >/dev/null || { echo "SKIP: no strace"; exit 77; }
agent_env_up
AGENT_ENV="strace -f -y -qq -e trace=rename,renameat,renameat2,fsync -o $T/strace.out" agent_start

U1=22222222-1111-4111-8111-111111111111
send instance.build "$(spec $U1)"
wait_event ".type==\"instance.state\" and .body.uuid==\"$U1\" and .body.state==\"active\"" >/dev/null ||
	fail "no active event"
[ -f "$T/inst/$U1.seed.iso" ] || fail "no seed disk"
inst=$(cd "$T/inst" && pwd -P)
# durable DIR FILE: each rename of DIR/FILE is followed by an fsync of <DIR>
# (in any thread), and there was one
durable() {
	awk -v dir="$1" -v f="$2" '
		index($0, "rename") && index($0, "\"" dir "/" f "\"") { pending = 1; seen = 1; next }
		pending && index($0, "fsync(") && index($0, "<" dir ">") { pending = 0 }
		END { exit !(seen && !pending) }' "$T/strace.out" ||
		fail "$2: rename into $1 not followed by an fsync of the directory: $(grep -F "$2" "$T/strace.out")"
}
# the instance's files, before the build is announced active
for f in "$U1.qcow2" "$U1.seed.iso"; do
	durable "$inst" "$f"
done
echo "ok: overlay and seed renames are each followed by an fsync of the instances directory"
# the host's keys, made at its first start: a key whose name a crash loses
# is a new key at the next start, which the scheduler refuses (pinned)
state=$(cd "$T/state" && pwd -P)
for f in host-sign.key host-box.key host-sign.pub; do
	[ -f "$state/$f" ] || fail "no $f in $state"
	durable "$state" "$f"
done
echo "ok: the host key files' renames are each followed by an fsync of the state directory"
