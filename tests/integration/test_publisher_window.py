"""The publisher's in-flight window: a RabbitMQ that does not confirm cannot grow the API's memory."""

from __future__ import annotations

import pika
import pytest

from actors.publisher import ConfirmedPublisher, PublisherBusy
from tests.support.rabbit import create_vhost, delete_vhost, vhost_url
from tests.support.waiting import wait_for


@pytest.fixture()
def unconfirming_publisher():
    """A real publisher on a vhost of its own, whose messages never reach RabbitMQ (so never confirm)."""
    vhost = create_vhost("window")
    publisher = ConfirmedPublisher([pika.URLParameters(vhost_url(vhost))], max_in_flight_bytes=1024 * 1024)
    try:
        assert publisher.wait_ready(10), publisher.last_error
        publisher._channel.basic_publish = lambda *args, **kwargs: None  # RabbitMQ "slow": it never hears them
        yield publisher
    finally:
        publisher.close()
        delete_vhost(vhost)


def test_publishes_past_the_window_are_refused_at_once_and_the_window_reopens(unconfirming_publisher):
    publisher = unconfirming_publisher
    body = b"x" * (300 * 1024)
    properties = pika.BasicProperties(message_id="m", delivery_mode=2)
    waiting = [publisher.publish("ingest", body, properties) for _ in range(3)]  # 900 KiB of 1 MiB
    with pytest.raises(PublisherBusy, match="MAX_PUBLISH_IN_FLIGHT_BYTES"):
        publisher.publish("ingest", body, properties)
    assert publisher.in_flight_bytes == 3 * len(body)

    # The connection is lost: those three fail, and their bytes leave the window.
    publisher._ioloop.add_callback_threadsafe(lambda: publisher._connection.close())
    wait_for(lambda: all(future.done() for future in waiting), timeout=10, what="the unconfirmed to fail")
    assert publisher.in_flight_bytes == 0


@pytest.fixture()
def publisher():
    vhost = create_vhost("publisher")
    publisher = ConfirmedPublisher([pika.URLParameters(vhost_url(vhost))], max_in_flight_bytes=1024 * 1024)
    publisher.url_for_tests = vhost_url(vhost)
    try:
        assert publisher.wait_ready(10), publisher.last_error
        yield publisher
    finally:
        publisher.close()
        delete_vhost(vhost)


def _declared(publisher, *queues: str) -> None:
    for queue in queues:
        publisher.declare(queue, {}).result(timeout=10)
        publisher.watch(queue)


def test_a_publish_that_raised_before_going_out_takes_no_confirm_of_anothers(publisher):
    """Tags follow what RabbitMQ saw: the next message is confirmed as itself, not left waiting."""
    _declared(publisher, "q")
    real, calls = publisher._channel.basic_publish, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("could not encode the properties")
        return real(*args, **kwargs)

    publisher._channel.basic_publish = fails_once
    properties = pika.BasicProperties(message_id="m", delivery_mode=2)
    first = publisher.publish("q", b"one", properties)
    with pytest.raises(Exception, match="could not encode"):
        first.result(timeout=10)
    publisher.publish("q", b"two", properties).result(timeout=5)  # confirmed as itself
    assert publisher.in_flight_bytes == 0, "the failed one left the window too"


def test_depths_are_read_and_a_stale_reading_is_not_used(publisher):
    import time

    _declared(publisher, "q")
    wait_for(lambda: publisher.depth("q") == 0, timeout=10, what="a first reading")
    publisher.depths = {"q": (10**6, time.monotonic() - 60)}
    assert publisher.depth("q") is None


def test_a_deleted_queue_is_no_longer_watched_and_the_others_still_are(publisher):
    _declared(publisher, "gone", "kept")
    wait_for(lambda: publisher.depth("gone") == 0 and publisher.depth("kept") == 0, timeout=10, what="readings")
    with pika.BlockingConnection(pika.URLParameters(publisher.url_for_tests)) as connection:
        channel = connection.channel()
        channel.queue_delete("gone")
        channel.basic_publish("", "kept", b"x", pika.BasicProperties(delivery_mode=2))
    wait_for(lambda: "gone" not in publisher._watched and publisher.depth("kept") == 1, timeout=10,
             what="the deleted queue dropped and the other read on")


def test_a_loop_callback_that_raises_costs_the_connection_not_the_publisher(publisher):
    _declared(publisher, "q")
    publisher._ioloop.add_callback_threadsafe(lambda: 1 / 0)
    wait_for(lambda: not publisher.ready, timeout=10, what="the loop to fail and drop its connection")
    assert publisher.wait_ready(10), "connected again"
    publisher.publish("q", b"after", pika.BasicProperties(message_id="m", delivery_mode=2)).result(timeout=10)
