"""A message that kills its worker every time is dead-lettered after MAX_DELIVERIES runs.

The workers import tests/support/crash_loop.py: a detection of `crash-device`
SIGKILLs the process that runs it. Without a limit it would take the worker
group down forever (the entrypoint restarts it, RabbitMQ redelivers it).
"""

from __future__ import annotations

import random

import pytest

from tests.support.csv_check import assert_rows_match, wait_for_rows
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.rabbit import queue_state
from tests.support.stack import isolated_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

MAX_DELIVERIES = 3


def test_a_message_that_kills_its_worker_is_dead_lettered_after_max_deliveries(tmp_path):
    starts = tmp_path / "crash-starts"
    with isolated_stack(tmp_path / "stack", "crashloop", processes=1, threads=4,
                        worker_extra_modules="tests.support.crash_loop", crash_starts=str(starts),
                        max_deliveries=str(MAX_DELIVERIES)) as stack:
        stack.start()
        crasher = random_payload(random.Random(1), frame_bytes=64) | {"device_id": "crash-device"}
        answer = stack.http.post("/api", json=crasher)
        assert answer.status_code == 202
        crasher_id = answer.json()["message_id"]

        status = wait_for(lambda: (body := stack.http.get(f"/api/{crasher_id}").json()).get("state")
                          == "dead-lettered" and body, timeout=120, interval=0.5,
                          what=lambda: f"the crasher to be dead-lettered (runs so far: {runs(starts)})")
        assert "worker died 3 times" in status["last_error"]
        assert runs(starts) == MAX_DELIVERIES, "it ran MAX_DELIVERIES times, then never again"
        assert queue_state(stack.rabbitmq_url, "ingest.XQ")[0] == 1
        (letter,) = stack.http.get("/dead-letters").json()["messages"]
        assert letter["message_id"] == crasher_id and "worker died 3 times" in letter["reason"]
        logs = stack.workers_log.read_text()
        assert crasher_id in logs and crasher["data"]["preds"][0]["image_frame"] not in logs, "ids, never payloads"

        # The workers are back for good: detections flow again, each written once.
        stack.wait_for_consumers(timeout=60)
        rng = random.Random(2)
        payloads = [random_payload(rng, frame_bytes=256) for _ in range(50)]
        answers = post_all(f"{stack.base_url}/api", payloads, key=stack.admin_key)
        assert {a.status for a in answers} == {202}
        accepted = {a.body["message_id"]: payloads[a.index] for a in answers}
        wait_for_rows(stack.csv_path, accepted)
        assert_rows_match(stack.csv_path, accepted)
        assert runs(starts) == MAX_DELIVERIES


def runs(starts) -> int:
    return len(starts.read_text().splitlines()) if starts.exists() else 0
