#!/usr/bin/env bash
# Runs each fuzz target for N seconds (default 30), starting from the checked-in corpus, and
# fails on the first crash. Installs the nightly toolchain and cargo-fuzz when missing.
#
#   fuzz/smoke.sh [seconds]
#
# New inputs go to a temporary directory, so fuzz/corpus/ stays the small curated set; a crash
# is saved under fuzz/artifacts/<target>/ and cargo-fuzz prints the command that replays it.
set -euo pipefail

seconds="${1:-30}"
cd "$(dirname "$0")/.."

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in frame_decoder login; do
    echo "== $target: ${seconds}s"
    mkdir -p "$work/$target"
    cargo +nightly fuzz run "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
