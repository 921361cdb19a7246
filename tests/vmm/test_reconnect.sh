#!/bin/sh
# The close callback and reconnect with backoff against a real libvirtd,
# through a proxy that the helper cuts and restores (tests/vmm/reconnect.c).
set -u
BUILD=${BUILD:-build}
. "${STRATUS_TOP:-.}/tests/lib/libvirt.sh"
libvirt_up || exit 1
trap 'libvirt_down' EXIT
"$BUILD/tests/vmm/reconnect"
