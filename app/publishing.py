"""Publishing from request handlers, with errors a client can act on."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from dramatiq import Actor
from dramatiq.errors import BrokerError
from dramatiq.message import Message
from fastapi import HTTPException
from loguru import logger
from starlette.concurrency import run_in_threadpool

from actors import status_writer
from app.auth import Principal
from app.metrics import PUBLISH_DURATION, PUBLISH_FAILURES
from app.status_records import QueuedRecords
from app.tenancy import message_options
from logs import REQUEST_ID

#: Seconds a client should wait before retrying a request refused with 503.
RETRY_AFTER_SECONDS = 1
#: `queued` records, written before the 2xx (read your writes).
queued_records = QueuedRecords(status_writer)


def broker_unavailable(reason: str) -> HTTPException:
    return HTTPException(
        status_code=503,
        detail=f"message broker unavailable ({reason}); nothing was confirmed, retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _message(actor: Actor, args: tuple, message_id: str | None, sender: Principal) -> Message:
    """The message for `actor`, carrying the request's X-Request-ID and the sender's key and tenant
    (app.tenancy.message_options); `message_id` fixes its id."""
    options = message_options(sender)
    request_id = REQUEST_ID.get()
    if request_id:
        options["request_id"] = request_id
    message = actor.message_with_options(args=args, **options)
    return message if message_id is None else message.copy(message_id=message_id)


async def publish(actor: Actor, *args: Any, sender: Principal, message_id: str | None = None) -> str:
    """Enqueue one message for `actor`; return its id once RabbitMQ has confirmed it.

    Waits on the event loop, not in a thread: handing the message to the
    broker's publisher never blocks, so a slow or absent broker costs the API
    no thread. `message_id` fixes the id (Idempotency-Key); the request's X-Request-ID
    travels in the message options. Answers 503 when
    RabbitMQ is unreachable or does not confirm within PUBLISH_TIMEOUT_SECONDS.
    """
    broker = actor.broker
    message = _message(actor, args, message_id, sender)
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
    await queued_records.record([message])  # before the answer: a GET right after it finds `queued`
    return message.message_id


#: Messages handed to the publisher at once by `publish_many`: bounds the memory of encoded
#: messages waiting for RabbitMQ, and how many a confirm timeout can leave in doubt.
MAX_IN_FLIGHT = 1000


@dataclass(frozen=True)
class PublishOutcome:
    message_id: str
    #: None once RabbitMQ confirmed the message; otherwise why not (the message may still arrive).
    error: str | None = None


async def publish_many(
    actor: Actor, arguments: Sequence[tuple], message_ids: Sequence[str | None], *, sender: Principal,
    confirm_timeout: float,
) -> list[PublishOutcome]:
    """Enqueue one message per entry of `arguments`; one outcome each, in order.

    Up to MAX_IN_FLIGHT messages go to the publisher at once and RabbitMQ
    confirms them together on the publisher's one channel, so a batch costs
    little more than a single publish. Nothing is raised: a broker that is down
    or slow marks the affected messages with an error and the caller decides
    (the batch route answers them `unavailable`, or 503 when none got through).
    `message_ids` fixes ids where not None (Idempotency-Key, ids kept from a
    file); the request's X-Request-ID travels in every message's options, and
    confirmed messages are recorded as `queued` for GET /api/{id}, as in `publish`.
    """
    outcomes: list[PublishOutcome] = []
    for start in range(0, len(arguments), MAX_IN_FLIGHT):
        chunk = zip(arguments[start : start + MAX_IN_FLIGHT], message_ids[start : start + MAX_IN_FLIGHT])
        messages = [_message(actor, args, message_id, sender) for args, message_id in chunk]
        errors = await _publish_chunk(actor.broker, messages, confirm_timeout)
        outcomes.extend(PublishOutcome(m.message_id, e) for m, e in zip(messages, errors))
    return outcomes


async def _publish_chunk(broker, messages: list, confirm_timeout: float) -> list[str | None]:
    """Hand every message to the publisher, then wait (at most `confirm_timeout`) for all confirms."""
    queue_name = messages[0].queue_name
    try:
        if not broker.queue_ready(queue_name):
            await run_in_threadpool(broker.declare_queue, queue_name, ensure=True)
    except (BrokerError, TimeoutError) as error:
        PUBLISH_FAILURES.labels(queue_name, type(error).__name__).inc(len(messages))
        logger.warning("publish of {} messages to {} refused: {}", len(messages), queue_name, error)
        return [str(error)] * len(messages)

    loop = asyncio.get_running_loop()
    all_settled = loop.create_future()
    started = time.perf_counter()
    futures: dict[int, Future] = {}
    refused: dict[int, BaseException] = {}
    for index, message in enumerate(messages):
        try:
            futures[index] = broker.publish_message(message)
        except BrokerError as error:  # disconnected: refused at once, without a round trip
            refused[index] = error

    # One wake-up of the event loop for the whole chunk, not one per confirm.
    confirm_seconds: dict[int, float] = {}
    remaining = len(futures)
    lock = threading.Lock()

    def settled(index: int, _future: Future) -> None:  # on the publisher's loop (the API's own, or a thread)
        nonlocal remaining
        confirm_seconds[index] = time.perf_counter() - started
        with lock:
            remaining -= 1
            last = remaining == 0
        if last:
            loop.call_soon_threadsafe(lambda: all_settled.done() or all_settled.set_result(None))

    if futures:
        for index, future in futures.items():
            future.add_done_callback(functools.partial(settled, index))
        await asyncio.wait({all_settled}, timeout=confirm_timeout)

    errors: list[str | None] = [None] * len(messages)
    reasons: dict[str, int] = {}  # metric label -> count, labelled as `publish` labels one failure
    confirmed = []
    for index, message in enumerate(messages):
        future = futures.get(index)
        if future is not None and not future.done():
            future.cancel()  # not sent yet? then never; sent already: RabbitMQ may still store it
        if future is not None and future.cancelled():
            errors[index], reason = f"no confirm within {confirm_timeout} s", "timeout"
        else:
            error = refused.get(index) or future.exception()
            if error is None:
                confirmed.append(message)
                PUBLISH_DURATION.labels(queue_name).observe(confirm_seconds[index])
                continue
            errors[index], reason = str(error), type(error).__name__
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in reasons.items():
        PUBLISH_FAILURES.labels(queue_name, reason).inc(count)
    if reasons:
        examples = "; ".join(sorted({error for error in errors if error})[:3])
        logger.warning("{} of {} messages to {} not confirmed: {}", len(messages) - len(confirmed), len(messages),
                       queue_name, examples)
    if confirmed:
        await queued_records.record(confirmed)  # before the answer: a GET right after it finds `queued`
    return errors
