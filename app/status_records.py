"""`queued` is in Redis before the API answers 2xx, so a GET right after the answer finds it.

The workers' StatusWriter buffers on purpose: nothing there should wait on
bookkeeping. The API cannot: a client that polls `GET /api/{id}` the moment it
has its 202 must not be told the message is unknown (read your writes). So each
request awaits its `queued` record, but the records of every request in flight
share one pipelined round trip: the first schedules a flush for the next turn of
the event loop, and the others join it. When Redis fails or is slow, the records
go to the buffered StatusWriter, which keeps them and retries, and the request is
answered all the same: the message is on RabbitMQ, and the status routes answer
503 while Redis is unreachable, never a false 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import redis.asyncio as redis
from dramatiq.message import Message
from loguru import logger
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from actors.message_status import StatusWriter, queue_writes, queued_record

#: Longest a request waits for its record before leaving it to the buffered writer.
TIMEOUT_SECONDS = 0.25


class QueuedRecords:
    def __init__(self, fallback: StatusWriter):
        self._fallback = fallback
        self._pending: list[tuple[str, dict, bool]] = []
        self._flush: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: redis.Redis | None = None

    async def record(self, messages: Iterable[Message]) -> None:
        """Return once the `queued` records of `messages` are in Redis (or handed to the buffered writer)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a client's connections belong to one event loop (tests make several)
            self._loop, self._client, self._pending, self._flush = loop, None, [], None
        self._pending.extend(queued_record(message) for message in messages)
        if self._flush is None:
            self._flush = loop.create_task(self._write_soon())
        await asyncio.shield(self._flush)

    async def _write_soon(self) -> None:
        await asyncio.sleep(0)  # one turn of the loop: the requests answered together write together
        batch, self._pending, self._flush = self._pending, [], None
        fallback = self._fallback
        try:
            if self._client is None:
                self._client = redis.Redis.from_url(fallback.redis_url, socket_timeout=TIMEOUT_SECONDS,
                                                    socket_connect_timeout=TIMEOUT_SECONDS,
                                                    retry=Retry(NoBackoff(), 0))
            pipe = self._client.pipeline(transaction=False)
            queue_writes(pipe, fallback.namespace, fallback.ttl_seconds, batch)
            await asyncio.wait_for(pipe.execute(), TIMEOUT_SECONDS * 2)
        except (RedisError, OSError, TimeoutError) as error:
            logger.warning("queued status of {} message(s) left to the background writer: {!r}", len(batch), error)
            for message_id, fields, only_if_new in batch:
                fallback.record(message_id, fields, only_if_new=only_if_new)
