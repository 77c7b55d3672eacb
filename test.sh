#!/usr/bin/env bash
# Set up (virtualenv + pinned dev requirements) and run the whole test suite.
# Extra arguments go to pytest, e.g. ./test.sh -m "not slow" or ./test.sh tests/unit
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh requirements-dev.txt
scripts/ensure_rabbitmq.sh
scripts/ensure_redis.sh
scripts/ensure_chromium.sh  # the status page is tested in a real headless Chromium
exec .venv/bin/python -m pytest "$@"
