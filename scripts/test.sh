#!/usr/bin/env bash
# Runs every test: unit, property and integration tests (real Postgres, real binary).
# Starts or installs a local Postgres first when none answers.
set -euo pipefail
cd "$(dirname "$0")/.."
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-$(scripts/ensure-postgres.sh)}"
# The wallboard test drives Debian's Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  echo "test.sh: installing Debian's chromium for the wallboard test" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; }
fi
# The proxy test drives Debian's nginx (started by the test itself, never as a service).
if ! [ -x /usr/sbin/nginx ]; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  echo "test.sh: installing Debian's nginx-light for the proxy test" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null; }
fi
cargo test --all-targets "$@"
