#!/usr/bin/env bash
# The workers: the dramatiq CLI on the actors package, kept running.
#
# The CLI stops all its worker processes and exits when any one of them dies
# (an OOM kill, a segfault). Unacked messages are redelivered by RabbitMQ and
# the sink writes each at most once, so the safe reaction is to start again:
# this script does that, unless it was asked to stop (SIGTERM/SIGINT), which it
# passes on so every thread finishes its current message first.
# Set WORKER_RESTART=no to exit with the CLI instead (e.g. under a supervisor).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
eval "$("$PYTHON" -m config --shell)"  # settings, and glibc's malloc variables from them
# Three worker groups, so no background task or training ever holds a thread the detections need:
#   main (default): WORKER_QUEUES (ingest), WORKER_PROCESSES x WORKER_THREADS, PROMETHEUS_PORT
#   tasks:          the tasks queue, TASK_WORKER_* and TASK_PROMETHEUS_PORT
#   ml:             the training and predictions queues, ML_WORKER_* and ML_PROMETHEUS_PORT
role="${1:-main}"
case "$role" in
  main) queues="$WORKER_QUEUES" ;;
  tasks)
    queues="tasks"
    WORKER_PROCESSES="$TASK_WORKER_PROCESSES" WORKER_THREADS="$TASK_WORKER_THREADS"
    PROMETHEUS_PORT="$TASK_PROMETHEUS_PORT" PROMETHEUS_DB="${PROMETHEUS_DB}-tasks"
    ;;
  ml)
    queues="training predictions"
    WORKER_PROCESSES="$ML_WORKER_PROCESSES" WORKER_THREADS="$ML_WORKER_THREADS"
    PROMETHEUS_PORT="$ML_PROMETHEUS_PORT" PROMETHEUS_DB="${PROMETHEUS_DB}-ml"
    ;;
  *) echo "usage: entrypoint_dramatiq.sh [main|tasks|ml]" >&2; exit 2 ;;
esac
export dramatiq_prom_host="$PROMETHEUS_HOST" dramatiq_prom_port="$PROMETHEUS_PORT" dramatiq_prom_db="$PROMETHEUS_DB"
# Our own worker metrics (actors/metrics.py) go to the same files Dramatiq's server exposes.
export PROMETHEUS_MULTIPROC_DIR="$PROMETHEUS_DB"

stopping=""
child=""
# Pass on the first signal only: Dramatiq reads a second one as "kill now".
forward() {
  [ -n "$stopping" ] && return
  stopping=1
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null || true
}
trap forward TERM INT

# The samples every example in /docs names (pipeline/samples.py); a store that is down must not
# keep the workers from starting.
if [ "$role" = ml ]; then  # INSTALL_SAMPLES=false: it does nothing
  "$PYTHON" -m pipeline.samples || echo "entrypoint_dramatiq: samples not installed (see above); going on" >&2
fi

# Metrics files of an earlier run would be summed into this run's metrics.
rm -rf "$PROMETHEUS_DB" && mkdir -p "$PROMETHEUS_DB"
while :; do
  # After a restart, counters keep their totals (Prometheus expects monotonic counters), but the
  # gauges of the dead processes must go: a killed worker never marked itself dead.
  rm -f "$PROMETHEUS_DB"/gauge_*
  # setsid: a terminal's Ctrl+C must not reach the CLI besides our forwarded TERM;
  # Dramatiq treats a second signal as "kill now" and would drop in-flight work.
  # shellcheck disable=SC2086  # WORKER_EXTRA_MODULES is a space-separated list
  # `-m logs dramatiq` is the dramatiq CLI with its own log lines in LOG_FORMAT too (logs.py).
  # shellcheck disable=SC2086  # $queues is a space-separated list too (empty: every queue)
  setsid "$PYTHON" -m logs dramatiq actors $WORKER_EXTRA_MODULES ${queues:+--queues $queues} --processes "$WORKER_PROCESSES" \
    --threads "$WORKER_THREADS" --worker-shutdown-timeout 30000 &
  child=$!
  # A trapped signal interrupts `wait` (status 128+n); wait again for the CLI's own exit status.
  while :; do
    status=0
    wait "$child" || status=$?
    kill -0 "$child" 2>/dev/null || break
  done
  if [ -n "$stopping" ] || [ "${WORKER_RESTART:-yes}" = "no" ]; then
    exit "$status"
  fi
  echo "entrypoint_dramatiq: dramatiq exited with status $status; restarting in 1 s" >&2
  sleep 1
done
