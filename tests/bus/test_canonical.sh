#!/bin/sh
# The canonical form a signature covers (docs/bus.md) is byte for byte what
# Python's json.dumps(v, sort_keys=True, separators=(",", ":"),
# ensure_ascii=False) gives: a client in any language can sign. Compares
# bus_canonical_json with Python on a corpus of awkward values, and checks
# the refusals (reals, depth).
set -eu
cd "${STRATUS_TOP:-.}"
B=${BUILD:-build}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

python3 - >"$T/corpus" <<'PY'
import json, random
random.seed(7)
vals = [
    {"b": 1, "a": [True, False, None], "c": {"z": "", "y": "x"}},
    {"s": "quote \" backslash \\ slash / tab \t nl \n cr \r bs \b ff \f"},
    {"ctl": "".join(chr(c) for c in range(1, 32)) + "\x7f"},  # NUL: the envelope parser refuses it
    {"utf8": "héllo wörld ☃ \U0001F600 \u2028 \u2029", "ключ": "значение"},
    {"é": 1, "e": 2, "z": 3, "É": 4, "\U0001F600": 5, "": 6},
    {"neg": -9223372036854775808, "big": 9223372036854775807, "zero": 0},
    [], {}, "plain", 42, None,
    {"v": 1, "id": "0b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d", "type": "instance.boot",
     "ts": "2026-12-01T10:00:00.000Z", "source": "stratusctl",
     "request_id": "1b6f4b1e-5c7a-4c1e-9a53-0d1f2a3b4c5d",
     "body": {"name": "web-1", "flavor": "m1.small", "image": "debian-12", "count": 2,
              "meta": {"role": "web", "k": "v<>&'"}}},
]
alphabet = [chr(c) for c in range(1, 0x80)] + ["é", "☃", "\U0001F600", "\u00a0"]
def rnd(d=0):
    k = random.randrange(6 if d < 4 else 3)
    if k == 0: return "".join(random.choice(alphabet) for _ in range(random.randrange(12)))
    if k == 1: return random.randrange(-10**12, 10**12)
    if k == 2: return random.choice([True, False, None])
    if k == 3: return [rnd(d + 1) for _ in range(random.randrange(4))]
    return {"".join(random.choice(alphabet) for _ in range(random.randrange(6))): rnd(d + 1)
            for _ in range(random.randrange(5))}
vals += [rnd() for _ in range(300)]
for v in vals:
    print(json.dumps(v))          # the input: ordinary JSON, \u escapes and all
PY
python3 -c '
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    v = json.loads(line)
    sys.stdout.buffer.write(json.dumps(v, sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=False).encode() + b"\n")
' "$T/corpus" >"$T/python"
"$B/tests/bus/canon_helper" <"$T/corpus" >"$T/ours"
n=$(wc -l <"$T/corpus")
cmp -s "$T/python" "$T/ours" || {
	diff "$T/python" "$T/ours" | head -20
	fail "canonical form differs from Python's json.dumps"
}

# refusals: a real number, nesting deeper than 32
printf '%s\n' '{"a":1.5}' "$(python3 -c 'print("[" * 40 + "]" * 40)')" |
	"$B/tests/bus/canon_helper" >"$T/refused"
grep -q '^error: canonical form: real numbers cannot be signed' "$T/refused" || fail "real: $(cat "$T/refused")"
grep -q '^error: canonical form: nested deeper than 32 levels' "$T/refused" || fail "depth: $(cat "$T/refused")"
echo "canonical form: $n values identical to Python's json.dumps; reals and depth refused"
