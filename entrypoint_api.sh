#!/usr/bin/env bash
# The HTTP API (uvicorn). Configuration: config.py, from the environment or .env.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
eval "$("$PYTHON" -m config --shell)"  # settings, and glibc's malloc variables from them
# No API keys on a non-loopback address: refuse at once, with one line saying what to do.
"$PYTHON" -m app.auth check
if [ "$API_WORKERS" -gt 1 ]; then
  # Several processes: each writes its metrics here and /metrics sums them (prometheus_client multiprocess).
  export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_DB}-api"
  rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi
exec "$PYTHON" -m uvicorn app.main:app \
  --host "$API_HOST" --port "$API_PORT" --workers "$API_WORKERS" \
  --loop uvloop --http httptools --no-access-log --timeout-graceful-shutdown 10 \
  --timeout-keep-alive "$API_KEEPALIVE_SECONDS" \
  --log-config app/uvicorn_logging.json  # uvicorn's lines in LOG_FORMAT too; the app logs accesses itself
