"""StatusReader against a real RabbitMQ: a queue not there yet reads as empty and is declared once."""

from __future__ import annotations

import pika
import pytest

from actors.publisher import ConfirmedRabbitmqBroker
from app.status import StatusReader
from tests.support.rabbit import REDIS_URL, create_vhost, delete_vhost, queue_state, vhost_url
from tests.support.waiting import wait_for


@pytest.fixture()
def vhost():
    name = create_vhost("status")
    try:
        yield name
    finally:
        delete_vhost(name)


def test_a_queue_not_there_yet_reads_empty_and_is_declared_so_the_next_reading_finds_it(vhost):
    broker = ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10)
    declared = []
    reader = StatusReader(pika.URLParameters(vhost_url(vhost)), REDIS_URL, f"test-{vhost}", ["ingest"],
                          declare=lambda queue: declared.append(queue) or broker.declare_queue(queue, ensure=True))
    missing = []
    probe = reader.probe.declare
    reader.probe.declare = lambda queue: (answer := probe(queue)) or missing.append(queue) or answer
    try:
        first = reader.read(max_age=0)["queues"]["ingest"]
        assert {name: first[name] for name in ("ready", "consumers", "delayed", "dead_letters")} == {
            "ready": 0, "consumers": 0, "delayed": 0, "dead_letters": 0}
        assert missing == ["ingest"], "its delay and dead-letter queues are not asked for while it is missing"
        wait_for(lambda: "ingest" in reader._declared, timeout=15, what="the reader's declaration of ingest")
        assert declared == ["ingest"]
        for name in ("ingest", "ingest.DQ", "ingest.XQ"):
            assert queue_state(vhost_url(vhost), name) == (0, 0)
        missing.clear()
        reader.read(max_age=0)
        reader.read(max_age=0)
        assert missing == [] and declared == ["ingest"], "found from then on: no closed channel, no second declare"
    finally:
        reader.probe.close()
        broker.close()
