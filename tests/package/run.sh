#!/usr/bin/env bash
# The package stage (tools/dev.sh test package; root): what a Debian user does.
#   1. clone the repository (its committed HEAD) and build the three .deb
#      packages from that clean tree with cpack (cmake/packaging.cmake);
#   2. lintian: no error on any of them; the shared library's SONAME, shlibs
#      and the Depends that dpkg-shlibdeps computed;
#   3. dpkg -i; systemd-analyze verify accepts the units; man -l renders the
#      man page without a warning;
#   4. a consumer built against /usr with CMake and with pkg-config;
#   5. the installed bh-trackd started by systemd-socket-activate with the
#      native, compat and http sockets passed in, a reporting program on each
#      side, and the counts checked (stats, TT records, HTTP);
#   6. dpkg --purge, and the machine is as it was.
# Bounded: every wait is a count of short polls (300 of 0.1 s at least: a hang
# guard, as the tests' TEST_HANG_S); the build is the long part.
set -euo pipefail
src=$1        # a git checkout of bufhandle
consumer=$2   # tests/install/consumer
reporter_c=$3 # tests/package/reporter.c
cmake=${CMAKE:-cmake}
jobs=${JOBS:-2}
packages=(bufhandle-trackd libbufhandle-dev libbufhandle0)

fail() {
    echo "package: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || {
    echo "package: needs root (dpkg -i); skipped"
    exit 77
}
for p in "${packages[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed'; then
        fail "$p is already installed: this test installs and purges its own build, so remove it first"
    fi
done
for t in cpack lintian dpkg-shlibdeps systemd-analyze systemd-socket-activate man git; do
    command -v "$t" >/dev/null || fail "$t is missing (tools/dev.sh installs it)"
done

tmp=$(mktemp -d)
daemon=
installed=0
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    [ "$installed" = 1 ] && dpkg --purge "${packages[@]}" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- 1. packages from a clean clone
git clone -q "$src" "$tmp/src"
"$cmake" -S "$tmp/src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
    -DBH_BUILD_TESTS=OFF >/dev/null
"$cmake" --build "$tmp/build" -j "$jobs" >/dev/null
(cd "$tmp/build" && cpack -G DEB >/dev/null)
debs=()
for p in "${packages[@]}"; do
    f=$(ls "$tmp/build/${p}_"*.deb 2>/dev/null | head -n1)
    [ -n "$f" ] || fail "cpack made no $p package"
    debs+=("$f")
done

# --- 2. lintian and the package metadata
lintian --fail-on error --tag-display-limit 0 "${debs[@]}" >"$tmp/lintian.log" 2>&1 ||
    fail "lintian reports errors: $(grep '^E:' "$tmp/lintian.log")"
lib_deb=$(ls "$tmp"/build/libbufhandle0_*.deb)
dpkg-deb -x "$lib_deb" "$tmp/lib"
soname=$(readelf -d "$tmp"/lib/usr/lib/*/libbufhandle.so.0 | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = libbufhandle.so.0 ] || fail "SONAME is '$soname', not libbufhandle.so.0"
dpkg-deb --ctrl-tarfile "$lib_deb" | tar -xO ./shlibs | grep -q '^libbufhandle 0 libbufhandle0' ||
    fail "libbufhandle0 has no shlibs line for libbufhandle 0"
trackd_deb=$(ls "$tmp"/build/bufhandle-trackd_*.deb)
dpkg-deb -f "$trackd_deb" Depends | grep -q 'libmicrohttpd' ||
    fail "bufhandle-trackd's Depends were not computed: $(dpkg-deb -f "$trackd_deb" Depends)"

# --- 3. install; units; man page
dpkg -i "${debs[@]}" >"$tmp/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$tmp/dpkg.log")"
installed=1
[ -x /usr/bin/bh-trackd ] || fail "/usr/bin/bh-trackd was not installed"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
[ -e "/usr/lib/$multiarch/libbufhandle.so.0" ] || fail "the library is not in /usr/lib/$multiarch"
systemd-analyze verify /lib/systemd/system/bh-trackd.service /lib/systemd/system/bh-trackd.socket \
    /lib/systemd/system/bh-trackd-compat.socket /lib/systemd/system/bh-trackd-http.socket \
    >"$tmp/verify.log" 2>&1 || fail "systemd-analyze verify (system units): $(cat "$tmp/verify.log")"
[ -s "$tmp/verify.log" ] && fail "systemd-analyze verify (system units) warns: $(cat "$tmp/verify.log")"
mkdir -m 0700 "$tmp/xdg"
XDG_RUNTIME_DIR=$tmp/xdg systemd-analyze --user verify /usr/lib/systemd/user/bh-trackd.service \
    /usr/lib/systemd/user/bh-trackd.socket >"$tmp/verify.log" 2>&1 ||
    fail "systemd-analyze --user verify: $(cat "$tmp/verify.log")"
[ -s "$tmp/verify.log" ] && fail "systemd-analyze --user verify warns: $(cat "$tmp/verify.log")"
MANWIDTH=80 man --warnings -l /usr/share/man/man1/bh-trackd.1.gz >"$tmp/man.txt" 2>"$tmp/man.err" ||
    fail "man -l bh-trackd.1.gz failed"
[ -s "$tmp/man.err" ] && fail "man -l warns: $(cat "$tmp/man.err")"
grep -q 'socket activation\|SOCKET ACTIVATION' "$tmp/man.txt" || fail "the installed man page is not bh-trackd(1)"

# --- 4. consumers against /usr: CMake and pkg-config
"$cmake" -S "$consumer" -B "$tmp/consumer" >/dev/null
"$cmake" --build "$tmp/consumer" >/dev/null
version=$("$tmp/consumer/consumer" | sed -n 's/^consumer: bufhandle \([^,]*\),.*/\1/p')
[ -n "$version" ] || fail "the CMake consumer failed"
# A pre-release (0.4.0-dev) is packaged as 0.4.0~dev, which sorts before 0.4.0.
[ "$(dpkg-deb -f "$lib_deb" Version)" = "${version//-/\~}-1" ] ||
    fail "libbufhandle0 is version $(dpkg-deb -f "$lib_deb" Version), the library says $version"
# Under /usr the .pc files name plain paths (elsewhere they are relocatable,
# through ${pcfiledir}/../..): the libdir users paste into -rpath.
pc_libdir=$(pkg-config --variable=libdir bufhandle)
[ "$pc_libdir" = "/usr/lib/$multiarch" ] || fail "bufhandle.pc's libdir is $pc_libdir, not /usr/lib/$multiarch"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$reporter_c" -o "$tmp/reporter" $(pkg-config --cflags --libs bufhandle)
readelf -d "$tmp/reporter" | grep -q 'RUNPATH\|RPATH' && fail "the pkg-config consumer needed an rpath"

# --- 5. bh-trackd under systemd-socket-activate, each socket passed in
native=$tmp/native.sock compat=$tmp/compat.sock
port=
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    systemd-socket-activate -l "$native" -l "$compat" -l "127.0.0.1:$port" --fdname=native:compat:http \
        /usr/bin/bh-trackd --grace-ms 200 --log "$tmp/trackd.log" >"$tmp/activate.log" 2>&1 &
    daemon=$!
    for _ in $(seq 300); do
        grep -q "as 5" "$tmp/activate.log" 2>/dev/null && break
        kill -0 "$daemon" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$daemon" 2>/dev/null && grep -q "as 5" "$tmp/activate.log" && break
    wait "$daemon" 2>/dev/null || true
    daemon=
done
[ -n "$daemon" ] || fail "systemd-socket-activate did not start: $(cat "$tmp/activate.log")"
BH_TRACK_SOCKET=$native "$tmp/reporter" 2 100 60 >/dev/null || fail "the native reporter failed"
env -u BH_TRACK_SOCKET TT_ALLOC_TRACKING_ENABLED=1 BH_TT_SOCKET=$compat "$tmp/reporter" 3 10 10 >/dev/null ||
    fail "the TT reporter failed"
want='"allocs":110,"frees":70'
stats=
for _ in $(seq 300); do # the daemon settles the ended clients on its own time
    stats=$(/usr/bin/bh-trackd stats --json --socket "$native" 2>/dev/null || true)
    grep -q "$want" <<<"$stats" && grep -q '"leaks":40,' <<<"$stats" && break
    sleep 0.1
done
grep -q "$want" <<<"$stats" || fail "stats did not count 110 ALLOC and 70 FREE: $stats"
grep -q '"leaks":40,' <<<"$stats" || fail "stats did not count 40 leaks: $stats"
grep -q "socket activation: 3 listening sockets" "$tmp/trackd.log" ||
    fail "bh-trackd did not take the three sockets: $(cat "$tmp/trackd.log")"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /api/stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
http=$(cat <&3)
exec 3>&-
grep -q '^HTTP/1.[01] 200' <<<"$http" || fail "HTTP on the passed socket: $(head -n1 <<<"$http")"
grep -q "$want" <<<"$http" || fail "/api/stats on the passed socket disagrees: $http"
kill "$daemon"
wait "$daemon" 2>/dev/null || true
daemon=

# --- 6. purge: nothing of ours is left
dpkg --purge "${packages[@]}" >"$tmp/dpkg.log" 2>&1 || fail "dpkg --purge: $(cat "$tmp/dpkg.log")"
installed=0
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed' && fail "$p is still installed"
done
[ -e /usr/bin/bh-trackd ] && fail "/usr/bin/bh-trackd is still there"
ls "/usr/lib/$multiarch"/libbufhandle* >/dev/null 2>&1 && fail "libbufhandle is still in /usr/lib/$multiarch"
echo "package: 3 packages built from a clean clone, lintian clean, installed, units verified," \
    "consumers built, socket-activated bh-trackd counted 110 ALLOC / 70 FREE / 40 leaks, purged"
