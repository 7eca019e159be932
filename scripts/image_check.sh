#!/bin/sh
# Builds the server image (Dockerfile) with podman and checks it from its own file system: the entry
# point starts, migrates PostgreSQL, answers gRPC health and serves a download with the test
# DepotDownloader (scripts/image_check.py says how). Needs root, podman and debootstrap
# (apt-get install podman debootstrap) and the test PostgreSQL (scripts/ensure_postgres.sh).
# Not part of CI: it takes minutes (README, "Deploy").
set -eu
cd "$(dirname "$0")/.."
bash scripts/ensure_postgres.sh >/dev/null
exec .venv/bin/python scripts/image_check.py "$@"
