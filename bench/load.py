"""The load generator, run as its own process so its CPU is not the service's.

On 2 cores an expensive client measures itself, so this one is small: a
plain HTTP/1.1 client on asyncio streams (uvloop), keep-alive connections,
bodies encoded before the clock starts, and only the status line,
Content-Length and body of each answer parsed. It replaced aiohttp, which
spent about 0.25 ms of CPU per request here (more than a fifth of what the
service's API spends) on machinery a benchmark does not need. Connections
are reopened if the server closes one; a chunked answer is refused as an error,
since the services under test never send one.

Closed loop (`rate=None`: `concurrency` requests always in flight) or
open loop (`rate` requests per second, started on schedule whatever the
latency, so queueing shows in the latency instead of lowering the rate).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson

from tests.support.processes import peak_rss_mb


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: POST, read the answer, repeat."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        try:
            self._writer.writelines((head, body))
            status_and_headers = await self._reader.readuntil(b"\r\n\r\n")
            status = int(status_and_headers[9:12])
            length, close = 0, False
            for line in status_and_headers.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
                elif name == b"transfer-encoding":
                    raise ConnectionError("chunked answer: not expected from the services under test")
            answer = await self._reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, answer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _drive(url: str, bodies: list[bytes], concurrency: int, rate: float | None, headers: dict[str, str]) -> dict:
    results: list[tuple[float, float, int, str]] = [None] * len(bodies)  # (sent, latency, status, message id)
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    request_line = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    ).encode()
    idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(concurrency):
        idle.put_nowait(HttpConnection(host, port))

    async def post(index: int) -> None:
        connection = await idle.get()  # open loop: a request waits for a free connection, as clients do
        try:
            body = bodies[index]
            head = request_line + b"Content-Length: %d\r\n\r\n" % len(body)
            sent = time.time()
            started = time.perf_counter()
            try:
                status, answer = await asyncio.wait_for(connection.post(head, body), 60)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError):
                results[index] = (sent, time.perf_counter() - started, 0, "")
                return
            latency = time.perf_counter() - started
            message_id = orjson.loads(answer).get("message_id", "") if status < 300 else ""
            results[index] = (sent, latency, status, message_id)
        finally:
            idle.put_nowait(connection)

    start = time.perf_counter()
    if rate is None:
        pending = iter(range(len(bodies)))

        async def closed_loop() -> None:
            for index in pending:  # shared: each of the `concurrency` loops takes the next request
                await post(index)

        await asyncio.gather(*(closed_loop() for _ in range(concurrency)))
    else:
        tasks = []
        for i in range(len(bodies)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule of an open-loop load, not a wait for a condition
            tasks.append(asyncio.create_task(post(i)))
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait().close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "results": results,
        "elapsed": elapsed,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_load(url: str, bodies: list[bytes], concurrency: int, rate: float | None, out,
             headers: dict[str, str] | None = None) -> None:
    """Entry point of the load process; sends its report through `out` (a Pipe end)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.send(asyncio.run(_drive(url, bodies, concurrency, rate, headers or {})))
    out.close()


def load_from_a_process(url: str, bodies: list[bytes], concurrency: int, rate: float | None = None,
                        headers: dict[str, str] | None = None, meanwhile: Callable[[], None] | None = None) -> dict:
    """Run the load in a process of its own and return its report; `meanwhile` is called every
    half second until the report comes (sampling the service's CPU, printing progress).

    Spawned, not forked: the child would otherwise start with a copy of the caller's memory and
    threads, and its CPU and peak RSS would not be the load's alone."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    loader = multiprocessing.get_context("spawn").Process(
        target=run_load, args=(url, bodies, concurrency, rate, sender, headers or {}))
    loader.start()
    while not receiver.poll(0.5):
        if meanwhile is not None:
            meanwhile()
    report = receiver.recv()
    loader.join()
    return report
