"""Isolated RabbitMQ vhosts for tests, and queue inspection over AMQP."""

from __future__ import annotations

import subprocess
import time
import uuid

import pika
import redis

AMQP_ROOT = "amqp://guest:guest@127.0.0.1:5672"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _rabbitmqctl(*args: str) -> str:
    """Run a rabbitmqctl command, its output; tried three times, with its own message if all fail.

    Seen a few times while another suite made and deleted vhosts on the same node: add_vhost or
    set_permissions failing with status 64 right away, and working a moment later.
    """
    for attempt in range(3):
        try:
            done = subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)
            return done.stdout.decode()
        except subprocess.CalledProcessError as error:
            if attempt and b"already exists" in error.stderr:
                return ""  # the try that failed had done it
            if attempt == 2:
                raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed with status {error.returncode}: "
                                   f"{error.stderr.decode(errors='replace').strip()}") from None
            time.sleep(0.5)  # a bounded pause between tries of a command, not a wait for a condition


def create_vhost(prefix: str = "test") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return name


def delete_vhost(name: str) -> None:
    """Delete the vhost, and what the service kept about it in Redis (its status records and counters).

    The Redis keys of a stack are namespaced by its vhost (actors.stats.namespace_for), whose name is
    unique; left behind, a benchmark's 10,000+ status records made every later SCAN slow.
    """
    _rabbitmqctl("delete_vhost", name)
    forget_vhost_records(name)


def forget_vhost_records(name: str) -> None:
    """Delete what the service kept in Redis for the vhost `name` (its names are unique)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{name}*", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.delete(*keys[start : start + 10_000])
    except redis.RedisError:
        pass  # best effort: they expire anyway
    finally:
        client.close()


def vhost_url(vhost: str) -> str:
    return f"{AMQP_ROOT}/{vhost}"


def unacked(vhost: str, queue: str) -> int:
    """Messages of a queue delivered and not yet acknowledged, as the queue itself counts them."""
    listing = _rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name", "messages_unacknowledged")
    for line in listing.splitlines():
        name, _, count = line.rpartition("\t")
        if name == queue:
            return int(count)
    raise LookupError(f"no queue {queue!r} in vhost {vhost!r}")


def queue_state(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of a queue; raises if it does not exist yet. `url` may list a cluster's nodes."""
    connection = pika.BlockingConnection([pika.URLParameters(node) for node in url.split(";")])
    try:
        method = connection.channel().queue_declare(queue=queue, passive=True).method
        return method.message_count, method.consumer_count
    finally:
        connection.close()
