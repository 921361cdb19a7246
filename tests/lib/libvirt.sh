# Sourced by test scripts (POSIX sh) that need a real libvirtd, hugepages or
# the tiny guest. See docs/guest-images.md.
#
#   . "$STRATUS_TOP/tests/lib/libvirt.sh"
#   libvirt_up || exit 1            # starts virtlogd/libvirtd only if not running
#   trap 'libvirt_down' EXIT         # stops only what libvirt_up started
#
# Functions (each returns 0 on success, non-zero with a message on stderr):
#   libvirt_up                 virtlogd + libvirtd running, qemu:///system answering
#   libvirt_down               stop the daemons if a test started them and no
#                              other test registered with libvirt_up still runs
#   libvirt_restart            restart libvirtd (guests keep running)
#   guest_console_wait FILE PATTERN TIMEOUT
#                              wait until FILE has a line matching the extended
#                              regex PATTERN; on timeout show its tail, return 1
#   guest_destroy NAME         destroy + undefine domain NAME if it exists
#   hugepages_reserve N        at least N free 2 MiB pages, hugetlbfs on
#                              /dev/hugepages (restarts libvirtd if it had to
#                              mount hugetlbfs under a running libvirtd)
#   hugepages_restore          give back the pages hugepages_reserve added
#   hugepages_free             print HugePages_Free (2 MiB pages)
#   guest_debian_build         build/reuse the Debian 12 cloud-init guest; sets
#                              DEB_IMAGE, DEB_KERNEL, DEB_INITRD, DEB_CMDLINE
#   guest_tiny_build           build/reuse the tiny guest; sets TINY_KERNEL,
#                              TINY_INITRD, TINY_DISK, TINY_CMDLINE
#   guest_seed_nocloud ISO INSTANCE_ID [USER_DATA_FILE [HOSTNAME]]
#                              write a NoCloud (cidata) seed ISO with cloud-localds
#
# Sharing: up to several test suites use one libvirtd at once. libvirt_up
# registers the calling shell in $STRATUS_RUN/libvirt-users/; a libvirtd that
# a test started is marked in $STRATUS_RUN/libvirt-started and stopped by the
# last registered user leaving, never while another one still runs. A libvirtd
# that was running before any test (the operator's) is never stopped.

LIBVIRT_URI=${LIBVIRT_URI:-qemu:///system}
STRATUS_RUN=${STRATUS_RUN:-/run/stratus-tests}
_lv_user=""
_hp_added=0

_lv_pid() { # _lv_pid DAEMON: print the pid of a running DAEMON
	for _f in "/run/$1.pid" "/var/run/$1.pid"; do
		if [ -s "$_f" ]; then
			_p=$(cat "$_f" 2>/dev/null)
			if [ -n "$_p" ] && kill -0 "$_p" 2>/dev/null &&
				tr '\0' ' ' <"/proc/$_p/cmdline" 2>/dev/null | grep -q "$1"; then
				echo "$_p"
				return 0
			fi
		fi
	done
	# only a daemon of this machine: not one in another root or mount
	# namespace (the fresh-root test's, the two-host test's), which serves
	# another /run/libvirt
	_me=$(readlink /proc/self/ns/mnt)
	for _p in $(pidof "$1" 2>/dev/null); do
		[ "$(readlink "/proc/$_p/root" 2>/dev/null)" = / ] &&
			[ "$(readlink "/proc/$_p/ns/mnt" 2>/dev/null)" = "$_me" ] &&
			{ echo "$_p"; return 0; }
	done
	return 0
}

_lv_lock() { # _lv_lock CMD...: run CMD under the shared lock
	mkdir -p "$STRATUS_RUN/libvirt-users" || return 1
	(
		flock 8 || exit 1
		"$@"
	) 8>"$STRATUS_RUN/libvirt.lock"
}

_lv_wait_answer() { # _lv_wait_answer SECONDS
	_n=0
	while [ "$_n" -lt $(($1 * 5)) ]; do
		virsh -c "$LIBVIRT_URI" version >/dev/null 2>&1 && return 0
		sleep 0.2
		_n=$((_n + 1))
	done
	echo "libvirt: $LIBVIRT_URI does not answer after $1 s (virsh -c $LIBVIRT_URI version)" >&2
	return 1
}

# The daemons must not inherit a lock's fd (7 or 8 here; 3 from `flock FILE CMD`,
# as tests are run under /tmp/stratus-libvirt.lock): they would hold the
# lock for their whole life.
_lv_start() { # under the lock
	# udev's usual root:kvm 0660 on /dev/kvm: with root 0600 libvirtd finds
	# KVM unusable for its qemu user while its probe saw KVM, and re-probes
	# QEMU before every define and start (docs/operations.md)
	if [ -c /dev/kvm ] && [ "$(stat -c %G:%a /dev/kvm)" != kvm:660 ] && getent group kvm >/dev/null; then
		chgrp kvm /dev/kvm && chmod 0660 /dev/kvm || echo "libvirt: cannot give /dev/kvm to group kvm" >&2
	fi
	if [ -z "$(_lv_pid virtlogd)" ]; then
		virtlogd -d 3>&- 7>&- 8>&- || { echo "libvirt: virtlogd -d failed" >&2; return 1; }
		touch "$STRATUS_RUN/virtlogd-started"
	fi
	if [ -z "$(_lv_pid libvirtd)" ]; then
		libvirtd -d 3>&- 7>&- 8>&- || { echo "libvirt: libvirtd -d failed" >&2; return 1; }
		touch "$STRATUS_RUN/libvirt-started"
	fi
	touch "$STRATUS_RUN/libvirt-users/$$"
}

libvirt_up() {
	for _t in virsh libvirtd virtlogd flock; do
		command -v "$_t" >/dev/null 2>&1 || {
			echo "libvirt: $_t not found (sh deps/install.sh deps/test-guest.txt)" >&2
			return 1
		}
	done
	_lv_lock _lv_start || return 1
	_lv_user=$$
	_lv_wait_answer 30
}

_lv_stop_daemon() { # _lv_stop_daemon NAME: SIGTERM and wait up to 60 s (it may be probing QEMU)
	_p=$(_lv_pid "$1")
	[ -n "$_p" ] || return 0
	kill -TERM "$_p" 2>/dev/null
	_n=0
	while kill -0 "$_p" 2>/dev/null && [ $_n -lt 300 ]; do
		sleep 0.2
		_n=$((_n + 1))
	done
	if kill -0 "$_p" 2>/dev/null; then
		echo "libvirt: $1 (pid $_p) did not exit within 60 s of SIGTERM" >&2
		return 1
	fi
}

_lv_stop() { # under the lock
	rm -f "$STRATUS_RUN/libvirt-users/$$"
	for _u in "$STRATUS_RUN"/libvirt-users/*; do
		[ -e "$_u" ] || continue
		kill -0 "${_u##*/}" 2>/dev/null && return 0 # another user still runs
		rm -f "$_u"
	done
	if [ -e "$STRATUS_RUN/libvirt-started" ]; then
		_lv_stop_daemon libvirtd || return 1
		rm -f "$STRATUS_RUN/libvirt-started"
	fi
	if [ -e "$STRATUS_RUN/virtlogd-started" ]; then
		_lv_stop_daemon virtlogd || return 1
		rm -f "$STRATUS_RUN/virtlogd-started"
	fi
}

libvirt_down() {
	[ -n "$_lv_user" ] || return 0
	_lv_user=""
	_lv_lock _lv_stop
}

libvirt_restart() {
	_lv_stop_daemon libvirtd || return 1
	libvirtd -d 3>&- 7>&- 8>&- || { echo "libvirt: libvirtd -d failed on restart" >&2; return 1; }
	_lv_wait_answer 30
}

guest_console_wait() { # FILE PATTERN TIMEOUT
	_end=$(($(date +%s) + $3))
	while :; do
		if [ -f "$1" ] && grep -Eq -- "$2" "$1" 2>/dev/null; then
			return 0
		fi
		if [ "$(date +%s)" -ge "$_end" ]; then
			echo "guest: no line matching '$2' in $1 after $3 s; its last lines:" >&2
			tail -n 25 "$1" 2>/dev/null | sed 's/^/    /' >&2
			return 1
		fi
		sleep 0.5
	done
}

guest_destroy() { # NAME
	virsh -c "$LIBVIRT_URI" domstate "$1" >/dev/null 2>&1 || return 0
	virsh -c "$LIBVIRT_URI" destroy "$1" >/dev/null 2>&1
	# --nvram: a UEFI domain's NVRAM goes with it (libvirt refuses to undefine it otherwise)
	virsh -c "$LIBVIRT_URI" undefine --nvram "$1" >/dev/null 2>&1 ||
		virsh -c "$LIBVIRT_URI" undefine "$1" >/dev/null 2>&1 || {
		echo "guest: virsh undefine $1 failed" >&2
		return 1
	}
}

_hp_meminfo() { sed -n "s/^$1:[[:space:]]*\([0-9]*\).*/\1/p" /proc/meminfo; }
hugepages_free() { _hp_meminfo HugePages_Free; }

_hp_mounted() { awk '$2 == "/dev/hugepages" && $3 == "hugetlbfs" { f = 1 } END { exit !f }' /proc/mounts; }

hugepages_reserve() { # N: at least N free 2 MiB pages
	[ "$(_hp_meminfo Hugepagesize)" = 2048 ] || {
		echo "hugepages: the default hugepage size is not 2 MiB" >&2
		return 1
	}
	mkdir -p "$STRATUS_RUN" || return 1
	(
		flock 7 || exit 1
		_free=$(_hp_meminfo HugePages_Free)
		_total=$(cat /proc/sys/vm/nr_hugepages)
		_add=$(($1 - _free))
		[ $_add -gt 0 ] || _add=0
		if [ $_add -gt 0 ]; then
			echo $((_total + _add)) >/proc/sys/vm/nr_hugepages 2>/dev/null || {
				echo "hugepages: cannot write /proc/sys/vm/nr_hugepages (root?)" >&2
				exit 1
			}
			_got=$(($(cat /proc/sys/vm/nr_hugepages) - _total))
			if [ $_got -lt $_add ]; then
				echo $_total >/proc/sys/vm/nr_hugepages
				echo "hugepages: asked the kernel for $_add more 2 MiB pages, got $_got (memory fragmented or too small: $(_hp_meminfo MemFree) kB free)" >&2
				exit 1
			fi
		fi
		echo $_add
	) 7>"$STRATUS_RUN/hugepages.lock" >"$STRATUS_RUN/hugepages.$$" || {
		rm -f "$STRATUS_RUN/hugepages.$$"
		return 1
	}
	_hp_added=$((_hp_added + $(cat "$STRATUS_RUN/hugepages.$$")))
	rm -f "$STRATUS_RUN/hugepages.$$"
	if ! _hp_mounted; then
		mkdir -p /dev/hugepages
		mount -t hugetlbfs -o pagesize=2M hugetlbfs /dev/hugepages || {
			echo "hugepages: mount -t hugetlbfs hugetlbfs /dev/hugepages failed" >&2
			return 1
		}
		# libvirtd finds hugetlbfs mounts only when it starts.
		if [ -n "$(_lv_pid libvirtd)" ]; then
			echo "hugepages: mounted hugetlbfs on /dev/hugepages; restarting libvirtd so it sees it" >&2
			libvirt_restart || return 1
		fi
	fi
}

hugepages_restore() {
	[ "$_hp_added" -gt 0 ] || return 0
	(
		flock 7 || exit 1
		_total=$(cat /proc/sys/vm/nr_hugepages)
		_new=$((_total - _hp_added))
		[ $_new -ge 0 ] || _new=0
		echo $_new >/proc/sys/vm/nr_hugepages
	) 7>"$STRATUS_RUN/hugepages.lock"
	_hp_added=0
}

guest_debian_build() {
	_log=$(mktemp) || return 1
	if ! _out=$(sh "${STRATUS_TOP:-.}/tests/guest/build-debian.sh" 2>"$_log"); then
		echo "guest: Debian guest build failed: $(tail -n 5 "$_log")" >&2
		rm -f "$_log"
		return 1
	fi
	rm -f "$_log"
	# KEY=VALUE lines, shell-quoted
	eval "$(echo "$_out" | grep -E '^(image|kernel|initrd|cmdline)=')"
	DEB_IMAGE=$image DEB_KERNEL=$kernel DEB_INITRD=$initrd DEB_CMDLINE=$cmdline
	[ -f "$DEB_IMAGE" ] && [ -f "$DEB_KERNEL" ] && [ -f "$DEB_INITRD" ] || {
		echo "guest: the Debian guest build printed: $_out" >&2
		return 1
	}
}

guest_tiny_build() {
	_out=$(sh "${STRATUS_TOP:-.}/tests/guest/build-tiny.sh") || return 1
	TINY_KERNEL=$(echo "$_out" | sed -n 's/^kernel=//p')
	TINY_INITRD=$(echo "$_out" | sed -n 's/^initrd=//p')
	TINY_DISK=$(echo "$_out" | sed -n 's/^disk=//p')
	TINY_CMDLINE=console=ttyS0
	export TINY_KERNEL TINY_INITRD TINY_DISK TINY_CMDLINE
}

guest_seed_nocloud() { # ISO INSTANCE_ID [USER_DATA_FILE [HOSTNAME]]
	command -v cloud-localds >/dev/null 2>&1 || {
		echo "guest: cloud-localds not found (apt-get install cloud-image-utils)" >&2
		return 1
	}
	_d=$(mktemp -d) || return 1
	printf 'instance-id: %s\nlocal-hostname: %s\n' "$2" "${4:-stratus-guest}" >"$_d/meta-data"
	if [ -n "${3:-}" ]; then cp "$3" "$_d/user-data"; else printf '#cloud-config\n{}\n' >"$_d/user-data"; fi
	cloud-localds "$1" "$_d/user-data" "$_d/meta-data"
	_rc=$?
	rm -rf "$_d"
	[ $_rc = 0 ] || echo "guest: cloud-localds $1 failed" >&2
	return $_rc
}
