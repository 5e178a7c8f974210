#!/usr/bin/env bash
# Resident memory per idle flow of `imlab proxy`: `imlab serve` on a free loopback port, the
# proxy in front of it (--profile home-wifi), CLIENTS heartbeating clients of `imlab load`
# through the proxy (one message a second in all, so the flows are idle). The proxy's RSS is
# sampled before the load and 3 s into the load's send phase (after its ramp), and the
# difference divided by CLIENTS is printed, with how many clients were in. Uses target/release.
#
#   bench/proxy-memory.sh [CLIENTS]             (default 8000; at most about 9,900: the proxy
#                                                holds two sockets a flow in one process)
#   IMLAB_BIN=PATH bench/proxy-memory.sh ...    (that binary instead of building)
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-8000}
if [ -z "${IMLAB_BIN:-}" ]; then nice -n 10 cargo build --release --quiet; fi
bin=${IMLAB_BIN:-target/release/imlab}
out=$(mktemp -d)
server_pid=""
proxy_pid=""
trap 'kill $proxy_pid $server_pid 2>/dev/null || true; rm -rf "$out"' EXIT
ulimit -n 20000 2>/dev/null || true
# shellcheck source=bench/lib/load-phase.sh
source bench/lib/load-phase.sh

$bin serve --listen 127.0.0.1:0 >"$out/serve.out" 2>"$out/serve.err" &
server_pid=$!
for _ in $(seq 100); do grep -q listening "$out/serve.out" && break; sleep 0.1; done
upstream=$(awk '/listening:/ {print $2}' "$out/serve.out")
port=$(free_port)
$bin proxy --listen "127.0.0.1:$port" --upstream "$upstream" --profile home-wifi \
    >"$out/proxy.out" 2>"$out/proxy.err" &
proxy_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
before=$(rss_kb $proxy_pid)

hold_s=$(( clients / 2000 + 10 ))
$bin load --target "127.0.0.1:$port" --clients "$clients" --connect-rate 2000 \
    --duration "${hold_s}s" --msg-rate 1 --drain 1s --out "$out/load" >"$out/load.out" 2>&1 &
load_pid=$!
wait_for_send_phase "$out/load.out" $load_pid
sleep 3
after=$(rss_kb $proxy_pid)
logged_in=$(logged_in_at_send "$out/load.out")
wait $load_pid || true

printf '%-32s %10s\n' measure value
printf '%-32s %10s\n' "clients" "$clients"
printf '%-32s %10s\n' "logged in at the send phase" "${logged_in:-?}"
printf '%-32s %10s\n' "proxy RSS before (KiB)" "$before"
printf '%-32s %10s\n' "proxy RSS with flows (KiB)" "$after"
printf '%-32s %10s\n' "proxy bytes per flow" "$(( (after - before) * 1024 / clients ))"
grep -E "lost|connections" "$out/load.out" | head -2 || true
