#!/bin/sh
# Vendor xterm.js for the console page the agent's console proxy serves
# (docs/agent.md "Console proxy"): `npm pack` of one pinned version from the
# npm registry, its sha512 checked against the pin, xterm.js and xterm.css
# copied into OUTDIR (default build/console). No CDN: the browser loads both
# from the proxy (agent.console.web_dir, where `make install` puts them).
#
#   sh tools/vendor-xterm.sh [OUTDIR]
set -eu
VERSION=5.3.0
INTEGRITY=sha512-8QqjlekLUFTrU6x7xck1MsPzPA571K5zNqWm0M0oroYEWVOptZ0+ubQSkQ3uxIEhcIHRujJy6emDWX4A7qyFzg==
out=${1:-build/console}
die() { echo "vendor-xterm: $*" >&2; exit 1; }
command -v npm >/dev/null || die "npm not found (deps/build-console.txt: apt-get install npm)"
if [ -s "$out/xterm.js" ] && [ -s "$out/xterm.css" ] && [ "$(cat "$out/VERSION" 2>/dev/null)" = "$VERSION" ]; then
	exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "xterm@$VERSION" >pack.out 2>pack.err) ||
	die "npm pack xterm@$VERSION failed: $(tail -n 3 "$work/pack.err")"
tgz=$work/xterm-$VERSION.tgz
[ -s "$tgz" ] || die "npm pack gave no $tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
[ "$got" = "$INTEGRITY" ] || die "xterm-$VERSION.tgz: sha512 mismatch (expected $INTEGRITY, got $got)"
tar -xzf "$tgz" -C "$work" package/lib/xterm.js package/css/xterm.css package/LICENSE ||
	die "xterm-$VERSION.tgz: no lib/xterm.js or css/xterm.css"
mkdir -p "$out"
cp "$work/package/lib/xterm.js" "$work/package/css/xterm.css" "$out/"
cp "$work/package/LICENSE" "$out/LICENSE.xterm"
echo "$VERSION" >"$out/VERSION"
echo "vendor-xterm: xterm $VERSION in $out"
