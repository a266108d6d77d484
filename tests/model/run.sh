#!/usr/bin/env bash
# Model-checks tests/model/lifecycle.pml with spin: exhaustive search of four
# configurations (one address and two, two threads and three), then mutants
# that must each be caught by the assertion that names their fault.
#
# usage: run.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
command -v spin >/dev/null || { echo "spin is not installed (apt-get install spin)"; exit 1; }

passed=0
copt=-O2
# check NAME EXPECT SPIN-FLAGS...
# EXPECT is 0 (no assertion may fail) or an extended regex that the violated
# assertion's text must match (a mutant caught for the wrong reason fails).
check() {
    local name=$1 expect=$2
    shift 2
    local start=$SECONDS
    spin -a "$@" "$here/lifecycle.pml" >/dev/null
    # COLLAPSE: compressed state storage; the largest configuration stores
    # about 19M states in about 900 MB.
    cc "$copt" -DSAFETY -DNOFAIR -DCOLLAPSE -o pan pan.c
    local out errors states
    out=$(./pan -m1000000 2>&1)
    errors=$(printf '%s\n' "$out" | sed -n 's/.*errors: \([0-9]*\).*/\1/p')
    states=$(printf '%s\n' "$out" | sed -n 's/^ *\([0-9]*\) states, stored.*/\1/p')
    if [ -z "$errors" ] || printf '%s\n' "$out" | grep -Eq "max search depth too small|out of memory"; then
        printf '%s\n' "$out"
        echo "model $name: search incomplete"
        return 1
    fi
    if [ "$expect" = 0 ] && [ "$errors" != 0 ]; then
        printf '%s\n' "$out" | grep -E "assertion violated" || true
        echo "model $name: FAILED ($errors errors)"
        return 1
    fi
    if [ "$expect" != 0 ]; then
        if [ "$errors" = 0 ]; then
            echo "model $name: the mutant was NOT caught ($states states)"
            return 1
        fi
        if ! printf '%s\n' "$out" | grep "assertion violated" | grep -Eq -- "$expect"; then
            printf '%s\n' "$out" | grep -E "assertion violated" || true
            echo "model $name: caught by another assertion than /$expect/"
            return 1
        fi
    fi
    echo "model $name: $errors errors, $states states, $((SECONDS - start)) s"
    passed=$((passed + 1))
}

check "1 address, 2 threads x 5 ops" 0 -DNA=1 -DNT=2 -DOPS=5
check "1 address, 3 threads x 2 ops" 0 -DNA=1 -DNT=3 -DOPS=2
check "2 addresses, 2 threads x 4 ops" 0 -DNA=2 -DNT=2 -DOPS=4
check "2 addresses, 3 threads x 1 op" 0 -DNA=2 -DNT=3 -DOPS=1

# A mutant is caught within a few thousand states: compiling the verifier
# with optimisation would take longer than the search.
copt=-O0
m="-DNA=2 -DNT=2 -DOPS=3"
check "mutant: FREE reported after the allocator free" 'rep_live' $m -DMUTANT_FREE_AFTER_FREE
check "mutant: locked lookup revives a dying block" 'gen\[b\]==g' $m -DMUTANT_REVIVE
check "mutant: lock-free hit on refs 0" 'gen\[fb\]==fg' $m -DMUTANT_LF_REVIVE
check "mutant: lock-free hit without the key check" 'gen\[fb\]==fg' $m -DMUTANT_LF_NO_KEYCHECK
check "mutant: lock-free CAS without the generation" 'gen\[fb\]==fg' $m -DMUTANT_LF_STALE_GEN
check "mutant: lock-free attempt that did not hit is a miss" '\(ok\|\|' $m -DMUTANT_LF_NO_FALLBACK
echo "lifecycle model: $passed passed, 0 failed"
