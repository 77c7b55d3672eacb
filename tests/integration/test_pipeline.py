"""End to end through the real API, RabbitMQ and dramatiq workers."""

from __future__ import annotations

import random

import pytest

from tests.support.csv_check import assert_rows_match, count_rows
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.rabbit import queue_state
from tests.support.waiting import wait_for


@pytest.mark.slow
def test_a_thousand_concurrent_requests_become_exactly_their_rows(stack):
    rng = random.Random(20231302)
    payloads = [random_payload(rng) for _ in range(1000)]
    answers = post_all(f"{stack.base_url}/api", payloads, concurrency=100, key=stack.admin_key)

    assert {answer.status for answer in answers} == {202}
    assert all(answer.body["status"] == "received" for answer in answers)
    accepted = {answer.body["message_id"]: payloads[answer.index] for answer in answers}
    assert len(accepted) == 1000, "message ids must be unique"

    expected = sum(len(payload["data"]["preds"]) for payload in payloads)
    wait_for(
        lambda: count_rows(stack.csv_path, set(accepted)) >= expected,
        timeout=180,
        interval=1,
        what=f"{expected} rows in {stack.csv_path}",
    )
    wait_for(lambda: queue_state(stack.rabbitmq_url, "ingest")[0] == 0, timeout=30, what="an empty ingest queue")
    assert_rows_match(stack.csv_path, accepted)
