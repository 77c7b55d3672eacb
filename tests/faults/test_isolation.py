"""No background work may hold the rows back: a flood of long countdowns, then detections.

Before the task worker group, the main workers consumed both `ingest` and
`tasks` with the same threads: forty 30-second countdowns held detections'
rows back for a minute.
"""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.support.csv_check import assert_rows_match, count_rows
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.rabbit import queue_state
from tests.support.stack import isolated_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

COUNTDOWNS = 40
COUNTDOWN_SECONDS = 30
DETECTIONS = 200


def test_a_flood_of_long_countdowns_never_delays_the_rows_of_detections(tmp_path):
    with isolated_stack(tmp_path, "flood", processes=1, threads=8, max_countdown_seconds="60",
                        task_worker_threads="8") as stack:
        stack.start()
        stack.start_task_workers()
        countdowns = post_all(f"{stack.base_url}/tasks", [{"seconds": COUNTDOWN_SECONDS}] * COUNTDOWNS,
                              key=stack.admin_key, concurrency=16)
        assert {answer.status for answer in countdowns} == {202}
        # The task workers hold as many as they have threads and prefetch; the rest wait in the queue.
        wait_for(lambda: queue_state(stack.rabbitmq_url, "tasks")[0] < COUNTDOWNS, timeout=30,
                 what="the task workers to take countdowns")

        rng = random.Random(11)
        payloads = [random_payload(rng, frame_bytes=1024) for _ in range(DETECTIONS)]
        answers = post_all(f"{stack.base_url}/api", payloads, key=stack.admin_key, concurrency=32)
        accepted_at = time.monotonic()
        assert {answer.status for answer in answers} == {202}
        accepted = {answer.body["message_id"]: payloads[answer.index] for answer in answers}
        expected = sum(len(payload["data"]["preds"]) for payload in accepted.values())

        # Durable within 2 s of the last 2xx, while every countdown still has seconds to run.
        wait_for(lambda: count_rows(stack.csv_path, set(accepted)) >= expected, timeout=2, interval=0.05,
                 what=lambda: f"{count_rows(stack.csv_path, set(accepted))} of {expected} rows within 2 s")
        assert time.monotonic() - accepted_at < COUNTDOWN_SECONDS / 2
        assert_rows_match(stack.csv_path, accepted)
        stack.stop_task_workers(signal.SIGKILL)  # not 30 s of countdowns finishing on the way out
