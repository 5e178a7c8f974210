#!/usr/bin/env bash
# The proxy's overhead floor: echo round trips direct and through the proxy with a
# zero-delay, zero-loss profile, at 1 and 1,000 connections, and the proxy process's CPU time.
# Loopback only. Usage: bench/proxy-overhead.sh [SECONDS]   (prints a Markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p imlab-proxy --example proxy_bench
bin=$CARGO_TARGET_DIR/release/examples/proxy_bench
echo_addr=127.0.0.1:7811
proxy_addr=127.0.0.1:7812
"$bin" echo $echo_addr & echo_pid=$!
"$bin" proxy $proxy_addr $echo_addr & proxy_pid=$!
trap 'kill $echo_pid $proxy_pid 2>/dev/null' EXIT
sleep 1
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$proxy_pid/stat"; }
echo "| path | connections | round trips/s | Mbit/s each way | p50 us | p99 us | proxy CPU (cores) |"
echo "|---|---|---|---|---|---|---|"
for connections in 1 1000; do
    for path in direct proxy; do
        target=$echo_addr
        [ "$path" = proxy ] && target=$proxy_addr
        before=$(cpu_ticks)
        result=$("$bin" ping $target $connections "$seconds" 1024)
        after=$(cpu_ticks)
        cpu=$(awk -v t=$((after - before)) -v hz="$ticks" -v s="$seconds" 'BEGIN {printf "%.2f", t / hz / s}')
        [ "$path" = direct ] && cpu="-"
        echo "$result" | python3 -c "
import json, sys
r = json.load(sys.stdin)
print(f\"| $path | {r['connections']} | {r['round_trips_per_s']:.0f} | {r['mbit_per_s_each_way']:.1f} | {r['p50_us']} | {r['p99_us']} | $cpu |\")"
    done
done
