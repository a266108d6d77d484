#!/usr/bin/env bash
# fallback_test.sh BH_DEMO - bh-demo without a bh-trackd next to it says so.
#
# The demo's point is a real bh-trackd (README: "each reporting to a bh-trackd
# the demo starts"). A copy of bh-demo in a directory without one must warn on
# stderr (even with --quiet), mark its table and set "tracker_fallback":true in
# its JSON; the build's own bh-demo, with bh-trackd beside it, must not.
set -euo pipefail
demo=$1
small=(--devices 2 --threads 1 --layers 1 --steps 2 --aliases 1 --quiet)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "fallback_test: $*" >&2
    exit 1
}
[ -x "$(dirname "$demo")/bh-trackd" ] || fail "no bh-trackd next to $demo: build it first"
cp "$demo" "$tmp/bh-demo"

"$tmp/bh-demo" "${small[@]}" --json >"$tmp/out" 2>"$tmp/err" || fail "the lone bh-demo failed: $(cat "$tmp/err")"
grep -q 'WARNING: no bh-trackd next to bh-demo: falling back to the in-process tracker' "$tmp/err" ||
    fail "no warning on stderr: '$(cat "$tmp/err")'"
grep -q '"tracker_fallback":true}$' "$tmp/out" || fail "the JSON does not say it fell back: $(cat "$tmp/out")"
"$tmp/bh-demo" "${small[@]}" 2>/dev/null | grep -qx 'tracker: in-process (FALLBACK: no bh-trackd next to bh-demo)' ||
    fail "the table does not say it fell back"

# Chosen, it is quiet; the build's bh-demo runs against its bh-trackd.
"$tmp/bh-demo" "${small[@]}" --no-trackd --json >"$tmp/out" 2>"$tmp/err"
[ ! -s "$tmp/err" ] && grep -q '"tracker_fallback":false}$' "$tmp/out" ||
    fail "--no-trackd was reported as a fallback: $(cat "$tmp/err" "$tmp/out")"
"$demo" "${small[@]}" --json >"$tmp/out" 2>"$tmp/err"
[ ! -s "$tmp/err" ] && grep -q '"tracker":"bh-trackd"' "$tmp/out" && grep -q '"tracker_fallback":false}$' "$tmp/out" ||
    fail "the build's bh-demo did not use its bh-trackd: $(cat "$tmp/err" "$tmp/out")"
echo "fallback_test: a lone bh-demo warns and marks its table and JSON; with bh-trackd beside it, none"
