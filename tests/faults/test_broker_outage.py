"""RabbitMQ stops and starts under load: clients get fast 503s, retry, and nothing is lost or doubled."""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid

import pytest

from pipeline.shard_files import read_shard
from tests.support.csv_check import assert_rows_match, count_rows
from tests.support.load import post_until_accepted
from tests.support.payloads import random_payload
from tests.support.rabbit import queue_state
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def ready_status(stack) -> int:
    return stack.http.get("/ready", timeout=5).status_code


def test_rabbitmq_stopped_and_started_mid_load_loses_and_doubles_nothing(make_stack):
    stack = make_stack().start()
    rng = random.Random(4)
    payloads = [random_payload(rng, frame_bytes=1024) for _ in range(2000)]
    run = uuid.uuid4().hex  # Redis remembers keys across runs
    keys = [f"outage-{run}-{index}" for index in range(len(payloads))]
    result = {}
    load = threading.Thread(
        target=lambda: result.update(report=post_until_accepted(f"{stack.base_url}/api", payloads, keys, key=stack.admin_key))
    )
    load.start()

    wait_for(lambda: stack.csv_path.exists() and stack.csv_path.stat().st_size > 300_000, timeout=60,
             what="the pipeline to be busy")
    rabbitmqctl("stop_app")
    try:
        wait_for(lambda: ready_status(stack) == 503, timeout=15, what="/ready to report the outage")
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    wait_for(lambda: ready_status(stack) == 200, timeout=30, what="/ready to recover without a restart")

    load.join(300)
    report = result["report"]
    assert {answer.status for answer in report.answers} == {202}, "every request ends accepted"
    assert report.refusal_seconds, "the outage must have refused some requests"
    slowest = max(zip(report.refusal_seconds, report.refusal_reasons))
    assert slowest[0] < 1.0, f"a 503 must come quickly, never after a hang; slowest: {slowest}"

    accepted = {answer.body["message_id"]: payloads[answer.index] for answer in report.answers}
    expected = sum(len(payload["data"]["preds"]) for payload in payloads)
    wait_for(lambda: count_rows(stack.csv_path, set(accepted)) >= expected, timeout=180, interval=1,
             what=f"{expected} rows")
    wait_for(lambda: queue_state(stack.rabbitmq_url, "ingest")[0] == 0, timeout=60, what="an empty queue")
    assert_rows_match(stack.csv_path, accepted)
    assert {row["message_id"] for row in read_shard(stack.csv_path)} == set(accepted), "no orphan copies"


def test_a_broker_that_stops_confirming_gets_fast_503s_and_recovers(make_stack):
    """A memory alarm (watermark 0) blocks publishers while the connection stays up: no confirms."""
    from app.schemas import SEED_EXAMPLE

    stack = make_stack().start()
    key = f"blocked-{uuid.uuid4().hex}"
    rabbitmqctl("set_vm_memory_high_watermark", "0")
    try:
        durations = []
        for _ in range(3):
            started = time.monotonic()
            response = stack.http.post("/api", json=SEED_EXAMPLE, headers={"Idempotency-Key": key}, timeout=10)
            durations.append(time.monotonic() - started)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
        assert max(durations) < 1.0, f"each refusal within PUBLISH_TIMEOUT_SECONDS (0.5 s): {durations}"
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", "0.4")

    def accepted():
        response = stack.http.post("/api", json=SEED_EXAMPLE, headers={"Idempotency-Key": key}, timeout=10)
        return response if response.status_code in (200, 202) else None

    response = wait_for(accepted, timeout=30, interval=0.5, what="the API to accept again, without a restart")
    message_id = response.json()["message_id"]
    wait_for(lambda: count_rows(stack.csv_path, {message_id}) == 1, timeout=30, what="the row")
    assert count_rows(stack.csv_path, {message_id}) == 1, "refused attempts must not have left copies"
