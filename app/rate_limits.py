"""Requests per second per API key, counted together by every API process through Redis.

Why not a per-request Redis call (the `limits` library does one INCR per
hit): measured here, `limits`' FixedWindowRateLimiter on redis.asyncio with
hiredis costs ~200 us of CPU per request, about 30% of what a whole POST /api
costs the API. Here a process leases tokens instead: a small Lua script takes
up to LEASE tokens of the key's current one-second window from Redis at once
(never more than the rate leaves), and requests spend them from memory. A
busy key costs one Redis round trip per lease, not per request; requests of
one key that find no token wait together for one lease.

Windows are fixed seconds (of each host's clock), so a burst that straddles
the end of one second and the start of the next can see twice the rate
within one second's span, as with any fixed-window limiter. Redis never
grants beyond the rate in a window, so all processes together never admit
more than it there. Tokens a process leased and did not spend before the
second ends are lost, so a key spread thinly over many processes may be held
a little under its rate (at most one lease, ~rate / (4 x API_WORKERS), per
process and second). With Redis unreachable each process enforces its share
(rate / API_WORKERS, at least 1) alone, counting what it already admitted in
that second: the limit still holds in total, and it never fails open. (While
Redis fails for one process and not for the others, that one may add its
share on top.) Redis is asked again a second later.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import redis.asyncio as redis
from loguru import logger
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

#: KEYS[1]: the window's counter; ARGV: wanted, rate. Grants what the rate leaves, at most `wanted`.
_LEASE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if grant <= 0 then return 0 end
redis.call('INCRBY', KEYS[1], grant)
redis.call('EXPIRE', KEYS[1], 3)
return grant
"""
#: How long to enforce shares alone after Redis failed, before asking it again.
REDIS_RETRY_SECONDS = 1.0


@dataclass
class _Window:
    second: int
    tokens: int = 0
    #: Redis said the rate is used up for this second.
    exhausted: bool = False
    #: Admitted here in this second (what counts while Redis is unreachable).
    local: int = 0
    lease: asyncio.Future | None = field(default=None, repr=False)


class RateLimiter:
    def __init__(self, redis_url: str, namespace: str, processes: int):
        self._redis: redis.Redis | None = None  # made on first use, on the event loop that uses it
        self._script = None
        self._namespace = namespace
        self._processes = max(1, processes)
        self._windows: dict[str, _Window] = {}
        self._redis_down_until = 0.0
        self._redis_url = redis_url
        self._loop: asyncio.AbstractEventLoop | None = None

    async def admit(self, key_id: str, rate: int) -> float | None:
        """None if the request may go on; else seconds until the key may ask again (for Retry-After)."""
        if rate <= 0:
            return None
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a client's connections and futures belong to one event loop
            self._loop, self._windows = loop, {}
            self._redis = redis.Redis.from_url(
                self._redis_url, socket_timeout=0.2, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
            )
            self._script = self._redis.register_script(_LEASE)
        while True:
            now = time.time()
            window = self._window(key_id, int(now))
            if window.tokens > 0:
                window.tokens -= 1
                window.local += 1
                return None
            if time.monotonic() < self._redis_down_until:
                if window.local < max(1, rate // self._processes):
                    window.local += 1
                    return None
                return max(0.001, window.second + 1 - now)
            if window.exhausted:
                return max(0.001, window.second + 1 - now)
            if window.lease is None:
                window.lease = asyncio.ensure_future(self._take_lease(key_id, window, rate))
            await asyncio.shield(window.lease)

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))

    def _window(self, key_id: str, second: int) -> _Window:
        window = self._windows.get(key_id)
        if window is None or window.second != second:
            if len(self._windows) > 10_000:  # keys idle for a second or more: nothing worth keeping
                self._windows = {k: w for k, w in self._windows.items() if w.second >= second}
            window = self._windows[key_id] = _Window(second)
        return window

    async def _take_lease(self, key_id: str, window: _Window, rate: int) -> None:
        wanted = max(1, math.ceil(rate / (4 * self._processes)))
        try:
            granted = int(await self._script(keys=[f"rate:{self._namespace}:{key_id}:{window.second}"],
                                             args=[wanted, rate]))
        except Exception as error:  # RedisError, OSError, or a surprise: never a 500, never open
            if not isinstance(error, (RedisError, OSError)):
                logger.exception("rate limit lease failed")
            logger.warning("rate limits enforced per process (each its share) while Redis is unreachable: {!r}",
                           error)
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        else:
            window.tokens += granted
            window.exhausted = granted == 0
        finally:
            window.lease = None
