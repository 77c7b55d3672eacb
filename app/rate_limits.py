"""Requests per second per API key, counted together by every API process through Redis.

Why not a per-request Redis call (the `limits` library does one INCR per
hit): measured here, `limits`' FixedWindowRateLimiter on redis.asyncio with
hiredis costs ~200 us of CPU per request, about 30% of what a whole POST /api
costs the API. This limiter decides on the hot path from memory and talks to
Redis once per SYNC_INTERVAL_SECONDS for all keys together: a pipelined
INCRBY of what this process admitted since the last exchange, which answers
with the total of all processes in the current one-second window.

A process admits while (last known total + admitted since) < rate. Until it
has heard the total of the current window it admits only its share
(rate / API_WORKERS), and a request beyond the share waits for that one
exchange (~10 ms) instead of being refused: a burst to one process within the
rate is admitted, and N processes bursting at once cannot admit N times the
rate. With Redis unreachable each process enforces its share alone: the
limit still holds in total, never more permissive, never failing open.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import redis.asyncio as redis
from loguru import logger
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

SYNC_INTERVAL_SECONDS = 0.01
#: Longest a request near the limit waits to hear the shared total before it is decided locally.
MAX_WAIT_SECONDS = 0.1


@dataclass
class _Window:
    second: int
    #: Admitted here and not yet sent to Redis.
    pending: int = 0
    #: Sent, being added in Redis right now.
    sending: int = 0
    #: All processes' total as Redis last answered, in this window.
    total: int = 0
    #: Admitted here in this window (the count that matters when Redis is down).
    local: int = 0
    heard: bool = False


class RateLimiter:
    def __init__(self, redis_url: str, namespace: str, processes: int):
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=0.2, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
        )
        self._namespace = namespace
        self._processes = max(1, processes)
        self._windows: dict[str, _Window] = {}
        self._redis_ok = True
        self._wake: asyncio.Event | None = None
        self._heard: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def admit(self, key_id: str, rate: int) -> float | None:
        """None if the request may go on; else seconds until the key may ask again (for Retry-After)."""
        if rate <= 0:
            return None
        now = time.time()
        window = self._window(key_id, int(now))
        share = max(1, rate // self._processes)
        if self._redis_ok and not window.heard and window.local >= share:
            await self._hear_total()
            window = self._window(key_id, int(now))
        if self._redis_ok and window.heard:
            used, limit = window.total + window.sending + window.pending, rate
        else:
            used, limit = window.local, share
        if used >= limit:
            return max(0.001, window.second + 1 - now)
        window.pending += 1
        window.local += 1
        self._wake_syncer()
        return None

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))

    def _window(self, key_id: str, second: int) -> _Window:
        window = self._windows.get(key_id)
        if window is None or window.second != second:
            window = self._windows[key_id] = _Window(second)
        return window

    def _wake_syncer(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            # First use on this event loop (a test client makes a new one each time).
            self._loop, self._wake = loop, asyncio.Event()
            self._heard = loop.create_future()
            self._task = loop.create_task(self._sync_forever())
        self._wake.set()

    async def _hear_total(self) -> None:
        self._wake_syncer()
        try:
            await asyncio.wait_for(asyncio.shield(self._heard), MAX_WAIT_SECONDS)
        except TimeoutError:
            pass

    async def _sync_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(SYNC_INTERVAL_SECONDS)
            heard, self._heard = self._heard, asyncio.get_running_loop().create_future()
            try:
                await self._sync()
            except Exception as error:  # the limiter must outlive any surprise; requests go on locally
                logger.warning("rate limit sync failed: {!r}", error)
            if not heard.done():
                heard.set_result(None)

    async def _sync(self) -> None:
        current = int(time.time())
        for key_id in [k for k, w in self._windows.items() if w.second < current - 1]:
            del self._windows[key_id]  # bounded by the keys active in the last two seconds
        due = [(key_id, window) for key_id, window in self._windows.items()
               if window.second >= current and (window.pending or not window.heard)]
        if not due:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key_id, window in due:
            window.sending, window.pending = window.pending, 0
            name = f"rate:{self._namespace}:{key_id}:{window.second}"
            pipe.incrby(name, window.sending)
            pipe.expire(name, 3)
        try:
            replies = await pipe.execute()
        except (RedisError, OSError) as error:
            for _key_id, window in due:
                window.pending += window.sending
                window.sending = 0
            if self._redis_ok:
                logger.warning("rate limits enforced per process (each its share) while Redis is unreachable: {!r}",
                               error)
            self._redis_ok = False
            return
        if not self._redis_ok:
            logger.info("rate limits shared through Redis again")
        self._redis_ok = True
        for (_key_id, window), total in zip(due, replies[::2]):
            window.total, window.sending, window.heard = int(total), 0, True
