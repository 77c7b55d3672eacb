"""Isolated RabbitMQ vhosts for tests, and queue inspection over AMQP."""

from __future__ import annotations

import subprocess
import uuid

import pika

AMQP_ROOT = "amqp://guest:guest@127.0.0.1:5672"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost(prefix: str = "test") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return name


def delete_vhost(name: str) -> None:
    _rabbitmqctl("delete_vhost", name)


def vhost_url(vhost: str) -> str:
    return f"{AMQP_ROOT}/{vhost}"


def queue_state(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of a queue; raises if it does not exist yet."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        method = connection.channel().queue_declare(queue=queue, passive=True).method
        return method.message_count, method.consumer_count
    finally:
        connection.close()
