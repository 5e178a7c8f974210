#!/usr/bin/env bash
# Every shipped scenario over many seeds: the table of issue 10 ("0 failed").
#
#   bench/sweep-all.sh [SEEDS] [SCENARIO...]     (default: 1..200, every scenarios/*.toml
#                                                 but the heartbeat-compare template)
#   JOBS=2 OUT=sweeps bench/sweep-all.sh 1..20 scenarios/server-crash.toml
#   IMLAB_BIN=sweeps/scale-10k/imlab bench/sweep-all.sh     (every scenario on that build)
#
# For each scenario: `imlab sim sweep FILE --seeds SEEDS --jobs $JOBS`, then one row with the
# seeds run, the seeds failed and the wall time. Failing seeds and their replay commands are
# kept in the sweep's own output under $OUT (default: a temporary folder, printed at the end).
# scale-10k and scale-100k take minutes per seed: name them explicitly to include them, or run
# them with bench/sweep-resumable.sh, which keeps finished shards across interruptions.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1..200}
shift || true
scenarios=("$@")
if (( ${#scenarios[@]} == 0 )); then
    # The two issue-10 classes first, then the rest in name order.
    for file in scenarios/gprs-weak-link.toml scenarios/volatile-crash-storm.toml scenarios/*.toml; do
        [[ " ${scenarios[*]} " == *" $file "* ]] && continue
        case "$file" in
            */heartbeat-compare.toml | */scale-10k.toml | */scale-100k.toml) ;;
            *) scenarios+=("$file") ;;
        esac
    done
fi
jobs=${JOBS:-$(nproc)}
# A copy of the binary, so a rebuild during a long table does not change it half-way
# (IMLAB_BIN: that binary instead of a release build, e.g. the one a resumable sweep keeps).
if [ -z "${IMLAB_BIN:-}" ]; then cargo build --release --quiet; fi
bin=$(mktemp)
cp "${IMLAB_BIN:-target/release/imlab}" "$bin"
chmod +x "$bin"
trap 'rm -f "$bin"' EXIT
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"

printf '%-24s %8s %8s %9s\n' scenario seeds failed wall_s
status=0
for file in "${scenarios[@]}"; do
    name=$(basename "$file" .toml)
    start_ns=$(date +%s%N)
    "$bin" sim sweep "$file" --seeds "$seeds" --jobs "$jobs" >"$out/$name.txt" 2>&1 || status=1
    wall_s=$(( ($(date +%s%N) - start_ns) / 1000000000 ))
    summary=$(grep -E '^seeds: [0-9]+, failed: [0-9]+' "$out/$name.txt" | tail -n 1 || true)
    n_seeds=$(sed -E 's/^seeds: ([0-9]+), failed: ([0-9]+).*/\1/' <<<"$summary")
    n_failed=$(sed -E 's/^seeds: ([0-9]+), failed: ([0-9]+).*/\2/' <<<"$summary")
    printf '%-24s %8s %8s %9s\n' "$name" "${n_seeds:-?}" "${n_failed:-?}" "$wall_s"
done
echo "sweep outputs: $out"
exit "$status"
