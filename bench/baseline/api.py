"""Baseline API: what the public FastAPI + RabbitMQ demos do, done fairly.

Same schema and server settings as ours; publishing the way the demos do it:
a sync route, pika's BlockingConnection (one per thread of FastAPI's pool,
since pika is not thread-safe), transient messages, no publisher confirms.
A 202 therefore promises nothing about RabbitMQ having the message.
"""

from __future__ import annotations

import os
import threading
import uuid

import orjson
import pika
from fastapi import FastAPI

from app.schemas import IngestPayload

QUEUE = "baseline"
_local = threading.local()


def _channel():
    channel = getattr(_local, "channel", None)
    if channel is None or channel.is_closed:
        connection = pika.BlockingConnection(pika.URLParameters(os.environ["RABBITMQ_URL"]))
        channel = connection.channel()
        channel.queue_declare(QUEUE, durable=False)
        _local.channel = channel
    return channel


app = FastAPI(title="baseline")


@app.post("/api", status_code=202)
def ingest(payload: IngestPayload) -> dict:
    message_id = str(uuid.uuid4())
    body = orjson.dumps({"message_id": message_id, "payload": payload.model_dump(mode="json")})
    _channel().basic_publish("", QUEUE, body, pika.BasicProperties(delivery_mode=1))
    return {"status": "received", "message_id": message_id}
