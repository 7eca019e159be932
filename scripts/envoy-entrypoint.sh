#!/bin/sh
# The Envoy image's entry point: renders Envoy's configuration for this deployment from the protos
# (scripts/envoy_config.py, as scripts/run.sh does) and becomes Envoy.
#   WALLWHALE_UPSTREAMS   the instances' gRPC HOST:PORT, comma-separated (names are resolved by DNS,
#                         and again while Envoy runs: a Kubernetes headless Service gives every pod)
#   ENVOY_LISTEN          the public address (default 0.0.0.0:8080)
#   ENVOY_ADMIN_PORT      Envoy's admin interface, on 127.0.0.1 only (default 9901)
#   ENVOY_CONFIG_ARGS     more envoy_config.py options (e.g. --tls-cert, --cors-origin)
set -eu
here=$(dirname "$0")
out=${ENVOY_CONFIG_DIR:-/tmp/envoy}
upstreams=${WALLWHALE_UPSTREAMS:?set WALLWHALE_UPSTREAMS to the instances HOST:PORT, comma-separated}
set -- --out-dir "$out" --listen "${ENVOY_LISTEN:-0.0.0.0:8080}" --admin-port "${ENVOY_ADMIN_PORT:-9901}" \
  --web-dir "$here/../web/dist"
for upstream in $(echo "$upstreams" | tr ',' ' '); do
  set -- "$@" --upstream "$upstream"
done
# shellcheck disable=SC2086  # the extra options are words on purpose
python3 "$here/envoy_config.py" "$@" ${ENVOY_CONFIG_ARGS:-}
# No hot restart in a container (a new container replaces the old): no shared memory needed.
exec envoy -c "$out/envoy.yaml" --disable-hot-restart --log-level "${ENVOY_LOG_LEVEL:-info}"
