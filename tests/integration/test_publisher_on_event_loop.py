"""The broker's publisher on the API's event loop (`publish_on`): requests publish on their own
thread, threads still send, and a blocking send on the loop is refused before anything goes out."""

from __future__ import annotations

import asyncio
import threading

import pytest
from dramatiq.message import Message

from actors.publisher import ConfirmedRabbitmqBroker
from actors.publisher_loops import EventLoop, OwnThread
from tests.support.rabbit import create_vhost, delete_vhost, queue_state, vhost_url


@pytest.fixture()
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


@pytest.fixture()
def broker():
    vhost = create_vhost("onloop")
    broker = ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10)
    broker.url_for_tests = vhost_url(vhost)
    try:
        yield broker
    finally:
        broker.close()
        delete_vhost(vhost)


def message(index: int) -> Message:
    return Message(queue_name="q", actor_name="a", args=(index,), kwargs={}, options={})


def on(loop, coroutine_function):
    return asyncio.run_coroutine_threadsafe(coroutine_function(), loop).result(timeout=20)


def test_after_publish_on_a_coroutine_publishes_directly_and_awaits_the_loops_own_future(broker, loop):
    thread_publisher = broker.publisher
    assert isinstance(thread_publisher._loop, OwnThread)
    publisher = broker.publish_on(loop)
    assert isinstance(publisher._loop, EventLoop) and broker.publisher is publisher
    assert thread_publisher.closed.wait(10), "the publisher it replaced is closed"
    assert publisher.wait_ready(10), publisher.last_error
    broker.declare_queue("q", ensure=True)  # from this (another) thread: through the outbox

    async def publish_100():
        futures = [broker.publish_message(message(index)) for index in range(100)]
        assert all(isinstance(future, asyncio.Future) for future in futures)
        await asyncio.wait_for(asyncio.gather(*futures), 10)

    on(loop, publish_100)
    assert queue_state(broker.url_for_tests, "q")[0] == 100


def test_a_thread_still_sends_through_a_publisher_on_the_event_loop(broker, loop):
    assert broker.publish_on(loop).wait_ready(10)
    sent = []
    threads = [threading.Thread(target=lambda i=i: sent.append(broker.enqueue(message(i)))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(sent) == 8
    assert queue_state(broker.url_for_tests, "q")[0] == 8


def test_a_blocking_send_on_the_publishers_event_loop_is_refused_before_anything_is_sent(broker, loop):
    assert broker.publish_on(loop).wait_ready(10)
    broker.declare_queue("q", ensure=True)

    async def blocking_send():
        broker.enqueue(message(1))

    with pytest.raises(RuntimeError, match="await app.publishing.publish"):
        on(loop, blocking_send)
    assert queue_state(broker.url_for_tests, "q")[0] == 0, "refused before it went out"


def test_aclose_waits_for_the_connection_to_close_without_blocking_the_loop(broker, loop):
    publisher = broker.publish_on(loop)
    assert publisher.wait_ready(10)

    async def close():
        return await publisher.aclose(timeout=10)

    assert on(loop, close) is True
    assert not publisher.ready and publisher._connection.is_closed
