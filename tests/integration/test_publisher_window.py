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
