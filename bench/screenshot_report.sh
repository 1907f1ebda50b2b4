#!/usr/bin/env bash
# Render a run's report.html in headless Chromium and save a PNG screenshot, to check that the
# self-contained page (embedded plots, tables) renders without a network or a display.
#   bench/screenshot_report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
# Needs Debian's chromium: apt-get install -y chromium
set -euo pipefail
report=${1:?usage: bench/screenshot_report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]}
out=${2:-${report%.html}.png}
size=${3:-1200x2400}
[ -f "$report" ] || { echo "no such report: $report" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --screenshot="$(realpath -m "$out")" --window-size="${size/x/,}" \
  "file://$(realpath "$report")" 2>/dev/null
[ -s "$out" ] || { echo "chromium wrote no screenshot to $out" >&2; exit 1; }
echo "$out"
