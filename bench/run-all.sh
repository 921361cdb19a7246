#!/bin/sh
# bench/run-all.sh [bench/NAME/run.sh ...]: `make bench`. Runs every
# bench/*/run.sh (or the ones named), each under a time limit, whatever
# the others did; collects the BENCH lines they print (bench/lib.sh) and
# ends with one table: benchmark, figure, reference measured in the same
# run, ratio, target, result. A run.sh that exits non-zero or runs out of
# time gets an "error" row with its exit status and last line.
# Exit status: 0 when every benchmark ran and no figure failed its target,
# 1 otherwise (only after all ran and the table is printed).
#   BENCH_TIMEOUT=S   time limit of each run.sh in seconds (default 900)
#   BENCH_TABLE=FILE  also write the table (Markdown) there
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export BUILD=${BUILD:-build}
limit=${BENCH_TIMEOUT:-900}
tmp=$(mktemp -d /tmp/stratus-bench-all.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

[ $# -gt 0 ] || set -- bench/*/run.sh
: >"$tmp/lines"
for b in "$@"; do
	name=$(basename "$(dirname "$b")")
	echo "== $b (time limit ${limit} s)"
	t0=$(date +%s)
	# its own process group: timeout stops the run.sh and all it started
	{ timeout -k 30 "$limit" sh "$b" </dev/null; echo $? >"$tmp/rc"; } 2>&1 | tee "$tmp/log"
	rc=$(cat "$tmp/rc")
	secs=$(( $(date +%s) - t0 ))
	grep '^BENCH ' "$tmp/log" >>"$tmp/lines"
	why=
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		why="timed out after $limit s"
	elif [ "$rc" != 0 ]; then
		last=$(grep -v '^BENCH ' "$tmp/log" | grep -v '^[[:space:]]*$' | tail -n 1 | tr -d '"' | cut -c1-120)
		why="exit $rc after $secs s: $last"
	elif ! grep -q '^BENCH ' "$tmp/log"; then
		why="printed no BENCH line"
	fi
	[ -z "$why" ] || printf 'BENCH name=%s result=error reason="%s"\n' "$name" "$why" >>"$tmp/lines"
	echo "== $b: exit $rc, $secs s"
	echo
done

machine="$(date -u +%Y-%m-%d), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), load $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v machine="$machine" -v table="${BENCH_TABLE:-}" '
function parse(line,    k, v, n) {
	delete f
	sub(/^BENCH /, "", line)
	while (match(line, /^[a-z_]+=/)) {
		k = substr(line, 1, RLENGTH - 1)
		line = substr(line, RLENGTH + 1)
		if (substr(line, 1, 1) == "\"") {
			n = index(substr(line, 2), "\"")
			v = substr(line, 2, n - 1)
			line = substr(line, n + 2)
		} else {
			n = index(line, " ")
			v = n ? substr(line, 1, n - 1) : line
			line = n ? substr(line, n) : ""
		}
		f[k] = v
		sub(/^ +/, "", line)
	}
}
function target(t, unit,    op) {
	if (t == "")
		return "-"
	op = t; sub(/[-+0-9.x]*$/, "", op)
	t = substr(t, length(op) + 1)
	return op " " (t ~ /x$/ ? t " the reference" : t " " unit)
}
{
	parse($0)
	n++
	unit = f["unit"]
	ref_unit = "ref_unit" in f ? f["ref_unit"] : unit
	c[n, 1] = f["name"]
	c[n, 2] = "figure" in f ? f["figure"] " " unit : "-"
	if ("reference" in f)
		c[n, 3] = (f["ref_name"] != "" ? f["ref_name"] ": " : "") f["reference"] " " ref_unit
	else if (f["ref_name"] != "")
		c[n, 3] = f["ref_name"] ": not measured (" f["reason"] ")"
	else
		c[n, 3] = "-"
	c[n, 4] = "ratio" in f ? f["ratio"] "x" : "-"
	c[n, 5] = target(f["target"], unit)
	r = f["result"]
	if (r == "fail" || r == "error")
		r = toupper(r)
	if (r != "pass" && f["reason"] != "" && (("reference" in f) || f["ref_name"] == ""))
		r = r ": " f["reason"] # not already in the reference column
	c[n, 6] = r
	count[f["result"]]++
}
END {
	split("benchmark|figure|reference (same run)|ratio|target|result", h, "|")
	for (j = 1; j <= 6; j++) {
		c[0, j] = h[j]
		w[j] = length(h[j])
	}
	for (i = 1; i <= n; i++)
		for (j = 1; j <= 6; j++)
			if (length(c[i, j]) > w[j])
				w[j] = length(c[i, j])
	out = "bench: " machine "\n"
	for (i = 0; i <= n; i++) {
		line = "|"
		for (j = 1; j <= 6; j++)
			line = line sprintf(" %-" w[j] "s |", c[i, j])
		out = out line "\n"
		if (i == 0) {
			line = "|"
			for (j = 1; j <= 6; j++) {
				dash = sprintf("%" (w[j] + 2) "s", "")
				gsub(/ /, "-", dash)
				line = line dash "|"
			}
			out = out line "\n"
		}
	}
	out = out sprintf("%d figures: %d pass, %d fail, %d no-reference, %d without target; %d benchmark(s) did not finish\n",
			  n - count["error"], count["pass"], count["fail"], count["no-reference"], count["info"],
			  count["error"])
	printf "%s", out
	if (table != "")
		printf "%s", out >table
	exit count["fail"] + count["error"] > 0
}' "$tmp/lines"
