#!/usr/bin/env bash
# Install Debian/Ubuntu packages for the README's two commands: as root, or with passwordless sudo.
#   scripts/install_packages.sh WHAT PACKAGE...      (WHAT names them in messages, e.g. "RabbitMQ")
# Prints one line saying what it installs (it takes a minute), and fails at once with one line
# naming the exact command when it has no right to install or the install fails. Never prompts.
set -euo pipefail
what=$1; shift
command_line="apt-get install -y --no-install-recommends $*"

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "$what is not installed and installing it needs root: run 'sudo $command_line', then run this again" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$what is not installed and this system has no apt-get: install $* with its package manager" >&2
  exit 1
fi
echo "installing $what ($command_line; takes a minute)..." >&2
export DEBIAN_FRONTEND=noninteractive
{ "${as_root[@]}" timeout 600 apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
  { "${as_root[@]}" timeout 300 apt-get update -qq >/dev/null 2>&1 &&
    "${as_root[@]}" timeout 600 apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; }; } ||
  { echo "could not install $what with '$command_line'; install it by hand and run this again" >&2; exit 1; }
