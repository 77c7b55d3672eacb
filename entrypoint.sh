#!/usr/bin/env bash
# The API and the three worker groups (main, tasks, ml) together. Ctrl+C or SIGTERM stops them all
# (workers finish their current messages first); if any one exits, the others are stopped too.
set -euo pipefail
cd "$(dirname "$0")"

# Own sessions, so a terminal's Ctrl+C reaches only this script, which passes
# exactly one TERM on: a second signal makes Dramatiq and uvicorn quit hard.
setsid ./entrypoint_dramatiq.sh main & workers=$!
setsid ./entrypoint_dramatiq.sh tasks & task_workers=$!
setsid ./entrypoint_dramatiq.sh ml & model_workers=$!
setsid ./entrypoint_api.sh & api=$!

stopped=""
stop() {  # once: a second TERM would make the workers quit hard
  [ -n "$stopped" ] && return
  stopped=1
  kill -TERM "$api" "$workers" "$task_workers" "$model_workers" 2>/dev/null || true
}
trap stop INT TERM
status=0
wait -n "$api" "$workers" "$task_workers" "$model_workers" || status=$?
stop
wait "$api" "$workers" "$task_workers" "$model_workers" 2>/dev/null || true
exit "$status"
