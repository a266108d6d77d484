#!/usr/bin/env bash
# Generated output is neither committed nor committable: CTest's Testing/
# directory (made when ctest runs in the source tree) and patch(1)'s
# leftovers (*.orig backups, *.rej hunks) are ignored and absent from the
# index. Skips (77) outside a git checkout, e.g. in a release tarball.
set -euo pipefail
src=$1
git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 77
committed=$(git -C "$src" ls-files -- Testing ':(glob)**/Testing/**')
if [ -n "$committed" ]; then
    echo "repo_files: CTest output is committed:" >&2
    echo "$committed" >&2
    exit 1
fi
leftovers=$(git -C "$src" ls-files -- ':(glob)**/*.orig' ':(glob)**/*.rej')
if [ -n "$leftovers" ]; then
    echo "repo_files: patch leftovers are committed:" >&2
    echo "$leftovers" >&2
    exit 1
fi
for f in Testing/Temporary/LastTest.log tests/Testing/Temporary/LastTest.log src/table.c.orig src/table.c.rej src/core/table.c.orig src/core/table.c.rej; do
    git -C "$src" check-ignore -q "$f" || { echo "repo_files: $f is not ignored" >&2; exit 1; }
done
echo "repo_files: no CTest output or patch leftovers committed, both ignored"
