"""A queue at MAX_QUEUE_MESSAGES refuses new publishes with 503 at once, and takes them again once drained.

Without the bound, a client faster than the workers fills RabbitMQ's disk, and its disk alarm
blocks every publisher of the broker, every client's requests with it.
"""

from __future__ import annotations

import random

import pytest

from tests.support.csv_check import assert_rows_match, wait_for_rows
from tests.support.payloads import random_payload
from tests.support.stack import isolated_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

BOUND = 20


def test_a_full_queue_answers_503_with_retry_after_and_nothing_accepted_is_lost(tmp_path):
    with isolated_stack(tmp_path, "qbound", processes=1, threads=4, max_queue_messages=str(BOUND)) as stack:
        stack.start_api()  # no workers: the queue only fills
        rng = random.Random(9)
        accepted: dict[str, dict] = {}

        def post_one():
            body = random_payload(rng, frame_bytes=128)
            answer = stack.http.post("/api", json=body)
            if answer.status_code == 202:
                accepted[answer.json()["message_id"]] = body
            return answer

        refused = wait_for(lambda: (answer := post_one()).status_code == 503 and answer, timeout=60,
                           interval=0.02, what="the bound to be reached")
        assert refused.headers["Retry-After"] == "1" and "MAX_QUEUE_MESSAGES" in refused.json()["detail"]
        assert BOUND <= len(accepted) <= BOUND + 200, "a soft bound: read twice a second"

        stack.start_workers()  # the workers catch up; publishes are taken again
        wait_for(lambda: post_one().status_code == 202, timeout=60, interval=0.2, what="publishes to be taken again")
        wait_for_rows(stack.csv_path, accepted)
        assert_rows_match(stack.csv_path, accepted)
