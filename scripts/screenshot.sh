#!/usr/bin/env bash
# Makes docs/dashboard.png from a live demo: runs `demo` (local Postgres, the service,
# the simulated contact center: 8 hours of history written first, then live), waits
# until the history is in and the floor has run live for LIVE_MINUTES (default 3), and
# screenshots the wallboard in headless Chromium once it shows data (scripts/screenshot.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
port=${PORT:-3977}
live_minutes=${LIVE_MINUTES:-3}
log=$(mktemp /tmp/trs-demo.XXXXXX.log)
target/release/taskrouter-summarizer demo --port "$port" > "$log" 2>&1 & pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
echo "screenshot.sh: demo running (log: $log); waiting for its history"
for _ in $(seq 1 600); do
  grep -q "history written" "$log" && break
  kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 1
done
grep "history written" "$log" || { echo "screenshot.sh: the history was not written in 10 minutes"; exit 1; }
echo "screenshot.sh: live for $live_minutes minutes"
sleep $((live_minutes * 60))
# The demo prints the wallboard's link with its admin token.
url=$(grep -o "http://127.0.0.1:$port/dashboard?token=[0-9a-f]*" "$log" | head -n 1)
scripts/screenshot.py --height 1440 "$url" docs/dashboard.png
echo "wrote docs/dashboard.png"
