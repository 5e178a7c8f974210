#!/usr/bin/env bash
# 1:1 message rate against `imlab serve` (in-memory store) with the CPU split between server
# and load generator.
#
#   bench/load-rate.sh [RATE...]           (default: 20000 30000 40000 50000 60000)
#   EXTRA_SERVE="--data-dir /tmp/x" bench/load-rate.sh 30000   (extra `imlab serve` flags)
#   EXTRA_LOAD="--tls --ca ca.pem" ...                          (extra `imlab load` flags)
#
# For each rate: a fresh server on a free loopback port, 1,000 clients, 200-byte bodies,
# 10 s of open-loop sends after the ramp, 3 s drain. Prints one row per rate: deliver
# percentiles (ms, from the planned send time), lost/duplicated, and CPU seconds used by
# each process during the run (user+system, from /proc/PID/stat), as a share of the 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=("$@")
if (( ${#rates[@]} == 0 )); then rates=(20000 30000 40000 50000 60000); fi
cargo build --release --quiet
bin=target/release/imlab
tmp=$(mktemp -d)
trap 'kill $server_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

printf '%8s %9s %9s %9s %9s %6s %5s %9s %9s %6s\n' \
    rate delivered p50_ms p99_ms p999_ms lost dup server_cpu load_cpu wall_s
for rate in "${rates[@]}"; do
    # shellcheck disable=SC2086
    $bin serve --listen 127.0.0.1:0 ${EXTRA_SERVE:-} >"$tmp/serve.out" 2>"$tmp/serve.err" &
    server_pid=$!
    for _ in $(seq 100); do grep -q listening "$tmp/serve.out" && break; sleep 0.1; done
    addr=$(awk '/listening:/ {print $2}' "$tmp/serve.out")
    server_start=$(cpu_ticks $server_pid)
    start_ns=$(date +%s%N)
    # shellcheck disable=SC2086
    $bin load --target "$addr" --clients 1000 --duration 10s --msg-rate "$rate" \
        --connect-rate 5000 --drain 3s --out "$tmp/load-$rate" ${EXTRA_LOAD:-} \
        >"$tmp/load.out" 2>&1 &
    load_pid=$!
    load_ticks=0
    while kill -0 $load_pid 2>/dev/null; do
        load_ticks=$(cpu_ticks $load_pid 2>/dev/null || echo "$load_ticks")
        sleep 0.2
    done
    wait $load_pid || true
    wall_ns=$(( $(date +%s%N) - start_ns ))
    server_ticks=$(( $(cpu_ticks $server_pid) - server_start ))
    kill $server_pid; wait $server_pid 2>/dev/null || true
    python3 - "$tmp/load-$rate/results.json" "$rate" "$server_ticks" "$load_ticks" \
        "$hz" "$wall_ns" <<'PY'
import json, sys
path, rate, server, load, hz, wall_ns = sys.argv[1:]
r = json.load(open(path))
d = r["latency_ms"]["deliver"]
m = r["messages"]
wall = int(wall_ns) / 1e9
share = lambda ticks: f"{int(ticks) / int(hz) / wall / 2 * 100:.0f}%"
print(f"{int(rate):8d} {m['delivered']:9d} {d['p50']:9.2f} {d['p99']:9.2f} {d['p999']:9.2f} "
      f"{m['lost']:6d} {m['duplicated']:5d} {share(server):>9} {share(load):>9} {wall:6.1f}")
PY
done
