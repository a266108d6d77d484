#!/usr/bin/env bash
# A user's threaded program under helgrind and drd, linked against a DEFAULT
# build of the library (configured with nothing but the build type, as a
# packager or a user following README's Install would), installed and found
# with pkg-config. Both tools must report 0 errors: with valgrind's headers
# present at build time the library annotates its lock-free synchronisation
# by default, and the configure output says so. Prints "helgrind N drd N"
# (the error counts).
#   valgrind_default.sh SOURCE_DIR CONSUMER_C [BUILD_TYPE]
set -euo pipefail
src=$1
consumer_c=$2
build_type=${3:-Release}
cmake=${CMAKE:-cmake}
cc=${CC:-cc}
valgrind=${VALGRIND:-valgrind}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "valgrind_default: $*" >&2
    exit 1
}

"$cmake" -S "$src" -B "$tmp/build" -DCMAKE_BUILD_TYPE="$build_type" -DBH_BUILD_TESTS=OFF \
    -DBH_BUILD_TOOLS=OFF >"$tmp/configure.log"
# README: "CMake's configure output says which it chose".
grep -q 'bufhandle: valgrind annotations for helgrind and drd: ON$' "$tmp/configure.log" ||
    fail "configure did not say the annotations are on: $(grep -i valgrind "$tmp/configure.log")"
"$cmake" --build "$tmp/build" -j2 >/dev/null
"$cmake" --install "$tmp/build" --prefix "$tmp/prefix" >/dev/null
pcfile=$(find "$tmp/prefix" -name bufhandle.pc | head -n1)
[ -n "$pcfile" ] || fail "no bufhandle.pc installed"
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pcfile")
# shellcheck disable=SC2046
"$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror -g -O1 -pthread "$consumer_c" -o "$tmp/threads" \
    $(pkg-config --cflags --libs bufhandle) -Wl,-rpath,"$(pkg-config --variable=libdir bufhandle)"
"$tmp/threads" || fail "the consumer failed natively"

supp=$tmp/prefix/share/bufhandle/bufhandle-valgrind.supp
[ -f "$supp" ] || fail "no suppression file installed"
status=0
counts=
for tool in helgrind drd; do
    set +e
    "$valgrind" --tool=$tool --error-exitcode=99 --suppressions="$supp" "$tmp/threads" \
        >"$tmp/$tool.log" 2>&1
    rc=$?
    set -e
    n=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$tmp/$tool.log" | tail -n1)
    counts="$counts $tool ${n:-?}"
    if [ "$rc" -ne 0 ]; then
        status=1
        echo "--- $tool (exit $rc):" >&2
        grep -E '^==[0-9]+== (Possible|Conflicting|Thread #|   (at|by) )' "$tmp/$tool.log" | head -n 40 >&2 || true
    fi
done
echo "valgrind_default:$counts"
exit $status
