#!/usr/bin/env bash
# dev.sh - set up, build and run bufhandle on a Debian 12 machine.
#
#   tools/dev.sh demo   install what is missing, build (release) the demo, the
#                       bh-trackd it reports to, and the example it runs
#                       first, run them (extra arguments go to bh-demo, e.g.
#                       --json); README's build/release/tools/bh-trackd is this one
#   tools/dev.sh test [STAGE...]
#                       install what is missing, then the test stages named
#                       (default: all, in this order):
#                       unit (+install), hostile (attacks on bh-trackd),
#                       trackd (the tests against a real bh-trackd, also in unit),
#                       model (spin), memcheck, helgrind, drd, release,
#                       tracking (lossless tracking under load: a program's
#                       own counts against bh-trackd's, beside 3 CPU hogs,
#                       without loss and with the daemon stopped 5 s), asan,
#                       tsan, fuzz (FUZZ_SECONDS per target, default 30),
#                       format (clang-format-14 --dry-run over the C sources),
#                       observability (bh-trackd --http against promtool,
#                       Prometheus and headless Chromium, installed for it),
#                       package (Debian packages built from a clean clone,
#                       lintian, installed, socket-activated, purged; root).
#                       Each stage builds what it needs first; a failed build
#                       ends the run (the stages after it would test stale
#                       binaries).
#   tools/dev.sh deps   only install (or, not root, print) missing packages
#
# BH_TEST_HOGS=N (CI: .ci/run sets 2) runs the unit, hostile and trackd stages
# with N CPU-bound busy loops beside them, as a loaded 2-core machine would:
# the suite must not depend on a quiet machine. Each loop is bounded
# (`timeout`, nice 0) and stopped when its stage ends.
#
# As root, missing Debian packages are installed with apt-get. As another user,
# the exact apt-get line is printed and the script exits non-zero.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
PACKAGES=(build-essential cmake pkg-config libatomic-ops-dev libcmocka-dev valgrind clang-14 clang-format-14 libclang-rt-14-dev spin libmicrohttpd-dev libdw-dev libsystemd-dev)

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

# build_preset PRESET [TARGET...]: configure and build (only TARGETs if given).
build_preset() {
    local preset=$1
    shift
    local targets=()
    [ $# -eq 0 ] || targets=(--target "$@")
    cmake --preset "$preset" -S "$ROOT" >/dev/null
    cmake --build "$ROOT/build/$preset" -j "$JOBS" "${targets[@]}" >/dev/null
}

# Busy loops beside a stage (BH_TEST_HOGS of them): each ends by itself after
# HOG_SECONDS (timeout) and is killed, by its pid, when the stage ends.
HOG_SECONDS=${HOG_SECONDS:-1800}
HOGS=()
hogs_start() {
    local i n=${BH_TEST_HOGS:-0}
    for ((i = 0; i < n; i++)); do
        timeout "$HOG_SECONDS" nice -n 0 bash -c 'while :; do :; done' &
        HOGS+=($!)
    done
    [ "$n" -eq 0 ] || log "$n busy loops beside the stage: ${HOGS[*]}"
}
hogs_stop() {
    local p
    for p in "${HOGS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    HOGS=()
}
trap hogs_stop EXIT

# loaded CMD...: runs CMD with the busy loops beside it.
loaded() {
    local rc=0
    hogs_start
    "$@" || rc=$?
    hogs_stop
    return $rc
}

# Runs one named stage, times it, and records a summary line.
SUMMARY=()
FAILED=0
STOPPED=0 # set by a failed build: the stages after it are not run
stage() {
    local name=$1
    shift
    local t0 t1 rc=0
    [ $STOPPED -eq 0 ] || return 0
    t0=$(date +%s)
    log "stage $name: $*"
    "$@" || rc=$?
    t1=$(date +%s)
    if [ $rc -eq 0 ]; then
        SUMMARY+=("$(printf 'stage %-10s passed  %4ss' "$name" $((t1 - t0)))")
    else
        SUMMARY+=("$(printf 'stage %-10s FAILED  %4ss (exit %s)' "$name" $((t1 - t0)) $rc)")
        FAILED=1
        case "$name" in build-*)
            STOPPED=1
            log "stage $name failed: stopping (later stages would run stale binaries)"
            ;;
        esac
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
    # bh-demo finds bh-trackd next to itself; without it the demo would run
    # with its in-process tracker instead of the server it is meant to show.
    build_preset release bh-demo bh-trackd three_aliases
    if [ $# -eq 0 ]; then # the thirty-line story first, then the main job
        "$ROOT/build/release/examples/three_aliases"
        echo
    fi
    "$ROOT/build/release/tools/bh-demo" "$@"
}

# clang-format-14 --dry-run -Werror over the C and C++ sources.
format_check() {
    command -v clang-format-14 >/dev/null || {
        log "clang-format-14 is missing (apt-get install clang-format-14)"
        return 1
    }
    (cd "$ROOT" && git ls-files '*.c' '*.h' '*.cpp' '*.hpp' | xargs clang-format-14 --dry-run -Werror)
}

ALL_STAGES=(unit hostile trackd model memcheck helgrind drd release tracking asan tsan fuzz format observability package)

# One stage and the build it needs (each build once per run).
BUILT=" "
needs() {
    local b=$1
    shift
    case "$BUILT" in *" $b "*) return 0 ;; esac
    BUILT+="$b "
    stage "build-$b" "$@"
}
run_stage() {
    case "$1" in
    unit) needs debug build_preset debug && stage unit loaded ctest_in debug -L "unit|install" ;;
    hostile) needs debug build_preset debug && stage hostile loaded ctest_in debug -L hostile ;;
    trackd) needs debug build_preset debug && stage trackd loaded ctest_in debug -L trackd ;;
    model) needs debug build_preset debug && stage model ctest_in debug -L model ;;
    memcheck | helgrind | drd) needs debug build_preset debug && stage "$1" ctest_in debug -L "$1" ;;
    release) needs release build_preset release ;;
    # The release build: the stage measures a loaded run, and an -O0 daemon
    # is not what keeps up with 450K events/s. Its own 3 CPU hogs: not
    # BH_TEST_HOGS (loaded), and its tests one at a time (RUN_SERIAL).
    tracking) needs release build_preset release && stage tracking ctest_in release -L tracking ;;
    asan | tsan) needs "$1" build_preset "$1" && stage "$1" ctest_in "$1" -L unit ;;
    fuzz) needs fuzz build_fuzz && stage fuzz run_fuzzers "${FUZZ_SECONDS:-30}" ;;
    format) stage format format_check ;;
    observability) needs debug build_preset debug && stage observability obs_tests ;;
    package) needs debug build_preset debug && stage package pkg_tests ;;
    *)
        echo "unknown stage '$1'; stages: ${ALL_STAGES[*]}" >&2
        exit 2
        ;;
    esac
}

cmd_test() {
    local s
    [ $# -gt 0 ] || set -- "${ALL_STAGES[@]}"
    for s in "$@"; do # every name checked before anything runs
        case " ${ALL_STAGES[*]} " in *" $s "*) ;; *)
            echo "unknown stage '$s'; stages: ${ALL_STAGES[*]}" >&2
            exit 2
            ;;
        esac
    done
    ensure_deps
    for s in "$@"; do
        run_stage "$s" || true
    done
    printf '\n'
    printf '%s\n' "${SUMMARY[@]}"
    local passed=0 failed=0 line
    for line in "${SUMMARY[@]}"; do
        case "$line" in *FAILED*) failed=$((failed + 1)) ;; *) passed=$((passed + 1)) ;; esac
    done
    printf 'stages: %d passed, %d failed%s\n' "$passed" "$failed" \
        "$([ $STOPPED -eq 0 ] || echo ', stopped after a failed build')"
    return $FAILED
}

case "${1:-}" in
demo) shift; cmd_demo "$@" ;;
test) shift; cmd_test "$@" ;;
deps) ensure_deps ;;
*)
    echo "usage: tools/dev.sh demo [ARGS...] | test [STAGE...] | deps" >&2
    exit 2
    ;;
esac
