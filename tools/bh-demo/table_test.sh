#!/usr/bin/env bash
# table_test.sh BH_DEMO - bh-demo's table explains itself, and its numbers add up.
#
# Runs a small configuration and checks that every row has its one-line
# explanation, that the numbers the explanations quote are the table's (mesh
# buffers x devices = device allocations, raw ALLOC reports = mesh buffers, raw
# allocator frees = Buffer objects, double frees = frees - allocations, unknown
# buffers = FREE - ALLOC reports), that the most-over-freed table is there and
# explained, that --json gives the same counts, and that with one thread the
# two runs' peaks agree (the explanation says the difference is thread overlap).
set -euo pipefail
demo=$1
devices=4
config=(--devices "$devices" --threads 2 --layers 3 --steps 5 --aliases 2 --seed 7 --quiet)
fails=0
fail() {
    echo "table_test: $*" >&2
    fails=$((fails + 1))
}

text=$("$demo" "${config[@]}")
json=$("$demo" "${config[@]}" --json)

# The raw and handles values of a table row ("raw" or "handles").
cell() {
    local v
    v=$(awk -v label="$1" 'index($0, label) == 1 && NF >= 3 { print $(NF - 1), $NF; exit }' <<<"$text")
    [ -n "$v" ] || { fail "no row '$1'" && echo "0 0" && return; }
    if [ "$2" = raw ]; then echo "${v% *}"; else echo "${v#* }"; fi
}
# A number of one run in the JSON ("raw" or "handles").
json_num() {
    local run
    run=$(sed -n "s/.*\"$1\":{\([^]]*\).*/\1/p" <<<"$json")
    sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" <<<"$run"
}
# The explanation line of a row.
why() { sed -n '/^what each row counts:/,/^$/p' <<<"$text" | grep -F "  $1  " || fail "row '$1' is not explained"; }

labels=("device allocations" "allocator frees" "double frees (allocator)" "ALLOC reports" "FREE reports"
    "unknown buffer (tracker)" "duplicate ALLOC (tracker)" "leaks" "peak live MiB (allocator)"
    "skipped (pool full etc.)" "reports dropped" "time (s)")
for l in "${labels[@]}"; do
    why "$l" >/dev/null
done

meshes=$(json_num raw mesh_buffers)
objects=$(json_num raw buffer_objects)
[ -n "$meshes" ] && [ "$meshes" -gt 0 ] || fail "no mesh_buffers in the JSON"
[ -n "$objects" ] && [ "$objects" -gt 0 ] || fail "no buffer_objects in the JSON"
allocs=$(cell "device allocations" raw)
frees=$(cell "allocator frees" raw)
[ "$allocs" -eq $((meshes * devices)) ] || fail "device allocations $allocs != $meshes mesh buffers x $devices"
why "device allocations" | grep -qF "$meshes mesh buffers x $devices devices" || fail "device allocations: no numbers"
[ "$(cell "ALLOC reports" raw)" -eq "$meshes" ] || fail "raw ALLOC reports $(cell "ALLOC reports" raw) != $meshes"
why "ALLOC reports" | grep -qF "raw: $meshes, one per mesh buffer" || fail "ALLOC reports: no numbers"
[ "$frees" -eq "$objects" ] || fail "raw allocator frees $frees != $objects Buffer objects"
why "allocator frees" | grep -qF "each of the $objects Buffer objects" || fail "allocator frees: no numbers"
[ "$(cell "double frees (allocator)" raw)" -eq $((frees - allocs)) ] || fail "double frees != frees - allocations"
[ "$(cell "FREE reports" raw)" -eq "$objects" ] || fail "raw FREE reports != Buffer objects"
[ "$(cell "unknown buffer (tracker)" raw)" -eq $(($(cell "FREE reports" raw) - meshes)) ] ||
    fail "unknown buffers != FREE - ALLOC reports"
for r in ALLOC FREE; do
    [ "$(cell "$r reports" handles)" -eq "$allocs" ] || fail "handles: $r reports != device allocations"
done
[ "$(cell "unknown buffer (tracker)" handles)" -eq 0 ] || fail "handles: unknown buffers"

# The JSON says the same.
for pair in device_allocations:"device allocations" alloc_reports:"ALLOC reports" free_reports:"FREE reports" \
    unknown_frees:"unknown buffer (tracker)" double_frees:"double frees (allocator)"; do
    key=${pair%%:*} label=${pair#*:}
    for run in raw handles; do
        [ "$(json_num $run "$key")" = "$(cell "$label" $run)" ] || fail "JSON $run $key differs from the table"
    done
done
grep -q '"handles_clean":true,"raw_shows_bug":true' <<<"$json" || fail "JSON verdict missing"

# The most-over-freed table and what "allocs 0" means.
grep -q '^raw run: addresses freed most often relative to their allocations' <<<"$text" ||
    fail "no most-over-freed table"
awk '/^raw run: addresses freed most often/ { t = 1; next } t && $1 ~ /^[1-9][0-9]*$/ && $(NF - 1) == 0 { f = 1 }
     END { exit !f }' <<<"$text" || fail "no 'allocs 0' row on a device other than 0"
grep -qF "allocs 0 on a device other than 0" <<<"$text" || fail "'allocs 0' is not explained"
grep -qF "reports the mesh's ALLOC on device 0 only" <<<"$text" || fail "'allocs 0' is not explained"

# One thread: nothing overlaps differently, so the peaks agree.
one=$("$demo" "${config[@]}" --threads 1 --json)
peaks=$(grep -o '"peak_live_bytes":[0-9]*' <<<"$one" | sort -u | wc -l)
[ "$peaks" -eq 1 ] || fail "with one thread the peaks differ: $(grep -o '"peak_live_bytes":[0-9]*' <<<"$one" | tr '\n' ' ')"

if [ "$fails" -ne 0 ]; then
    echo "$text" >&2
    exit 1
fi
echo "table_test: every row explained; $meshes mesh buffers x $devices devices = $allocs allocations, raw ALLOC reports $meshes"
