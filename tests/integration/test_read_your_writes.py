"""From the moment the API answers 2xx, GET of that id answers at least `queued` (issue 15, point 1).

Each POST is followed at once by its GET, many times over, with the workers running: before the
API wrote `queued` ahead of its answer, most of these GETs were answered 404 "unknown".
"""

from __future__ import annotations

import hashlib
import random

import orjson
import pytest

from app.bulk_ingest import file_message_id
from tests.support.payloads import random_payload

STATES = {"queued", "running", "retrying", "succeeded", "failed", "dead-lettered"}
ROUNDS = 15


def status_right_after(stack, path: str) -> str:
    response = stack.http.get(path)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
    return response.json()["state"]


def detection(seed: int) -> dict:
    return random_payload(random.Random(seed), frame_bytes=64)


@pytest.mark.parametrize("kind", ["detection", "countdown", "training", "batch item", "upload payload"])
def test_a_get_right_after_the_2xx_finds_the_message(stack, kind):
    for round_number in range(ROUNDS):
        if kind == "detection":  # the fast path of POST /api
            ids = [stack.http.post("/api", json=detection(round_number)).json()["message_id"]]
            path = "/api/{}"
        elif kind == "countdown":
            ids = [stack.http.post("/tasks", json={"seconds": 0}).json()["message_id"]]
            path = "/tasks/{}"
        elif kind == "training":  # no model workers here: it stays queued
            answer = stack.http.post("/tasks/train", json={"model": "logistic_regression", "dataset": "iris"})
            ids = [answer.json()["message_id"]]
            path = "/tasks/{}"
        elif kind == "batch item":
            body = orjson.dumps([detection(1000 + round_number), detection(2000 + round_number)])
            answer = stack.http.post("/api/batch", content=body, headers={"content-type": "application/json"})
            ids = [item["message_id"] for item in answer.json()["items"]]
            path = "/api/{}"
        else:
            lines = orjson.dumps(detection(3000 + round_number)) + b"\n" + orjson.dumps(detection(4000 + round_number))
            answer = stack.http.post("/file/upload", files={"file": (f"r{round_number}.ndjson", lines + b"\n")})
            assert answer.json()["enqueued"] == 2
            # An upload's answer lists no ids: they are derived from the file's content.
            sha = hashlib.sha256(lines + b"\n").hexdigest()
            ids = [file_message_id(None, sha, ordinal, stack.id_scope()) for ordinal in range(2)]
            path = "/api/{}"
        for message_id in ids:
            assert status_right_after(stack, path.format(message_id)) in STATES
