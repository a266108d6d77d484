#!/usr/bin/env bash
# bh-trackd(1) keeps up with the code: every option `bh-trackd --help` names
# and every environment variable the library or bh-trackd reads (getenv and
# env_* helpers in src/ and tools/bh-trackd/) is in docs/bh-trackd.1, and `man -l` renders it
# without a warning.
set -euo pipefail
trackd=$1
root=$2
page=$root/docs/bh-trackd.1
missing=()
# In roff, a dash in an option is written \-.
text=$(sed 's/\\-/-/g' "$page")
in_page() { grep -qF -- "$1" <<<"$text"; }
for opt in $("$trackd" --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
    in_page "$opt" || missing+=("$opt")
done
# getenv("NAME") and the reporter's env_u32("NAME", ...) and the like.
for var in $(grep -rhoE '(getenv|env_[a-z0-9_]+)\("[A-Z_]+"' "$root/src" "$root/tools/bh-trackd" | grep -oE '"[A-Z_]{3,}"' | tr -d '"' | sort -u); do
    in_page "$var" || missing+=("$var")
done
[ ${#missing[@]} -eq 0 ] || {
    echo "man_page: docs/bh-trackd.1 does not mention: ${missing[*]}" >&2
    exit 1
}
if command -v man >/dev/null; then
    err=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
    [ -z "$err" ] || {
        echo "man_page: man -l warns: $err" >&2
        exit 1
    }
fi
echo "man_page: every option of bh-trackd --help and every environment variable read is in bh-trackd(1)"
