#!/usr/bin/env bash
# Makes sure the PostgreSQL server the tests use answers at 127.0.0.1:5432, starting the local
# cluster if it is installed but down.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && exit 0
  sleep 1
done
echo "PostgreSQL does not answer at 127.0.0.1:5432; set WALLWHALE_TEST_POSTGRES_URL to another server" >&2
exit 1
