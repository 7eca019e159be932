#!/usr/bin/env bash
# The first hour, timed (issue 16): a fresh clone of this checkout's HEAD in a temporary folder, then
# `bash scripts/run.sh --demo` twice. For each start it prints the seconds until the demo is ready
# (its banner) and until the first zip is on disk (the demo's printed curl commands: create, follow,
# fetch, sha256 compared). The first start includes scripts/setup.sh --run with the machine's package
# caches as they are (warm after any earlier setup). Ports: WALLWHALE_ENVOY_PORT etc. as for run.sh
# (defaults here: 18180, 53051, 19564, 19991).
#
#   bash bench/first_hour.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git clone -q "$repo" "$scratch/clone"
export WALLWHALE_ENVOY_PORT=${WALLWHALE_ENVOY_PORT:-18180} WALLWHALE_GRPC_PORT=${WALLWHALE_GRPC_PORT:-53051}
export WALLWHALE_METRICS_PORT=${WALLWHALE_METRICS_PORT:-19564} WALLWHALE_ENVOY_ADMIN_PORT=${WALLWHALE_ENVOY_ADMIN_PORT:-19991}
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ); commit $(git -C "$repo" rev-parse --short HEAD)"

start_demo() {  # $1: a name for this start
  local log="$scratch/$1.log" work="$scratch/$1" start ready zip pid
  mkdir -p "$work"
  start=$(date +%s.%N)
  (cd "$scratch/clone" && exec setsid bash scripts/run.sh --demo) >"$log" 2>&1 &
  pid=$!
  until grep -q "Stop with Ctrl-C" "$log"; do
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
  done
  ready=$(date +%s.%N)
  eval "$(grep '^export WALLWHALE_URL' "$log")"
  sed -n '/^# 1\./,/^# 2\./p' "$log" | grep -v '^#' >"$work/commands.sh"
  (cd "$work" && bash -e commands.sh >/dev/null)
  zip=$(date +%s.%N)
  kill -TERM -- "-$pid"
  wait "$pid" 2>/dev/null || true
  printf '%-13s ready %6.1f s   first zip %6.1f s after the start\n' "$1:" \
    "$(echo "$ready - $start" | bc)" "$(echo "$zip - $start" | bc)"
}

start_demo "first start"
start_demo "second start"
