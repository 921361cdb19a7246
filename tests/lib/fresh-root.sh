# Sourced by tests that need a fresh Debian 12 machine (POSIX sh, as root):
# a minimal root built once with debootstrap and cached, copied for each run.
#
#   . "$STRATUS_TOP/tests/lib/fresh-root.sh"
#   cached=$(fresh_root_cached) || exit 1    # build or reuse the cached root
#   fresh_root_copy "$cached" DIR            # a fresh copy of it in DIR
#   fresh_root_run DIR [--net] SCRIPT        # run SCRIPT (sh) chrooted in DIR
#
# Functions (each returns 0 on success, non-zero with a message on stderr):
#   fresh_root_mirror    the Debian mirror: $STRATUS_DEBIAN_MIRROR, else the
#                        first bookworm URI of the host's /etc/apt/sources.list
#                        or sources.list.d (one-line or deb822 form), else
#                        http://deb.debian.org/debian
#   fresh_root_cached    print the cached root, built first if missing:
#                        debootstrap --variant=minbase bookworm MIRROR into
#                        $FRESH_CACHE/root-HASH (HASH of those options;
#                        FRESH_CACHE defaults to /var/cache/stratus/fresh-root)
#   fresh_root_copy SRC DIR
#                        DIR becomes a copy of SRC (cp -a), with the host's
#                        resolv.conf so apt reaches the mirror
#   fresh_root_run DIR [--net] SCRIPT
#                        run `sh -c SCRIPT` chrooted in DIR, in new mount and
#                        pid namespaces (--net: and a network namespace with
#                        only lo, up): a fresh /proc, read-only sysfs, a /dev
#                        tmpfs with null zero full random urandom tty, its own
#                        devpts and /dev/shm, /run and /tmp as tmpfs, and
#                        $FRESH_CACHE/apt-archives on /var/cache/apt/archives.
#                        Nothing of the host's /run (libvirt's sockets) or /dev
#                        is visible; every mount goes away with the namespace
#                        and every process with the pid namespace when SCRIPT
#                        ends. Returns SCRIPT's exit status. Runs of several
#                        tests take turns (flock on the shared .deb cache).
#   fresh_root_remove DIR
#                        rm -rf DIR, refusing while anything is mounted below it
FRESH_CACHE=${FRESH_CACHE:-/var/cache/stratus/fresh-root}

fresh_root_mirror() {
	if [ -n "${STRATUS_DEBIAN_MIRROR:-}" ]; then
		echo "$STRATUS_DEBIAN_MIRROR"
		return 0
	fi
	_m=$( (
		# one-line form: deb [options] URI SUITE COMPONENTS...
		cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			sed -e 's/#.*//' -e 's/\[[^]]*\]//' |
			awk '$1 == "deb" && $3 == "bookworm" { print $2 }'
		# deb822 form: paragraphs with URIs: and Suites:
		for _f in /etc/apt/sources.list.d/*.sources; do
			[ -f "$_f" ] || continue
			sed -e 's/#.*//' "$_f" | awk '
				/^[ \t]*$/ { if (s && u != "") print u; u = ""; s = 0; next }
				tolower($1) == "uris:" { u = $2 }
				tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == "bookworm") s = 1 }
				END { if (s && u != "") print u }'
		done
	) | head -n 1)
	echo "${_m:-http://deb.debian.org/debian}"
}

fresh_root_cached() {
	_mirror=$(fresh_root_mirror)
	_opts="--variant=minbase bookworm"
	_key=$(echo "$_opts $_mirror" | sha256sum | cut -c1-16)
	_dir=$FRESH_CACHE/root-$_key
	mkdir -p "$FRESH_CACHE" || return 1
	(
		flock 8 || exit 1
		[ -f "$_dir/.complete" ] && exit 0
		echo "fresh-root: debootstrap $_opts ROOT $_mirror (once; cached in $_dir)" >&2
		rm -rf "$_dir.tmp"
		# shellcheck disable=SC2086 # the options are words
		if ! debootstrap $_opts "$_dir.tmp" "$_mirror" >"$FRESH_CACHE/debootstrap-$_key.log" 2>&1; then
			echo "fresh-root: debootstrap failed: $(tail -n 5 "$FRESH_CACHE/debootstrap-$_key.log")" >&2
			exit 1
		fi
		echo "$_opts $_mirror" >"$_dir.tmp/.complete"
		rm -rf "$_dir" && mv "$_dir.tmp" "$_dir"
	) 8>"$FRESH_CACHE/lock" || return 1
	echo "$_dir"
}

fresh_root_copy() {
	rm -rf "$2" && mkdir -p "$2" || return 1
	cp -a "$1/." "$2/" || { echo "fresh-root: cannot copy $1 to $2" >&2; return 1; }
	rm -f "$2/.complete"
	cp -L /etc/resolv.conf "$2/etc/resolv.conf" 2>/dev/null
	return 0
}

# The part that runs in the new namespaces, before chroot: $1 root, $2 1 to
# bring lo up, $3 the script.
_fresh_root_inner() {
	_r=$1
	set -e
	[ "$2" = 1 ] && ip link set lo up
	mount -t proc proc "$_r/proc"
	mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$_r/sys"
	mount -t tmpfs -o mode=0755,nosuid dev "$_r/dev"
	for _d in null zero full random urandom tty; do
		touch "$_r/dev/$_d"
		mount --bind "/dev/$_d" "$_r/dev/$_d"
	done
	mkdir -p "$_r/dev/pts" "$_r/dev/shm"
	mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$_r/dev/pts"
	ln -s pts/ptmx "$_r/dev/ptmx"
	ln -s /proc/self/fd "$_r/dev/fd"
	mount -t tmpfs -o mode=1777,nosuid,nodev shm "$_r/dev/shm"
	mount -t tmpfs -o mode=0755,nosuid,nodev run "$_r/run"
	mkdir -p "$_r/run/lock"
	mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$_r/tmp"
	mkdir -p "$FRESH_CACHE/apt-archives/partial" "$_r/var/cache/apt/archives"
	mount --bind "$FRESH_CACHE/apt-archives" "$_r/var/cache/apt/archives"
	set +e
	# the pid namespace's init is this shell: its end kills the rest
	chroot "$_r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root TERM=dumb LANG=C.UTF-8 /bin/sh -c "$3"
}

fresh_root_run() {
	_root=$1
	_net=0
	shift
	if [ "$1" = --net ]; then
		_net=1
		shift
	fi
	_script=$1
	set -- --mount --propagation private --pid --fork
	[ "$_net" = 1 ] && set -- "$@" --net
	# the inner part: this file sourced again in the new namespaces; apt in
	# two roots at once would clash on the shared archives' lock
	mkdir -p "$FRESH_CACHE" || return 1
	flock -o "$FRESH_CACHE/apt-archives.lock" unshare "$@" sh -c '. "$0"; _fresh_root_inner "$@"' "$STRATUS_TOP/tests/lib/fresh-root.sh" \
		"$_root" "$_net" "$_script"
}

fresh_root_remove() {
	[ -n "$1" ] && [ "$1" != / ] || return 1
	[ -d "$1" ] || return 0
	if awk -v r="$1/" 'index($2 "/", r) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
		echo "fresh-root: something is still mounted under $1: not removing it" >&2
		return 1
	fi
	rm -rf "$1"
}
