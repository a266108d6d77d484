#!/usr/bin/env bash
# Model-checks tests/model/lifecycle.pml with spin: exhaustive search for two
# configurations, then two mutants that must be caught.
#
# usage: run.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
command -v spin >/dev/null || { echo "spin is not installed (apt-get install spin)"; exit 1; }

# check NAME EXPECT(0 errors | some) SPIN-FLAGS...
check() {
    local name=$1 expect=$2
    shift 2
    spin -a "$@" "$here/lifecycle.pml" >/dev/null
    cc -O2 -DSAFETY -DNOFAIR -o pan pan.c
    local out errors
    out=$(./pan -m1000000 2>&1)
    errors=$(printf '%s\n' "$out" | sed -n 's/.*errors: \([0-9]*\).*/\1/p')
    local states
    states=$(printf '%s\n' "$out" | sed -n 's/^ *\([0-9]*\) states, stored.*/\1/p')
    if [ -z "$errors" ] || printf '%s\n' "$out" | grep -q "max search depth too small"; then
        printf '%s\n' "$out"
        echo "model $name: search incomplete"
        return 1
    fi
    if [ "$expect" = 0 ] && [ "$errors" != 0 ]; then
        printf '%s\n' "$out" | grep -E "assertion violated" || true
        echo "model $name: FAILED ($errors errors)"
        return 1
    fi
    if [ "$expect" = some ] && [ "$errors" = 0 ]; then
        echo "model $name: the mutant was NOT caught"
        return 1
    fi
    echo "model $name: $errors errors, $states states (expected $expect)"
}

check "2 threads x 5 ops" 0 -DNT=2 -DOPS=5
check "3 threads x 2 ops" 0 -DNT=3 -DOPS=2
check "mutant: FREE reported after the allocator free" some -DNT=2 -DOPS=3 -DMUTANT_FREE_AFTER_FREE
check "mutant: lookup revives a dying block" some -DNT=2 -DOPS=3 -DMUTANT_REVIVE
echo "lifecycle model: 4 passed, 0 failed"
