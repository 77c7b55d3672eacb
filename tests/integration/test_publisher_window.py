"""The publisher against a real RabbitMQ: its in-flight window, its tags, its depth readings and its
recovery, in both of its homes (actors/publisher_loops.py): a thread of its own (the workers), and an
event loop that is not the caller's (the API's, with publishes made from coroutines on it)."""

from __future__ import annotations

import asyncio
import threading
import time

import pika
import pytest

from actors.publisher import ConfirmedPublisher, PublisherBusy
from tests.support.rabbit import create_vhost, delete_vhost, vhost_url
from tests.support.waiting import wait_for


class OwnThread:
    """The publisher runs its own thread; the test calls it from the test's thread."""

    def make(self, url: str, **options) -> ConfirmedPublisher:
        return ConfirmedPublisher([pika.URLParameters(url)], **options)

    def call(self, function, *args):
        return function(*args)

    def result(self, future, timeout: float):
        return future.result(timeout=timeout)

    def close(self) -> None:
        pass


class EventLoop:
    """The publisher runs on an event loop (as in the API), and is called from coroutines on it,
    so publishes take the direct path and their futures are the loop's."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def make(self, url: str, **options) -> ConfirmedPublisher:
        return ConfirmedPublisher([pika.URLParameters(url)], loop=self.loop, **options)

    def call(self, function, *args):
        async def on_loop():
            return function(*args)

        return asyncio.run_coroutine_threadsafe(on_loop(), self.loop).result(timeout=10)

    def result(self, future, timeout: float):
        assert isinstance(future, asyncio.Future), "a publish made on the loop gets a future of the loop"

        async def wait():
            return await asyncio.wait_for(asyncio.shield(future), timeout)

        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result(timeout=timeout + 5)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(params=[OwnThread, EventLoop], ids=["own thread", "event loop"])
def home(request):
    home = request.param()
    yield home
    home.close()


def _started(home, vhost: str, **options) -> ConfirmedPublisher:
    publisher = home.make(vhost_url(vhost), **options)
    publisher.url_for_tests = vhost_url(vhost)
    assert publisher.wait_ready(10), publisher.last_error
    return publisher


def _closed(publisher: ConfirmedPublisher) -> None:
    publisher.close()
    assert publisher.closed.wait(10), "the publisher's connection did not close"


@pytest.fixture()
def unconfirming_publisher(home):
    """A real publisher on a vhost of its own, whose messages never reach RabbitMQ (so never confirm)."""
    vhost = create_vhost("window")
    publisher = _started(home, vhost, max_in_flight_bytes=1024 * 1024)
    try:
        publisher._channel.basic_publish = lambda *args, **kwargs: None  # RabbitMQ "slow": it never hears them
        yield publisher
    finally:
        _closed(publisher)
        delete_vhost(vhost)


def test_publishes_past_the_window_are_refused_at_once_and_the_window_reopens(unconfirming_publisher, home):
    publisher = unconfirming_publisher
    body = b"x" * (300 * 1024)
    properties = pika.BasicProperties(message_id="m", delivery_mode=2)
    waiting = [home.call(publisher.publish, "ingest", body, properties) for _ in range(3)]  # 900 KiB of 1 MiB
    with pytest.raises(PublisherBusy, match="MAX_PUBLISH_IN_FLIGHT_BYTES"):
        home.call(publisher.publish, "ingest", body, properties)
    assert publisher.in_flight_bytes == 3 * len(body)

    # The connection is lost: those three fail, and their bytes leave the window.
    publisher._loop.call_soon_threadsafe(lambda: publisher._connection.close())
    wait_for(lambda: all(future.done() for future in waiting), timeout=10, what="the unconfirmed to fail")
    assert publisher.in_flight_bytes == 0


@pytest.fixture()
def publisher(home):
    vhost = create_vhost("publisher")
    publisher = _started(home, vhost, max_in_flight_bytes=1024 * 1024)
    try:
        yield publisher
    finally:
        _closed(publisher)
        delete_vhost(vhost)


def _declared(home, publisher, *queues: str) -> None:
    for queue in queues:
        home.result(home.call(publisher.declare, queue, {}), timeout=10)
        publisher.watch(queue)


def test_a_publish_is_confirmed_and_its_bytes_leave_the_window(publisher, home):
    _declared(home, publisher, "q")
    properties = pika.BasicProperties(message_id="m", delivery_mode=2)
    futures = [home.call(publisher.publish, "q", b"body", properties) for _ in range(50)]
    for future in futures:
        assert home.result(future, timeout=10) is None
    assert publisher.in_flight_bytes == 0
    wait_for(lambda: publisher.depth("q") == 50, timeout=10, what="the 50 messages in the queue")


def test_a_publish_that_raised_before_going_out_takes_no_confirm_of_anothers(publisher, home):
    """Tags follow what RabbitMQ saw: the next message is confirmed as itself, not left waiting."""
    _declared(home, publisher, "q")
    real, calls = publisher._channel.basic_publish, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("could not encode the properties")
        return real(*args, **kwargs)

    publisher._channel.basic_publish = fails_once
    properties = pika.BasicProperties(message_id="m", delivery_mode=2)
    first = home.call(publisher.publish, "q", b"one", properties)
    with pytest.raises(Exception, match="could not encode"):
        home.result(first, timeout=10)
    home.result(home.call(publisher.publish, "q", b"two", properties), timeout=5)  # confirmed as itself
    assert publisher.in_flight_bytes == 0, "the failed one left the window too"


def test_depths_are_read_and_a_stale_reading_is_not_used(publisher, home):
    _declared(home, publisher, "q")
    wait_for(lambda: publisher.depth("q") == 0, timeout=10, what="a first reading")
    publisher.depths = {"q": (10**6, time.monotonic() - 60)}
    assert publisher.depth("q") is None


def test_a_deleted_queue_is_no_longer_watched_and_the_others_still_are(publisher, home):
    _declared(home, publisher, "gone", "kept")
    wait_for(lambda: publisher.depth("gone") == 0 and publisher.depth("kept") == 0, timeout=10, what="readings")
    with pika.BlockingConnection(pika.URLParameters(publisher.url_for_tests)) as connection:
        channel = connection.channel()
        channel.queue_delete("gone")
        channel.basic_publish("", "kept", b"x", pika.BasicProperties(delivery_mode=2))
    wait_for(lambda: "gone" not in publisher._watched and publisher.depth("kept") == 1, timeout=10,
             what="the deleted queue dropped and the other read on")


def test_a_callback_of_the_publishers_that_raises_costs_the_connection_not_the_publisher(publisher, home):
    _declared(home, publisher, "q")
    publisher._loop.call_soon_threadsafe(lambda: publisher._on_confirm(None))  # raises inside the callback
    wait_for(lambda: not publisher.ready, timeout=10, what="the failed callback to drop the connection")
    assert publisher.wait_ready(10), "connected again"
    properties = pika.BasicProperties(message_id="m", delivery_mode=2)
    home.result(home.call(publisher.publish, "q", b"after", properties), timeout=10)


@pytest.mark.parametrize("home", [OwnThread], ids=["own thread"], indirect=True)
def test_a_loop_callback_that_raises_costs_the_connection_not_the_publisher(publisher, home):
    """On a thread of its own, pika's loop ends when any callback raises; the publisher starts it again.
    (An event loop logs such a callback and goes on: nothing of the publisher's broke.)"""
    _declared(home, publisher, "q")
    publisher._loop.call_soon_threadsafe(lambda: 1 / 0)
    wait_for(lambda: not publisher.ready, timeout=10, what="the loop to fail and drop its connection")
    assert publisher.wait_ready(10), "connected again"
    publisher.publish("q", b"after", pika.BasicProperties(message_id="m", delivery_mode=2)).result(timeout=10)


def test_a_blocking_wait_on_the_publishers_own_loop_returns_at_once(publisher, home):
    """`wait_ready` there would stop the loop that connects; it answers what is, without waiting."""
    started = time.monotonic()
    assert home.call(publisher.wait_ready, 30) is True
    if isinstance(home, EventLoop):
        assert time.monotonic() - started < 5
    assert publisher.on_loop is False, "the test's own thread is not the publisher's"
