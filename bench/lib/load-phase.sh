# Sourced by bench/conn-memory.sh and bench/proxy-memory.sh: reading a process's memory, a free
# loopback port, and the `imlab load` run's send phase as its output says it.

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (at most 120 s) until the generator writing LOG (process PID) starts its send phase,
# which it says with "send at" once its ramp is over; exits the script with the generator's
# last lines if it ends first. A server slow to accept (mosquitto's TLS WebSocket listener
# took 15 s to take 10,000) is so measured after its ramp, not at a fixed time.
wait_for_send_phase() {
    local log=$1 pid=$2
    for _ in $(seq 1200); do
        grep -q "send at" "$log" 2>/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the generator ended before its send phase; it said:" >&2
            tail -5 "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
}

# How many clients were logged in when the send phase began (empty if LOG does not say).
logged_in_at_send() {
    grep -m1 -o "send at [0-9.]*s ([0-9]* clients logged in" "$1" | grep -o "([0-9]*" | tr -d '(' || true
}
