#!/bin/sh
# The example configurations under deploy/config are accepted by every
# daemon (each reads its own sections and skips the others').
set -u
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
fails=0
for f in deploy/config/*.yaml; do
	for d in stratus-bus stratus-scheduler stratus-agent stratus-metadata; do
		if ! out=$("$B/$d" -n -c "$f" 2>&1); then
			echo "FAIL $f rejected by $d: $out"
			fails=$((fails + 1))
		fi
	done
done
[ $fails -eq 0 ] && echo "deploy configs: ok"
[ $fails -eq 0 ]
