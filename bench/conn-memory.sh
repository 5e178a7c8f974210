#!/usr/bin/env bash
# Resident memory per idle logged-in connection, server and load generator.
#
#   bench/conn-memory.sh [CLIENTS] [WORKERS]     (defaults: 10000 1)
#   IMLAB_BIN=PATH bench/conn-memory.sh ...      (that binary instead of building target/release)
#   EXTRA_SERVE="--threads 1" bench/conn-memory.sh ...   (more flags for `imlab serve`)
#   EXTRA_LOAD="--carrier us-lte" bench/conn-memory.sh ...  (more flags for `imlab load`, its
#                                                 baseline run too)
#   TARGET=mosquitto bench/conn-memory.sh ...    (mosquitto instead, the generator speaking MQTT
#                                                 QoS 1; installed from Debian if missing)
#   WS=1 bench/conn-memory.sh ...                (over WebSocket: `imlab serve --ws-listen` and
#                                                 `load --ws /imlab`, or mosquitto's websockets
#                                                 listener and `--ws /mqtt`)
#   TLS_CERT=cert.pem TLS_KEY=key.pem bench/conn-memory.sh ...   (over TLS, either server; the
#                                                 generator trusts TLS_CERT: a self-signed leaf
#                                                 with basicConstraints CA:FALSE; mosquitto's
#                                                 user must be able to read TLS_KEY)
#
# Starts `imlab serve` on a free loopback port, ramps CLIENTS heartbeating clients with
# `imlab load` (one message a second in all, so the connections are idle), samples both
# processes' RSS once every client is connected, and prints a table. Uses target/release.
# The generator's bytes per client are its whole RSS over the clients, as the goal counts
# them; its baseline (the same load with 2 clients: code pages, runtime, histograms) is
# printed too, and the bytes per client above it. So is how many of link/symbol-order.txt's
# functions the binary has: the linker puts those first (build.rs), and a binary that has few
# of them maps several MB more of its code (bench/symbol-order.sh writes the file again).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-10000}
workers=${2:-1}
if [ -z "${IMLAB_BIN:-}" ]; then nice -n 10 cargo build --release --quiet; fi
bin=${IMLAB_BIN:-target/release/imlab}
out=$(mktemp -d)
trap 'kill $server_pid 2>/dev/null || true; rm -rf "$out"' EXIT

# shellcheck source=bench/lib/load-phase.sh
source bench/lib/load-phase.sh

ulimit -n 20000 2>/dev/null || true
load_flags=""
if [ "${TARGET:-imlab}" = mosquitto ]; then
    if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
        echo "mosquitto is not installed: installing it with apt-get install -y mosquitto" >&2
        apt-get install -y mosquitto >/dev/null 2>&1 || {
            apt-get update >/dev/null && apt-get install -y mosquitto >/dev/null
        }
    fi
    port=$(free_port)
    # As bench/vs-mosquitto.sh runs it: no persistence, anonymous, TCP_NODELAY.
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nset_tcp_nodelay true\n' \
        "$port" >"$out/mosquitto.conf"
    load_flags="--protocol mqtt --qos 1"
    if [ -n "${TLS_CERT:-}" ]; then
        printf 'certfile %s\nkeyfile %s\n' "$(realpath "$TLS_CERT")" "$(realpath "$TLS_KEY")" >>"$out/mosquitto.conf"
    fi
    if [ "${WS:-0}" = 1 ]; then
        # Debian's mosquitto 2.0.11 will not start with websockets listeners only: the plain
        # one above stays, unused.
        plain=$port
        port=$(free_port)
        while [ "$port" = "$plain" ]; do
            port=$(free_port)
        done
        printf 'listener %s 127.0.0.1\nprotocol websockets\n' "$port" >>"$out/mosquitto.conf"
        if [ -n "${TLS_CERT:-}" ]; then
            printf 'certfile %s\nkeyfile %s\n' "$(realpath "$TLS_CERT")" "$(realpath "$TLS_KEY")" >>"$out/mosquitto.conf"
        fi
        load_flags="$load_flags --ws /mqtt"
    fi
    "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$out/mosquitto.conf" >"$out/mosquitto.log" 2>&1 &
    server_pid=$!
    addr="127.0.0.1:$port"
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    if ! kill -0 $server_pid 2>/dev/null; then
        # mosquitto runs as its own user: a key only root may read stops it here.
        echo "mosquitto exited at start:" >&2
        cat "$out/mosquitto.log" >&2
        exit 1
    fi
else
    ws_flags=""
    if [ "${WS:-0}" = 1 ]; then ws_flags="--ws-listen 127.0.0.1:0"; fi
    if [ -n "${TLS_CERT:-}" ]; then ws_flags="$ws_flags --tls-cert $TLS_CERT --tls-key $TLS_KEY"; fi
    # shellcheck disable=SC2086
    $bin serve --listen 127.0.0.1:0 $ws_flags ${EXTRA_SERVE:-} >"$out/serve.out" 2>"$out/serve.err" &
    server_pid=$!
    for _ in $(seq 100); do grep -q listening "$out/serve.out" && break; sleep 0.1; done
    addr=$(awk '/listening:/ {print $2}' "$out/serve.out")
    if [ "${WS:-0}" = 1 ]; then
        for _ in $(seq 100); do grep -Eq "listening wss?:" "$out/serve.out" && break; sleep 0.1; done
        addr=$(awk '/listening wss?:/ {print $3}' "$out/serve.out")
        load_flags="--ws /imlab"
    fi
fi

if [ -n "${TLS_CERT:-}" ]; then load_flags="$load_flags --tls --ca $TLS_CERT"; fi
load_flags="$load_flags ${EXTRA_LOAD:-}"

# The generator's baseline: 2 clients, sampled after the same settling time.
# shellcheck disable=SC2086
$bin load --target "$addr" $load_flags --clients 2 --duration 6s --msg-rate 1 --drain 1s \
    --out "$out/base" >"$out/base.out" 2>&1 &
base_pid=$!
sleep 4
base_kb=$(rss_kb $base_pid)
wait $base_pid || true
server_before=$(rss_kb $server_pid)

ramp_s=$(( clients / 2000 + 2 ))
hold_s=$(( ramp_s + 8 ))
source_ips=""
if (( clients > 15000 )); then source_ips="--source-ips 127.0.0.2-127.0.0.5"; fi
# shellcheck disable=SC2086
$bin load --target "$addr" $load_flags --clients "$clients" --workers "$workers" $source_ips \
    --connect-rate 2000 --duration "${hold_s}s" --msg-rate 1 --drain 1s \
    --out "$out/load" >"$out/load.out" 2>&1 &
load_pid=$!
# Sampled 3 s into the send phase, once the ramp is over; the table says how many were in.
wait_for_send_phase "$out/load.out" $load_pid
sleep 3
server_after=$(rss_kb $server_pid)
# The load generator's RSS: the parent, plus its worker processes.
load_kb=0
for pid in $load_pid $(pgrep -P $load_pid || true); do
    load_kb=$(( load_kb + $(rss_kb "$pid" 2>/dev/null || echo 0) ))
done
open=$(ls /proc/$server_pid/fd | wc -l)
logged_in=$(logged_in_at_send "$out/load.out")
if [ -n "$logged_in" ] && (( logged_in < clients )); then
    echo "warning: only $logged_in of $clients clients were logged in when the sends began: the bytes per connection below are not the idle figure" >&2
fi
wait $load_pid || true

per_server=$(( (server_after - server_before) * 1024 / clients ))
per_load=$(( load_kb * 1024 / clients ))
per_load_above=$(( (load_kb - base_kb) * 1024 / clients ))
printf '%-34s %12s\n' "measure" "value"
printf '%-34s %12s\n' "server" "${TARGET:-imlab}$([ "${WS:-0}" = 1 ] && echo " (ws)")$([ -n "${TLS_CERT:-}" ] && echo " (tls)")"
printf '%-34s %12s\n' "clients" "$clients"
printf '%-34s %12s\n' "clients logged in at the send phase" "${logged_in:-?}"
printf '%-34s %12s\n' "server fds open at sample" "$open"
printf '%-34s %12s\n' "server RSS before (KiB)" "$server_before"
printf '%-34s %12s\n' "server RSS with clients (KiB)" "$server_after"
printf '%-34s %12s\n' "server bytes per connection" "$per_server"
printf '%-34s %12s\n' "load generator RSS (KiB)" "$load_kb"
printf '%-34s %12s\n' "load generator bytes per client" "$per_load"
printf '%-34s %12s\n' "load generator baseline (KiB)" "$base_kb"
printf '%-34s %12s\n' "  per client above the baseline" "$per_load_above"
if [ -f link/symbol-order.txt ] && command -v nm >/dev/null; then
    ordered=$(nm --defined-only "$bin" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u |
        grep -cxFf <(grep -v '^#' link/symbol-order.txt) || true)
    listed=$(grep -vc '^#' link/symbol-order.txt)
    printf '%-34s %12s\n' "link/symbol-order.txt functions" "${ordered:-0}/$listed"
    # Names with LLVM's numeric suffix (`write_str.5664`) change with nearly every build, and
    # a few std functions that run rarely are such; the warning counts the others.
    missing=$(grep -v '^#' link/symbol-order.txt | grep -vE '\.[0-9]+$' |
        grep -vxFf <(nm --defined-only "$bin" 2>/dev/null | awk 'NF == 3 { print $3 }') | wc -l || true)
    if (( missing > 0 )); then
        # 47 names gone cost the generator about 110 bytes a client at 10,000 (BENCHMARKS.md).
        echo "warning: $missing of link/symbol-order.txt's functions are not in $bin: the order is stale and the generator maps more of its code (bench/symbol-order.sh writes it again)" >&2
    fi
fi
grep -E "lost|connections" "$out/load.out" | head -5 || true
