"""`queued` is in Redis before the API answers 2xx, so a GET right after the answer finds it.

The workers' StatusWriter buffers on purpose: nothing there should wait on
bookkeeping. The API cannot leave it at that: a client that polls
`GET /api/{id}` the moment it has its 202 must not be told the message is
unknown (read your writes). So a request hands its record to the same writer
and waits for the writer's next flush, which it asks to happen at once. The
records of every request that asks while a flush is on its way share the next
one (one script call to Redis for all of them, and one wake-up of the event
loop), so under load the cost per request stays small. Measured in
bench/RESULTS.md: an awaited redis.asyncio pipeline per request cost ~550 us
of CPU here; this costs ~140 us per request with 32 waiting together (~510 us
for a request alone, mostly the hand-off to the writer's thread).

When Redis fails or is slow (beyond TIMEOUT_SECONDS), the request is answered
all the same: the message is on RabbitMQ, the writer keeps the record and
retries, and the status routes answer 503 while Redis is unreachable, never a
false 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import Future

from dramatiq.message import Message

from actors.message_status import StatusWriter

#: Longest a request waits for its record to reach Redis.
TIMEOUT_SECONDS = 0.25


class QueuedRecords:
    def __init__(self, writer: StatusWriter):
        self._writer = writer
        #: The writer's pending flush -> the event-loop future its waiters await (one wake-up per flush).
        self._waiters: dict[Future, asyncio.Future] = {}

    async def record(self, messages: Iterable[Message]) -> None:
        """Return once the `queued` records of `messages` are in Redis (or kept by the writer)."""
        self._writer.queued(messages)
        flushed = self._writer.flushed()
        loop = asyncio.get_running_loop()
        waiter = self._waiters.get(flushed)
        if waiter is None:
            waiter = self._waiters[flushed] = loop.create_future()
            flushed.add_done_callback(lambda _: _call_soon(loop, self._settle, flushed, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), TIMEOUT_SECONDS)
        except TimeoutError:
            pass  # Redis is slow: the writer keeps the record and sends it when it can

    def _settle(self, flushed: Future, waiter: asyncio.Future) -> None:
        self._waiters.pop(flushed, None)
        if not waiter.done():
            waiter.set_result(None)


def _call_soon(loop: asyncio.AbstractEventLoop, *callback) -> None:
    """From the writer's thread; a loop closed meanwhile (a test client's) has nobody left to wake."""
    try:
        loop.call_soon_threadsafe(*callback)
    except RuntimeError:
        pass
