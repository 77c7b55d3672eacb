#!/usr/bin/env bash
# API and workers together. Ctrl+C or SIGTERM stops both (workers finish their
# current messages first); if either exits, the other is stopped too.
set -euo pipefail
cd "$(dirname "$0")"

# Own sessions, so a terminal's Ctrl+C reaches only this script, which passes
# exactly one TERM on: a second signal makes Dramatiq and uvicorn quit hard.
setsid ./entrypoint_dramatiq.sh & workers=$!
setsid ./entrypoint_api.sh & api=$!

stopped=""
stop() {  # once: a second TERM would make the workers quit hard
  [ -n "$stopped" ] && return
  stopped=1
  kill -TERM "$api" "$workers" 2>/dev/null || true
}
trap stop INT TERM
status=0
wait -n "$api" "$workers" || status=$?
stop
wait "$api" "$workers" 2>/dev/null || true
exit "$status"
