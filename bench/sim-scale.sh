#!/usr/bin/env bash
# The simulator's cost as the city grows: scenarios/scale-100k.toml (four carriers, 2 simulated
# hours and 10 quiet minutes, a server crash at the hour) at 1,000, 10,000 and 100,000 devices.
# For each size: wall seconds, device-hours per wall second, peak RSS and bytes per device,
# and whether every run of that size gave the same trace hash (runs are separate processes).
#
#   bench/sim-scale.sh                        (run it under flock /tmp/imlab-bench.lock)
#   SIZES="1000 10000" REPEAT=3 SCENARIO=scenarios/scale-10k.toml bench/sim-scale.sh
#   IMLAB_BIN=/path/to/older/imlab bench/sim-scale.sh     (compare a build against another)
#
# Cost must grow linearly with size or better: device-hours per second should not fall (the
# growth column, the time per device-hour against the row above, at most 1.00x), and bytes per
# device should not rise, from one row to the next. REPEAT runs per size (default
# 1; the table shows the median wall and RSS). Uses target/release (built first). Runs in
# one process each, one at a time; nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=(${SIZES:-1000 10000 100000})
repeat=${REPEAT:-1}
scenario=${SCENARIO:-scenarios/scale-100k.toml}
if [ -z "${IMLAB_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${IMLAB_BIN:-target/release/imlab}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# growth: the time per device-hour against the row above (1.00 is linear, above it worse).
printf '%9s %9s %8s %15s %7s %10s %14s %6s %s\n' devices sim_h wall_s device_h_per_s growth rss_mb bytes_per_dev runs hashes
previous_rate=""
for n in "${sizes[@]}"; do
    : >"$tmp/walls"
    : >"$tmp/rss"
    : >"$tmp/hashes"
    sim_s=0
    for run in $(seq 1 "$repeat"); do
        /usr/bin/time -f '%e %M' -o "$tmp/time" "$bin" sim run "$scenario" --devices "$n" \
            >"$tmp/out" 2>"$tmp/err" || {
            echo "imlab sim run $scenario --devices $n failed:" >&2
            cat "$tmp/out" "$tmp/err" >&2
            exit 1
        }
        read -r wall rss_kb <"$tmp/time"
        echo "$wall" >>"$tmp/walls"
        echo "$rss_kb" >>"$tmp/rss"
        grep '^trace_hash:' "$tmp/out" | awk '{ print $2 }' >>"$tmp/hashes"
        sim_s=$(sed -nE 's/^wall: .* for ([0-9]+) simulated s.*/\1/p' "$tmp/out")
    done
    wall=$(median <"$tmp/walls")
    rss_kb=$(median <"$tmp/rss")
    distinct=$(sort -u "$tmp/hashes" | wc -l)
    hashes=$([ "$distinct" -eq 1 ] && echo "same ($(head -1 "$tmp/hashes"))" || echo "DIFFERENT: $(sort -u "$tmp/hashes" | tr '\n' ' ')")
    rate=$(awk -v n="$n" -v s="$sim_s" -v w="$wall" 'BEGIN { printf "%.3f", n * s / 3600 / w }')
    awk -v n="$n" -v s="$sim_s" -v w="$wall" -v q="$rate" -v p="$previous_rate" -v r="$rss_kb" -v k="$repeat" -v h="$hashes" 'BEGIN {
        g = (p == "") ? "-" : sprintf("%.2fx", p / q)
        printf "%9d %9.2f %8.1f %15.0f %7s %10.0f %14.0f %6d %s\n", n, s / 3600, w, q, g, r / 1024, r * 1024 / n, k, h
    }'
    previous_rate=$rate
done
