#!/usr/bin/env bash
# Set up (virtualenv + pinned dev requirements) and run the whole test suite.
# Extra arguments go to pytest, e.g. ./test.sh -m "not slow" or ./test.sh tests/unit
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh requirements-dev.txt
scripts/ensure_rabbitmq.sh
scripts/ensure_redis.sh
scripts/ensure_test_tools.sh  # Chromium, iproute2, procps: the browser, namespace and cluster tests
exec .venv/bin/python -m pytest "$@"
