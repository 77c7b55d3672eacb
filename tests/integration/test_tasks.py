"""POST /tasks answers at once; the countdown runs in a worker."""

from __future__ import annotations

import time


from tests.support.waiting import wait_for


def test_countdown_is_answered_at_once_and_counted_down_by_a_worker(stack):
    started = time.monotonic()
    response = stack.http.post("/tasks", json={"seconds": 3}, timeout=10)
    answered_after = time.monotonic() - started

    assert response.status_code == 202
    body = response.json()
    assert body["seconds"] == 3 and body["status"] == "submitted"
    assert answered_after < 1.0, "the API must not wait for the countdown"

    message_id = body["message_id"]

    def finished_log() -> str | None:
        text = stack.task_workers_log.read_text()  # the task worker group's, not the detections' workers
        return text if f"countdown {message_id}: done" in text else None

    log = wait_for(
        finished_log,
        timeout=30,
        what="the countdown to finish in a worker",
    )
    lines = [line for line in log.splitlines() if f"countdown {message_id}:" in line]
    assert all(f"message_id={message_id}" in line for line in lines), "worker lines name their message"
    assert [line.split(f"countdown {message_id}: ")[1].split(" | ")[0] for line in lines] == ["3 s left", "2 s left", "1 s left", "done"]
