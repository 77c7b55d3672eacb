"""RabbitMQ's own length bound behind the app's soft one: new queues get it, old ones keep working."""

from __future__ import annotations

import pytest
from dramatiq.errors import ConnectionFailed
from dramatiq.message import Message
from loguru import logger

from actors.publisher import ConfirmedRabbitmqBroker
from tests.support.rabbit import create_vhost, delete_vhost, queue_state, vhost_url

BOUND = 5


@pytest.fixture()
def vhost():
    name = create_vhost("qlength")
    try:
        yield name
    finally:
        delete_vhost(name)


def message(index: int) -> Message:
    return Message(queue_name="q", actor_name="a", args=(index,), kwargs={}, options={})


def test_with_no_fresh_depth_reading_rabbitmq_refuses_a_publish_past_twice_the_bound(vhost):
    broker = ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10,
                                     max_queue_messages=BOUND)
    try:
        broker.declare_queue("q", ensure=True)
        broker.publisher.depth = lambda queue: None  # the readings are stale: the soft bound is off
        for index in range(2 * BOUND):
            broker.enqueue(message(index))
        with pytest.raises(ConnectionFailed, match="MAX_QUEUE_MESSAGES"):
            broker.enqueue(message(2 * BOUND))
        assert queue_state(vhost_url(vhost), "q")[0] == 2 * BOUND
        broker.enqueue(message(99), delay=10)  # a retry, to the delay queue: never bounded
    finally:
        broker.close()


def test_a_queue_an_earlier_version_declared_without_the_bound_keeps_working_and_the_log_says_how_to_bound_it(vhost):
    earlier = ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10)  # no bound
    try:
        earlier.declare_queue("q", ensure=True)
        earlier.enqueue(message(0))
    finally:
        earlier.close()

    errors: list[str] = []
    handler = logger.add(lambda line: errors.append(str(line)), level="ERROR", format="{message}")
    broker = ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10,
                                     max_queue_messages=BOUND)
    try:
        broker.declare_queue("q", ensure=True)
        broker.enqueue(message(1))
    finally:
        broker.close()
        logger.remove(handler)
    assert queue_state(vhost_url(vhost), "q")[0] == 2
    (line,) = [text for text in errors if "keeps the arguments it was made with" in text]
    assert "rabbitmqctl set_policy" in line and "'^q$'" in line
    assert '"max-length":10,"overflow":"reject-publish"' in line


def test_a_queue_made_with_another_bound_is_used_as_it_is_when_max_queue_messages_changes(vhost):
    first = ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10, max_queue_messages=BOUND)
    try:
        first.declare_queue("q", ensure=True)
    finally:
        first.close()
    errors: list[str] = []
    handler = logger.add(lambda line: errors.append(str(line)), level="ERROR", format="{message}")
    later = ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10,
                                    max_queue_messages=2 * BOUND)
    try:
        later.declare_queue("q", ensure=True)
        later.enqueue(message(1))  # the queue works, with the bound it was made with
    finally:
        later.close()
        logger.remove(handler)
    assert queue_state(vhost_url(vhost), "q")[0] == 1
    (line,) = [text for text in errors if "keeps the arguments it was made with" in text]
    assert f"x-max-length={2 * BOUND}" in line and f"x-max-length={4 * BOUND}" in line


def test_a_replay_into_a_queue_at_its_length_bound_stops_and_leaves_the_rest_dead_lettered(vhost):
    import pika

    from actors.dead_letters import DeadLetterOffice
    from tests.support.rabbit import REDIS_URL

    broker = ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10,
                                     max_queue_messages=BOUND)
    try:
        broker.declare_queue("q", ensure=True)
        broker.publisher.depth = lambda queue: None
        for index in range(2 * BOUND):  # at RabbitMQ's bound
            broker.enqueue(message(index))
        connection = pika.BlockingConnection(pika.URLParameters(vhost_url(vhost)))
        try:
            channel = connection.channel()
            channel.confirm_delivery()  # in the queue before the replay counts it on its own connection
            for index in (100, 101):
                dead = message(index).copy(queue_name="q.XQ")
                channel.basic_publish("", "q.XQ", dead.encode(), pika.BasicProperties(delivery_mode=2))
        finally:
            connection.close()
        replayed, left = DeadLetterOffice(broker, REDIS_URL, 5).replay("q", None, 100)
    finally:
        broker.close()
    assert (replayed, left) == ([], 2)
    assert queue_state(vhost_url(vhost), "q.XQ")[0] == 2 and queue_state(vhost_url(vhost), "q")[0] == 2 * BOUND
