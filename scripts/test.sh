#!/usr/bin/env bash
# Sets up and runs every check and the whole test suite (what CI runs): static checks, proto lint
# and breaking-change check, generated-code drift (server, Python and TypeScript clients), migration
# drift, the Envoy config, the TypeScript client's tests under Node, the web console's unit and browser
# tests, then pytest on SQLite and PostgreSQL (the Envoy tests run the real Envoy).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

bash scripts/setup.sh
if [ -z "${WALLWHALE_TEST_POSTGRES_URL:-}" ]; then
  bash scripts/ensure_postgres.sh
fi
PY=.venv/bin/python

step() { echo; echo "== $*"; }

step "ruff"
.venv/bin/ruff check .
step "mypy --strict"
.venv/bin/mypy
step "buf lint"
npx --no-install buf lint
step "buf breaking (against ${WALLWHALE_BREAKING_AGAINST:=.git#branch=main})"
if git rev-parse --verify --quiet main >/dev/null; then
  npx --no-install buf breaking --against "$WALLWHALE_BREAKING_AGAINST"
else
  echo "no local main branch to compare with; skipped"
fi
step "generated stubs are up to date (server and Python client)"
$PY scripts/generate_protos.py --check
step "promtool: alert rules valid, and each alert's unit tests (firing and not)"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
step "docs/openapi.json is the document the protos make"
$PY scripts/openapi.py --check docs/openapi.json
step "envoy --mode validate (config rendered from envoy/envoy.template.yaml and the protos)"
$PY scripts/envoy_config.py --out-dir build/envoy --upstream 127.0.0.1:50051 --upstream 127.0.0.1:50052 \
  --cors-origin http://localhost:5173 --validate
step "TypeScript client: generated code up to date, type check, tests under Node against the real server"
generated=$(mktemp -d)
(cd clients/typescript && npx --no-install buf generate --template buf.gen.yaml -o "$generated" ../../proto)
if ! diff -r "$generated/src/gen" clients/typescript/src/gen; then
  echo "the TypeScript client's generated code is out of date: (cd clients/typescript && npm run generate)"
  exit 1
fi
rm -rf "$generated"
npm --prefix clients/typescript test
step "web console: generated code up to date, type check, unit tests, build, browser tests (Chromium) against the real stack"
generated=$(mktemp -d)
(cd web && npx --no-install buf generate --template buf.gen.yaml -o "$generated" ../proto)
if ! diff -r "$generated/src/gen" web/src/gen; then
  echo "the web console's generated code is out of date: (cd web && npm run generate)"
  exit 1
fi
rm -rf "$generated"
npm --prefix web test
npm --prefix web run build
npm --prefix web run e2e
step "pytest"
$PY -m pytest "$@"
echo "all checks passed in $(( $(date +%s) - started ))s"
