"""RABBITMQ_QUEUE_TYPE: the app declares quorum queues itself, and a queue of the other type is refused in one line."""

from __future__ import annotations

import json
import random
import subprocess

import pika
import pytest
from dramatiq.message import Message

from actors.publisher import ConfirmedRabbitmqBroker, QueueTypeDiffers
from actors.publisher import server_version as parsed_version
from tests.support.csv_check import assert_rows_match, wait_for_rows
from tests.support.payloads import random_payload
from tests.support.rabbit import create_vhost, delete_vhost, queue_state, vhost_url
from tests.support.stack import isolated_stack


@pytest.fixture()
def vhost():
    name = create_vhost("qtype")
    try:
        yield name
    finally:
        delete_vhost(name)


def declared(vhost: str) -> dict[str, dict]:
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type", "arguments", "--formatter", "json"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    # Each argument is [name, AMQP type, value].
    return {queue["name"]: {"type": queue["type"], **{name: value for name, _, value in queue["arguments"]}}
            for queue in json.loads(listing)}


def server_version(vhost: str) -> tuple[int, ...]:
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url(vhost)))
    try:
        return parsed_version(connection._impl.server_properties)
    finally:
        connection.close()


def broker_for(vhost: str, queue_type: str) -> ConfirmedRabbitmqBroker:
    return ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10, max_queue_messages=5,
                                   queue_type=queue_type, max_deliveries=3)


def queue_with_one_message(vhost: str, queue_type: str) -> None:
    """Queue `q` (and its .DQ and .XQ) declared as `queue_type`, holding one message."""
    broker = broker_for(vhost, queue_type)
    try:
        broker.declare_queue("q", ensure=True)
        broker.enqueue(Message(queue_name="q", actor_name="a", args=(1,), kwargs={}, options={}))
    finally:
        broker.close()


def test_quorum_queues_get_a_delivery_limit_and_at_least_once_dead_lettering_and_the_delay_queue_no_limit(vhost):
    queue_with_one_message(vhost, "quorum")
    queues = declared(vhost)
    assert {name: queue["type"] for name, queue in queues.items()} == {"q": "quorum", "q.DQ": "quorum",
                                                                       "q.XQ": "quorum"}
    main, delay = queues["q"], queues["q.DQ"]
    assert main["x-delivery-limit"] == 4 and main["x-dead-letter-strategy"] == "at-least-once"
    assert main["x-max-length"] == 10 and main["x-overflow"] == "reject-publish"
    # No limit: on 3.x no argument (-1 would drop at the first return), on 4.x -1 (else 20 by default).
    unlimited = -1 if server_version(vhost) >= (4,) else None
    assert delay.get("x-delivery-limit") == unlimited and queues["q.XQ"].get("x-delivery-limit") == unlimited
    assert "x-max-length" not in delay
    assert delay["x-dead-letter-strategy"] == "at-least-once"
    assert queue_state(vhost_url(vhost), "q")[0] == 1


def test_a_queue_of_the_other_type_is_refused_with_how_to_migrate_and_keeps_its_messages(vhost):
    queue_with_one_message(vhost, "classic")
    quorum = broker_for(vhost, "quorum")
    try:
        with pytest.raises(QueueTypeDiffers) as refused:
            quorum.declare_queue("q", ensure=True)
    finally:
        quorum.close()
    text = str(refused.value)
    assert "RABBITMQ_QUEUE_TYPE=quorum" in text and "rabbitmqctl delete_queue" in text and "\n" not in text
    assert declared(vhost)["q"]["type"] == "classic" and queue_state(vhost_url(vhost), "q")[0] == 1


@pytest.mark.slow
def test_a_stack_on_quorum_queues_writes_every_accepted_detection_once(tmp_path):
    with isolated_stack(tmp_path, "quorum", processes=1, threads=4, rabbitmq_queue_type="quorum") as stack:
        stack.start()
        rng = random.Random(5)
        accepted = {}
        for _ in range(20):
            body = random_payload(rng, frame_bytes=256)
            answer = stack.http.post("/api", json=body)
            assert answer.status_code == 202, answer.text
            accepted[answer.json()["message_id"]] = body
        wait_for_rows(stack.csv_path, accepted)
        assert_rows_match(stack.csv_path, accepted)
        assert declared(stack.rabbitmq_url.rsplit("/", 1)[1])["ingest"]["type"] == "quorum"


@pytest.mark.slow
def test_workers_started_on_a_queue_of_the_other_type_say_how_to_migrate_without_a_traceback(tmp_path):
    from tests.support.waiting import wait_for

    with isolated_stack(tmp_path, "qtype-workers", processes=1, threads=2, rabbitmq_queue_type="quorum") as stack:
        vhost = stack.rabbitmq_url.rsplit("/", 1)[1]
        # What an earlier deployment left, with the default MAX_QUEUE_MESSAGES as the stack has it
        # (RabbitMQ names one differing argument per refusal, and the length would come first).
        classic = ConfirmedRabbitmqBroker(url=vhost_url(vhost), middleware=[], publish_timeout=10,
                                          max_queue_messages=100_000)
        try:
            classic.declare_queue("ingest", ensure=True)
        finally:
            classic.close()
        stack.start_workers(wait=False)
        wait_for(lambda: "RABBITMQ_QUEUE_TYPE=quorum" in stack.workers_log.read_text(errors="replace"),
                 timeout=60, interval=0.2, what="the workers' line on the queue type")
        log = stack.workers_log.read_text(errors="replace")
        assert "rabbitmqctl delete_queue" in log and "Traceback" not in log
        assert declared(vhost)["ingest"]["type"] == "classic"
