#!/usr/bin/env bash
# Make sure RabbitMQ answers on RABBITMQ_URL's host and port; on loopback, install it
# (scripts/install_packages.sh) when missing and start it.
# Fails at once, with one line saying what to do, when it cannot; never waits forever.
set -euo pipefail
cd "$(dirname "$0")/.."

read -r host port < <(.venv/bin/python - <<'PY'
import pika
from config import get_settings
p = pika.URLParameters(get_settings().rabbitmq_url)
print(p.host, p.port)
PY
)

reachable() { timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; }

reachable && exit 0
case "$host" in
  127.0.0.1|localhost|::1) ;;
  *) echo "RabbitMQ not reachable at $host:$port; start it or fix RABBITMQ_URL" >&2; exit 1 ;;
esac
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  scripts/install_packages.sh RabbitMQ rabbitmq-server
  command -v rabbitmq-server >/dev/null 2>&1 ||
    { echo "RabbitMQ was installed but rabbitmq-server is not on PATH; start it by hand or set RABBITMQ_URL" >&2; exit 1; }
fi
echo "starting local RabbitMQ (rabbitmq-server -detached)..." >&2
rabbitmq-server -detached >/dev/null 2>&1 || true
# await_startup waits for a node that is booting, but refuses at once while the node is not up
# at all yet (as just after -detached): ask again until the deadline.
deadline=$((SECONDS + 90))
until timeout 10 rabbitmqctl await_startup >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "RabbitMQ did not start within 90 s; see /var/log/rabbitmq/ and run 'rabbitmq-server' by hand" >&2
    exit 1
  fi
  sleep 1
done
for _ in $(seq 1 50); do reachable && exit 0; sleep 0.2; done
echo "RabbitMQ started but $host:$port does not answer; check its listeners" >&2
exit 1
