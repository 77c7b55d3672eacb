"""Liveness and readiness, with the broker there and not there."""

from __future__ import annotations

import time


from app.schemas import SEED_EXAMPLE
from tests.support.stack import Stack, free_port


def test_ready_and_health_answer_200_with_the_broker_up(stack):
    assert stack.http.get("/health").json() == {"status": "ok"}
    assert stack.http.get("/ready").status_code == 200


def test_without_a_broker_ready_is_503_and_ingest_refuses_quickly(tmp_path):
    dead = Stack(tmp_path, f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    try:
        dead.start_api(wait_ready=False)
        assert dead.http.get("/health").status_code == 200
        ready = dead.http.get("/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"

        started = time.monotonic()
        refused = dead.http.post("/api", json=SEED_EXAMPLE, timeout=10)
        assert refused.status_code == 503
        assert refused.headers["retry-after"].isdigit()
        assert time.monotonic() - started < 3.0
    finally:
        dead.stop()
