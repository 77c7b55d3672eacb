"""The arguments each queue is declared with, by queue type and by the RabbitMQ version that answers."""

from __future__ import annotations

import os
from concurrent.futures import Future

import pytest

from actors.publisher import ConfirmedRabbitmqBroker, delivery_limit, server_version


class RecordingPublisher:
    """Stands in for ConfirmedPublisher: every declare succeeds and is kept."""

    ever_connected = True
    on_loop = False

    def __init__(self, version: tuple[int, ...]):
        self.server_version = version
        self.declared: dict[str, dict] = {}

    def wait_ready(self, timeout):
        return True

    def declare(self, queue, arguments):
        self.declared[queue] = arguments
        done: Future = Future()
        done.set_result(None)
        return done

    def watch(self, queue):
        pass


def declared_by(version: tuple[int, ...], *, max_deliveries: int = 3) -> dict[str, dict]:
    broker = ConfirmedRabbitmqBroker(url="amqp://127.0.0.1:1/", middleware=[], publish_timeout=1,
                                     queue_type="quorum", max_deliveries=max_deliveries)
    publisher = RecordingPublisher(version)
    broker._publisher, broker._publisher_pid = publisher, os.getpid()
    broker.declare_queue("q", ensure=True)
    return publisher.declared


@pytest.mark.parametrize("announced, parsed", [
    ("3.10.8", (3, 10, 8)), ("4.0.5", (4, 0, 5)), ("4.1.0-rc.1+12.gdeadbee", (4, 1, 0)), ("4.2", (4, 2)),
    ("", ()), ("unknown", ()),
])
def test_the_server_version_is_read_from_the_handshake_and_anything_unreadable_is_unknown(announced, parsed):
    assert server_version({"version": announced}) == parsed
    assert server_version({}) == () and server_version(None) == ()


def test_no_limit_is_said_by_leaving_the_argument_out_on_3x_and_with_minus_one_on_4x():
    # RabbitMQ 3.10 takes -1 as a limit that drops a message at its first return; 4.x takes it as none.
    assert delivery_limit(None, (3, 10, 8)) == {} and delivery_limit(None, ()) == {}
    assert delivery_limit(None, (4, 0, 5)) == {"x-delivery-limit": -1}
    assert delivery_limit(4, (3, 10, 8)) == delivery_limit(4, (4, 0, 5)) == {"x-delivery-limit": 4}


def test_on_rabbitmq_4_the_delay_and_dead_letter_queues_are_declared_without_the_default_limit_of_20():
    declared = declared_by((4, 0, 5))
    assert declared["q"]["x-delivery-limit"] == 4
    assert declared["q.DQ"]["x-delivery-limit"] == -1 and declared["q.XQ"]["x-delivery-limit"] == -1


def test_on_rabbitmq_3_the_delay_and_dead_letter_queues_get_no_delivery_limit_argument():
    declared = declared_by((3, 10, 8))
    assert declared["q"]["x-delivery-limit"] == 4
    assert "x-delivery-limit" not in declared["q.DQ"] and "x-delivery-limit" not in declared["q.XQ"]


def test_without_max_deliveries_the_main_queue_too_has_no_limit_on_rabbitmq_4():
    assert declared_by((4, 0, 5), max_deliveries=0)["q"]["x-delivery-limit"] == -1
    assert "x-delivery-limit" not in declared_by((3, 10, 8), max_deliveries=0)["q"]
