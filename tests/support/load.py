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


async def _post_all(url: str, bodies: list[bytes], concurrency: int, timeout: float) -> list[Answer]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

        async def post(index: int, body: bytes) -> Answer:
            async with session.post(url, data=body, headers=headers) as response:
                return Answer(index, response.status, orjson.loads(await response.read()))

        return await asyncio.gather(*(post(i, body) for i, body in enumerate(bodies)))


def post_all(url: str, payloads: list[dict], *, concurrency: int = 64, timeout: float = 60) -> list[Answer]:
    """POST every payload concurrently; answers in payload order."""
    bodies = [orjson.dumps(payload) for payload in payloads]
    return asyncio.run(_post_all(url, bodies, concurrency, timeout))
