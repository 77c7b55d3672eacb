#!/usr/bin/env bash
# The workers: the dramatiq CLI on the actors package.
# SIGTERM lets every thread finish its current message before the process exits.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
eval "$("$PYTHON" -m config --shell)"
# Dramatiq's Prometheus middleware keeps multiprocess files here; stale ones from
# an earlier run would be summed into the new run's metrics.
rm -rf "$PROMETHEUS_DB" && mkdir -p "$PROMETHEUS_DB"
export dramatiq_prom_host="$PROMETHEUS_HOST" dramatiq_prom_port="$PROMETHEUS_PORT" dramatiq_prom_db="$PROMETHEUS_DB"
exec "$PYTHON" -m dramatiq actors --processes "$WORKER_PROCESSES" --threads "$WORKER_THREADS" \
  --worker-shutdown-timeout 30000
