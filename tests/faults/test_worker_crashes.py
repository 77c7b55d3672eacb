"""Workers die at the worst moments; every accepted pred is still in the CSV exactly once."""

from __future__ import annotations

import os
import random
import signal
import threading

import pytest

from tests.support.csv_check import assert_rows_match, count_rows
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.processes import busiest_worker
from tests.support.rabbit import queue_state
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


class BackgroundLoad:
    """POST payloads from another thread so the test can break things meanwhile."""

    def __init__(self, url: str, payloads: list[dict], key: str | None, concurrency: int = 32):
        self.payloads = payloads
        self.key = key
        self.answers = None
        self.thread = threading.Thread(target=self._run, args=(url, concurrency))
        self.thread.start()

    def _run(self, url: str, concurrency: int) -> None:
        self.answers = post_all(url, self.payloads, key=self.key, concurrency=concurrency, timeout=120)

    def accepted(self, timeout: float = 180) -> dict[str, dict]:
        self.thread.join(timeout)
        assert self.answers is not None, "the load did not finish"
        assert {answer.status for answer in self.answers} == {202}
        return {answer.body["message_id"]: self.payloads[answer.index] for answer in self.answers}


def wait_until_all_rows(stack, accepted: dict[str, dict], timeout: float = 240) -> None:
    expected = sum(len(payload["data"]["preds"]) for payload in accepted.values())
    wait_for(
        lambda: count_rows(stack.csv_path, set(accepted)) >= expected,
        timeout=timeout,
        interval=1,
        what=f"{expected} rows",
    )
    wait_for(lambda: queue_state(stack.rabbitmq_url, "ingest")[0] == 0, timeout=60, what="an empty ingest queue")
    assert_rows_match(stack.csv_path, accepted)


def payloads(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [random_payload(rng, frame_bytes=1024) for _ in range(count)]


def test_worker_killed_after_writing_before_acking_writes_no_duplicate_rows(make_stack, tmp_path):
    marker = tmp_path / "crashed-message"
    stack = make_stack(
        worker_extra_modules="tests.support.crash_before_ack",
        crash_marker=str(marker),
        crash_after_messages="30",
    ).start()

    answers = post_all(f"{stack.base_url}/api", sent := payloads(300, seed=1), key=stack.admin_key)
    assert {answer.status for answer in answers} == {202}
    accepted = {answer.body["message_id"]: sent[answer.index] for answer in answers}

    wait_until_all_rows(stack, accepted)
    killed = marker.read_text()
    assert killed in accepted
    log = stack.workers_log.read_text()
    assert any(
        "already committed" in line and f"message_id={killed}" in line for line in log.splitlines()
    ), "the redelivery must be recognised"
    from tests.integration.test_metrics import metric

    wait_for(lambda: metric(stack.metrics_url, "ingest_duplicate_messages_total") >= 1, timeout=30,
             what="the suppressed duplicate in the worker metrics")
    wait_for(lambda: "restarting" in stack.workers_log.read_text(), timeout=60, what="the supervisor to restart")
    stack.wait_for_consumers()


def test_kill_9_of_a_worker_mid_load_loses_and_duplicates_nothing(make_stack):
    stack = make_stack().start()
    load = BackgroundLoad(f"{stack.base_url}/api", payloads(5000, seed=2), stack.admin_key)

    wait_for(lambda: stack.csv_path.exists() and stack.csv_path.stat().st_size > 2_000_000, timeout=120,
             what="the workers to be busy")
    victim = busiest_worker(stack.workers.pid)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)

    accepted = load.accepted()
    wait_until_all_rows(stack, accepted)
    assert "restarting" in stack.workers_log.read_text(), "the supervisor must restart the workers"


def test_sigterm_to_all_workers_mid_load_then_restart_is_exactly_once(make_stack):
    stack = make_stack().start()
    load = BackgroundLoad(f"{stack.base_url}/api", payloads(3000, seed=3), stack.admin_key)

    wait_for(lambda: stack.csv_path.exists() and stack.csv_path.stat().st_size > 1_000_000, timeout=120,
             what="the workers to be busy")
    assert stack.stop_workers(signal.SIGTERM, timeout=60) == 0, "a graceful stop exits 0"
    stack.start_workers()

    accepted = load.accepted()
    wait_until_all_rows(stack, accepted)
