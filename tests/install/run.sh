#!/usr/bin/env bash
# Installs the build tree into a temporary prefix, then links every exported
# target both ways, with find_package(bufhandle) and with pkg-config, builds
# examples/ on its own against the prefix, and runs
# each program: the shared library (found through the rpath, and through
# LD_LIBRARY_PATH), the static library (with bufhandle.hpp), the shim. Then it
# starts the installed bh-trackd and checks that it counted a consumer's
# reports. These are the steps README.md's "Install" section gives, and
# nothing is installed outside the prefix.
set -euo pipefail
build=$1
consumer=$2
examples=$3 # examples/: its CMakeLists.txt also builds on its own
cmake=${CMAKE:-cmake}
cc=${CC:-cc}
cxx=${CXX:-c++}
tmp=$(mktemp -d)
trackd_pid=
cleanup() {
    if [ -n "$trackd_pid" ]; then
        kill "$trackd_pid" 2>/dev/null || true
        wait "$trackd_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "install_consumer: $*" >&2
    exit 1
}
# Runs a program the way a user's shell would: no LD_LIBRARY_PATH unless given.
run() { env -u LD_LIBRARY_PATH "$@"; }
needs_shared_lib() { readelf -d "$1" | grep -q 'NEEDED.*libbufhandle\.so'; }

# Installed in one place and used from another: the package is relocatable.
prefix=$tmp/prefix
"$cmake" --install "$build" --prefix "$tmp/staging" >/dev/null

# Everything goes under the prefix given at install time, the systemd units
# too (a non-root user can write nowhere else), and each unit starts this
# prefix's bh-trackd: the configure-time prefix is another one.
outside=$(grep -v "^$tmp/staging/" "$build/install_manifest.txt" || true)
[ -z "$outside" ] || fail "installed outside the prefix: $outside"
for unit in system/bh-trackd.service user/bh-trackd.service; do
    unit=$tmp/staging/lib/systemd/$unit
    grep -qxF "$unit" "$build/install_manifest.txt" || fail "$unit is not in install_manifest.txt"
    exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
    [ "$exec_start" = "$tmp/staging/bin/bh-trackd" ] && [ -x "$exec_start" ] ||
        fail "$unit starts '$exec_start', not the installed $tmp/staging/bin/bh-trackd"
done
mv "$tmp/staging" "$prefix"
[ -x "$prefix/bin/bh-trackd" ] || fail "bh-trackd was not installed"
pcfile=$(find "$prefix" -name bufhandle.pc | head -n1)
libdir=$(dirname "$(dirname "$pcfile")")
[ -f "$libdir/pkgconfig/bufhandle-shim.pc" ] || fail "bufhandle-shim.pc was not installed"

# A debug-info build type installs a library valgrind can name lines in.
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
case "$build_type" in
Debug | RelWithDebInfo)
    readelf -S --wide "$libdir/libbufhandle.so" | grep -q '\.debug_info' ||
        fail "a $build_type install has no debug info in libbufhandle.so"
    ;;
esac

# --- CMake package: every exported target; CMake's rpath finds the library.
"$cmake" -S "$consumer" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
"$cmake" --build "$tmp/cmake-build" >/dev/null
for exe in consumer consumer_static consumer_shim; do
    run "$tmp/cmake-build/$exe"
done

# One version everywhere: what bh_version() says is what pkg-config, the man
# page's footer and CMake's package version (its numeric part) say.
version=$(run "$tmp/cmake-build/consumer" | sed -n 's/^consumer: bufhandle \([^,]*\),.*/\1/p')
[ -n "$version" ] || fail "the consumer did not print bh_version()"
[ "$(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --modversion bufhandle)" = "$version" ] ||
    fail "bufhandle.pc says $(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --modversion bufhandle), bh_version() $version"
man_th=$(gzip -dc "$prefix/share/man/man1/bh-trackd.1.gz" | grep '^\.TH ')
grep -qF "\"bufhandle $version\"" <<<"$man_th" || fail "bh-trackd(1) says '$man_th', bh_version() $version"
cmake_version=$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")$/\1/p' "$libdir/cmake/bufhandle/bufhandleConfigVersion.cmake")
[ -n "$cmake_version" ] && [ "${version#"$cmake_version"}" != "$version" ] ||
    fail "bufhandleConfigVersion.cmake says '$cmake_version', bh_version() $version"
needs_shared_lib "$tmp/cmake-build/consumer" || fail "bufhandle::bufhandle did not link the shared library"
needs_shared_lib "$tmp/cmake-build/consumer_static" && fail "bufhandle::bufhandle_static linked the shared library"
# examples/CMakeLists.txt, the one README offers to copy, outside the tree.
"$cmake" -S "$examples" -B "$tmp/examples-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" >/dev/null
"$cmake" --build "$tmp/examples-build" >/dev/null
needs_shared_lib "$tmp/examples-build/three_aliases" || fail "examples/ did not link the installed library"
run "$tmp/examples-build/three_aliases" >/dev/null || fail "examples/three_aliases failed"

# --- pkg-config: the same three programs.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
[ "$(pkg-config --variable=libdir bufhandle)" -ef "$libdir" ] || fail "bufhandle.pc names the wrong libdir"
case "$(pkg-config --variable=libdir bufhandle)" in
*//*) fail "bufhandle.pc's libdir has an empty component: $(pkg-config --variable=libdir bufhandle)" ;;
esac
strict=(-Wall -Wextra -Wpedantic -Werror)
# shellcheck disable=SC2046
"$cc" -std=c11 "${strict[@]}" "$consumer/main.c" -o "$tmp/pc-shared" $(pkg-config --cflags --libs bufhandle) \
    -Wl,-rpath,"$(pkg-config --variable=libdir bufhandle)"
run "$tmp/pc-shared"
# shellcheck disable=SC2046
"$cxx" -std=c++17 "${strict[@]}" "$consumer/cpp_main.cpp" -o "$tmp/pc-static" $(pkg-config --cflags bufhandle) \
    -Wl,-Bstatic $(pkg-config --static --libs bufhandle) -Wl,-Bdynamic
run "$tmp/pc-static"
needs_shared_lib "$tmp/pc-static" && fail "the static pkg-config link used the shared library"
# shellcheck disable=SC2046
"$cc" -std=c11 "${strict[@]}" "$consumer/shim_main.c" -o "$tmp/pc-shim" $(pkg-config --cflags --libs bufhandle-shim)
run env LD_LIBRARY_PATH="$libdir" "$tmp/pc-shim"

# --- The installed bh-trackd runs from the prefix (relative rpath) and counts
# the shim consumer's one ALLOC and one FREE.
sock=$tmp/trackd.sock
# env execs the server, so $! is the server itself; its output goes to the log
# (ctest waits for every holder of the test's stdout).
env -u LD_LIBRARY_PATH "$prefix/bin/bh-trackd" --socket "$sock" --log "$tmp/trackd.log" >>"$tmp/trackd.log" 2>&1 &
trackd_pid=$!
# Each wait is 300 polls of 0.1 s at least: a hang guard (the tests' TEST_HANG_S,
# 30 s), which a slow start on a loaded machine never reaches.
for _ in $(seq 300); do
    [ -S "$sock" ] && break
    kill -0 "$trackd_pid" 2>/dev/null || fail "the installed bh-trackd exited: $(cat "$tmp/trackd.log")"
    sleep 0.1
done
[ -S "$sock" ] || fail "the installed bh-trackd did not bind $sock"
run env LD_LIBRARY_PATH="$libdir" BH_TRACK_SOCKET="$sock" "$tmp/pc-shim" >/dev/null
totals=
for _ in $(seq 300); do # the server settles the ended client asynchronously
    totals=$(run "$prefix/bin/bh-trackd" stats --json --socket "$sock" | sed -n 's/.*"totals":{\([^}]*\)}.*/\1/p')
    if grep -Eq '(^|,)"allocs":1(,|$)' <<<"$totals" && grep -Eq '(^|,)"frees":1(,|$)' <<<"$totals"; then
        break
    fi
    totals=
    sleep 0.1
done
[ -n "$totals" ] || fail "the installed bh-trackd did not count 1 ALLOC and 1 FREE"
echo "install_consumer: 3 targets linked with find_package and with pkg-config, installed bh-trackd counted reports"
