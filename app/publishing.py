"""Publishing to RabbitMQ from request handlers, with errors a client can act on."""

from __future__ import annotations

from typing import Any

import pika.exceptions
from dramatiq import Actor
from dramatiq.errors import BrokerError
from fastapi import HTTPException
from loguru import logger

#: Seconds a client should wait before retrying a request refused with 503.
RETRY_AFTER_SECONDS = 1


def publish(actor: Actor, *args: Any) -> str:
    """Send one message and return its id; 503 when RabbitMQ does not take it.

    Blocking (pika): call it from a sync route, which FastAPI runs in its
    thread pool, never from the event loop. With publisher confirms on, a
    return means RabbitMQ has the message.
    """
    try:
        return actor.send(*args).message_id
    except (BrokerError, pika.exceptions.AMQPError, OSError) as error:
        logger.warning("publish to {} failed: {!r}", actor.queue_name, error)
        raise HTTPException(
            status_code=503,
            detail="message broker unavailable; nothing was enqueued, retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
