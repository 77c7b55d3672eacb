"""`queued` is in Redis before the API answers 2xx, so a GET right after the answer finds it.

The workers' StatusWriter buffers on purpose: nothing there should wait on
bookkeeping. The API cannot leave it at that: a client that polls
`GET /api/{id}` the moment it has its 202 must not be told the message is
unknown (read your writes). So a request's record is written before its
answer, and the requests that ask meanwhile share one write: the records wait
in a list on the event loop, one task sends them all in one script call to
Redis, and one future wakes every request whose record went with it.

The write is made on the event loop (redis.asyncio), not handed to the
writer's thread. The hand-off over there and back (the thread woken, the GIL
changing hands, the loop woken by its self-pipe) was most of the ~140 us a
request that design cost under load, and ~510 us for a request alone
(bench/RESULTS.md); an awaited redis.asyncio pipeline per request cost ~550.

When Redis fails or is slow (beyond TIMEOUT_SECONDS), the request is answered
all the same: the message is on RabbitMQ. Records Redis refused go to the
process's StatusWriter, which keeps them and retries (bounded, as for every
record), and the status routes answer 503 while Redis is unreachable, never a
false 404.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterable
from typing import Any

import redis.asyncio as redis
from dramatiq.message import Message
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from actors.message_status import WRITE_SCRIPT, StatusWriter, queued_record

#: Longest a request waits for its record to reach Redis.
TIMEOUT_SECONDS = 0.25
#: Longest one write may take before it fails and its records go to the writer's thread: the
#: requests stopped waiting long before (TIMEOUT_SECONDS), and the next write waits behind it.
WRITE_TIMEOUT_SECONDS = 1.0

Record = tuple[str, dict[str, Any], bool]


class QueuedRecords:
    def __init__(self, writer: StatusWriter):
        self._writer = writer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._script: Any = None
        #: Records waiting for the next write, and the future that write resolves.
        self._pending: list[Record] = []
        self._next: asyncio.Future | None = None
        self._flusher: asyncio.Task | None = None

    async def record(self, messages: Iterable[Message]) -> None:
        """Return once the `queued` records of `messages` are in Redis (or kept by the writer)."""
        records = [queued_record(message) for message in messages]
        if not records:
            return
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._start_on(loop)
        self._pending += records
        written = self._next
        if written is None:
            written = self._next = loop.create_future()
        if self._flusher is None or self._flusher.done():
            # In a context of its own: it writes for every request waiting, so its log lines (Redis
            # down, the client's own at DEBUG) are not any one request's, as they would be in this one's.
            self._flusher = loop.create_task(self._write_while_pending(), context=contextvars.Context())
        try:
            await asyncio.wait_for(asyncio.shield(written), TIMEOUT_SECONDS)
        except TimeoutError:
            pass  # Redis is slow: the write goes on, and what it cannot write the writer keeps

    def _start_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """A client of this loop's own: redis.asyncio's connections belong to the loop that made them.

        One loop serves a process for its life; a second comes only in tests (one per test client),
        and anything the first left unwritten goes to the writer's thread."""
        self._hand_to_writer(self._pending)
        self._pending, self._next, self._flusher = [], None, None
        client = redis.Redis.from_url(self._writer.redis_url, socket_timeout=WRITE_TIMEOUT_SECONDS,
                                      socket_connect_timeout=WRITE_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0))
        self._script = client.register_script(WRITE_SCRIPT)
        self._loop = loop

    async def _write_while_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            written, self._next = self._next, None
            try:
                await self._script(**self._writer.script_arguments(batch))
            except BaseException as error:  # noqa: BLE001 (Redis down, slow, its answer lost, the loop ending)
                self._hand_to_writer(batch)
                if not isinstance(error, Exception):
                    raise
                self._writer.warn(f"queued records not written to Redis yet (kept for later): {error!r}")
            finally:
                if not written.done():
                    written.set_result(None)

    def _hand_to_writer(self, records: list[Record]) -> None:
        """The writer's thread keeps them and sends them when Redis takes them again."""
        for message_id, fields, only_if_new in records:
            self._writer.record(message_id, fields, only_if_new=only_if_new)
