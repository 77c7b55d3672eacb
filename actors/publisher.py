"""One confirmed, pipelined AMQP publisher per process, behind Dramatiq's `enqueue`.

Why not Dramatiq's own `RabbitmqBroker.enqueue`: with `confirm_delivery` it
gives every thread its own blocking pika connection and waits for one confirm
per publish, and on a connection error it retries up to six times. Under load
that burns CPU in pika's polling, and when RabbitMQ is down or hung a request
thread can wait far longer than a client should.

Here one loop owns one connection: in the API the event loop its requests run
on, elsewhere a thread of the publisher's own (actors/publisher_loops.py).
Callers hand it messages and wait on a future: many publishes are in flight at
once and RabbitMQ acknowledges them together (`multiple=True`). When the
connection is down a publish fails at once, without a network round trip; when
RabbitMQ does not confirm in time it fails after `timeout`. The publisher
reconnects on its own, so the API recovers without a restart.

What is in flight (waiting in the outbox, or sent and not yet confirmed) is
bounded in bytes: a RabbitMQ that is slow, not down, would otherwise let the
outbox and pika's send buffer grow with every request. Past the window a
publish fails at once (PublisherBusy), and the API answers 503.

Queues are bounded too (MAX_QUEUE_MESSAGES): a client far faster than the
workers would otherwise fill RabbitMQ's disk, and its disk alarm blocks every
publisher of the broker. The publisher reads each declared queue's depth twice
a second (a passive declare, on a channel of its own so that an error there
never touches the publishing one), and a publish to a queue at its bound fails
at once (QueueFull). A reading older than DEPTH_STALE_SECONDS is not used: a
bound kept on a frozen figure could refuse everything for good. A deleted
queue stops being watched. That bound is a soft one, by up to half a second of
traffic, and it is off while the readings are stale; so RabbitMQ keeps a hard
one behind it: the main queues are declared with `x-max-length` (twice the
soft bound) and `reject-publish`, and a publish past it is refused with a
basic.nack (503 as well). A queue declared by an earlier version without it
cannot be given it by a declare (RabbitMQ refuses arguments that differ, 406):
it is declared as it is, and one error line gives the `rabbitmqctl set_policy`
command that adds the bound in place.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import re
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import InvalidStateError as FutureInvalidState
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Optional

import orjson
import pika
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import current_millis, dq_name, q_name, xq_name
from dramatiq.errors import ConnectionClosed, ConnectionFailed
from dramatiq.message import Message
from loguru import logger

from actors.consumer import BatchedAckConsumer
from actors.hooks import OverriddenHooksOnly
from actors.publisher_loops import EventLoop, OwnThread

#: Pause between reconnection attempts; short, because clients are waiting.
RECONNECT_DELAY_SECONDS = 0.5


class PublishTimeout(ConnectionFailed):
    """RabbitMQ did not confirm the message in time; it may still arrive."""


class MessageNotRouted(ConnectionFailed):
    """RabbitMQ returned the message: its queue does not exist (any more)."""


class PublisherBusy(ConnectionFailed):
    """The bytes in flight to RabbitMQ are at the window (MAX_PUBLISH_IN_FLIGHT_BYTES)."""


class QueueFull(ConnectionFailed):
    """The queue holds MAX_QUEUE_MESSAGES ready messages: the workers are behind."""


class QueueArgumentsDiffer(ConnectionFailed):
    """RabbitMQ refused a declare (406): the queue exists with other arguments."""


class QueueTypeDiffers(QueueArgumentsDiffer):
    """The queue exists as the other type (classic, quorum) than RABBITMQ_QUEUE_TYPE says."""


#: RabbitMQ's reply code for a declare whose arguments differ from the queue's.
PRECONDITION_FAILED = 406
#: Queue arguments an operator tunes: a queue made with other values is used as it is (see `_declare_bounded`).
ADOPTABLE = ("x-max-length", "x-overflow", "x-delivery-limit", "x-dead-letter-strategy")
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'.*?current is (?:none|the value '([^']*)'|'([^']*)')")


def _differing_argument(reply: str) -> tuple[str | None, Any]:
    """(argument, the queue's current value or None) from RabbitMQ's 406 text, e.g. "inequivalent arg
    'x-max-length' for queue 'q' in vhost 'v': received '20' but current is '10'"."""
    match = _INEQUIVALENT.search(reply)
    if match is None:
        return None, None
    current = match.group(2) if match.group(2) is not None else match.group(3)
    if current is not None and current.lstrip("-").isdigit():
        return match.group(1), int(current)
    return match.group(1), current


#: How often the depth of each declared queue is read.
DEPTH_PROBE_SECONDS = 0.5
#: A depth read longer ago than this is not used (the bound is not applied until a fresh one).
DEPTH_STALE_SECONDS = 5.0


def _settle(future: Future | asyncio.Future, error: BaseException | None = None) -> None:
    """Resolve a future (a thread's or an event loop's) that a waiter may already have cancelled."""
    try:
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
    except (FutureInvalidState, asyncio.InvalidStateError):
        pass


def server_version(properties: dict) -> tuple[int, ...]:
    """`(4, 0, 5)` from a handshake's server properties; `()` when it names none we can read."""
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str((properties or {}).get("version", "")))
    return tuple(int(part) for part in found.groups() if part is not None) if found else ()


def _fails_the_connection(callback):
    """For the callbacks pika calls on the loop: one that raises drops the connection, and the publisher
    connects again. pika runs them bare, so the error would otherwise end its I/O loop (a thread of
    our own) or be logged by asyncio and leave the connection half-handled (the API's loop)."""

    @functools.wraps(callback)
    def guarded(self, *args: Any) -> Any:
        try:
            return callback(self, *args)
        except Exception as error:
            logger.error("RabbitMQ publisher's {} failed ({!r}); connecting again", callback.__name__, error)
            self._loop.call_soon_threadsafe(functools.partial(self._drop_connection, error))
            return None

    return guarded


class ConfirmedPublisher:
    """Publishes from any thread over one connection, with pipelined confirms.

    All pika calls run on the publisher's loop (actors/publisher_loops.py): a thread of its own,
    or, given `loop`, that event loop. A caller on the loop's thread publishes directly and gets
    a future of that loop; other threads append to an outbox, wake the loop, and get a
    `concurrent.futures.Future` (pika is not thread-safe).
    """

    def __init__(self, parameters: list[pika.ConnectionParameters], max_in_flight_bytes: int = 64 * 1024 * 1024,
                 loop: Optional[asyncio.AbstractEventLoop] = None):
        self.max_in_flight_bytes = max_in_flight_bytes
        #: Bytes in the outbox or sent and unconfirmed (guarded by the outbox lock).
        self.in_flight_bytes = 0
        self._parameters = itertools.cycle(parameters)  # a cluster: try the next node on reconnect
        self._loop = EventLoop(loop) if loop is not None else OwnThread(self._run)
        self._connection: Optional[pika.connection.Connection] = None
        self._channel = None
        self._ready = threading.Event()
        self.last_error: str = "not connected yet"
        self.ever_connected = False
        #: RabbitMQ's version as (major, minor, patch), from the connection's handshake; () before it.
        self.server_version: tuple[int, ...] = ()
        # Loop state: delivery tag -> (future, message id, bytes); futures of declares.
        self._unconfirmed: dict[int, tuple[Future, str, int]] = {}
        self._declares: list[Future] = []
        self._returned: set[str] = set()
        self._tags = itertools.count(1)
        self._outbox: deque = deque()
        self._outbox_lock = threading.Lock()
        self._drain_scheduled = False
        self._closing = False
        #: Set once a close has finished (the connection closed, or there was none).
        self.closed = threading.Event()
        #: (ready messages, time.monotonic() of the reading) per watched queue (the loop writes).
        self.depths: dict[str, tuple[int, float]] = {}
        self._watched: set[str] = set()
        self._probe_channel = None
        #: Queues whose passive declare is unanswered, in the order sent (RabbitMQ answers in order).
        self._probing: deque[str] = deque()
        self._loop.call_soon_threadsafe(self._connect)
        self._loop.start()

    # -- any thread ---------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def on_loop(self) -> bool:
        """True on the thread the publisher's pika I/O runs on, where nothing may wait for it."""
        return self._loop.on_loop()

    def wait_ready(self, timeout: float) -> bool:
        if self._loop.on_loop():
            return self._ready.is_set()  # waiting here would stop the very loop that connects
        return self._ready.wait(timeout)

    def publish(self, routing_key: str, body: bytes, properties: pika.BasicProperties) -> Future | asyncio.Future:
        """Queue one persistent message; the future resolves when RabbitMQ confirms it."""
        if not self._ready.is_set():
            raise ConnectionClosed(f"RabbitMQ connection is down: {self.last_error}")
        with self._outbox_lock:
            if self.in_flight_bytes and self.in_flight_bytes + len(body) > self.max_in_flight_bytes:
                raise PublisherBusy(f"{self.in_flight_bytes} bytes already wait for RabbitMQ's confirms "
                                    "(MAX_PUBLISH_IN_FLIGHT_BYTES): it is slow")
            self.in_flight_bytes += len(body)
        return self._submit(("publish", routing_key, body, properties))

    def _release(self, size: int) -> None:
        with self._outbox_lock:
            self.in_flight_bytes -= size

    def declare(self, queue: str, arguments: dict[str, Any]) -> Future | asyncio.Future:
        if not self._ready.is_set():
            raise ConnectionClosed(f"RabbitMQ connection is down: {self.last_error}")
        return self._submit(("declare", queue, arguments))

    def watch(self, queue: str) -> None:
        """Read this (declared) queue's depth from now on, into `depths`."""
        self._watched = self._watched | {queue}

    def depth(self, queue: str) -> int | None:
        """The queue's ready messages, or None when no reading is recent (probes failing, a
        blocked connection): a bound kept on a stale figure could refuse every publish for good."""
        count, read_at = self.depths.get(queue, (0, -DEPTH_STALE_SECONDS))
        return count if time.monotonic() - read_at < DEPTH_STALE_SECONDS else None

    def close(self) -> None:
        """Close the connection; `closed` is set once it is. Safe on a loop that has stopped."""
        self._closing = True
        try:
            self._loop.call_soon_threadsafe(self._shutdown)
        except RuntimeError:  # the event loop is closed already, and the connection with it
            self.closed.set()

    async def aclose(self, timeout: float) -> bool:
        """`close`, then wait up to `timeout` without blocking the event loop (which may be the one
        doing the closing), so RabbitMQ sees a clean close rather than a dropped socket."""
        self.close()
        return await asyncio.to_thread(self.closed.wait, timeout)

    def _submit(self, item: tuple) -> Future | asyncio.Future:
        """On the loop's thread, send at once; from another, through the outbox and one wake-up."""
        if self._loop.on_loop():
            future = self._loop.new_future()
            self._send((*item, future))
            return future
        future = Future()
        with self._outbox_lock:
            self._outbox.append((*item, future))
            if self._drain_scheduled:
                return future
            self._drain_scheduled = True
        self._loop.call_soon_threadsafe(self._drain)
        return future

    # -- the loop's thread ----------------------------------------------------

    def _run(self) -> None:
        """A thread of our own: run pika's I/O loop until closed."""
        while True:
            try:
                self._loop.ioloop.start()
                return  # stopped: closed
            except Exception as error:
                # pika runs loop callbacks bare, so one that raised ends the loop: what is in
                # flight fails, the connection it served is dropped, and the loop goes on.
                logger.error("RabbitMQ publisher's I/O loop failed ({!r}); connecting again", error)
                self._drop_connection(error)

    def _drop_connection(self, reason: BaseException) -> None:
        connection, self._connection = self._connection, None
        self._probe_channel = None
        self._probing.clear()
        self._fail_in_flight(reason)
        try:
            if connection is not None and connection.is_open:
                connection.close()  # its close callback is ignored: it is no longer ours
        except Exception:
            pass
        if not self._closing:
            self._loop.call_later(RECONNECT_DELAY_SECONDS, self._connect)

    def _connect(self) -> None:
        if self._closing:
            return
        if self._connection is not None and not self._connection.is_closed:
            return  # two failures in a row each asked for a reconnect: one connection is made
        try:
            self._connection = self._loop.connect(
                next(self._parameters),
                on_open_callback=self._on_connection_open,
                on_open_error_callback=self._on_connection_lost,
                on_close_callback=self._on_connection_lost,
            )
        except Exception as error:  # e.g. an unresolvable host: retry like any lost connection
            self._on_connection_lost(None, error)

    @_fails_the_connection
    def _on_connection_open(self, connection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    @_fails_the_connection
    def _on_channel_open(self, channel) -> None:
        self._channel = channel
        self._tags = itertools.count(1)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_returned)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    @_fails_the_connection
    def _on_confirm_mode(self, _frame) -> None:
        if self._connection is not None:
            self.server_version = server_version(self._connection.server_properties)
        if self.ever_connected:
            logger.info("RabbitMQ publisher connected again")
        else:
            self._loop.call_later(DEPTH_PROBE_SECONDS, self._probe_depths)
        self.ever_connected = True
        self.last_error = ""
        self._ready.set()

    def _probe_depths(self) -> None:
        if self._closing:
            return
        self._loop.call_later(DEPTH_PROBE_SECONDS, self._probe_depths)
        try:
            self._probe_once()
        except Exception as error:  # the readings go stale, and the bound is then not applied
            logger.warning("queue depths not read ({!r})", error)
            self._probe_channel = None
            self._probing.clear()

    def _probe_once(self) -> None:
        if self._connection is None or not self._connection.is_open or self._probing:
            return  # down, or the last probes are unanswered yet (a blocked connection): no backlog
        if self._probe_channel is None or not self._probe_channel.is_open:
            if self._probe_channel is None:  # (opening: once it is open, the next tick probes)
                self._probe_channel = self._connection.channel(on_open_callback=self._on_probe_channel_open)
            elif self._probe_channel.is_closed:
                self._probe_channel = None
            return
        for queue in self._watched:
            self._probing.append(queue)
            self._probe_channel.queue_declare(queue, passive=True,
                                              callback=lambda frame, queue=queue: self._depth(queue, frame))

    def _on_probe_channel_open(self, channel) -> None:
        channel.add_on_close_callback(self._on_probe_channel_closed)

    @_fails_the_connection
    def _on_probe_channel_closed(self, _channel, reason: BaseException) -> None:
        """A queue deleted under us closes the channel with 404, and the declares after its own go
        unanswered: it is no longer watched (declaring it again watches it again), and the next
        tick opens another channel for the rest."""
        if getattr(reason, "reply_code", None) == 404 and self._probing:
            gone = self._probing[0]
            self._watched = self._watched - {gone}
            self.depths = {queue: reading for queue, reading in self.depths.items() if queue != gone}
            logger.warning("queue {} is gone; its depth is no longer watched", gone)
        self._probe_channel = None
        self._probing.clear()

    @_fails_the_connection
    def _depth(self, queue: str, frame) -> None:
        if self._probing and self._probing[0] == queue:
            self._probing.popleft()
        self.depths = {**self.depths, queue: (frame.method.message_count, time.monotonic())}

    def _on_connection_lost(self, connection, reason: BaseException) -> None:
        if connection is not None and connection is not self._connection:
            return  # one dropped by `_drop_connection`, which has already moved on
        self._probe_channel = None
        self._probing.clear()
        self._fail_in_flight(reason)
        if not self._closing:
            self._loop.call_later(RECONNECT_DELAY_SECONDS, self._connect)
        else:
            self._finish_closing()

    @_fails_the_connection
    def _on_channel_closed(self, _channel, reason: BaseException) -> None:
        if (getattr(reason, "reply_code", None) == PRECONDITION_FAILED and self._declares
                and "inequivalent arg" in str(getattr(reason, "reply_text", ""))):
            # RabbitMQ answers in order: the oldest unanswered declare is the one it refused.
            _settle(self._declares.pop(0), QueueArgumentsDiffer(getattr(reason, "reply_text", repr(reason))))
        self._fail_in_flight(reason)
        # A channel error (e.g. a refused declare) leaves the connection open: reopen a channel.
        if self._connection is not None and self._connection.is_open and not self._closing:
            self._connection.channel(on_open_callback=self._on_channel_open)

    def _fail_in_flight(self, reason: BaseException) -> None:
        was_ready = self._ready.is_set()
        self._ready.clear()
        self._channel = None
        self.last_error = repr(reason)
        if was_ready:
            logger.warning("RabbitMQ publisher lost its connection: {}", self.last_error)
        error = ConnectionClosed(f"RabbitMQ connection lost before confirming: {self.last_error}")
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        declares, self._declares = self._declares, []
        self._release(sum(size for _, _, size in unconfirmed.values()))
        for future in itertools.chain((f for f, _, _ in unconfirmed.values()), declares):
            _settle(future, error)
        self._returned.clear()

    @_fails_the_connection
    def _drain(self) -> None:
        with self._outbox_lock:
            items = list(self._outbox)
            self._outbox.clear()
            self._drain_scheduled = False
        for item in items:
            self._send(item)

    def _send(self, item: tuple) -> None:
        """Publish or declare one item, whose last element is the future its caller waits on."""
        future = item[-1]
        size = len(item[2]) if item[0] == "publish" else 0
        if future.cancelled():
            self._release(size)
            return  # its waiter gave up before we got to it: do not publish
        if self._channel is None or not self._channel.is_open:
            self._release(size)
            _settle(future, ConnectionClosed(f"RabbitMQ connection is down: {self.last_error}"))
            return
        try:
            if item[0] == "publish":
                _, routing_key, body, properties, _ = item
                # Tagged once sent: a publish that raised before going out took no tag of RabbitMQ's.
                self._channel.basic_publish("", routing_key, body, properties, mandatory=True)
                self._unconfirmed[next(self._tags)] = (future, properties.message_id, size)
                size = 0  # counted until its confirm, or the connection's loss
            else:
                _, queue, arguments, _ = item
                self._declares.append(future)
                self._channel.queue_declare(
                    queue, durable=True, arguments=arguments, callback=lambda _f, f=future: self._declared(f)
                )
        except Exception as error:  # the channel broke under us; the close callback fails the rest
            self._release(size)
            _settle(future, ConnectionClosed(repr(error)))

    @_fails_the_connection
    def _declared(self, future: Future) -> None:
        if future in self._declares:
            self._declares.remove(future)
        _settle(future)

    @_fails_the_connection
    def _on_returned(self, _channel, _method, properties, _body) -> None:
        # A return always precedes the confirm of the same message.
        self._returned.add(properties.message_id)

    @_fails_the_connection
    def _on_confirm(self, frame) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        if method.multiple:
            tags = [tag for tag in self._unconfirmed if tag <= method.delivery_tag]
        else:
            tags = [method.delivery_tag]
        for tag in tags:
            entry = self._unconfirmed.pop(tag, None)
            if entry is None:
                continue
            future, message_id, size = entry
            self._release(size)
            if message_id in self._returned:
                self._returned.discard(message_id)
                _settle(future, MessageNotRouted(f"message {message_id} was returned: no such queue"))
            elif acked:
                _settle(future)
            else:
                _settle(future, ConnectionFailed(
                    f"RabbitMQ refused message {message_id} (basic.nack): its queue is at its length bound "
                    "(x-max-length, twice MAX_QUEUE_MESSAGES), or RabbitMQ could not take it"))

    def _shutdown(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()  # `_on_connection_lost` finishes
        else:
            self._finish_closing()

    def _finish_closing(self) -> None:
        self.closed.set()
        self._loop.stop()


def delivery_limit(limit: Optional[int], version: tuple[int, ...]) -> dict[str, Any]:
    """The `x-delivery-limit` argument that gives a quorum queue `limit` deliveries, or none (None).

    "None" is spelt by version: RabbitMQ 4.0 gives every quorum queue a limit of 20 unless it is
    declared with -1, while 3.x has no limit unless one is set, and takes -1 as a limit that
    drops a message the first time it is returned (checked on 3.10.8). An unknown version is
    taken as 3.x, the side that loses less if wrong: a 4.x queue keeps the default of 20, where
    -1 on a 3.x one would drop every message returned to it.
    """
    if limit is not None:
        return {"x-delivery-limit": limit}
    return {"x-delivery-limit": -1} if version >= (4,) else {}


class ConfirmedRabbitmqBroker(OverriddenHooksOnly, RabbitmqBroker):
    """`RabbitmqBroker` whose `enqueue` goes through a `ConfirmedPublisher`.

    Consumers are Dramatiq's own; only publishing and queue declaration change.
    `actor.send()` keeps its meaning: it returns once RabbitMQ has the message.
    """

    def __init__(self, *, url: str, middleware: list, publish_timeout: float,
                 max_in_flight_bytes: int = 64 * 1024 * 1024, max_queue_messages: int = 0,
                 queue_type: str = "classic", max_deliveries: int = 0):
        super().__init__(url=url, confirm_delivery=True, middleware=middleware)
        self.publish_timeout = publish_timeout
        self.max_in_flight_bytes = max_in_flight_bytes
        self.max_queue_messages = max_queue_messages  # 0: unbounded
        self.queue_type = queue_type
        self.max_deliveries = max_deliveries  # for quorum queues' own delivery limit; 0: none
        self._publisher: Optional[ConfirmedPublisher] = None
        self._publisher_pid: Optional[int] = None
        self._publisher_lock = threading.Lock()
        #: The event loop this process's publisher runs on (`publish_on`); None: a thread of its own.
        self._event_loop: Optional[asyncio.AbstractEventLoop] = None

    @property
    def consumer_class(self):
        """Dramatiq's consumer, acking bursts at once (actors/consumer.py)."""
        return BatchedAckConsumer

    @property
    def publisher(self) -> ConfirmedPublisher:
        """This process's publisher; a forked worker process starts its own."""
        if self._publisher_pid != os.getpid():
            with self._publisher_lock:
                if self._publisher_pid != os.getpid():
                    parameters = self.parameters if isinstance(self.parameters, list) else [self.parameters]
                    loop = self._event_loop if self._event_loop is not None and not self._event_loop.is_closed() else None
                    self._publisher = ConfirmedPublisher(parameters, self.max_in_flight_bytes, loop=loop)
                    self._publisher_pid = os.getpid()
        return self._publisher

    def publish_on(self, loop: asyncio.AbstractEventLoop) -> ConfirmedPublisher:
        """Run this process's publisher on `loop` (the API's, from its lifespan) from now on.

        Requests then publish without crossing threads (actors/publisher_loops.py). A publisher
        already running elsewhere (a thread, an earlier loop of the tests' clients) is closed.
        """
        with self._publisher_lock:
            previous = self._publisher if self._publisher_pid == os.getpid() else None
            self._event_loop = loop
            self._publisher_pid = None
        if previous is not None:
            previous.close()
        return self.publisher

    def _refuse_on_loop(self, what: str) -> None:
        """Before anything is sent: a blocking wait on the publisher's own loop would stop that loop
        before the confirm came, for the whole timeout and for every request."""
        if self.publisher.on_loop:
            raise RuntimeError(f"{what} blocks, and this is the event loop the publisher runs on: await "
                               "app.publishing.publish instead, or call it from a thread (run_in_threadpool)")

    def _await(self, future: Future, what: str) -> None:
        try:
            future.result(timeout=self.publish_timeout)
        except FutureTimeout:
            future.cancel()  # not published yet? then never
            raise PublishTimeout(f"RabbitMQ did not confirm {what} within {self.publish_timeout} s") from None

    def _ensure_queue(self, canonical_queue_name: str) -> None:
        if canonical_queue_name not in self.queues_pending:
            return
        self._refuse_on_loop(f"declaring queue {canonical_queue_name}")
        publisher = self.publisher
        if not publisher.ever_connected:
            # Just started (a worker booting, the API's first request): allow one timeout to connect.
            # Once connected, a lost connection fails at once instead.
            publisher.wait_ready(self.publish_timeout)
        arguments = self._build_queue_arguments(canonical_queue_name)
        self._declare_bounded(canonical_queue_name, self._typed(arguments, main=True))
        for name, args in (
            (dq_name(canonical_queue_name), self._typed(arguments, main=False)),
            (xq_name(canonical_queue_name), self._typed({"x-message-ttl": DEAD_MESSAGE_TTL}, main=False)),
        ):
            self._declare_adopting(name, args)
        self.queues_pending.discard(canonical_queue_name)
        self.publisher.watch(canonical_queue_name)

    def length_bound(self) -> dict[str, Any]:
        """The main queues' hard bound: RabbitMQ itself refuses (basic.nack) a publish past it.

        Twice MAX_QUEUE_MESSAGES: the app's soft bound answers 503 first, from a depth read twice
        a second; this one holds when that reading is late or missing, and a retry moved back
        from the delay queue into a queue at the soft bound still fits. The delay and dead-letter
        queues are never bounded: a retry is never refused.
        """
        if not self.max_queue_messages:
            return {}
        return {"x-max-length": 2 * self.max_queue_messages, "x-overflow": "reject-publish"}

    def _typed(self, arguments: dict[str, Any], *, main: bool) -> dict[str, Any]:
        """`arguments` for RABBITMQ_QUEUE_TYPE (see docs/ARCHITECTURE.md, "Queue types").

        Quorum: dead-lettering at least once (RabbitMQ's default for quorum queues is at most
        once; at-least-once needs reject-publish), and on the main queues a delivery limit one
        above MAX_DELIVERIES, so the app's count, which records why, acts first and RabbitMQ's
        holds when Redis is down. No limit on the delay and dead-letter queues: Dramatiq holds
        delayed messages unacked until due and they return on every reconnect, and a dead-letter
        listing returns what it read, which a limit would both count.
        """
        if self.queue_type != "quorum":
            return arguments
        typed = {**arguments, "x-queue-type": "quorum"}
        if "x-dead-letter-exchange" in arguments:
            typed.update({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
        limit = self.max_deliveries + 1 if main and self.max_deliveries else None
        typed.update(delivery_limit(limit, self.publisher.server_version))
        return typed

    def _declare(self, queue: str, arguments: dict[str, Any]) -> None:
        """Declare one queue; one of the other type is refused with what to do, in one line."""
        try:
            self._await(self.publisher.declare(queue, arguments), f"the declaration of queue {queue}")
        except QueueArgumentsDiffer as error:
            if "x-queue-type" not in str(error):
                raise
            wanted = arguments.get("x-queue-type", "classic")
            raise QueueTypeDiffers(
                f"queue {queue} exists, and not as a {wanted} queue, which RABBITMQ_QUEUE_TYPE={self.queue_type} "
                "asks for; a queue's type is fixed when it is made. To migrate: stop the API and the workers, "
                f"let the workers drain it first (or move its messages with a shovel), delete {queue} "
                "(rabbitmqctl delete_queue -p <vhost> <name>, for the queue, its .DQ and its .XQ), and start "
                f"again; or keep RABBITMQ_QUEUE_TYPE={'quorum' if wanted == 'classic' else 'classic'}"
            ) from None

    def _declare_bounded(self, queue: str, arguments: dict[str, Any]) -> None:
        """Declare a main queue with its length bound (and, quorum, its delivery limit)."""
        self._declare_adopting(queue, {**arguments, **self.length_bound()})

    def _declare_adopting(self, queue: str, asked: dict[str, Any]) -> None:
        """Declare `queue` with `asked`, or as it is when it differs only in what an operator tunes.

        A queue keeps the arguments it was made with, and RabbitMQ refuses a declare whose
        arguments differ (406), naming one argument at a time. For the ones an operator tunes
        (`ADOPTABLE`: made by an earlier version without a bound or a delivery limit, or with
        another MAX_QUEUE_MESSAGES or MAX_DELIVERIES), the queue is declared as it is, and one
        error line says what it kept and the `rabbitmqctl set_policy` that applies the configured
        values in place. Any other difference, the type included, is refused.
        """
        wanted = dict(asked)
        kept: dict[str, Any] = {}
        for _ in range(len(ADOPTABLE) + 1):
            try:
                self._declare(queue, wanted)
                break
            except QueueTypeDiffers:
                raise
            except QueueArgumentsDiffer as error:
                name, current = _differing_argument(str(error))
                if name not in ADOPTABLE or name in kept:
                    raise
                kept[name] = current
                if current is None:
                    wanted.pop(name, None)
                else:
                    wanted[name] = current
                self.publisher.wait_ready(self.publish_timeout)  # the refusal closed the channel; it reopens
        if kept:
            policy = ",".join(f'"{name[2:]}":{orjson.dumps(asked[name]).decode()}' for name in kept if name in asked)
            how = (f"To apply those in place: rabbitmqctl set_policy -p <vhost> --apply-to queues {queue}-bound "
                   f"'^{queue}$' '{{{policy}}}' (a policy can lower a bound an argument set, not raise it: for that "
                   "the queue must be made again)" if policy else
                   "A policy cannot take an argument away: to drop it the queue must be made again")
            logger.error("queue {} keeps the arguments it was made with ({}) instead of the configured ones ({}). {}",
                         queue, ", ".join(f"{name}={current}" for name, current in kept.items()),
                         ", ".join(f"{name}={asked.get(name)}" for name in kept), how)

    def queue_ready(self, queue_name: str) -> bool:
        """True once `queue_name` is declared, so publishing it needs no round trip first."""
        return queue_name in self.queues and queue_name not in self.queues_pending

    def publish_message(self, message: Message, *, delay: Optional[int] = None) -> Future | asyncio.Future:
        """Hand a message to the publisher without blocking; the future resolves on confirm.

        For callers on an event loop: on the publisher's own (`publish_on`), an asyncio future of
        it; from elsewhere a `concurrent.futures.Future`. Its queue must be declared already
        (`queue_ready`, or `declare_queue(name, ensure=True)` in a thread).
        Raises `ConnectionClosed` at once when RabbitMQ is unreachable.
        """
        if delay is not None:
            message = message.copy(
                queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay}
            )
        elif self.max_queue_messages:  # (a retry, to the delay queue, is never refused)
            depth = self.publisher.depth(message.queue_name)
            if depth is not None and depth >= self.max_queue_messages:
                raise QueueFull(f"queue {message.queue_name} holds {depth} messages (MAX_QUEUE_MESSAGES): "
                                "the workers are behind")
        self.emit_before("enqueue", message, delay)
        properties = pika.BasicProperties(
            delivery_mode=2,
            priority=message.options.get("broker_priority"),
            message_id=message.message_id,
        )
        future = self.publisher.publish(message.queue_name, message.encode(), properties)

        def confirmed(done: Future) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if isinstance(error, MessageNotRouted):
                self.queues_pending.add(q_name(message.queue_name))  # redeclare on the next send
            elif error is None:
                self.emit_after("enqueue", message, delay)

        future.add_done_callback(confirmed)
        return future

    def enqueue(self, message: Message, *, delay: Optional[int] = None) -> Message:
        """Dramatiq's blocking enqueue (actor.send, retries): publish and wait for the confirm."""
        self._refuse_on_loop(f"sending message {message.message_id}")
        self.declare_queue(message.queue_name, ensure=True)
        future = self.publish_message(message, delay=delay)
        self._await(future, f"message {message.message_id}")
        return message

    def close(self) -> None:
        if self._publisher is not None and self._publisher_pid == os.getpid():
            self._publisher.close()
        super().close()
