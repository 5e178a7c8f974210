#!/usr/bin/env bash
# A sweep too long for one sitting (200 seeds of scale-10k take about 5 hours on 2 cores), in
# shards that survive an interruption: runs each shard of SEEDS that OUT does not hold yet,
# one after another, then merges them all.
#
#   bench/sweep-resumable.sh SCENARIO [SEEDS] [SHARDS]      (defaults: 1..200, 20)
#   OUT=sweeps/scale-10k JOBS=2 bench/sweep-resumable.sh scenarios/scale-10k.toml
#
# OUT (default `sweeps/NAME`) keeps the binary that runs the sweep (OUT/imlab, copied from
# IMLAB_BIN or a fresh release build the first time), each finished shard (OUT/sK, with its
# sweep.csv and sweep.json) and its log. Run the same command again after an interruption (a
# session's end, a reboot): finished shards are kept, the interrupted one runs again from its
# first seed, and every shard runs on the same build (`sweep merge` refuses mixed ones). When
# every shard is there: `imlab sim sweep merge` into OUT/merged and its summary; exit 1 if a
# seed failed. MAX_SHARDS=K stops after K shards this time (to fit a time slot).
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: bench/sweep-resumable.sh SCENARIO [SEEDS] [SHARDS]}
seeds=${2:-1..200}
shards=${3:-20}
name=$(basename "$scenario" .toml)
out=${OUT:-sweeps/$name}
jobs=${JOBS:-$(nproc)}
max_shards=${MAX_SHARDS:-$shards}
mkdir -p "$out"
bin="$out/imlab"
if [ ! -x "$bin" ]; then
    if [ -z "${IMLAB_BIN:-}" ]; then cargo build --release --quiet; fi
    cp "${IMLAB_BIN:-target/release/imlab}" "$bin.tmp"
    mv "$bin.tmp" "$bin"
fi
echo "sweep of $scenario, seeds $seeds in $shards shards, by $("$bin" --version)"

ran=0
for i in $(seq 0 $((shards - 1))); do
    dir="$out/s$i"
    if [ -f "$dir/sweep.json" ]; then continue; fi
    if (( ran >= max_shards )); then break; fi
    rm -rf "$dir.partial"
    start_ns=$(date +%s%N)
    status=0
    "$bin" sim sweep "$scenario" --seeds "$seeds" --shard "$i/$shards" --jobs "$jobs" \
        --out "$dir.partial" >"$out/s$i.log" 2>&1 || status=$?
    # 0: every seed held; 1: one failed (its replay command is in the log). Anything else
    # (a bad argument, a crash) leaves no shard behind.
    if (( status > 1 )) || [ ! -f "$dir.partial/sweep.json" ]; then
        echo "shard $i/$shards: imlab sim sweep exited with $status; see $out/s$i.log" >&2
        exit 2
    fi
    mv "$dir.partial" "$dir"
    ran=$((ran + 1))
    printf 'shard %s/%s: %s (%s s)\n' "$i" "$shards" \
        "$(grep -E '^seeds: ' "$out/s$i.log" | tail -n 1)" \
        $(( ($(date +%s%N) - start_ns) / 1000000000 ))
done

done_shards=$(find "$out" -maxdepth 2 -name sweep.json -path "$out/s*/sweep.json" | wc -l)
if (( done_shards < shards )); then
    echo "$done_shards of $shards shards done; run the same command again for the rest"
    exit 0
fi
rm -rf "$out/merged"
dirs=()
for i in $(seq 0 $((shards - 1))); do dirs+=("$out/s$i"); done
status=0
"$bin" sim sweep merge "${dirs[@]}" --out "$out/merged" || status=$?
exit "$status"
