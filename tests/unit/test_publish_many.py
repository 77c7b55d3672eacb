"""publish_many: a chunk goes to the publisher at once, confirms are awaited together, failures are per message."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest
from dramatiq.errors import ConnectionClosed

from actors.ingest import write_detection_rows
from app import publishing
from app.auth import OPEN
from logs import log_context


class FakeBroker:
    """Takes messages like ConfirmedRabbitmqBroker.publish_message; confirms them from another thread."""

    publish_timeout = 0.5

    def __init__(self, *, confirm_after: int | None = None, refuse: set[int] = frozenset()):
        self.messages = []
        self.futures: list[Future] = []
        self.confirm_after = confirm_after  # confirm everything once this many are in flight
        self.refuse = refuse

    def queue_ready(self, queue_name):
        return True

    def publish_message(self, message):
        if len(self.messages) in self.refuse:
            self.messages.append(None)
            raise ConnectionClosed("RabbitMQ connection is down: test")
        self.messages.append(message)
        future = Future()
        self.futures.append(future)
        if self.confirm_after is not None and len(self.futures) == self.confirm_after:
            pending = list(self.futures)
            threading.Thread(target=lambda: [f.set_result(None) for f in pending if not f.done()]).start()
        return future


@pytest.fixture()
def queued(monkeypatch):
    recorded = []

    async def record(messages):
        recorded.extend(messages)

    monkeypatch.setattr(publishing.queued_records, "record", record)
    return recorded


def run(broker, monkeypatch, count: int, ids=None, timeout: float = 5.0):
    monkeypatch.setattr(write_detection_rows, "broker", broker)
    arguments = [({"n": index},) for index in range(count)]
    return asyncio.run(publishing.publish_many(write_detection_rows, arguments, ids or [None] * count,
                                               sender=OPEN, confirm_timeout=timeout))


def test_a_chunk_is_handed_over_whole_before_any_confirm_is_awaited(monkeypatch, queued):
    broker = FakeBroker(confirm_after=50)  # confirms arrive only once all 50 are in flight
    outcomes = run(broker, monkeypatch, 50)
    assert [outcome.error for outcome in outcomes] == [None] * 50
    assert [outcome.message_id for outcome in outcomes] == [message.message_id for message in broker.messages]
    assert [message.message_id for message in queued] == [outcome.message_id for outcome in outcomes]


def test_chunks_are_bounded_by_max_in_flight(monkeypatch, queued):
    monkeypatch.setattr(publishing, "MAX_IN_FLIGHT", 2)
    broker = FakeBroker(confirm_after=2)

    def publish_and_confirm_pairs(message, publish=broker.publish_message):
        future = publish(message)
        if len(broker.futures) % 2 == 0:
            for pending in broker.futures[-2:]:
                pending.done() or pending.set_result(None)
        return future

    broker.publish_message = publish_and_confirm_pairs
    outcomes = run(broker, monkeypatch, 4)
    assert [outcome.error for outcome in outcomes] == [None] * 4


def test_messages_not_confirmed_in_time_are_failed_and_cancelled(monkeypatch, queued):
    broker = FakeBroker()
    outcomes = run(broker, monkeypatch, 3, timeout=0.05)
    assert all(outcome.error == "no confirm within 0.05 s" for outcome in outcomes)
    assert all(future.cancelled() for future in broker.futures), "an unsent message must never be sent late"
    assert queued == []


def test_a_refused_message_fails_alone(monkeypatch, queued):
    broker = FakeBroker(confirm_after=2, refuse={1})
    outcomes = run(broker, monkeypatch, 3)
    assert [outcome.error is None for outcome in outcomes] == [True, False, True]
    assert "connection is down" in outcomes[1].error
    assert len(queued) == 2


def test_fixed_ids_and_the_request_id_travel_with_the_messages(monkeypatch, queued):
    broker = FakeBroker(confirm_after=2)
    with log_context(request_id="req-42"):
        outcomes = run(broker, monkeypatch, 2, ids=["id-a", None])
    assert outcomes[0].message_id == "id-a" and outcomes[1].message_id != "id-a"
    assert [message.options["request_id"] for message in broker.messages] == ["req-42", "req-42"]
