"""Where the publisher's pika I/O runs: a thread of its own, or the caller's event loop.

pika is not thread-safe, so one loop owns the publisher's connection and every
pika call runs on it. In a worker (and any process without an event loop) that
is pika's own I/O loop on a thread of the publisher's. In the API it is the
event loop the requests run on: a publish from a request handler is then a
plain call that writes its frames, and the confirm resolves the request's
future on the same thread. With a thread of its own, every request crossed
two threads twice (the outbox and a wake-up of the publisher's loop; the
confirm and a wake-up of the event loop), which the API's profile put at about
a quarter of its CPU with pika's own work (bench/RESULTS.md).

Both offer the same few operations, so `ConfirmedPublisher` is written once:
`call_soon_threadsafe` from any thread, `call_later`, `on_loop` (is the caller
the loop's thread?), `new_future` (the future a caller on that thread awaits),
`connect` and `stop`.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Callable

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.select_connection import IOLoop


class OwnThread:
    """pika's I/O loop on a daemon thread; `run` is what the thread runs (it starts the loop)."""

    def __init__(self, run: Callable[[], None]):
        self.ioloop = IOLoop()
        self._thread = threading.Thread(target=run, name="amqp-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        self.ioloop.add_callback_threadsafe(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        return self.ioloop.call_later(delay, callback)

    def on_loop(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def new_future(self) -> Future:
        return Future()

    def connect(self, parameters: pika.ConnectionParameters, **callbacks: Any) -> pika.SelectConnection:
        return pika.SelectConnection(parameters, custom_ioloop=self.ioloop, **callbacks)

    def stop(self) -> None:
        self.ioloop.stop()


class EventLoop:
    """An asyncio loop that is already running (the API's): nothing to start, nothing to stop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop

    def start(self) -> None:
        pass

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        return self.loop.call_later(delay, callback)

    def on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:  # no loop runs in this thread
            return False

    def new_future(self) -> asyncio.Future:
        return self.loop.create_future()

    def connect(self, parameters: pika.ConnectionParameters, **callbacks: Any) -> AsyncioConnection:
        return AsyncioConnection(parameters, custom_ioloop=self.loop, **callbacks)

    def stop(self) -> None:
        pass  # the loop is the app's: it stops with the server
