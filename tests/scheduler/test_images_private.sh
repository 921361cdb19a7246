#!/bin/sh
# Tenant-private images through stratusctl, as two tenants and an admin meet
# them: stratus-bus, stratus-scheduler and one scripted agent (fake_agent).
#   - an admin's image add --private -p acme is acme's: acme lists and boots
#     it, beta neither lists nor boots it ("not found", the same answer as an
#     image that does not exist, and beta's "known:" list does not name it);
#   - acme shares it with beta: beta lists and boots it; beta may not remove,
#     share or unshare it (not its owner); acme unshares: beta cannot boot;
#   - removing an image that instances use is refused naming them, and
#     changes nothing; after the instances are deleted it goes;
#   - a member removing a public image is refused (admin only).
#   - a boot that waits through a scheduler's warm-up runs as its credential
#     as it stands then: one revoked meanwhile is refused, a member's is the
#     member's (in its project, nowhere else). Beta's boot of acme's image is
#     refused at once, warm-up or not.
# Every refusal leaves the catalog as it was (image list before = after).
set -u
. "$(dirname "$0")/lib.sh"
sl_init imgpriv
{
	sl_config_head
	cat <<YAML
  missed_heartbeats: 40 # a 12 s warm-up window: the deferred boots below wait in it
  flavors:
    m1.small: vcpus=1 ram_mb=512 disk_gb=5
  images:
    debian: url=http://127.0.0.1/d.qcow2 checksum=sha256:$H disk_format=qcow2 min_disk_gb=2
YAML
} >"$STRATUS_CONFIG"
sl_bus_start
sl_sched_start
sl_agent h1
export STRATUS_CREDENTIAL="$ADMIN"
sl_host_up h1
ctl credential create --project acme --role member --output "$tmp/acme.cred" >/dev/null ||
	fail "credential create acme"
ctl credential create --project beta --role member --output "$tmp/beta.cred" >/dev/null ||
	fail "credential create beta"
A="ctl -C $tmp/acme.cred"
B="ctl -C $tmp/beta.cred"

names() { # the image names a credential's list shows, sorted
	"$@" --json image list | python3 -c "import json,sys; print(' '.join(sorted(i['name'] for i in json.load(sys.stdin))))"
}
catalog() { ctl --json image list 2>&1; }
# (each stratusctl call is a Kafka session, about a second: the catalog is
# compared once after each group of refusals, not after each one)
refused() { # NAME EXPECTED-ERROR CMD...: exit 1, the reason on stderr
	name=$1 want=$2
	shift 2
	out=$("$@" 2>&1) && fail "$name accepted: $out"
	echo "$out" | grep -q "$want" || fail "$name: '$out', expected '$want'"
	echo "refused: $name ($want)"
}
unchanged() { [ "$(catalog)" = "$before" ] || fail "$1 changed the catalog: $(catalog)"; }
wait_state() { # CRED-CMD NAME STATE
	i=0
	until $1 --json show "$2" 2>/dev/null | grep -q "\"state\":\"$3\""; do
		i=$((i + 1)); [ $i -gt 60 ] && fail "$2 not $3: $($1 --json show "$2" 2>&1)"
		sleep 0.25
	done
}

# an admin makes a private image of acme
ctl image add acme-img --private --project acme --url http://10.0.0.1/acme.qcow2 --checksum sha256:$H \
	>"$tmp/add.out" 2>&1 || fail "admin image add --private: $(cat "$tmp/add.out")"
grep -q private "$tmp/add.out" || fail "image add: no visibility shown: $(cat "$tmp/add.out")"
vis=$($A --json image list | python3 -c "import json,sys; l=json.load(sys.stdin); print(sorted(i['name'] for i in l), [(i['visibility'], i.get('owner')) for i in l if i['name']=='acme-img'])")
[ "$vis" = "['acme-img', 'debian'] [('private', 'acme')]" ] || fail "acme's list: $vis"
[ "$(names $B)" = "debian" ] || fail "beta sees another project's private image: $(names $B)"
echo "listed: acme sees acme-img (private, acme), beta does not"

$A boot a1 --flavor m1.small --image acme-img >"$tmp/a1.out" 2>&1 || fail "acme boot: $(cat "$tmp/a1.out")"
wait_state "$A" a1 active
out=$($B boot b1 --flavor m1.small --image acme-img 2>&1) && fail "beta booted acme's image: $out"
echo "$out" | grep -q "image 'acme-img' not found (known: debian)" || fail "beta boot: '$out'"
out2=$($B boot b1 --flavor m1.small --image no-such 2>&1)
[ "$(echo "$out" | sed 's/acme-img/X/')" = "$(echo "$out2" | sed 's/no-such/X/')" ] ||
	fail "a hidden image is answered differently from a missing one: '$out' vs '$out2'"
echo "refused: beta's boot of acme's private image (the answer of a missing image)"

# a scheduler restart while h1 is silent: boots wait for h1 (deferred), and
# run when it reports, as the credential that asked, as it stands then
ctl credential create --project beta --role member --output "$tmp/beta2.cred" >/dev/null ||
	fail "credential create beta2"
beta2=$(jget "$(cat "$tmp/beta2.cred")" "j['id']")
h1=$(echo $agent_pids | cut -d' ' -f1)
builds=$(grep -c '^build ' "$tmp/h1.log")
kill -STOP "$h1"
sleep 0.5
kill -9 "$sched_pid"
wait "$sched_pid" 2>/dev/null
sl_sched_start
# what can never work is refused at once, warm-up or not
out=$($B boot b0 --flavor m1.small --image acme-img --timeout 20 2>&1) &&
	{ kill -CONT "$h1"; fail "beta booted acme's image in the warm-up: $out"; }
echo "$out" | grep -q "image 'acme-img' not found (known: debian)" ||
	{ kill -CONT "$h1"; fail "beta's boot in the warm-up: $out"; }
# beta2 asks, then is revoked while its boot waits; beta's boot waits too
ctl -C "$tmp/beta2.cred" boot b9 --flavor m1.small --image debian --timeout 40 >"$tmp/b9.out" 2>&1 &
b9=$!
$B boot b5 --flavor m1.small --image debian --timeout 40 >"$tmp/b5.out" 2>&1 &
b5=$!
waiting() { [ "$(grep 'request waits for hosts to report type=instance.boot' "$tmp/sched.err" |
	sed 's/.* request=\([^ ]*\).*/\1/' | sort -u | wc -l)" -ge 2 ]; }
i=0
until waiting; do
	i=$((i + 1)); [ $i -gt 80 ] && { kill -CONT "$h1"; fail "the boots never waited for h1"; }
	sleep 0.25
done
ctl credential revoke "$beta2" >"$tmp/revoke.out" 2>&1 || { kill -CONT "$h1"; fail "revoke: $(cat "$tmp/revoke.out")"; }
kill -CONT "$h1"
wait "$b9" && fail "a boot of a credential revoked while it waited was accepted: $(cat "$tmp/b9.out")"
grep -q "credential $beta2: revoked" "$tmp/b9.out" || fail "deferred boot of a revoked credential: $(cat "$tmp/b9.out")"
wait "$b5" || fail "beta's deferred boot: $(cat "$tmp/b5.out")"
[ "$($B --json list | python3 -c "import json,sys; print([i['name'] for i in json.load(sys.stdin)])")" = "['b5']" ] ||
	fail "beta's instances after the deferred boots: $($B list 2>&1)"
[ "$($A --json list | python3 -c "import json,sys; print([i['name'] for i in json.load(sys.stdin)])")" = "['a1']" ] ||
	fail "acme's instances after the deferred boots: $($A list 2>&1)"
[ "$(grep -c '^build ' "$tmp/h1.log")" = $((builds + 1)) ] || fail "h1's builds: $(tail -n 3 "$tmp/h1.log")"
wait_state "$B" b5 active
$B delete b5 >/dev/null || fail "delete b5"
echo "refused: deferred boots run as their credential (a revoked one asks nothing; beta's boot is beta's)"

before=$(catalog)
refused "beta removes acme's image" "image 'acme-img' not found" $B image remove acme-img
refused "beta shares acme's image" "image 'acme-img' not found" $B image share acme-img beta
refused "member removes a public image" "image.remove: admin only: image debian is public" \
	$A image remove debian
refused "share a public image" "image debian is public" ctl image share debian beta
refused "share with its owner" "already belongs to project acme" $A image share acme-img acme
refused "member image add" "image.add: admin only" $A image add mine --private \
	--url http://10.0.0.1/m.qcow2 --checksum sha256:$H
unchanged "the refusals above"

# acme shares with beta: beta lists and boots it, cannot change it
$A image share acme-img beta >"$tmp/share.out" 2>&1 || fail "share: $(cat "$tmp/share.out")"
shared=$($A --json image list | python3 -c "import json,sys; print([(i['visibility'], i.get('shared_with')) for i in json.load(sys.stdin) if i['name']=='acme-img'])")
[ "$shared" = "[('shared', ['beta'])]" ] || fail "acme-img after share: $shared"
blist=$($B --json image list)
echo "$blist" | grep -q shared_with && fail "beta sees whom acme shares with: $blist"
echo "$blist" | grep -q '"name":"acme-img"' || fail "beta's list after share: $blist"
$B boot b1 --flavor m1.small --image acme-img >"$tmp/b1.out" 2>&1 || fail "beta boot shared: $(cat "$tmp/b1.out")"
wait_state "$B" b1 active
before=$(catalog)
refused "beta removes a shared image" "image acme-img belongs to project acme, not to beta" \
	$B image remove acme-img
refused "beta unshares" "belongs to project acme, not to beta" $B image unshare acme-img beta
echo "shared: beta lists and boots acme-img, cannot change it"

# in use: refused, naming the users
refused "remove in use" "image acme-img is in use by 2 instances (acme/a1, beta/b1)" \
	$A image remove acme-img
unchanged "beta's refusals and the removal in use"
$A image unshare acme-img beta >/dev/null || fail "unshare"
out=$($B boot b2 --flavor m1.small --image acme-img 2>&1) && fail "beta booted after unshare: $out"
echo "$out" | grep -q "image 'acme-img' not found" || fail "beta boot after unshare: $out"
echo "unshared: beta cannot boot it again"
$A delete a1 >/dev/null || fail "delete a1"
$B delete b1 >/dev/null || fail "delete b1"
i=0
until $A image remove acme-img >"$tmp/rm.out" 2>&1; do
	i=$((i + 1)); [ $i -gt 40 ] && fail "remove after delete: $(cat "$tmp/rm.out")"
	sleep 0.25
done
[ "$(names ctl)" = "debian" ] || fail "catalog after remove: $(names ctl)"
echo "removed by its owner once no instance uses it"
echo "PASS"
