#!/usr/bin/env bash
# Sets up and runs WallWhale on SQLite (data in ./var): migrates, creates the first admin on an
# empty database (its API key is printed once), serves gRPC until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh >/dev/null
export WALLWHALE_DATA_DIR=${WALLWHALE_DATA_DIR:-var}
export WALLWHALE_GRPC_HOST=${WALLWHALE_GRPC_HOST:-127.0.0.1}
export WALLWHALE_GRPC_PORT=${WALLWHALE_GRPC_PORT:-50051}
export WALLWHALE_LOG_FORMAT=${WALLWHALE_LOG_FORMAT:-console}

.venv/bin/wallwhale migrate
.venv/bin/wallwhale bootstrap --if-empty

grpc="$WALLWHALE_GRPC_HOST:$WALLWHALE_GRPC_PORT"
cat <<INFO

WallWhale serves gRPC on $grpc (metrics: http://127.0.0.1:${WALLWHALE_METRICS_PORT:-9464}/metrics).
Try it (another terminal, from this folder):
  npx buf curl --protocol grpc --http2-prior-knowledge --reflect \\
      http://$grpc/grpc.health.v1.Health/Check
  npx buf curl --protocol grpc --http2-prior-knowledge --reflect -H "x-api-key: <the admin API key>" \\
      http://$grpc/wallwhale.v1.StatusService/GetStatus
Stop with Ctrl-C.

INFO
exec .venv/bin/wallwhale serve
