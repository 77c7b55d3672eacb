#!/usr/bin/env bash
# What the suite needs from the system beyond RabbitMQ and Redis, installed when missing
# (scripts/install_packages.sh): Chromium for the console's browser tests, iproute2 for the
# partition test's worker hosts in network namespaces, and procps, whose `ps` is how
# `rabbitmqctl stop` sees a node's process end (the cluster tests' rolling restart).
# Silent when all are there; otherwise one line saying what it installs, or what to run.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || packages+=(chromium)
command -v ip >/dev/null 2>&1 || packages+=(iproute2)
command -v ps >/dev/null 2>&1 || packages+=(procps)
[ ${#packages[@]} -eq 0 ] && exit 0
exec scripts/install_packages.sh "the test suite's tools (${packages[*]})" "${packages[@]}"
