"""A cheap load client: aiohttp with pre-encoded bodies (an expensive client measures itself)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import orjson


@dataclass
class Answer:
    index: int
    status: int
    body: dict


def _headers(key: str | None) -> dict[str, str]:
    return {"content-type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}


async def _post_all(url: str, bodies: list[bytes], concurrency: int, timeout: float, key: str | None) -> list[Answer]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    headers = _headers(key)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

        async def post(index: int, body: bytes) -> Answer:
            async with session.post(url, data=body, headers=headers) as response:
                return Answer(index, response.status, orjson.loads(await response.read()))

        return await asyncio.gather(*(post(i, body) for i, body in enumerate(bodies)))


def post_all(url: str, payloads: list[dict], *, key: str | None, concurrency: int = 64, timeout: float = 60
             ) -> list[Answer]:
    """POST every payload concurrently, with API key `key`; answers in payload order."""
    bodies = [orjson.dumps(payload) for payload in payloads]
    return asyncio.run(_post_all(url, bodies, concurrency, timeout, key))


@dataclass
class RetryReport:
    answers: list[Answer]
    refusal_seconds: list[float]  # how long each 503 took to arrive
    refusal_reasons: list[str]


async def _post_until_accepted(url: str, bodies: list[bytes], keys: list[str], concurrency: int, timeout: float,
                               key: str | None) -> RetryReport:
    connector = aiohttp.TCPConnector(limit=concurrency)
    loop = asyncio.get_running_loop()
    refusals: list[float] = []
    reasons: list[str] = []
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        slots = asyncio.Semaphore(concurrency)  # so a request's clock starts when it is sent, not queued

        async def post(index: int) -> Answer:
            headers = {**_headers(key), "Idempotency-Key": keys[index]}
            for _ in range(200):
                async with slots:
                    started = loop.time()
                    async with session.post(url, data=bodies[index], headers=headers) as response:
                        body = orjson.loads(await response.read())
                        if response.status != 503:
                            return Answer(index, response.status, body)
                        refusals.append(loop.time() - started)
                        reasons.append(body.get("detail", ""))
                        retry_after = float(response.headers["Retry-After"])
                await asyncio.sleep(retry_after)  # the server's own back-off hint
            raise AssertionError(f"request {index} was refused 200 times")

        answers = await asyncio.gather(*(post(i) for i in range(len(bodies))))
    return RetryReport(list(answers), refusals, reasons)


def post_until_accepted(url: str, payloads: list[dict], keys: list[str], *, key: str | None, concurrency: int = 32,
                        timeout: float = 10) -> RetryReport:
    """POST each payload with its Idempotency-Key, retrying 503s as a well-behaved client does.

    `timeout` bounds every single request: one that hangs fails the load.
    """
    bodies = [orjson.dumps(payload) for payload in payloads]
    return asyncio.run(_post_until_accepted(url, bodies, keys, concurrency, timeout, key))
