#!/usr/bin/env bash
# Makes sure a Postgres server answers on 127.0.0.1:5432: starts the local cluster if
# it is stopped, installs Debian's postgresql package if there is none. Prints the
# admin URL to use (TEST_DATABASE_URL) on stdout; everything else goes to stderr.
set -euo pipefail
log() { echo "ensure-postgres: $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "no Postgres server found: installing Debian's postgresql package"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi

if ! ready; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$ver" ]; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    log "creating cluster $ver/main"
    $SUDO pg_createcluster "$ver" main >&2
  fi
  log "starting cluster $ver/main"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || true
  for _ in $(seq 1 60); do ready && break; sleep 0.5; done
fi
ready || { log "Postgres does not answer on 127.0.0.1:5432"; exit 1; }

# Prefer passwordless (trust) access; fresh Debian installs ask for a password over
# TCP, so give the postgres role one, known only to this machine's tests.
url="postgres://postgres@127.0.0.1:5432/postgres"
if ! psql "$url" -qAtc 'select 1' >/dev/null 2>&1; then
  pw="trs-local-$(hostname | md5sum | cut -c1-12)"
  log "the postgres role cannot log in over TCP without a password: setting one"
  log "(ALTER ROLE postgres PASSWORD 'trs-local-…', derived from this host's name, for the tests)"
  (cd / && $SUDO -u postgres psql -qAtc "ALTER ROLE postgres PASSWORD '$pw'" >&2 2>/dev/null) \
    || (cd / && runuser -u postgres -- psql -qAtc "ALTER ROLE postgres PASSWORD '$pw'" >&2)
  url="postgres://postgres:$pw@127.0.0.1:5432/postgres"
  psql "$url" -qAtc 'select 1' >/dev/null || { log "cannot log in to Postgres"; exit 1; }
fi
echo "$url"
