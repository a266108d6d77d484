#!/usr/bin/env bash
# Installs the build tree into a temporary prefix, then builds and runs a tiny
# consumer against it twice: with find_package(bufhandle) and with pkg-config.
set -euo pipefail
build=$1
consumer=$2
cmake=${CMAKE:-cmake}
cc=${CC:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$cmake" --install "$build" --prefix "$tmp/prefix" >/dev/null

"$cmake" -S "$consumer" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_C_COMPILER="$cc" >/dev/null
"$cmake" --build "$tmp/cmake-build" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/cmake-build/consumer"

libdir=$(dirname "$(find "$tmp/prefix" -name bufhandle.pc | head -n1)")
export PKG_CONFIG_PATH="$libdir"
# shellcheck disable=SC2046
"$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror "$consumer/main.c" -o "$tmp/pc-consumer" $(pkg-config --cflags --libs bufhandle)
LD_LIBRARY_PATH="$(pkg-config --variable=libdir bufhandle)" "$tmp/pc-consumer"
echo "install_consumer: find_package and pkg-config consumers built and ran"
