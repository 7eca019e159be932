#!/usr/bin/env bash
# Sets up and runs WallWhale behind Envoy: migrates, creates the first admin on an empty database
# (its API key is printed once), starts the server (or WALLWHALE_INSTANCES of them, on PostgreSQL)
# and Envoy in front, waits until Envoy finds every instance healthy and prints how to call it.
# Ctrl-C or SIGTERM stops them all (the servers drain gracefully).
#
#   WALLWHALE_INSTANCES=3 WALLWHALE_DATABASE_URL=postgresql://user@127.0.0.1:5432/wallwhale bash scripts/run.sh
#
# Script settings (the servers' own WALLWHALE_* settings are described in the README):
#   WALLWHALE_INSTANCES         servers behind Envoy (default 1; more need PostgreSQL)
#   WALLWHALE_ENVOY_HOST/_PORT  where Envoy serves REST/JSON, gRPC-Web and gRPC (127.0.0.1 / 8080)
#   WALLWHALE_ENVOY_ADMIN_PORT  Envoy's admin interface, on 127.0.0.1 only (9901)
#   WALLWHALE_CORS_ORIGINS      comma-separated browser origins allowed to call (none)
#   WALLWHALE_TLS_CERT_FILE     PEM certificate (chain allowed) and key: Envoy serves HTTPS and gRPC
#   WALLWHALE_TLS_KEY_FILE      over TLS only; renewed files are picked up without a restart
#   WALLWHALE_HTTP_REDIRECT_PORT  with TLS: a plain HTTP port that only redirects to HTTPS (none)
#   WALLWHALE_ACME_WEBROOT      with the redirect port: answer /.well-known/acme-challenge/ from
#                               this folder's .well-known/acme-challenge/ (certbot --webroot -w)
#   WALLWHALE_UPSTREAM_TLS_CLIENT_CERT_FILE / _CLIENT_KEY_FILE  Envoy's client certificate for
#                               mutual TLS to the servers, which then need WALLWHALE_UPSTREAM_TLS_CA_FILE,
#                               _CERT_FILE, _KEY_FILE (see `wallwhale certs dev`)
#                               (then Envoy reaches the servers over TCP, on WALLWHALE_GRPC_HOST and
#                               ports from WALLWHALE_GRPC_PORT; without it over Unix sockets in the
#                               data directory, and the servers listen on no TCP port)
#   WALLWHALE_GRPC_TCP=1        without mutual TLS: the servers also listen on WALLWHALE_GRPC_HOST:
#                               WALLWHALE_GRPC_PORT(+i) for direct gRPC (x-forwarded-for not believed there)
#   WALLWHALE_SKIP_SETUP=1      do not run scripts/setup.sh first (it ran already)
#
# --demo: the same stack against the Steam simulator that ships with WallWhale (wallwhale_simulator:
# a DepotDownloader and Steam's Web API with a small catalog), on SQLite in var/demo (or
# WALLWHALE_DATA_DIR), started afresh each time; it adds the simulator's Steam account and prints
# the admin's credentials, an API key and three commands that end with a zip. The server is only
# pointed at the simulator (WALLWHALE_DEPOTDOWNLOADER_PATH, WALLWHALE_STEAM_WEB_API_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
demo=0
for arg in "$@"; do
  case "$arg" in
    --demo) demo=1 ;;
    *) echo "usage: bash scripts/run.sh [--demo]" >&2; exit 2 ;;
  esac
done
if [ "$demo" = 1 ]; then
  export WALLWHALE_DATA_DIR=${WALLWHALE_DATA_DIR:-var/demo}
  unset WALLWHALE_DATABASE_URL WALLWHALE_DEPOTDOWNLOADER_PATH WALLWHALE_STEAM_WEB_API_URL
  export WALLWHALE_INSTANCES=1
fi
# Everything this script and its processes create (database, archives, Envoy's config and log) is
# the service user's alone.
umask 077

export WALLWHALE_DATA_DIR=${WALLWHALE_DATA_DIR:-var}
mkdir -p "$WALLWHALE_DATA_DIR"
chmod 700 "$WALLWHALE_DATA_DIR"
export WALLWHALE_GRPC_HOST=${WALLWHALE_GRPC_HOST:-127.0.0.1}
export WALLWHALE_LOG_FORMAT=${WALLWHALE_LOG_FORMAT:-console}
first_port=${WALLWHALE_GRPC_PORT:-50051}   # instance i listens on first_port + i
metrics_port=${WALLWHALE_METRICS_PORT:-9464}
instances=${WALLWHALE_INSTANCES:-1}
envoy_host=${WALLWHALE_ENVOY_HOST:-127.0.0.1}
envoy_port=${WALLWHALE_ENVOY_PORT:-8080}
admin_port=${WALLWHALE_ENVOY_ADMIN_PORT:-9901}
# How Envoy reaches the servers, and why they believe the client address it forwards
# (x-forwarded-for): a Unix socket in the 0700 data directory, which no other local user can open;
# or, with mutual TLS, TCP from 127.0.0.2, where only a holder of Envoy's client certificate gets in.
# Never plain TCP on loopback: any local process can connect from there and forge the header.
envoy_source=127.0.0.2
upstream_tls=${WALLWHALE_UPSTREAM_TLS_CLIENT_CERT_FILE:-}${WALLWHALE_UPSTREAM_TLS_CLIENT_KEY_FILE:-}
grpc_tcp=${WALLWHALE_GRPC_TCP:-0}
[ -n "$upstream_tls" ] && grpc_tcp=1
if [ -n "$upstream_tls" ]; then
  export WALLWHALE_TRUSTED_PROXIES=${WALLWHALE_TRUSTED_PROXIES:-$envoy_source}
fi
socket_dir="$(cd "$WALLWHALE_DATA_DIR" && pwd)/sockets"

# Refused before anything starts: a second run.sh on this data directory, or a port in use.
mkdir -p "$WALLWHALE_DATA_DIR"
exec 9>"$WALLWHALE_DATA_DIR/run.lock"
if ! flock -n 9; then
  echo "another scripts/run.sh runs on the data directory $WALLWHALE_DATA_DIR; stop it or set WALLWHALE_DATA_DIR" >&2
  exit 2
fi
if [ "$demo" = 1 ]; then
  # A demo starts afresh, in a folder that holds nothing but an earlier demo.
  if [ ! -f "$WALLWHALE_DATA_DIR/.demo" ] && [ -n "$(find "$WALLWHALE_DATA_DIR" -mindepth 1 -maxdepth 1 ! -name run.lock -print -quit)" ]; then
    echo "$WALLWHALE_DATA_DIR holds data that is not a demo's (a demo starts afresh); choose an empty WALLWHALE_DATA_DIR" >&2
    exit 2
  fi
  find "$WALLWHALE_DATA_DIR" -mindepth 1 -maxdepth 1 ! -name run.lock -exec rm -rf {} +
  touch "$WALLWHALE_DATA_DIR/.demo"
fi
check_ports=("$envoy_port:WALLWHALE_ENVOY_PORT" "$admin_port:WALLWHALE_ENVOY_ADMIN_PORT")
for ((i = 0; i < instances; i++)); do
  [ "$grpc_tcp" = 1 ] && check_ports+=("$((first_port + i)):WALLWHALE_GRPC_PORT")
  [ "$metrics_port" -gt 0 ] && check_ports+=("$((metrics_port + i)):WALLWHALE_METRICS_PORT")
done
if ! python3 - "$WALLWHALE_GRPC_HOST" "$envoy_host" "${check_ports[@]}" <<'PY'; then
import socket, sys

grpc_host, envoy_host = sys.argv[1], sys.argv[2]
for entry in sys.argv[3:]:
    port, variable = entry.split(":")
    host = envoy_host if variable.startswith("WALLWHALE_ENVOY_PORT") else "127.0.0.1"
    host = grpc_host if variable == "WALLWHALE_GRPC_PORT" else host
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            print(f"port {port} on {host} is in use; choose another with {variable}", file=sys.stderr)
            sys.exit(1)
PY
  exit 2
fi

# Setup again only when what it installs from changed (a second start takes seconds, not a minute).
stamp=$(cat pyproject.toml clients/python/pyproject.toml scripts/setup.sh package-lock.json \
  clients/typescript/package-lock.json web/package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "${WALLWHALE_SKIP_SETUP:-0}" != 1 ] && { [ ! -x .venv/bin/wallwhale ] || [ ! -d node_modules ] \
    || [ ! -d web/node_modules ] || [ ! -d clients/typescript/node_modules ] \
    || [ "$(cat .venv/.run-stamp 2>/dev/null)" != "$stamp" ]; }; then
  bash scripts/setup.sh --run >/dev/null
  echo "$stamp" >.venv/.run-stamp
fi

if [ "$instances" -gt 1 ]; then
  case "${WALLWHALE_DATABASE_URL:-}" in
    postgres*) ;;
    *) echo "WALLWHALE_INSTANCES=$instances needs a shared PostgreSQL database: set WALLWHALE_DATABASE_URL" >&2
       exit 2 ;;
  esac
  if [ -z "${WALLWHALE_JWT_SECRET:-}" ]; then
    # Every instance must check the others' login tokens; this secret lasts as long as this run.
    WALLWHALE_JWT_SECRET=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))')
    export WALLWHALE_JWT_SECRET
  fi
fi

# The web console, built again only when its sources changed since the last build.
if [ ! -f web/dist/index.html ] || [ -n "$(find web/src web/index.html web/package.json web/vite.config.ts \
    -newer web/dist/index.html -print -quit)" ]; then
  npm --prefix web run build >/dev/null
fi

.venv/bin/wallwhale migrate
created=$(.venv/bin/wallwhale bootstrap --if-empty --json)
api_key='<your admin API key>'
if [ -n "$created" ]; then
  api_key=$(.venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["api_key"])' <<<"$created")
  .venv/bin/python -c '
import json, sys
admin = json.load(sys.stdin)
print("\nCreated the first admin. This is the only time these secrets are shown: store them now.")
print("  e-mail:   ", admin["email"])
print("  password: ", admin["password"])
print("  API key:  ", admin["api_key"], "  (send as the x-api-key header)")' <<<"$created"
fi

pids=()
stop_all() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

if [ "$demo" = 1 ]; then
  steam_dir="$WALLWHALE_DATA_DIR/steam"
  .venv/bin/wallwhale-steam-simulator serve --dir "$steam_dir" --port-file "$WALLWHALE_DATA_DIR/steam.port" \
    >"$WALLWHALE_DATA_DIR/steam.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$WALLWHALE_DATA_DIR/steam.port" ] && break; sleep 0.1; done
  if [ ! -s "$WALLWHALE_DATA_DIR/steam.port" ]; then
    echo "the Steam simulator did not start; its log: $WALLWHALE_DATA_DIR/steam.log" >&2
    exit 1
  fi
  export WALLWHALE_STEAM_WEB_API_URL="http://127.0.0.1:$(cat "$WALLWHALE_DATA_DIR/steam.port")"
  WALLWHALE_DEPOTDOWNLOADER_PATH=$(realpath "$steam_dir/DepotDownloader")
  export WALLWHALE_DEPOTDOWNLOADER_PATH
fi

upstreams=()
for ((i = 0; i < instances; i++)); do
  port=$((first_port + i))
  metrics=$metrics_port
  [ "$metrics_port" -gt 0 ] && metrics=$((metrics_port + i))
  if [ -n "$upstream_tls" ]; then
    upstreams+=(--upstream "$WALLWHALE_GRPC_HOST:$port")
    listen=()
  else
    upstreams+=(--upstream "unix:$socket_dir/instance-$i.sock")
    listen=(WALLWHALE_GRPC_SOCKET="$socket_dir/instance-$i.sock")
    [ "$grpc_tcp" = 1 ] || port=-1
  fi
  env "${listen[@]}" WALLWHALE_MIGRATE_ON_START=false WALLWHALE_METRICS_PORT=$metrics \
    .venv/bin/wallwhale serve --port "$port" &
  pids+=($!)
done

envoy_dir="$WALLWHALE_DATA_DIR/envoy"
origins=()
IFS=',' read -r -a cors <<<"${WALLWHALE_CORS_ORIGINS:-}"
for origin in "${cors[@]}"; do origins+=(--cors-origin "$origin"); done
edge=()
scheme=http
if [ -n "${WALLWHALE_TLS_CERT_FILE:-}${WALLWHALE_TLS_KEY_FILE:-}" ]; then
  scheme=https
  edge+=(--tls-cert "${WALLWHALE_TLS_CERT_FILE:-}" --tls-key "${WALLWHALE_TLS_KEY_FILE:-}")
  [ -n "${WALLWHALE_HTTP_REDIRECT_PORT:-}" ] && edge+=(--redirect-port "$WALLWHALE_HTTP_REDIRECT_PORT")
  [ -n "${WALLWHALE_ACME_WEBROOT:-}" ] && edge+=(--acme-webroot "$WALLWHALE_ACME_WEBROOT")
fi
if [ -n "${WALLWHALE_UPSTREAM_TLS_CLIENT_CERT_FILE:-}${WALLWHALE_UPSTREAM_TLS_CLIENT_KEY_FILE:-}" ]; then
  edge+=(--upstream-tls-ca "${WALLWHALE_UPSTREAM_TLS_CA_FILE:-}"
         --upstream-tls-cert "${WALLWHALE_UPSTREAM_TLS_CLIENT_CERT_FILE:-}"
         --upstream-tls-key "${WALLWHALE_UPSTREAM_TLS_CLIENT_KEY_FILE:-}")
fi
# Traces: the servers read WALLWHALE_OTLP_ENDPOINT themselves; Envoy's tracer is on only with it.
case "${WALLWHALE_OTLP_ENDPOINT:-}" in
  "") ;;
  https://*) echo "run.sh: Envoy exports spans to a plain (h2c) collector only; Envoy is not traced" >&2 ;;
  *) edge+=(--otlp-endpoint "$WALLWHALE_OTLP_ENDPOINT"
            --trace-sampling "$(awk "BEGIN { print ${WALLWHALE_OTLP_SAMPLE_RATIO:-1} * 100 }")") ;;
esac
.venv/bin/python scripts/envoy_config.py --out-dir "$envoy_dir" --listen "$envoy_host:$envoy_port" \
  --admin-port "$admin_port" --upstream-source-address "$envoy_source" "${upstreams[@]}" "${origins[@]}" \
  --web-dir web/dist "${edge[@]}" --validate >/dev/null
.venv/bin/envoy -c "$envoy_dir/envoy.yaml" --concurrency 2 --disable-hot-restart --log-level warn \
  >"$envoy_dir/envoy.log" 2>&1 &
pids+=($!)

# Ready when Envoy's health checks find every instance SERVING (and nothing died on the way).
if ! .venv/bin/python - "$admin_port" "$instances" "${pids[@]}" <<'PY'; then
import os, sys, time, urllib.request

admin_port, wanted, pids = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(1)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters", timeout=2) as reply:
            lines = reply.read().decode().splitlines()
        # Both clusters (calls, archives) list every instance.
        if sum(line.startswith("wallwhale::") and line.endswith("::health_flags::healthy") for line in lines) == wanted:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
  echo "WallWhale did not become healthy behind Envoy; Envoy's log: $envoy_dir/envoy.log" >&2
  exit 1
fi

servers_at="Unix sockets in $socket_dir"
[ "$grpc_tcp" = 1 ] && servers_at="gRPC also from $WALLWHALE_GRPC_HOST:$first_port"
[ -n "$upstream_tls" ] && servers_at="gRPC with mutual TLS from $WALLWHALE_GRPC_HOST:$first_port"
base="$scheme://$envoy_host:$envoy_port"
[ "$envoy_host" = "0.0.0.0" ] && base="$scheme://127.0.0.1:$envoy_port"
if [ "$demo" = 1 ]; then
  # The simulator's Steam account, added the way the README shows (REST).
  if ! curl -sf "$base/v1/admin/steam-accounts" -H "x-api-key: $api_key" \
      -d '{"steamAccount": {"username": "wallwhale_demo"}, "password": "demo-steam-password"}' >/dev/null; then
    echo "could not add the demo's Steam account" >&2
    exit 1
  fi
  address=${base#*://}
  doctor="WALLWHALE_DATA_DIR=$WALLWHALE_DATA_DIR WALLWHALE_DEPOTDOWNLOADER_PATH=$WALLWHALE_DEPOTDOWNLOADER_PATH"
  doctor+=" WALLWHALE_STEAM_WEB_API_URL=$WALLWHALE_STEAM_WEB_API_URL .venv/bin/wallwhale doctor"
  cat <<DEMO

WallWhale demo runs against the Steam simulator (no Steam account needed), data in $WALLWHALE_DATA_DIR.
  Web console:  $base/   (sign in with the admin's e-mail and password above)
  Steam:        the simulated account wallwhale_demo is added; its catalog (see README, "The demo"):
                3370000101 video, 3370000102 scene, 3370000103 web, 3370000104 updated later,
                3370000105 private, 3370000106 removed, 3370000200 a collection of the first three
  Check:        $doctor

In another terminal, from this folder, first:

export WALLWHALE_URL=$base WALLWHALE_ADDRESS=$address WALLWHALE_API_KEY=$api_key

then any of these three; each ends with a zip on disk whose sha256 the server vouches for.

# 1. REST with curl: create a download, follow it (server-sent events), save the zip, compare sha256
ID=\$(curl -s \$WALLWHALE_URL/v1/downloads -H "x-api-key: \$WALLWHALE_API_KEY" -d '{"urlOrId": "3370000101"}' \\
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["download"]["id"])')
curl -sN "\$WALLWHALE_URL/v1/downloads/\$ID:watch?excludeLogs=true" -H "x-api-key: \$WALLWHALE_API_KEY" | grep -o '"state": *"[A-Z_]*"'
curl -s -o item.zip -D headers.txt "\$WALLWHALE_URL/v1/downloads/\$ID/archive" -H "x-api-key: \$WALLWHALE_API_KEY"
grep -i x-archive-sha256 headers.txt; sha256sum item.zip

# 2. The command line (the venv's, no need to activate it)
.venv/bin/wallwhale-cli download 3370000102 --out wallpapers

# 3. Python
.venv/bin/python -c '
import os
from wallwhale_client import Client
with Client(os.environ["WALLWHALE_ADDRESS"], api_key=os.environ["WALLWHALE_API_KEY"]) as client:
    print("saved", client.download("3370000103", "wallpapers"))'

Stop with Ctrl-C.

DEMO
else
cat <<INFO

WallWhale runs: $instances instance(s) behind Envoy ($servers_at).
  Web console:     $base/
  REST base URL:   $base/v1       (also gRPC-Web and gRPC on $base)
  Envoy admin:     http://127.0.0.1:$admin_port   (access log: $envoy_dir/envoy.log)
  Health:          $base/healthz (Envoy up), $base/readyz (an instance and its database answer)
  API docs:        $base/docs   (OpenAPI document: $base/v1/openapi.json)
Try it (another terminal, from this folder):
  curl -s $base/v1/status -H 'x-api-key: $api_key'
  npx buf curl --protocol grpc --http2-prior-knowledge --reflect -H 'x-api-key: $api_key' \\
      $base/wallwhale.v1.StatusService/GetStatus
Stop with Ctrl-C.

INFO
# What downloads need, each with its fix (the same checks as `wallwhale doctor`); never fatal here.
echo "What downloads need (wallwhale doctor):"
.venv/bin/wallwhale doctor 2>&1 | sed 's/^/  /' || true
echo
fi

# Runs until a signal or until one process ends. Ctrl-C reaches every process of the terminal at
# once, and a server that ends cleanly on it keeps bash from running the INT trap: so a clean exit
# is a stop, a failed one an error; either way the EXIT trap stops the others.
status=0
wait -n "${pids[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "a WallWhale process failed (exit $status); stopping the others" >&2
  exit 1
fi
