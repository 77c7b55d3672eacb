"""actors/consumer.BatchedAckConsumer against the real broker: every ack arrives, bursts share a wake-up,
and a message of our size is read in a few reads, not ten."""

from __future__ import annotations

import threading

import pytest
from dramatiq.message import Message
from pika.adapters.utils.io_services_utils import _AsyncTransportBase

from actors.publisher import ConfirmedRabbitmqBroker
from tests.support.rabbit import create_vhost, delete_vhost, unacked, vhost_url
from tests.support.waiting import wait_for

MESSAGES = 200


@pytest.fixture()
def broker():
    vhost = create_vhost("consumer")
    broker = ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10)
    broker.vhost = vhost
    try:
        yield broker
    finally:
        broker.close()
        delete_vhost(vhost)


def drain(consumer, count: int, deadline: float = 30) -> list:
    """Take `count` deliveries; next() also runs the consumer thread's callbacks (the acks)."""
    received = []
    wait_for(lambda: (received.append(m) if (m := next(consumer)) is not None else None)
             or len(received) >= count or None, timeout=deadline, interval=0, what=f"{count} deliveries")
    return received


def test_acks_from_many_threads_all_arrive_with_fewer_wakeups_than_messages(broker):
    assert broker.consumer_class.__name__ == "BatchedAckConsumer"
    broker.declare_queue("q", ensure=True)
    for index in range(MESSAGES):
        broker.enqueue(Message(queue_name="q", actor_name="a", args=(index,), kwargs={}, options={}))

    consumer = broker.consume("q", prefetch=MESSAGES, timeout=100)
    wakeups = []
    real_schedule = consumer.connection.add_callback_threadsafe
    consumer.connection.add_callback_threadsafe = lambda callback: (wakeups.append(1), real_schedule(callback))
    messages = drain(consumer, MESSAGES)

    # Ack from 8 threads at once, as Dramatiq's worker threads do, while this thread (the
    # consumer thread's role) keeps pika's I/O loop turning.
    chunks = [messages[i::8] for i in range(8)]
    threads = [threading.Thread(target=lambda chunk=chunk: [consumer.ack(m) for m in chunk]) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert next(consumer) is None  # runs the queued ack callbacks, then times out idle
    consumer.close()

    assert 1 <= len(wakeups) < MESSAGES
    assert sorted(m.args[0] for m in messages) == list(range(MESSAGES))
    # An ack that never reached RabbitMQ would show as a redelivery to the next consumer.
    again = broker.consume("q", prefetch=MESSAGES, timeout=500)
    try:
        assert next(again) is None
    finally:
        again.close()


def test_acks_reach_rabbitmq_while_the_consumer_stays_open_and_idle(broker):
    """The acks are only queued on the channel: the consumer's own turn of pika's I/O loop writes them.

    An idle worker must not hold acknowledged messages as unacked (they would count against its
    prefetch and be redelivered if it were killed), so this checks RabbitMQ's count with the
    consumer open, after one idle turn and no further I/O.
    """
    broker.declare_queue("q", ensure=True)
    for index in range(20):
        broker.enqueue(Message(queue_name="q", actor_name="a", args=(index,), kwargs={}, options={}))
    consumer = broker.consume("q", prefetch=20, timeout=100)
    try:
        messages = drain(consumer, 20)
        assert unacked(broker.vhost, "q") == 20
        threads = [threading.Thread(target=lambda chunk=messages[i::4]: [consumer.ack(m) for m in chunk])
                   for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert next(consumer) is None  # one idle turn of the consumer thread: the ack callback runs in it
        wait_for(lambda: unacked(broker.vhost, "q") == 0 or None, timeout=10, interval=0.2,
                 what="RabbitMQ to count every ack, the consumer still open")
    finally:
        consumer.close()


def test_an_unacked_message_is_redelivered(broker):
    """The check above can fail: what it would see if the batch lost an ack."""
    broker.declare_queue("q", ensure=True)
    for index in range(3):
        broker.enqueue(Message(queue_name="q", actor_name="a", args=(index,), kwargs={}, options={}))
    consumer = broker.consume("q", prefetch=10, timeout=100)
    first, second, third = drain(consumer, 3)
    consumer.ack(first)
    consumer.ack(third)
    assert next(consumer) is None
    consumer.close()
    again = broker.consume("q", prefetch=10, timeout=2000)
    try:
        (redelivered,) = drain(again, 1)
        assert redelivered.args[0] == 1
        assert next(again) is None  # and only that one
    finally:
        again.close()


def test_a_40_kb_message_takes_a_few_socket_reads_not_ten(broker, monkeypatch):
    """pika's own 4 KiB reads would take at least ten a message (actors/consumer.read_whole_messages)."""
    broker.declare_queue("q", ensure=True)
    count, body = 20, "x" * 40_000
    for index in range(count):
        broker.enqueue(Message(queue_name="q", actor_name="a", args=(index, body), kwargs={}, options={}))
    reads = []
    recv = _AsyncTransportBase._sigint_safe_recv
    monkeypatch.setattr(_AsyncTransportBase, "_sigint_safe_recv",
                        staticmethod(lambda sock, size: reads.append(data := recv(sock, size)) or data))
    consumer = broker.consume("q", prefetch=count, timeout=100)  # (its first deliveries come with ConsumeOk)
    try:
        messages = drain(consumer, count)
    finally:
        monkeypatch.undo()
        consumer.close()
    assert sorted(m.args[0] for m in messages) == list(range(count))
    assert sum(map(len, reads)) >= count * 40_000
    assert len(reads) <= 3 * count, f"{len(reads)} reads for {count} messages of 40 KB"


def test_a_consumed_message_carries_its_fields_itself_not_behind_getattr(broker, monkeypatch):
    broker.declare_queue("q", ensure=True)
    sent = Message(queue_name="q", actor_name="a", args=(1,), kwargs={"k": 2}, options={"o": 3})
    broker.enqueue(sent)
    consumer = broker.consume("q", prefetch=1, timeout=100)
    try:
        (message,) = drain(consumer, 1)
        looked_up: list[str] = []
        real = type(message).__getattr__
        monkeypatch.setattr(type(message), "__getattr__", lambda self, name: (looked_up.append(name), real(self, name))[1])

        fields = (message.queue_name, message.actor_name, message.args, message.kwargs, message.message_id,
                  message.message_timestamp)

        assert looked_up == []  # each was found without __getattr__, which Python calls after a failed lookup
        assert fields == (sent.queue_name, sent.actor_name, (1,), {"k": 2}, sent.message_id, sent.message_timestamp)
        assert message.options is message._message.options  # the same dict: what a middleware sets, all see
        assert message.asdict() == message._message.asdict()  # the message's methods still reach it
    finally:
        consumer.close()
