#!/bin/sh
# Install the Debian packages named in the given lists (one per line, '#'
# comments), skipping those already installed. Needs root (or sudo) only
# when something is missing.
set -eu
missing=""
for list in "$@"; do
	[ -f "$list" ] || continue
	for p in $(sed -e 's/#.*//' "$list"); do
		st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
		case "$st" in
		*"ok installed") ;;
		*) missing="$missing $p" ;;
		esac
	done
done
[ -z "$missing" ] && exit 0
echo "deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# apt lists may be missing on a fresh machine
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 || {
	$SUDO apt-get update -q >/dev/null
	$SUDO apt-get install -y -q --no-install-recommends $missing
}
