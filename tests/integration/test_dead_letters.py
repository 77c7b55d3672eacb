"""Discarding dead letters: only the named ones go, the rest stay where they were, in order."""

from __future__ import annotations

import threading

import pika
import pytest
from dramatiq.message import Message

from actors.dead_letters import DeadLetterOffice, DeadLettersBusy
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


def test_a_replay_beside_a_listing_waits_its_turn_and_replays_every_named_letter(office):
    """Without a turn, the replay would find none: the listing holds them all unacked."""
    office, vhost = office
    ids = dead_letters(vhost, 3)
    refused = threading.Event()
    replayer = DeadLetterOffice(office.broker, REDIS_URL, 30)
    original_wait = replayer._wait_turn
    replayer._wait_turn = lambda connection: (refused.set(), original_wait(connection))
    answers = []
    with office._walk("q") as channel:  # a listing in the middle of its page
        for _ in ids:
            assert channel.basic_get("q.XQ", auto_ack=False)[0] is not None
        replay = threading.Thread(target=lambda: answers.append(replayer.replay("q", set(ids), 10)))
        replay.start()
        assert refused.wait(10), "the replay did not wait for the listing's turn"
    replay.join(30)
    assert not replay.is_alive()
    replayed, remaining = answers[0]
    assert sorted(replayed) == sorted(ids) and remaining == 0
    assert queue_state(vhost_url(vhost), "q")[0] == 3


def test_a_walk_that_cannot_get_its_turn_in_time_says_so_and_leaves_the_letters_in_place(office):
    office, vhost = office
    ids = dead_letters(vhost, 2)
    impatient = DeadLetterOffice(office.broker, REDIS_URL, 0.3)
    with office._walk("q"):
        with pytest.raises(DeadLettersBusy, match="another listing, replay or discard"):
            impatient.discard("q", set(ids))
    assert [letter.message_id for letter in office.peek("q", 10)[1]] == ids, "the turn goes with its connection"


def test_the_turn_is_given_back_when_its_connection_dies_without_closing(office):
    office, vhost = office
    dead_letters(vhost, 1)
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url(vhost)))
    assert office._take_turn(connection, "q")
    connection._impl._transport._sock.close()  # as a crashed API process leaves it: no connection.close
    assert DeadLetterOffice(office.broker, REDIS_URL, 10).peek("q", 10)[0] == 1
