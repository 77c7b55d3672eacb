#!/usr/bin/env bash
# Make sure Redis answers on REDIS_URL's host and port. On this machine's loopback, install it
# (scripts/install_packages.sh) and start it when missing: a background server bound to
# 127.0.0.1, keeping its files in a `redis` folder beside CSV_PATH (data/redis by default). Fails at once, with one line saying what to do,
# when it cannot; never waits forever.
set -euo pipefail
cd "$(dirname "$0")/.."

read -r host port password dir < <(.venv/bin/python - <<'PY'
from pathlib import Path
from urllib.parse import urlsplit
from config import get_settings
settings = get_settings()
url = urlsplit(settings.redis_url)
print(url.hostname or "127.0.0.1", url.port or 6379, url.password or "-", Path(settings.csv_path).resolve().parent / "redis")
PY
)

reachable() { timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; }

reachable && exit 0
case "$host" in
  127.0.0.1|localhost) ;;
  *) echo "Redis not reachable at $host:$port; start it or fix REDIS_URL" >&2; exit 1 ;;
esac
if ! command -v redis-server >/dev/null 2>&1; then
  scripts/install_packages.sh Redis redis-server
  command -v redis-server >/dev/null 2>&1 ||
    { echo "Redis was installed but redis-server is not on PATH; start it by hand or fix REDIS_URL" >&2; exit 1; }
  reachable && exit 0  # the package started its own service
fi
mkdir -p "$dir"
echo "starting local Redis on 127.0.0.1:$port (files in $dir)..." >&2
args=(--bind 127.0.0.1 --port "$port" --daemonize yes --dir "$dir" --logfile "$dir/redis.log"
      --pidfile "$dir/redis-$port.pid" --appendonly yes)
[ "$password" != "-" ] && args+=(--requirepass "$password")
redis-server "${args[@]}" >/dev/null 2>&1 ||
  { echo "redis-server did not start; see $dir/redis.log" >&2; exit 1; }
for _ in $(seq 1 50); do reachable && exit 0; sleep 0.2; done
echo "Redis started but $host:$port does not answer within 10 s; see $dir/redis.log" >&2
exit 1
