#!/usr/bin/env bash
# dev.sh - set up, build and run bufhandle on a Debian 12 machine.
#
#   tools/dev.sh demo   install what is missing, build (release), run the demo
#                       (extra arguments go to bh-demo, e.g. --json)
#   tools/dev.sh test   install what is missing, then every test stage:
#                       unit+install, hostile (attacks on bh-trackd), model (spin),
#                       memcheck, helgrind, drd,
#                       release build, asan, tsan,
#                       fuzz (FUZZ_SECONDS per target, default 30),
#                       observability (bh-trackd --http against promtool,
#                       Prometheus and headless Chromium, installed for it),
#                       package (Debian packages built from a clean clone,
#                       lintian, installed, socket-activated, purged; root)
#   tools/dev.sh deps   only install (or, not root, print) missing packages
#
# As root, missing Debian packages are installed with apt-get. As another user,
# the exact apt-get line is printed and the script exits non-zero.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
PACKAGES=(build-essential cmake pkg-config libatomic-ops-dev libcmocka-dev valgrind clang-14 libclang-rt-14-dev spin libmicrohttpd-dev libdw-dev libsystemd-dev)

# Only the observability stage needs these (big); installed when it runs.
OBS_PACKAGES=(prometheus chromium fonts-dejavu-core)
# Only the package stage (root) needs these: lintian, dpkg-shlibdeps,
# systemd-analyze and systemd-socket-activate, man -l, a clean clone.
PKG_PACKAGES=(lintian dpkg-dev systemd man-db git)

log() { printf '[dev.sh] %s\n' "$*" >&2; }

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf '%s\n' "$p"
    done
}

ensure_deps() {
    local missing
    [ $# -gt 0 ] || set -- "${PACKAGES[@]}"
    missing=$(missing_packages "$@" | tr '\n' ' ')
    [ -z "${missing// /}" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        log "missing packages: $missing"
        echo "apt-get update && apt-get install -y --no-install-recommends $missing"
        exit 1
    fi
    log "installing: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null
}

build_preset() {
    local preset=$1
    cmake --preset "$preset" -S "$ROOT" >/dev/null
    cmake --build "$ROOT/build/$preset" -j "$JOBS" >/dev/null
}

# Runs one named stage, times it, and records a summary line.
SUMMARY=()
FAILED=0
stage() {
    local name=$1
    shift
    local t0 t1 rc=0
    t0=$(date +%s)
    log "stage $name: $*"
    "$@" || rc=$?
    t1=$(date +%s)
    if [ $rc -eq 0 ]; then
        SUMMARY+=("$(printf 'stage %-10s passed  %4ss' "$name" $((t1 - t0)))")
    else
        SUMMARY+=("$(printf 'stage %-10s FAILED  %4ss (exit %s)' "$name" $((t1 - t0)) $rc)")
        FAILED=1
    fi
}

build_fuzz() {
    cmake --preset fuzz -S "$ROOT" >/dev/null
    cmake --build --preset fuzz -j "$JOBS" >/dev/null
}

# Runs each libFuzzer target for a bounded time from the committed corpus.
# New inputs and crash artifacts go to a temporary directory (kept on failure).
run_fuzzers() {
    local seconds=$1 t rc=0 out
    for t in api trackd; do
        out=$(mktemp -d)
        if "$ROOT/build/fuzz/tests/fuzz_$t" -max_total_time="$seconds" -print_final_stats=1 \
            -artifact_prefix="$out/" "$out" "$ROOT/tests/fuzz/corpus/$t" >"$out/log" 2>&1; then
            log "fuzz_$t: $(grep -E '^Done' "$out/log")"
            rm -rf "$out"
        else
            log "fuzz_$t FAILED; log and artifacts in $out"
            tail -30 "$out/log" >&2
            rc=1
        fi
    done
    return $rc
}

ctest_in() {
    local dir=$1
    shift
    (cd "$ROOT/build/$dir" && ctest --output-on-failure -j "$JOBS" "$@")
}

# The observability tests with their tools; without root (and without the
# tools) they skip with a message naming the package.
obs_tests() {
    if [ "$(id -u)" -eq 0 ]; then ensure_deps "${OBS_PACKAGES[@]}"; fi
    ctest_in debug -L observability
}

# Debian packages built, checked, installed, used and purged: root only (the
# test says "skipped" otherwise).
pkg_tests() {
    if [ "$(id -u)" -eq 0 ]; then ensure_deps "${PKG_PACKAGES[@]}"; fi
    ctest_in debug -L package
}

cmd_demo() {
    ensure_deps
    build_preset release
    if [ $# -eq 0 ]; then # the thirty-line story first, then the main job
        "$ROOT/build/release/examples/three_aliases"
        echo
    fi
    "$ROOT/build/release/tools/bh-demo" "$@"
}

cmd_test() {
    ensure_deps
    stage build-debug build_preset debug
    stage unit ctest_in debug -L "unit|install"
    stage hostile ctest_in debug -L hostile
    stage model ctest_in debug -L model
    stage memcheck ctest_in debug -L memcheck
    stage helgrind ctest_in debug -L helgrind
    stage drd ctest_in debug -L drd
    stage build-release build_preset release
    stage build-asan build_preset asan
    stage asan ctest_in asan -L unit
    stage build-tsan build_preset tsan
    stage tsan ctest_in tsan -L unit
    stage build-fuzz build_fuzz
    stage fuzz run_fuzzers "${FUZZ_SECONDS:-30}"
    stage observability obs_tests
    stage package pkg_tests
    printf '\n'
    printf '%s\n' "${SUMMARY[@]}"
    local passed=0 failed=0 line
    for line in "${SUMMARY[@]}"; do
        case "$line" in *FAILED*) failed=$((failed + 1)) ;; *) passed=$((passed + 1)) ;; esac
    done
    printf 'stages: %d passed, %d failed\n' "$passed" "$failed"
    return $FAILED
}

case "${1:-}" in
demo) shift; cmd_demo "$@" ;;
test) shift; cmd_test "$@" ;;
deps) ensure_deps ;;
*)
    echo "usage: tools/dev.sh demo|test|deps" >&2
    exit 2
    ;;
esac
