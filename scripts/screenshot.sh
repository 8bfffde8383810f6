#!/usr/bin/env bash
# Makes docs/dashboard.png: runs `demo` (local Postgres, the service, a simulated
# contact center), waits for data, and screenshots the wallboard in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
port=${PORT:-3977}
target/release/taskrouter-summarizer demo --port "$port" --rate 400 --duration 40 > /tmp/trs-demo.log 2>&1 & pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
sleep 30
# The demo prints the wallboard's link with its admin token.
url=$(grep -o "http://127.0.0.1:$port/dashboard?token=[0-9a-f]*" /tmp/trs-demo.log | head -n 1)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --window-size=1920,1080 --timeout=5000 \
  --screenshot="$PWD/docs/dashboard.png" "$url"
echo "wrote docs/dashboard.png"
