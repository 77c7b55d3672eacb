"""The load generator, run as its own process so its CPU is not the service's.

aiohttp with pre-encoded bodies: on 2 cores an expensive client measures
itself. Closed loop (`rate=None`: `concurrency` requests always in flight) or
open loop (`rate` requests per second, started on schedule whatever the
latency, so queueing shows in the latency instead of lowering the rate).
"""

from __future__ import annotations

import asyncio
import resource
import time

import aiohttp
import orjson


async def _drive(url: str, bodies: list[bytes], concurrency: int, rate: float | None) -> dict:
    results: list[tuple[float, float, int, str]] = [None] * len(bodies)  # (sent, latency, status, message id)
    slots = asyncio.Semaphore(concurrency)
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def post(index: int) -> None:
            async with slots:
                sent = time.time()
                started = time.perf_counter()
                try:
                    async with session.post(url, data=bodies[index], headers=headers) as response:
                        body = await response.read()
                        status = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    results[index] = (sent, time.perf_counter() - started, 0, "")
                    return
                latency = time.perf_counter() - started
                message_id = orjson.loads(body).get("message_id", "") if status < 300 else ""
                results[index] = (sent, latency, status, message_id)

        start = time.perf_counter()
        if rate is None:
            await asyncio.gather(*(post(i) for i in range(len(bodies))))
        else:
            tasks = []
            for i in range(len(bodies)):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # the schedule of an open-loop load, not a wait for a condition
                tasks.append(asyncio.create_task(post(i)))
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "results": results,
        "elapsed": elapsed,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def run_load(url: str, bodies: list[bytes], concurrency: int, rate: float | None, out) -> None:
    """Entry point of the load process; sends its report through `out` (a Pipe end)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.send(asyncio.run(_drive(url, bodies, concurrency, rate)))
    out.close()
