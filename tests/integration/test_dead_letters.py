"""Discarding dead letters: only the named ones go, the rest stay where they were, in order."""

from __future__ import annotations

import pika
import pytest
from dramatiq.message import Message

from actors.dead_letters import DeadLetterOffice
from actors.publisher import ConfirmedRabbitmqBroker
from tests.support.rabbit import REDIS_URL, create_vhost, delete_vhost, queue_state, vhost_url


@pytest.fixture()
def office():
    name = create_vhost("discard")
    broker = ConfirmedRabbitmqBroker(url=vhost_url(name), middleware=[], publish_timeout=10)
    try:
        broker.declare_queue("q", ensure=True)
        yield DeadLetterOffice(broker, REDIS_URL, 5), name
    finally:
        broker.close()
        delete_vhost(name)


def dead_letters(vhost: str, count: int) -> list[str]:
    """`count` messages put straight into q's dead-letter queue; their ids, in queue order."""
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url(vhost)))
    ids = []
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # in the queue before a count on another connection is asked for
        for index in range(count):
            dead = Message(queue_name="q.XQ", actor_name="a", args=(index,), kwargs={}, options={})
            channel.basic_publish("", "q.XQ", dead.encode(), pika.BasicProperties(delivery_mode=2))
            ids.append(dead.message_id)
    finally:
        connection.close()
    return ids


def test_discard_drops_only_the_named_dead_letters_and_leaves_the_others_in_their_order(office):
    office, vhost = office
    first, second, third, fourth = dead_letters(vhost, 4)
    discarded, remaining = office.discard("q", {second, fourth, "not-there"})
    assert sorted(discarded) == sorted([second, fourth]) and remaining == 2
    assert queue_state(vhost_url(vhost), "q.XQ")[0] == 2
    assert queue_state(vhost_url(vhost), "q")[0] == 0, "nothing discarded is sent anywhere"
    count, letters, _ = office.peek("q", 10)
    assert count == 2 and [letter.message_id for letter in letters] == [first, third]


def test_a_discard_naming_nothing_that_is_there_changes_nothing(office):
    office, vhost = office
    ids = dead_letters(vhost, 2)
    assert office.discard("q", {"unknown"}) == ([], 2)
    assert [letter.message_id for letter in office.peek("q", 10)[1]] == ids


def test_both_copies_of_a_dead_letter_held_twice_are_discarded_and_the_others_named_still_are(office):
    office, vhost = office
    first, second = dead_letters(vhost, 2)
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url(vhost)))
    try:  # a second copy of the first, behind the second (a crash between a replay's publish and its ack)
        channel = connection.channel()
        channel.confirm_delivery()
        copy = Message(queue_name="q.XQ", actor_name="a", args=(0,), kwargs={}, options={}, message_id=first)
        channel.basic_publish("", "q.XQ", copy.encode(), pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()
    discarded, remaining = office.discard("q", {first, second})
    assert sorted(discarded) == sorted([first, second]) and remaining == 0
    assert queue_state(vhost_url(vhost), "q.XQ")[0] == 0
