#!/usr/bin/env bash
# Builds imlab with profile-guided optimization (PGO) into target/pgo/release/imlab.
#
#   bench/pgo-build.sh                 (about 15 minutes on 2 cores)
#   IMLAB_BIN=target/pgo/release/imlab bench/sim-scale.sh     (then measure it like any build)
#
# Three steps: an instrumented release build (target/pgo-gen, about 5 GB, kept so that the
# next run of the script reuses it), a training run of it, and the release build again with
# the merged profile. The training is what imlab spends its CPU on,
# on inputs of its own, not the ones README measures: `sim run` of the scale scenario's shape
# at 3,000 devices and of four small shipped scenarios, and `serve` with `load` at 4,000
# messages a second for 8 seconds on loopback. The plain `cargo build --release` stays as it
# was (target/release); this build is an extra, not the default.
#
# Needs llvm-profdata of the compiler's own LLVM version: rustup's llvm-tools component,
# installed here when missing (`rustup component add llvm-tools`).
set -euo pipefail
cd "$(dirname "$0")/.."

sysroot=$(rustc --print sysroot)
find_profdata() { find "$sysroot" -name llvm-profdata -type f 2>/dev/null | head -1; }
profdata=$(find_profdata)
if [ -z "$profdata" ]; then
    echo "llvm-profdata is missing: rustup component add llvm-tools" >&2
    rustup component add llvm-tools >&2
    profdata=$(find_profdata)
fi
[ -n "$profdata" ] || { echo "no llvm-profdata under $sysroot after installing llvm-tools" >&2; exit 1; }

# RUSTFLAGS replaces .cargo/config.toml's flags: keep its `--cfg tokio_unstable`, without which
# the simulator refuses to build (its replays need it).
base_flags="--cfg tokio_unstable"

work=$(mktemp -d)
raw="$work/raw"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "1/3 instrumented build (target/pgo-gen)" >&2
# No directory in the flag, so the flags and so this build stay the same from one run of the
# script to the next (cargo rebuilds nothing); LLVM_PROFILE_FILE says where profiles go.
# The build scripts and proc macros are instrumented too and write profiles wherever they
# run (the workspace, the registry's sources): into the scratch directory instead, unused.
LLVM_PROFILE_FILE="$work/build/%p-%m.profraw" RUSTFLAGS="$base_flags -Cprofile-generate" \
    cargo build --release -p imlab --quiet --target-dir target/pgo-gen
gen=target/pgo-gen/release/imlab
export LLVM_PROFILE_FILE="$raw/imlab-%p-%m.profraw"

echo "2/3 training" >&2
"$gen" sim run scenarios/scale-100k.toml --devices 3000 --duration 1h --out "$work/sim" >/dev/null
for scenario in server-crash cmcc-3g-nat us-lte-groups offline-push; do
    "$gen" sim run "scenarios/$scenario.toml" --seed 11 --out "$work/sim" >/dev/null
done
"$gen" serve --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
for _ in $(seq 100); do grep -q listening "$work/serve.out" && break; sleep 0.1; done
addr=$(awk '/listening:/ {print $2}' "$work/serve.out")
[ -n "$addr" ] || { echo "the instrumented server did not start:" >&2; cat "$work/serve.err" >&2; exit 1; }
"$gen" load --target "$addr" --clients 500 --duration 8s --msg-rate 4000 --drain 2s \
    --out "$work/load" >/dev/null
# SIGTERM: the server shuts down and writes its profile on the way out.
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
unset LLVM_PROFILE_FILE
mkdir -p target/pgo
"$profdata" merge -o "$work/merged.profdata" "$raw"
# Named by its content: cargo sees the flags change (and rebuilds) exactly when the profile did.
profile="$PWD/target/pgo/imlab-$(sha256sum "$work/merged.profdata" | cut -c1-16).profdata"
cp "$work/merged.profdata" "$profile"

echo "3/3 optimized build (target/pgo)" >&2
RUSTFLAGS="$base_flags -Cprofile-use=$profile" \
    cargo build --release -p imlab --quiet --target-dir target/pgo
echo "built target/pgo/release/imlab (profile $profile)"
