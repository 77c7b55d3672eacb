#!/usr/bin/env bash
# The status page is tested in a real headless Chromium (Debian's package). Install it if missing,
# when we can (root and apt-get); else fail at once with one line saying what to run.
set -euo pipefail

for candidate in chromium chromium-browser; do
  command -v "$candidate" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "Chromium not found; install it (Debian/Ubuntu: 'sudo apt-get install chromium') or run ./test.sh -m 'not browser'" >&2
  exit 1
fi
echo "installing Chromium for the status-page test (apt-get install chromium)..." >&2
export DEBIAN_FRONTEND=noninteractive
{ apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ||
  { timeout 300 apt-get update -qq >/dev/null 2>&1 && timeout 600 apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; } ||
  { echo "could not install Chromium with apt-get; install it by hand or run ./test.sh -m 'not browser'" >&2; exit 1; }
