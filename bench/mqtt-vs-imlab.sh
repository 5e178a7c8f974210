#!/usr/bin/env bash
# The same `imlab load` against mosquitto (MQTT 3.1.1, QoS 0 and QoS 1) and against
# `imlab serve`: for each, the highest message rate whose deliver p99 stays under 10 ms, with
# the ratio to imlab's; then the load generator's memory per idle MQTT client.
#
#   bench/mqtt-vs-imlab.sh                 (run it under flock /tmp/imlab-bench.lock)
#   P99_MS=10 DURATION=5s CLIENTS=1000 IDLE_CLIENTS="2000 10000" IMLAB_BIN=... bench/mqtt-vs-imlab.sh
#
# Installs mosquitto from Debian's packages if it is missing (apt-get install -y mosquitto,
# as root) and starts its own mosquitto on a free loopback port (no persistence, anonymous),
# never the system's service. Every run: CLIENTS clients, 200-byte bodies, one-to-one, open
# loop, DURATION of sends after the ramp, 2 s drain; a fresh broker or server per run
# (mosquitto with set_tcp_nodelay true, as imlab serve sets TCP_NODELAY). The
# rate search doubles from 1,000/s until p99 >= P99_MS (or a loss), then bisects 3 times.
# Uses target/release. Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."
p99_ms=${P99_MS:-10}
duration=${DURATION:-5s}
clients=${CLIENTS:-1000}
idle_clients=(${IDLE_CLIENTS:-2000 10000})

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    echo "mosquitto is not installed: installing it with apt-get install -y mosquitto" >&2
    apt-get install -y mosquitto >/dev/null 2>&1 || {
        apt-get update >/dev/null && apt-get install -y mosquitto >/dev/null
    }
fi
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
echo "mosquitto: $("$mosquitto_bin" -h 2>/dev/null | head -1)" >&2
# IMLAB_BIN=PATH uses that binary instead of building target/release/imlab.
if [ -z "${IMLAB_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${IMLAB_BIN:-target/release/imlab}
tmp=$(mktemp -d)
server_pid=""
trap 'if [ -n "$server_pid" ]; then kill $server_pid 2>/dev/null || true; fi; rm -rf "$tmp"' EXIT
# Both the broker and the generator hold one descriptor per client.
ulimit -n 65536 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts the target of kind $1 (mosquitto or imlab); sets server_pid and addr.
start_target() {
    if [ "$1" = imlab ]; then
        $bin serve --listen 127.0.0.1:0 >"$tmp/serve.out" 2>"$tmp/serve.err" &
        server_pid=$!
        for _ in $(seq 100); do grep -q listening "$tmp/serve.out" && break; sleep 0.1; done
        addr=$(awk '/listening:/ {print $2}' "$tmp/serve.out")
    else
        local port
        port=$(free_port)
        # set_tcp_nodelay: without it mosquitto's small writes wait on Nagle's algorithm
        # (tens of ms at low rates); imlab serve and the generator set TCP_NODELAY too.
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nset_tcp_nodelay true\n' \
            "$port" >"$tmp/mosquitto.conf"
        "$mosquitto_bin" -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
        server_pid=$!
        addr="127.0.0.1:$port"
        for _ in $(seq 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
    fi
}

stop_target() {
    kill $server_pid 2>/dev/null || true
    wait $server_pid 2>/dev/null || true
    server_pid=""
}

# One run of target $1 with protocol flags $2 at rate $3; prints "p99 lost dup delivered".
run_at() {
    start_target "$1"
    # shellcheck disable=SC2086
    $bin load --target "$addr" $2 --clients "$clients" --connect-rate 5000 \
        --duration "$duration" --msg-rate "$3" --body-bytes 200 --drain 2s \
        --reconnect-wait 5s --out "$tmp/run" >"$tmp/load.out" 2>&1 || true
    stop_target
    python3 - "$tmp/run/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["messages"]
print(r["latency_ms"]["deliver"]["p99"], m["lost"] + m["lost_allowed"], m["duplicated"],
      m["delivered"], m["expected_deliveries"])
PY
}

# Highest rate with p99 under the bound and every delivery made; prints "rate p99".
search() {
    local kind=$1 flags=$2 good=0 good_p99=- bad=0 rate=1000
    while true; do
        read -r p99 lost dup delivered expected < <(run_at "$kind" "$flags" $rate)
        echo "  $kind $flags rate $rate: deliver p99 $p99 ms, lost $lost, dup $dup," \
            "delivered $delivered/$expected" >&2
        if python3 -c "import sys; sys.exit(0 if $p99 < $p99_ms and $lost == 0 and $dup == 0 and $delivered == $expected else 1)"; then
            good=$rate; good_p99=$p99
            if (( bad == 0 )); then rate=$(( rate * 2 )); else rate=$(( (good + bad) / 2 )); fi
        else
            bad=$rate
            rate=$(( (good + bad) / 2 ))
        fi
        if (( bad > 0 )) && (( bad - good <= bad / 8 )); then break; fi
        if (( rate > 1000000 || rate < 100 )); then break; fi
    done
    echo "$good $good_p99"
}

echo "searching (each line one run of $clients clients, $duration):" >&2
read -r imlab_rate imlab_p99 < <(search imlab "")
read -r q0_rate q0_p99 < <(search mosquitto "--protocol mqtt --qos 0")
read -r q1_rate q1_p99 < <(search mosquitto "--protocol mqtt --qos 1")

ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else '-')"; }
echo
echo "highest rate with deliver p99 < ${p99_ms} ms ($clients clients, 200-byte bodies, one-to-one, open loop, $duration)"
printf '%-28s %12s %10s %14s\n' target "msgs/s" "p99 ms" "vs imlab serve"
printf '%-28s %12s %10s %14s\n' "imlab serve (memory store)" "$imlab_rate" "$imlab_p99" "1.00"
printf '%-28s %12s %10s %14s\n' "mosquitto, MQTT QoS 0" "$q0_rate" "$q0_p99" "$(ratio "$q0_rate" "$imlab_rate")"
printf '%-28s %12s %10s %14s\n' "mosquitto, MQTT QoS 1" "$q1_rate" "$q1_p99" "$(ratio "$q1_rate" "$imlab_rate")"

# Memory per idle MQTT client in the generator: RSS at two client counts, the slope between.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
echo
printf '%-16s %20s\n' "idle clients" "generator RSS (KiB)"
declare -a rss
for n in "${idle_clients[@]}"; do
    start_target mosquitto
    hold_s=$(( n / 2000 + 10 ))
    $bin load --target "$addr" --protocol mqtt --qos 1 --clients "$n" --connect-rate 2000 \
        --duration "${hold_s}s" --msg-rate 1 --drain 0s >"$tmp/idle.out" 2>&1 &
    load_pid=$!
    # Sample once every client is in: the live line says so when the send phase starts.
    for _ in $(seq 600); do grep -q "send at" "$tmp/idle.out" && break; sleep 0.1; done
    sleep 2
    kb=$(rss_kb $load_pid)
    wait $load_pid || true
    stop_target
    rss+=("$kb")
    printf '%-16s %20s\n' "$n" "$kb"
done
if (( ${#idle_clients[@]} >= 2 )); then
    first=${idle_clients[0]}; last=${idle_clients[-1]}
    per=$(( (rss[-1] - rss[0]) * 1024 / (last - first) ))
    echo "bytes per idle MQTT client (slope $first -> $last): $per"
fi
