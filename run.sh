#!/usr/bin/env bash
# Set up (virtualenv + pinned requirements) and run API + workers.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh requirements.txt
scripts/ensure_rabbitmq.sh
scripts/ensure_redis.sh
exec ./entrypoint.sh
