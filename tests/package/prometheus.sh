#!/usr/bin/env bash
# The shipped Prometheus setup across hosts (packaging/prometheus/), for real:
# two bh-trackd daemons stand for two hosts (127.0.0.1 and 127.0.0.2, the same
# port), promtool checks the shipped config and rules, and a real Prometheus
# scrapes both with the shipped relabelling, recording rules and alerts. A
# program leaks 30 allocations on "host" 127.0.0.1 and one frees all it
# allocated on 127.0.0.2: the per-host and fleet series and the leak alert
# must say exactly that. Bounded: every wait is a count of short polls (300 of
# 0.1 s at least for a daemon, as the tests' TEST_HANG_S; 600 for Prometheus).
set -euo pipefail
trackd=$1   # bh-trackd
reporter=$2 # tests/package/reporter (built in the tree)
shipped=$3  # packaging/prometheus
fail() {
    echo "prometheus: $*" >&2
    [ -f "$tmp/prometheus.log" ] && tail -20 "$tmp/prometheus.log" >&2
    exit 1
}
for t in prometheus promtool; do
    command -v "$t" >/dev/null || {
        echo "prometheus: $t not installed (Debian package prometheus); skipped"
        exit 77
    }
done
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# GET a path from 127.0.0.1:$1 (HTTP/1.0, body only).
get() {
    local out
    exec 4<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$2" "$1" >&4
    out=$(cat <&4)
    exec 4>&-
    printf '%s' "${out#*$'\r\n\r\n'}"
}
up() { (exec 4<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Two "hosts", one port: daemons on 127.0.0.1 and 127.0.0.2.
port=
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    pport=$((port + 1))
    up 127.0.0.1 "$port" || up 127.0.0.2 "$port" || up 127.0.0.1 "$pport" || break
done
for h in 1 2; do
    "$trackd" --socket "$tmp/h$h.sock" --grace-ms 200 --http "127.0.0.$h:$port" --log "$tmp/h$h.log" &
    pids+=($!)
done
for h in 1 2; do
    for _ in $(seq 300); do up "127.0.0.$h" "$port" && break; sleep 0.1; done
    up "127.0.0.$h" "$port" || fail "bh-trackd on 127.0.0.$h:$port did not start: $(cat "$tmp/h$h.log")"
done

# The shipped files, with the two targets and a 1 s cadence.
cp "$shipped/bh-trackd.rules.yml" "$tmp/"
sed -e "s/\['gpu-host-01:9464', 'gpu-host-02:9464'\]/['127.0.0.1:$port', '127.0.0.2:$port']/" \
    -e 's/scrape_interval: 15s/scrape_interval: 1s/' -e 's/evaluation_interval: 15s/evaluation_interval: 1s/' \
    "$shipped/prometheus.yml" >"$tmp/prometheus.yml"
grep -q "127.0.0.2:$port" "$tmp/prometheus.yml" || fail "the shipped prometheus.yml has no targets line to fill in"
promtool check config "$tmp/prometheus.yml" >"$tmp/promtool.log" 2>&1 || fail "promtool: $(cat "$tmp/promtool.log")"
promtool check rules "$tmp/bh-trackd.rules.yml" >>"$tmp/promtool.log" 2>&1 || fail "promtool: $(cat "$tmp/promtool.log")"

prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$pport" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
# Both targets scraped once before anything happens, so increase() sees it.
for _ in $(seq 600); do
    r=$(get "$pport" '/api/v1/query?query=sum(up)' 2>/dev/null || true)
    grep -q '"value":\[[0-9.]*,"2"\]' <<<"$r" && break
    sleep 0.1
done
grep -q '"value":\[[0-9.]*,"2"\]' <<<"$r" || fail "Prometheus did not scrape both daemons: $r"

BH_TRACK_SOCKET=$tmp/h1.sock "$reporter" 1 50 20 >/dev/null || fail "reporter on host 1 failed"
BH_TRACK_SOCKET=$tmp/h2.sock "$reporter" 2 80 80 >/dev/null || fail "reporter on host 2 failed"

# Recorded per host, and for the fleet; then the alert, on host 1 only.
want1='"host":"127.0.0.1"},"value":\[[0-9.]*,"30"\]'
want2='"host":"127.0.0.2"},"value":\[[0-9.]*,"0"\]'
for _ in $(seq 600); do
    r=$(get "$pport" '/api/v1/query?query=host:bh_trackd_leaks:total' 2>/dev/null || true)
    grep -q "$want1" <<<"$r" && grep -q "$want2" <<<"$r" && break
    sleep 0.1
done
grep -q "$want1" <<<"$r" && grep -q "$want2" <<<"$r" || fail "host:bh_trackd_leaks:total: $r"
r=$(get "$pport" '/api/v1/query?query=fleet:bh_trackd_leaks:total')
grep -q '"cluster":"training"},"value":\[[0-9.]*,"30"\]' <<<"$r" || fail "fleet:bh_trackd_leaks:total: $r"
for _ in $(seq 600); do
    r=$(get "$pport" '/api/v1/alerts' 2>/dev/null || true)
    grep -q '"alertname":"DeviceMemoryLeaksGrowing"' <<<"$r" && grep -q '"state":"firing"' <<<"$r" && break
    sleep 0.1
done
grep -q '"alertname":"DeviceMemoryLeaksGrowing"[^}]*"host":"127.0.0.1"' <<<"$r" ||
    fail "no DeviceMemoryLeaksGrowing alert for 127.0.0.1: $r"
grep -q '"alertname":"DeviceMemoryLeaksGrowing"[^}]*"host":"127.0.0.2"' <<<"$r" &&
    fail "a leak alert for 127.0.0.2, which leaked nothing: $r"
echo "prometheus: two daemons scraped with per-host labels; recorded leaks 30 / 0, fleet 30; leak alert on 127.0.0.1 only"
