# bench/lib.sh: sourced by every bench/*/run.sh. bench_line prints the one
# machine-readable line per figure that bench/run-all.sh collects into its
# table (the rest of a run.sh's output is for people):
#
#   BENCH name=bus.throughput figure=54053 unit=msg/s reference=327116
#         ref_unit=msg/s ref_name=kcat ratio=0.165 target=>=100000 result=fail
#
# (one line). Values are bare words, or double-quoted when they hold a
# space; they never hold a double quote.
#
# bench_line KEY=VALUE...   keys:
#   name       MODULE.FIGURE, the row's id (required)
#   figure     the measured value, a number; empty: not measured (result fail)
#   unit       the figure's unit
#   reference, ref_unit, ref_name
#              the reference measured in the same run, its unit and what it
#              is ("kcat", "qemu-img create"); reference empty: not measured,
#              reason= says why
#   target     OP VALUE, OP one of >= <= > <: VALUE in the figure's unit, or
#              ending in x, a ratio figure/reference ("<=0.1x": 10 times
#              faster than the reference); empty: no target
#   reason     why the reference is missing, or what else failed
#   error      the figure failed whatever its value, and why ("3 non-2xx
#              answers"); shown as the reason
# It adds ratio (figure / reference) and result: pass | fail | no-reference
# (a ratio target whose reference could not be measured) | info (no target).
# Its exit status is 0 whatever the result: a run.sh exits non-zero only
# when it could not run to the end.
bench_line() {
	awk -v q='"' 'BEGIN {
		for (i = 1; i < ARGC; i++) {
			k = ARGV[i]; v = k
			sub(/=.*/, "", k); sub(/^[^=]*=/, "", v)
			gsub(q, "", v)
			f[k] = v
		}
		ARGC = 1
		num = "^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$"
		fig_ok = f["figure"] ~ num
		ref_ok = f["reference"] ~ num && f["reference"] + 0 != 0
		ratio = ""
		if (fig_ok && ref_ok) {
			r = f["figure"] / f["reference"]
			ratio = r >= 100 ? sprintf("%.0f", r) : sprintf("%.3g", r)
		}
		t = f["target"]
		op = t; sub(/[-+0-9.x]*$/, "", op)
		tv = substr(t, length(op) + 1)
		is_ratio = tv ~ /x$/
		sub(/x$/, "", tv)
		tv += 0
		if (f["error"] != "")
			f["reason"] = f["error"] (f["reason"] != "" ? "; " f["reason"] : "")
		if (f["error"] != "" || !fig_ok) {
			result = "fail"
			if (!fig_ok && f["reason"] == "")
				f["reason"] = "not measured"
		} else if (t == "") {
			result = "info"
		} else if (is_ratio && ratio == "") {
			result = "no-reference"
		} else {
			x = is_ratio ? f["figure"] / f["reference"] : f["figure"] + 0
			ok = op == ">=" ? x >= tv : op == "<=" ? x <= tv : op == ">" ? x > tv : x < tv
			result = ok ? "pass" : "fail"
		}
		if (!ref_ok && f["reason"] == "" && f["ref_name"] != "")
			f["reason"] = "reference not measured"
		f["ratio"] = ratio
		f["result"] = result
		n = split("name figure unit reference ref_unit ref_name ratio target result reason", keys, " ")
		line = "BENCH"
		for (i = 1; i <= n; i++) {
			v = f[keys[i]]
			if (v == "")
				continue
			line = line " " keys[i] "=" (v ~ /[ \t]/ ? q v q : v)
		}
		print line
	}' "$@"
}
