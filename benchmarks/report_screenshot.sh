#!/usr/bin/env bash
# Render a kgfact report in headless Chromium and save a screenshot of the page.
#   bash benchmarks/report_screenshot.sh runs/quickstart/report.html report.png [WIDTH,HEIGHT]
# Needs chromium (Debian: apt-get install -y chromium).
set -euo pipefail
html="$(realpath "$1")"
out="$(realpath -m "$2")"
size="${3:-1200,6000}"
browser="$(command -v chromium || command -v chromium-browser)" || {
  echo "report_screenshot: chromium is not installed" >&2; exit 2; }
profile="$(mktemp -d)"  # a throwaway profile: never touch the user's
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --window-size="$size" --screenshot="$out" "file://$html" >/dev/null 2>&1
test -s "$out"
echo "$out"
