"""Per-key rates shared by API processes through Redis (real Redis at 127.0.0.1:6379), and their share without it."""

from __future__ import annotations

import asyncio
import time
import uuid

from app.rate_limits import RateLimiter

REDIS = "redis://127.0.0.1:6379/0"


def early_in_a_second() -> None:
    """Start a burst in the first half of a one-second window, so it does not straddle two."""
    while time.time() % 1 > 0.4:
        time.sleep(0.02)


def admitted(limiters: list[RateLimiter], key: str, rate: int, requests: int) -> list[int]:
    """Send `requests` admits round-robin to the limiters (the API processes), all at once; admitted per limiter."""

    async def burst() -> list[int]:
        answers = await asyncio.gather(*(limiters[i % len(limiters)].admit(key, rate) for i in range(requests)))
        counts = [0] * len(limiters)
        for i, wait in enumerate(answers):
            counts[i % len(limiters)] += wait is None
        return counts

    early_in_a_second()
    return asyncio.run(burst())


def test_a_burst_within_the_rate_to_one_process_is_admitted_whole():
    limiter = RateLimiter(REDIS, f"test-{uuid.uuid4()}", processes=2)
    assert admitted([limiter], "key", rate=10, requests=10) == [10]


def test_two_processes_bursting_together_admit_the_rate_between_them_not_each():
    namespace = f"test-{uuid.uuid4()}"
    limiters = [RateLimiter(REDIS, namespace, processes=2) for _ in range(2)]
    counts = admitted(limiters, "key", rate=10, requests=40)
    assert sum(counts) == 10, counts


def test_without_redis_each_process_enforces_its_share_and_never_fails_open():
    limiter = RateLimiter("redis://127.0.0.1:1/0", f"test-{uuid.uuid4()}", processes=2)
    assert admitted([limiter], "key", rate=10, requests=30) == [5]


def test_a_refusal_says_how_long_until_the_window_ends_and_a_rate_of_0_is_unlimited():
    limiter = RateLimiter(REDIS, f"test-{uuid.uuid4()}", processes=1)

    async def run() -> tuple:
        first = await limiter.admit("k", 1)
        second = await limiter.admit("k", 1)
        unlimited = [await limiter.admit("free", 0) for _ in range(100)]
        return first, second, unlimited

    early_in_a_second()
    first, second, unlimited = asyncio.run(run())
    assert first is None
    assert 0 < second <= 1 and RateLimiter.retry_after(second) == "1"
    assert unlimited == [None] * 100
