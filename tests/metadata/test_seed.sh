#!/bin/sh
# Seed disks through the binary a user runs (stratus-agent seed), read by
# the tools a user would check them with: blkid and isoinfo see the label
# and the files; real cloud-init code (Debian's package: its NoCloud and
# ConfigDrive readers) reads our instance back from the files extracted in
# user space (this host's kernel cannot mount iso9660); the NoCloud files
# equal what cloud-localds writes for the same inputs.
set -eu
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
PY=/usr/bin/python3 # Debian's python, where the cloud-init package lives
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

extract() { # ISO DIR
	rm -rf "$2"
	xorriso -osirrox on -indev "$1" -extract / "$2" >/dev/null 2>&1 || fail "xorriso cannot read $1"
}

for spec in tests/data/spec-basic.json tests/metadata/data/spec-odd.json; do
	name=$(basename "$spec" .json)
	for fmt in nocloud configdrive; do
		iso=$T/$name-$fmt.iso
		"$B/stratus-agent" seed --instance "$spec" --format $fmt -o "$iso" ||
			{ fail "seed $name $fmt"; continue; }
		case $fmt in nocloud) label=cidata ;; *) label=config-2 ;; esac
		# blkid: label and type (what cloud-init's datasource search uses)
		got=$(blkid -o value -s LABEL "$iso")
		[ "$got" = "$label" ] || fail "$name $fmt: blkid label '$got', want $label"
		[ "$(blkid -o value -s TYPE "$iso")" = iso9660 ] || fail "$name $fmt: blkid type"
		# isoinfo: primary volume id, Rock Ridge and Joliet names
		isoinfo -d -i "$iso" | grep -qx "Volume id: $label" || fail "$name $fmt: isoinfo volume id"
		isoinfo -d -i "$iso" | grep -q "Rock Ridge signatures version" || fail "$name $fmt: no Rock Ridge"
		isoinfo -d -i "$iso" | grep -q "Joliet with UCS level" || fail "$name $fmt: no Joliet"
		if [ $fmt = nocloud ]; then
			want="/meta-data /user-data /vendor-data"
			[ $name = spec-basic ] && want="/meta-data /network-config /user-data /vendor-data"
		else
			want="/openstack/2012-08-10/meta_data.json /openstack/latest/meta_data.json /openstack/latest/network_data.json /openstack/latest/vendor_data.json /openstack/latest/vendor_data2.json /ec2/latest/meta-data.json"
		fi
		for opt in -R -J; do
			list=$(isoinfo $opt -f -i "$iso")
			for f in $want; do
				echo "$list" | grep -qx "$f" || fail "$name $fmt: isoinfo $opt does not list $f"
			done
		done
		extract "$iso" "$T/$name-$fmt"
		# real cloud-init reads our instance back
		$PY tests/metadata/seed_check.py $fmt "$T/$name-$fmt" "$spec" ||
			fail "$name $fmt: cloud-init did not read our instance back"
	done
done

# The check can fail: a seed with another hostname is caught.
cp -r "$T/spec-basic-nocloud" "$T/tampered"
sed -i 's/^local-hostname: .*/local-hostname: other/' "$T/tampered/meta-data"
if $PY tests/metadata/seed_check.py nocloud "$T/tampered" tests/data/spec-basic.json >/dev/null 2>&1; then
	fail "seed_check.py accepted a tampered meta-data"
fi

# cloud-localds with the same meta-data, user-data, network-config and
# vendor-data writes the same files under the same label.
d=$T/spec-basic-nocloud
(cd "$d" && cloud-localds -N network-config -V vendor-data "$T/ref.iso" user-data meta-data) ||
	fail "cloud-localds failed"
extract "$T/ref.iso" "$T/ref"
if ! diff -r "$T/ref" "$d"; then
	fail "our NoCloud files differ from cloud-localds's (above)"
fi
[ "$(blkid -o value -s LABEL "$T/ref.iso")" = "$(blkid -o value -s LABEL "$T/spec-basic-nocloud.iso")" ] ||
	fail "label differs from cloud-localds's"
[ "$(isoinfo -d -i "$T/ref.iso" | grep 'Volume id')" = "$(isoinfo -d -i "$T/spec-basic-nocloud.iso" | grep 'Volume id')" ] ||
	fail "primary volume id differs from cloud-localds's"

# usage errors and bad input
"$B/stratus-agent" seed --instance tests/data/spec-basic.json -o "$T/x.iso" --format vfat 2>/dev/null &&
	fail "bad format accepted"
[ ! -e "$T/x.iso" ] || fail "an ISO was written for a bad format"
"$B/stratus-agent" seed --instance tests/data/spec-basic.json 2>/dev/null && fail "missing -o accepted"
echo '{"uuid": "nope"}' >"$T/bad.json"
if "$B/stratus-agent" seed --instance "$T/bad.json" -o "$T/y.iso" 2>"$T/err"; then
	fail "a bad spec was accepted"
fi
grep -q "uuid" "$T/err" || fail "bad spec message does not name the field: $(cat "$T/err")"
# the spec's own "seed" picks the format when --format is absent
"$B/stratus-agent" seed --instance tests/metadata/data/spec-odd.json -o "$T/z.iso" || fail "default format"
[ "$(blkid -o value -s LABEL "$T/z.iso")" = config-2 ] || fail "spec seed=configdrive not honoured"

[ $fails -eq 0 ] && echo "seed: all checks passed"
[ $fails -eq 0 ]
