#!/usr/bin/env bash
# Fuzzes with each planted bug in turn (imlab-sim's planted-bugs feature) and prints a table:
# the case that found it, scenarios per minute, shrink time, runs and the sizes before and
# after. The shrunk scenarios land in ${OUT:-/tmp/imlab-fuzz-planted}.
# Usage: bench/fuzz-planted.sh [BUDGET_PER_BUG, default 5m] [BUG...]
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock /tmp/imlab-bench.lock cargo run --release -q -p imlab-sim --features planted-bugs \
    --example fuzz_planted -- "${OUT:-/tmp/imlab-fuzz-planted}" "${1:-5m}" "${@:2}"
