"""Publishing from request handlers, with errors a client can act on."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dramatiq import Actor
from dramatiq.errors import BrokerError
from fastapi import HTTPException
from loguru import logger
from starlette.concurrency import run_in_threadpool

from actors import status_writer
from app.metrics import PUBLISH_DURATION, PUBLISH_FAILURES
from logs import REQUEST_ID

#: Seconds a client should wait before retrying a request refused with 503.
RETRY_AFTER_SECONDS = 1


def broker_unavailable(reason: str) -> HTTPException:
    return HTTPException(
        status_code=503,
        detail=f"message broker unavailable ({reason}); nothing was confirmed, retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def publish(actor: Actor, *args: Any, message_id: str | None = None) -> str:
    """Enqueue one message for `actor`; return its id once RabbitMQ has confirmed it.

    Waits on the event loop, not in a thread: handing the message to the
    broker's publisher never blocks, so a slow or absent broker costs the API
    no thread. `message_id` fixes the id (Idempotency-Key); the request's X-Request-ID
    travels in the message options. Answers 503 when
    RabbitMQ is unreachable or does not confirm within PUBLISH_TIMEOUT_SECONDS.
    """
    broker = actor.broker
    request_id = REQUEST_ID.get()
    message = actor.message_with_options(args=args, **({"request_id": request_id} if request_id else {}))
    if message_id is not None:
        message = message.copy(message_id=message_id)
    try:
        if not broker.queue_ready(message.queue_name):
            await run_in_threadpool(broker.declare_queue, message.queue_name, ensure=True)
        started = time.perf_counter()
        confirmed = broker.publish_message(message)
        await asyncio.wait_for(asyncio.wrap_future(confirmed), broker.publish_timeout)
    except (BrokerError, TimeoutError) as error:
        timed_out = isinstance(error, TimeoutError)
        reason = "no confirm in time" if timed_out else str(error)
        PUBLISH_FAILURES.labels(message.queue_name, "timeout" if timed_out else type(error).__name__).inc()
        logger.warning("publish of {} to {} refused: {}", message.message_id, message.queue_name, reason)
        raise broker_unavailable(reason) from None
    PUBLISH_DURATION.labels(message.queue_name).observe(time.perf_counter() - started)
    status_writer.queued([message])  # buffered: GET /api/{id} says `queued` from now on
    return message.message_id
