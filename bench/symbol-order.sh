#!/usr/bin/env bash
# Writes link/symbol-order.txt: every function of the release binary that `imlab load` runs,
# in the order it first runs them. build.rs hands the file to the linker (lld's
# `--symbol-ordering-file`) for release builds of `imlab` on x86_64 Linux, so those functions
# sit together at the front of the binary's code instead of spread over its 9.6 MB.
#
#   bench/symbol-order.sh          (about 3 minutes: a release build, then four short runs)
#
# Why: the kernel maps a file's pages around each page fault (fault-around, 64 KiB), so
# a process that runs 1.7 MB of functions scattered over the code maps most of it: the
# generator's 2-client baseline held 5.4 MB of the binary's code in its RSS, and with the
# order 1.9 MB (BENCHMARKS.md, "The generator's code together"). The generator's bytes a client are its RSS over
# its clients (issue 15), and at 19,000 clients 3.5 MB is 180 bytes of each.
#
# How: `valgrind --tool=callgrind` records every function each run executes (sampling with
# perf misses the ones that run once, and each of those maps 64 KiB around it). The runs,
# on loopback, each bounded in time: `imlab load` in imlab's protocol against `imlab serve`,
# idle (300 clients over two source addresses, as bench/conn-memory.sh runs 19,000) and
# sending (200 clients at 500 msg/s), then in MQTT QoS 1 against mosquitto, idle and
# sending. Installs valgrind and mosquitto from Debian if missing.
#
# The names are the release build's symbols. A name the linker does not find (a function
# renamed, or inlined away since) is skipped without a word, so a stale file only orders
# less; bench/conn-memory.sh prints how many of the file's names the measured binary has.
# Run this again after large changes to the generator's or the client core's code.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in valgrind mosquitto; do
    if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then
        echo "$tool is not installed: installing it with apt-get install -y $tool" >&2
        apt-get install -y "$tool" >/dev/null 2>&1 || {
            apt-get update >/dev/null && apt-get install -y "$tool" >/dev/null
        }
    fi
done

nice -n 10 cargo build --release --quiet
bin=$PWD/target/release/imlab
out=$(mktemp -d)
server_pid=""
broker_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; fi
    rm -rf "$out"
}
trap cleanup EXIT
ulimit -n 20000 2>/dev/null || true

"$bin" serve --listen 127.0.0.1:0 >"$out/serve.out" 2>"$out/serve.err" &
server_pid=$!
for _ in $(seq 100); do grep -q listening "$out/serve.out" && break; sleep 0.1; done
imlab_addr=$(awk '/listening:/ {print $2}' "$out/serve.out")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nset_tcp_nodelay true\n' \
    "$port" >"$out/mosquitto.conf"
"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$out/mosquitto.conf" >"$out/mosquitto.log" 2>&1 &
broker_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
mqtt_addr="127.0.0.1:$port"

# One callgrind run of `imlab load`: its name, then the load's flags.
record() {
    local name=$1
    shift
    echo "recording $name" >&2
    (cd "$out" && timeout 300 valgrind --tool=callgrind --demangle=no \
        --callgrind-out-file="$out/$name.callgrind" \
        "$bin" load "$@" --connect-rate 2000 --duration 8s --drain 1s --out "$out/$name" \
        >"$out/$name.out" 2>"$out/$name.valgrind") || {
        echo "the $name run failed:" >&2
        tail -5 "$out/$name.out" "$out/$name.valgrind" >&2
        exit 1
    }
}
record imlab-idle --target "$imlab_addr" --clients 300 --msg-rate 1 --source-ips 127.0.0.2-127.0.0.3
record imlab-sending --target "$imlab_addr" --clients 200 --msg-rate 500
record mqtt-idle --target "$mqtt_addr" --protocol mqtt --qos 1 --clients 300 --msg-rate 1 \
    --source-ips 127.0.0.2-127.0.0.3
record mqtt-sending --target "$mqtt_addr" --protocol mqtt --qos 1 --clients 200 --msg-rate 500

mkdir -p link
python3 - "$bin" "$out"/imlab-idle.callgrind "$out"/imlab-sending.callgrind \
    "$out"/mqtt-idle.callgrind "$out"/mqtt-sending.callgrind >link/symbol-order.txt <<'PY'
import re, subprocess, sys

binary, profiles = sys.argv[1], sys.argv[2:]
# The binary's function symbols: only names it has are written.
nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
functions = {line.split()[2] for line in nm.stdout.splitlines()
             if len(line.split()) == 3 and line.split()[1] in "tTiWw"}

compressed = re.compile(r"\((\d+)\)(?: (.*))?$")

def named(table, text):
    """callgrind's name compression: "(id) name" defines an id, "(id)" refers to it."""
    match = compressed.match(text)
    if not match:
        return text
    if match.group(2) is not None:
        table[match.group(1)] = match.group(2)
    return table.get(match.group(1))

order, seen = [], set()
for path in profiles:
    objects, names = {}, {}
    obj = called_obj = None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if line.startswith("ob="):
            obj, called_obj = named(objects, line[3:]), None
            continue
        if line.startswith("cob="):
            called_obj = named(objects, line[4:])
            continue
        if line.startswith("fn="):
            function, in_obj = named(names, line[3:]), obj
            called_obj = None
        elif line.startswith("cfn="):
            function, in_obj = named(names, line[4:]), called_obj or obj
        else:
            continue
        if in_obj == binary and function in functions and function not in seen:
            seen.add(function)
            order.append(function)

print("# Functions of target/release/imlab that `imlab load` runs, in the order it first runs")
print("# them; build.rs passes this file to the linker. Written by bench/symbol-order.sh.")
for function in order:
    print(function)
print(f"{len(order)} functions", file=sys.stderr)
PY
echo "wrote link/symbol-order.txt ($(grep -vc '^#' link/symbol-order.txt) functions); rebuild to use it" >&2
