#!/bin/sh
# Rejects the functions STYLE.md bans (curl's list) anywhere in our C code.
set -u
cd "$(dirname "$0")/.."
hits=$(grep -rnE '\b(sprintf|vsprintf|strcpy|strcat|atoi|atol|strtok|gets)[[:space:]]*\(' \
	--include='*.c' --include='*.h' core bus vmm images metadata quotas scheduler agent cli tests bench 2>/dev/null)
if [ -n "$hits" ]; then
	echo "banned functions (STYLE.md): use snprintf, strtol with checks, strtok_r..." >&2
	echo "$hits" >&2
	exit 1
fi
echo "banned-functions: clean"
