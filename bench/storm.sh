#!/usr/bin/env bash
# Reconnection storms, imlab serve against mosquitto, both driven by the same `imlab load`:
# CLIENTS clients log in at CONNECT_RATE a second, then the server is restarted (SIGTERM,
# started again at once on the same port) and every client comes back on its own backoff.
# One row per target with the ramp's length and login rate (until every client was in), the
# listen-queue overflows the kernel counted (nstat
# TcpExtListenOverflows: each one a SYN dropped and retried a second later) during the ramp
# and during the storm, connect latency, and the time from losing the connection to being
# logged in again (p50, p99, max: max is when the last client was back). Issue 15's storm
# goals are judged here.
#
#   flock /tmp/imlab-bench.lock bench/storm.sh
#   CLIENTS=19000 CONNECT_RATE=10000 REPEAT=3 SOMAXCONN=65535 BACKOFF=1s,30s,0s \
#     TARGETS="imlab-mem mosquitto-q1" IMLAB_BIN=... bench/storm.sh
#
# TARGETS may also name imlab-disk: `imlab serve --data-dir`, restarted on the same directory.
#
# BACKOFF is the clients' --reconnect-backoff (default 1s,30s,0s: all retry together, the
# harshest storm; 1s,30s,19s is the default policy's spread). SOMAXCONN=N sets net.core.somaxconn for the runs (restored at exit; needs root): the kernel
# caps every listen queue at it. Without it the machine's value is used and printed. mosquitto
# comes from Debian's package (installed if missing) and listens with its own backlog; imlab
# serve with --listen-backlog's default. With REPEAT=N each target runs N times, interleaved,
# and the median run (by time until all are back) is shown. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${CLIENTS:-19000}
connect_rate=${CONNECT_RATE:-10000}
repeat=${REPEAT:-1}
# Every device retries 1 s after the drop, without jitter: the whole storm in one burst, so
# the time until all are back measures the server, not the clients' policy.
backoff=${BACKOFF:-1s,30s,0s}
read -r -a targets <<<"${TARGETS:-imlab-mem mosquitto-q1}"

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    echo "mosquitto is not installed: installing it with apt-get install -y mosquitto" >&2
    apt-get install -y mosquitto >/dev/null 2>&1 || {
        apt-get update >/dev/null && apt-get install -y mosquitto >/dev/null
    }
fi
command -v nstat >/dev/null || {
    echo "nstat is missing: installing iproute2" >&2
    apt-get install -y iproute2 >/dev/null
}
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if [ -z "${IMLAB_BIN:-}" ]; then nice -n 10 cargo build --release --quiet; fi
bin=${IMLAB_BIN:-target/release/imlab}
tmp=$(mktemp -d)
server_pid=""
old_somaxconn=$(cat /proc/sys/net/core/somaxconn)
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    if [ -n "${SOMAXCONN:-}" ]; then sysctl -qw net.core.somaxconn="$old_somaxconn" || true; fi
    if [ -n "${KEEP:-}" ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
if [ -n "${SOMAXCONN:-}" ]; then sysctl -qw net.core.somaxconn="$SOMAXCONN"; fi
somaxconn=$(cat /proc/sys/net/core/somaxconn)
ulimit -n 20000
export NSTAT_HISTORY=$tmp/nstat.history

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Listen-queue overflows since the last call (the first call starts the count).
overflows() { nstat -z TcpExtListenOverflows | awk '/TcpExtListenOverflows/ {print $2}'; }

# Starts target $1 on 127.0.0.1:$port; sets server_pid and load_flags.
start_target() {
    case $1 in
    imlab-mem)
        $bin serve --listen "127.0.0.1:$port" --max-connections $((clients + 1000)) \
            --stats-every 0s >"$tmp/serve.out" 2>"$tmp/serve.err" &
        server_pid=$!
        load_flags=""
        ;;
    imlab-disk)
        # The same directory before and after the restart: the clients come back to a server
        # that reads every user's state from disk on its first touch.
        $bin serve --listen "127.0.0.1:$port" --max-connections $((clients + 1000)) \
            --data-dir "$tmp/data" --stats-every 0s >"$tmp/serve.out" 2>"$tmp/serve.err" &
        server_pid=$!
        load_flags=""
        ;;
    mosquitto-q1)
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n' "$port" \
            >"$tmp/mosquitto.conf"
        "$mosquitto_bin" -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
        server_pid=$!
        load_flags="--protocol mqtt --qos 1"
        ;;
    *) echo "unknown target $1 (imlab-mem, imlab-disk, mosquitto-q1)" >&2; exit 2 ;;
    esac
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
        sleep 0.1
    done
    echo "$1 did not start on port $port" >&2
    exit 1
}

stop_target() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# One storm against target $1; prints "ramp_overflows storm_overflows connect_p99 connect_max
# back_p50 back_p99 back_max back_n ramp_s".
storm() {
    port=$(free_port)
    rm -rf "$tmp/data"
    start_target "$1"
    rm -rf "$tmp/run"
    overflows >/dev/null
    # Eight source addresses: a run leaves its clients' ports in TIME_WAIT for a minute, and
    # from one address the next run's clients would find too few free (28,232 in the default
    # range), fail to connect and wait out a backoff, a ramp slowed by the rig itself.
    # shellcheck disable=SC2086
    $bin load --target "127.0.0.1:$port" $load_flags --source-ips 127.0.0.2-127.0.0.9 \
        --clients "$clients" \
        --connect-rate "$connect_rate" --duration 40s --msg-rate 0 --drain 1s \
        --reconnect-wait 60s --reconnect-backoff "$backoff" --out "$tmp/run" >"$tmp/load.out" 2>&1 &
    local load_pid=$! wall0
    wall0=$(date +%s)
    # The ramp ends when the send phase starts (every client logged in).
    until grep -q "send at" "$tmp/load.out" 2>/dev/null; do
        if ! kill -0 $load_pid 2>/dev/null || (( $(date +%s) - wall0 > 120 )); then
            echo "  $1: the ramp did not finish; the generator said:" >&2
            tail -3 "$tmp/load.out" >&2
            kill $load_pid 2>/dev/null || true
            stop_target
            echo "- - - - - - - - -"
            return
        fi
        sleep 0.1
    done
    # The ramp's length: from the start until every client was logged in.
    local ramp_s
    ramp_s=$(grep -o 'send at [0-9.]*s' "$tmp/load.out" | head -1 | tr -dc '0-9.')
    sleep 2
    local ramp
    ramp=$(overflows)
    stop_target
    start_target "$1"
    while kill -0 $load_pid 2>/dev/null; do
        if (( $(date +%s) - wall0 > 180 )); then kill $load_pid; fi
        sleep 0.2
    done
    wait $load_pid || true
    local storm_overflows
    storm_overflows=$(overflows)
    stop_target
    if [ ! -f "$tmp/run/results.json" ]; then
        echo "  $1: no results; the generator said:" >&2
        tail -3 "$tmp/load.out" >&2
        echo "$ramp $storm_overflows - - - - - - $ramp_s"
        return
    fi
    python3 - "$tmp/run/results.json" "$ramp" "$storm_overflows" "$ramp_s" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
c, b = l["connect"], l["reconnect"]
print(sys.argv[2], sys.argv[3], f'{c["p99"]:.0f} {c["max"]:.0f}',
      f'{b["p50"] / 1e3:.2f} {b["p99"] / 1e3:.2f} {b["max"] / 1e3:.2f} {b["count"]}', sys.argv[4])
PY
}

declare -A cell
echo "storms: $clients clients at $connect_rate connects/s, then a server restart" \
    "(backoff $backoff, net.core.somaxconn $somaxconn, repeat $repeat)" >&2
for i in $(seq "$repeat"); do
    for target in "${targets[@]}"; do
        line=$(storm "$target")
        echo "  $target #$i: $line" >&2
        cell[$target]+="$line;"
    done
done

# The median run by the time until the last client was back (the upper median for an even
# count).
median() { tr ';' '\n' <<<"$1" | grep . | sort -n -k7 | awk '{a[NR]=$0} END {print a[int(NR/2)+1]}'; }

echo
echo "reconnection storm: $clients clients, ramp at $connect_rate connects/s, then a restart;" \
    "backoff $backoff; somaxconn $somaxconn; median of $repeat by all_back_s"
printf '%-13s %7s %12s %13s %14s %12s %12s %11s %11s %11s %8s\n' target ramp_s logins/s \
    ramp_overflow storm_overflow connect_p99 connect_max back_p50_s back_p99_s all_back_s back_n
for target in "${targets[@]}"; do
    read -r ramp storm_o c99 cmax b50 b99 bmax bn ramp_s <<<"$(median "${cell[$target]}")"
    rate=$(python3 -c "print(f'{$clients / $ramp_s:.0f}')" 2>/dev/null || echo -)
    printf '%-13s %7s %12s %13s %14s %12s %12s %11s %11s %11s %8s\n' "$target" "$ramp_s" "$rate" \
        "$ramp" "$storm_o" "${c99}ms" "${cmax}ms" "$b50" "$b99" "$bmax" "$bn"
done
