#!/usr/bin/env bash
# Runs every test: unit, property and integration tests (real Postgres, real binary).
# Starts or installs a local Postgres first when none answers.
set -euo pipefail
cd "$(dirname "$0")/.."
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-$(scripts/ensure-postgres.sh)}"
cargo test --all-targets "$@"
