#!/usr/bin/env bash
# Runs the service end to end on this machine: a local Postgres (started, or installed
# from Debian's packages), a database, migrations, `serve`, and a signed sample callback.
# Everything lives in ./local; Ctrl-C stops the service.
set -euo pipefail
cd "$(dirname "$0")/.."
admin=$(scripts/ensure-postgres.sh)
db_url=$(python3 -c "import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(u.urlunparse(p._replace(path='/taskrouter_summarizer')))" "$admin")
psql "$admin" -qAtc "SELECT 1 FROM pg_database WHERE datname='taskrouter_summarizer'" | grep -q 1 \
  || psql "$admin" -qc "CREATE DATABASE taskrouter_summarizer"

mkdir -p local
cat > local/config.toml <<CFG
[server]
listen = "127.0.0.1:3000"
public_url = "http://127.0.0.1:3000"
# The admin side (/readyz, /metrics, /api/*, /dashboard): local clients only.
admin_listen = "127.0.0.1:9090"
[queue]
path = "$PWD/local/queue"
[postgres]
url = "$db_url"
[twilio]
auth_token = "local-demo-token"
account_sid = "AC00000000000000000000000000000000"
workspace_sid = "WS00000000000000000000000000000000"
CFG

cargo build --release
bin=target/release/taskrouter-summarizer
export TASKROUTER_SUMMARIZER_CONFIG=$PWD/local/config.toml
$bin check-config
$bin migrate
$bin serve & pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' EXIT INT TERM
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:3000/healthz >/dev/null && break; sleep 0.2; done

echo; echo "== a signed sample callback (this is how TaskRouter posts):"
cmd=$($bin sample-callback)
echo "$cmd"
eval "$cmd"
sleep 1
echo; echo "== /readyz (on the admin listener, 127.0.0.1:9090):"; curl -s http://127.0.0.1:9090/readyz; echo
echo; echo "== the task row it produced:"
psql "$db_url" -c "SELECT sid, task_assignment_status, task_channel_unique_name, task_queue_name, task_created FROM tasks ORDER BY created_at DESC LIMIT 1"
echo; echo "Webhooks on http://127.0.0.1:3000, wallboard on http://127.0.0.1:9090/dashboard (config: local/config.toml). Ctrl-C to stop."
wait $pid
