#!/bin/sh
# The architecture's rules, checked on the source (docs/architecture.md):
#  - a module includes only headers of its own layer or below
#    (cli agent scheduler > metadata vmm images quotas bus > store > model > core);
#  - no module includes another that includes it back (directly or around a circle);
#  - no header includes itself around a circle;
#  - no .c file over 1,000 lines, no function over 150 lines.
# Each breach is printed as FILE: what; the test fails if there is one.
set -u
cd "${STRATUS_TOP:-$(dirname "$0")/../..}" || exit 1

MAX_FILE=${MAX_FILE:-1000}
MAX_FUNC=${MAX_FUNC:-150}
modules="core model store bus vmm images quotas metadata scheduler agent cli"

rank() {
	case "$1" in
	core) echo 0 ;;
	model) echo 1 ;;
	store) echo 2 ;;
	bus | vmm | images | quotas | metadata) echo 3 ;;
	scheduler | agent | cli) echo 4 ;;
	*) echo "" ;;
	esac
}

out=$(mktemp)
edges=$(mktemp)
trap 'rm -f "$out" "$edges"' EXIT

# 1. layering: every #include "mod/file.h" of a module's source
for m in $modules; do
	[ -d "$m" ] || continue
	rm_=$(rank "$m")
	for f in "$m"/*.c "$m"/*.h; do
		[ -f "$f" ] || continue
		sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([a-z_]*\)\/\([^"]*\)".*/\1 \2/p' "$f" |
		while read -r dep hdr; do
			[ "$dep" = "$m" ] && { echo "$f $dep/$hdr" >>"$edges"; continue; }
			rd=$(rank "$dep")
			if [ -z "$rd" ]; then
				echo "$f: includes $dep/$hdr, which is no module" >>"$out"
			elif [ "$rd" -gt "$rm_" ]; then
				echo "$f: includes $dep/$hdr: $dep is above $m" >>"$out"
			else
				echo "$m $dep" >>"$edges.mod"
			fi
			echo "$f $dep/$hdr" >>"$edges"
		done
	done
done

# 2. module circles among modules of the same layer (A includes B, B includes A)
if [ -f "$edges.mod" ]; then
	sort -u "$edges.mod" | while read -r a b; do
		if grep -qx "$b $a" "$edges.mod"; then
			[ "$a" \< "$b" ] && echo "modules $a and $b include each other" >>"$out"
		fi
	done
	rm -f "$edges.mod"
fi

# 3. header circles: follow each header's includes (depth-first, by file)
awk '
	{ e[$1] = e[$1] " " $2 }
	function visit(n, path,    i, k, parts) {
		if (n in onpath) { cycle[path] = 1; return }
		if (n in done) return
		onpath[n] = 1
		k = split(e[n], parts, " ")
		for (i = 1; i <= k; i++)
			visit(parts[i], path " -> " parts[i])
		delete onpath[n]
		done[n] = 1
	}
	END {
		for (n in e) if (n ~ /\.h$/) visit(n, n)
		for (c in cycle) print "include circle: " c
	}
' "$edges" >>"$out"

# 4. sizes: .c files, and functions (a body is a "{" alone in column 0 up to
#    the "}" in column 0 that closes it)
for m in $modules; do
	for f in "$m"/*.c; do
		[ -f "$f" ] || continue
		n=$(wc -l <"$f")
		[ "$n" -gt "$MAX_FILE" ] && echo "$f: $n lines (at most $MAX_FILE)" >>"$out"
		awk -v max="$MAX_FUNC" -v file="$f" '
			/^[a-zA-Z_].*\(/ { sig = $0; sigline = NR }
			/^\{$/ { start = NR; name = sig; sub(/\(.*/, "", name); sub(/.*[ *]/, "", name) }
			/^\}/ && start {
				len = NR - start - 1
				if (len > max) printf "%s:%d: function %s has %d lines (at most %d)\n", file, sigline, name, len, max
				start = 0
			}
		' "$f" >>"$out"
	done
done

if [ -s "$out" ]; then
	cat "$out"
	echo "test_layering: $(wc -l <"$out") breach(es) of docs/architecture.md"
	exit 1
fi
echo "test_layering: $(wc -l <"$edges") includes checked, layering, circles and sizes as docs/architecture.md says"
