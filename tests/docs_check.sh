#!/usr/bin/env bash
# docs_check.sh - what the docs quote from the code is still so: constants,
# the file table of docs/internals.md, the names it cites, the frames of the
# valgrind transcript in docs/porting.md, and the testing guide's stages.
#
# usage: docs_check.sh SOURCE_DIR
# Prints every mismatch and exits 1 if there is one.

# shellcheck disable=SC2016 # the backticks in patterns are Markdown's, not the shell's
set -uo pipefail
cd "$1" || exit 2
bad=0
fail() {
    echo "docs_check: $*" >&2
    bad=1
}

# FAST_PROBES: the value internals.md gives is the one hot.h defines.
probes=$(sed -n 's/^#define FAST_PROBES \([0-9]*\)u\{0,1\}$/\1/p' src/core/hot.h)
[ -n "$probes" ] || fail "src/core/hot.h: no '#define FAST_PROBES N'"
grep -q "FAST_PROBES\`[^0-9]*$probes entries\|FAST_PROBES\` ($probes)" docs/internals.md ||
    fail "docs/internals.md does not give FAST_PROBES as $probes"

# The file table: every file it names exists (a bare name continues the
# folder of the name before it), and every file of src/core, src/diag and
# src/common is named.
named=$(awk -F'|' '/^\| `src\// { print $2 }' docs/internals.md | grep -o '`[^`]*`' | tr -d '`' |
    awk '/\// { d = $0; sub(/\/[^\/]*$/, "", d); print; next } { print d "/" $0 }')
for f in $named; do
    compgen -G "$f" >/dev/null || fail "docs/internals.md names $f, which does not exist"
done
for f in src/core/* src/diag/* src/common/*; do
    covered=0
    for n in $named; do
        # shellcheck disable=SC2053 # a table entry may be a glob
        [[ $f == $n ]] && covered=1 && break
    done
    [ $covered -eq 1 ] || fail "docs/internals.md's file table does not name $f"
done

# Code names internals.md quotes (backticked, with an underscore): each is in
# the sources, a test's name, or the system's (PTHREAD_...).
for w in $(grep -o '`[A-Za-z_][A-Za-z0-9_]*`' docs/internals.md | tr -d '`' | grep _ | sort -u); do
    grep -rqw -- "$w" src include tools tests /usr/include || fail "docs/internals.md quotes $w, found nowhere in the code"
done

# The valgrind transcript: each library frame "fn (file.c:N)" names a
# function defined in that file, which has at least N lines.
grep -o '[A-Za-z_][A-Za-z0-9_]* ([a-z_]*\.c:[0-9]*)' docs/porting.md | grep -v '(app\.c:' |
    while read -r fn loc; do
        file=${loc#(}
        file=${file%%:*}
        line=${loc##*:}
        line=${line%)}
        path=$(find src -name "$file" | head -1)
        if [ -z "$path" ]; then
            echo "docs/porting.md: frame $fn $loc: no src/**/$file"
            continue
        fi
        grep -q "^[a-z].*\b$fn(" "$path" || echo "docs/porting.md: frame $fn $loc: $path defines no $fn"
        [ "$(wc -l <"$path")" -ge "$line" ] || echo "docs/porting.md: frame $fn $loc: $path is shorter"
    done | grep . >&2 && bad=1

# Every stage tools/dev.sh runs is in docs/testing.md's list, and no other.
stages=$(sed -n 's/^ALL_STAGES=(\(.*\))$/\1/p' tools/dev.sh)
[ -n "$stages" ] || fail "tools/dev.sh: no ALL_STAGES=(...)"
grep -q "named (\`${stages// /[[:space:]]*}\`)" <(tr '\n' ' ' <docs/testing.md | sed 's/  */ /g') ||
    fail "docs/testing.md does not list the stages ($stages)"

exit $bad
