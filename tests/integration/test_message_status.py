"""GET /api/{id} and GET /tasks/{id} go through every state, with real workers on RabbitMQ."""

from __future__ import annotations

import random
import uuid

import pytest

from tests.support.payloads import random_payload
from tests.support.stack import isolated_stack
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def status_stack(tmp_path_factory):
    """Workers that fail poison messages (retried, slowly) and fatal ones (never retried)."""
    workdir = tmp_path_factory.mktemp("message-status")
    with isolated_stack(
        workdir,
        "msgstatus",
        processes=1,
        threads=4,
        worker_extra_modules="tests.support.poison",
        poison_fixed=str(workdir / "fixed"),
        max_retries="2",
        min_backoff_ms="1500",
        max_backoff_ms="1500",
    ) as stack:
        stack.start_api(wait_ready=True)  # no workers yet: messages stay queued
        yield stack


def with_workers(stack) -> None:
    """The first test runs without workers (to see `queued`); the others need them."""
    if stack.workers is None:
        stack.start_workers()
    if stack.task_workers is None:
        stack.start_task_workers()


def post(stack, path: str, body: dict) -> str:
    response = stack.http.post(f"{path}", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["message_id"]


def status(stack, path: str) -> dict:
    response = stack.http.get(f"{path}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def reaches(stack, path: str, state: str, timeout: float) -> dict:
    """The status record once its state is `state` (polled until `timeout`)."""
    return wait_for(
        lambda: (body := status(stack, path))["state"] == state and body, timeout=timeout, what=f"the {state} state"
    )


def test_a_detection_is_queued_until_a_worker_runs_then_succeeded_with_its_rows(status_stack):
    payload = random_payload(random.Random(3), frame_bytes=64)
    message_id = post(status_stack, "/api", payload)
    queued = wait_for(lambda: status(status_stack, f"/api/{message_id}"), timeout=10, what="the queued status")
    assert queued["state"] == "queued" and queued["queue"] == "ingest" and queued["enqueued_at"] > 0

    status_stack.start_workers()
    done = reaches(status_stack, f"/api/{message_id}", "succeeded", timeout=30)
    assert done["result"] == {"rows_written": len(payload["data"]["preds"]), "duplicate": False}
    assert done["attempts"] == 1 and done["started_at"] >= done["enqueued_at"] and done["finished_at"] > 0


def test_a_failing_detection_is_retrying_with_its_error_then_dead_lettered(status_stack):
    with_workers(status_stack)
    poison = random_payload(random.Random(4), frame_bytes=64) | {"device_id": "poison-device"}
    message_id = post(status_stack, "/api", poison)
    retrying = reaches(status_stack, f"/api/{message_id}", "retrying", timeout=30)
    assert retrying["last_error"] == "DownstreamFault: poison-device cannot be stored until the fix"
    assert retrying["attempts"] in (1, 2)
    dead = reaches(status_stack, f"/api/{message_id}", "dead-lettered", timeout=60)
    assert dead["attempts"] == 3, "one try and MAX_RETRIES=2 retries"
    assert dead["last_error"] == "DownstreamFault: poison-device cannot be stored until the fix"


def test_an_error_the_actor_does_not_retry_is_failed_at_once(status_stack):
    with_workers(status_stack)
    fatal = random_payload(random.Random(5), frame_bytes=64) | {"device_id": "fatal-device"}
    message_id = post(status_stack, "/api", fatal)
    failed = reaches(status_stack, f"/api/{message_id}", "failed", timeout=30)
    assert failed["attempts"] == 1
    assert failed["last_error"] == "PermanentFault: fatal-device is refused for good"


def test_a_countdown_shows_running_with_seconds_left_then_its_result(status_stack):
    with_workers(status_stack)
    message_id = post(status_stack, "/tasks", {"seconds": 3})
    seen_left = set()

    def progress_until_done():
        body = status(status_stack, f"/tasks/{message_id}")
        if body["state"] == "running" and "progress" in body:
            seen_left.add(body["progress"]["seconds_left"])
        return body["state"] == "succeeded" and body

    done = wait_for(progress_until_done, timeout=30, interval=0.05, what="the countdown to finish")
    assert done["result"] == {"seconds": 3}
    assert done["progress"] == {"seconds_left": 0, "seconds": 3}
    assert len(seen_left & {3, 2, 1}) >= 2, f"progress while running, seen: {seen_left}"


def test_unknown_ids_and_ids_of_the_other_kind_are_404(status_stack):
    unknown = str(uuid.uuid4())
    for path in (f"/api/{unknown}", f"/tasks/{unknown}"):
        response = status_stack.http.get(f"{path}", timeout=10)
        assert response.status_code == 404 and unknown in response.json()["detail"]
    with_workers(status_stack)
    task_id = post(status_stack, "/tasks", {"seconds": 1})
    wait_for(lambda: status(status_stack, f"/tasks/{task_id}"), timeout=10, what="the task's status")
    assert status_stack.http.get(f"/api/{task_id}", timeout=10).status_code == 404
    assert status_stack.http.get("/api/not%20an%20id", timeout=10).status_code == 422
