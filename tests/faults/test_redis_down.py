"""Redis is bookkeeping only: with it gone, detections are still accepted and written exactly once."""

from __future__ import annotations

import random


from tests.support.csv_check import assert_rows_match, count_rows
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.waiting import wait_for

NO_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused at once


def test_without_redis_rows_are_written_once_and_the_status_says_what_is_missing(make_stack):
    stack = make_stack(redis_url=NO_REDIS).start()
    rng = random.Random(8)
    sent = [random_payload(rng, frame_bytes=256) for _ in range(200)]
    answers = post_all(f"{stack.base_url}/api", sent, key=stack.admin_key)
    assert {answer.status for answer in answers} == {202}
    accepted = {answer.body["message_id"]: sent[answer.index] for answer in answers}

    expected_rows = sum(len(p["data"]["preds"]) for p in sent)
    wait_for(lambda: stack.csv_path.exists() and count_rows(stack.csv_path, set(accepted)) == expected_rows,
             timeout=60, what="every row")
    assert_rows_match(stack.csv_path, accepted)

    status = stack.http.get("/status", timeout=10).json()
    assert status["rabbitmq"] == "ok" and status["queues"]["ingest"]["consumers"] == 2
    assert status["redis"].startswith("unavailable") and status["rows_written"] is None

    some_id = next(iter(accepted))
    lookup = stack.http.get(f"/api/{some_id}", timeout=10)
    assert lookup.status_code == 503 and lookup.headers["retry-after"] == "1"
    assert "Redis" in lookup.json()["detail"]

