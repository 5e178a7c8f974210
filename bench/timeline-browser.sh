#!/usr/bin/env bash
# Opens the timeline of a planted-bug failure in headless Chromium (Debian's `chromium`) and
# checks what the browser rendered, not only that the file exists: after the page's script
# ran, the DOM holds the highlighted marks of the message that no_acked_loss names, inside
# the initial view, and the page says so. Writes a screenshot beside the page.
# Usage: bench/timeline-browser.sh [OUT_DIR, default /tmp/imlab-timeline]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/imlab-timeline}"
rm -rf "$out" && mkdir -p "$out"
cargo build --release -q
set +e
target/release/imlab sim run bench/timeline/planted-volatile.toml --plant volatile-store \
    --out "$out/run" --timeline > "$out/run.txt"
status=$?
set -e
[ "$status" = 1 ] || { echo "FAIL: the planted run exited $status, not 1"; exit 1; }
message=$(grep -o 'no_acked_loss: VIOLATED (message [^ ]*' "$out/run.txt" | awk '{print $NF}')
[ -n "$message" ] || { echo "FAIL: no no_acked_loss violation in $out/run.txt"; exit 1; }
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --user-data-dir="$out/profile" --window-size=1400,900)
page="file://$(realpath "$out/run/timeline.html")"
timeout 60 "${chrome[@]}" --dump-dom "$page" > "$out/dom.html" 2> "$out/chrome.log"
timeout 60 "${chrome[@]}" --screenshot="$out/timeline.png" "$page" 2>> "$out/chrome.log" >/dev/null
marks=$(grep -o "class=\"mark [a-z_]* highlight\"[^>]*data-label=\"[^\"]*$message[ \"]" "$out/dom.html" | wc -l)
in_view=$(grep -o '[0-9][0-9]* highlighted mark(s) in view' "$out/dom.html" | head -1 | awk '{print $1}')
echo "violated message: $message"
echo "highlighted marks of $message in the rendered SVG: $marks"
echo "highlighted marks in the initial view: ${in_view:-0}"
echo "screenshot: $out/timeline.png"
if [ "$marks" -ge 1 ] && [ "${in_view:-0}" -ge 1 ] && grep -q "Highlighted: message $message" "$out/dom.html"; then
    echo "ok: the browser shows $message highlighted"
else
    echo "FAIL: the rendered page does not show $message highlighted"; exit 1
fi
