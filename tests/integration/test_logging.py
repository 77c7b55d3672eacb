"""LOG_FORMAT=json gives one JSON object per line; X-Request-ID follows a request from API to worker."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from tests.support.payloads import random_payload
from tests.support.stack import isolated_stack
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def json_stack(tmp_path_factory):
    with isolated_stack(tmp_path_factory.mktemp("logs"), "logs", processes=2, threads=4, log_format="json",
                        log_level="DEBUG") as stack:
        yield stack.start()


def json_lines(path) -> list[dict]:
    """Every line of the log, parsed; fails on the first line that is not one JSON object."""
    parsed = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), f"{path.name} line {number} is not an object: {line!r}"
        parsed.append(record)
    return parsed


def test_a_client_request_id_is_echoed_and_reaches_the_worker_log_line_for_its_message(json_stack):
    request_id = f"trace-{uuid.uuid4()}"
    payload = random_payload(random.Random(11))
    response = json_stack.http.post("/api", json=payload, headers={"X-Request-ID": request_id}, timeout=10)
    assert response.status_code == 202
    assert response.headers["x-request-id"] == request_id
    message_id = response.json()["message_id"]

    def worker_line() -> dict | None:
        for record in json_lines(json_stack.workers_log):
            if record.get("message_id") == message_id and record["message"].startswith("wrote"):
                return record
        return None

    record = wait_for(worker_line, timeout=30, what="the worker's log line for the message")
    assert record["request_id"] == request_id
    assert record["message"] == f"wrote {len(payload['data']['preds'])} rows"
    assert record["level"] == "DEBUG" and record["time"]

    access = [r for r in json_lines(json_stack.api_log) if r.get("request_id") == request_id]
    assert [(r["method"], r["path"], r["status"]) for r in access] == [("POST", "/api", 202)]
    assert access[0]["message"].startswith("POST /api 202 ") and access[0]["duration_ms"] > 0


def test_without_a_client_id_the_api_makes_one_and_it_still_reaches_the_worker(json_stack):
    payload = random_payload(random.Random(12))
    response = json_stack.http.post("/api", json=payload, timeout=10)
    assert response.status_code == 202
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32
    message_id = response.json()["message_id"]

    record = wait_for(
        lambda: next((r for r in json_lines(json_stack.workers_log) if r.get("message_id") == message_id), None),
        timeout=30,
        what="the worker's log line for the message",
    )
    assert record["request_id"] == request_id


def test_an_unsafe_client_request_id_is_replaced(json_stack):
    response = json_stack.http.get("/health", headers={"X-Request-ID": "a b\t<script>"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-request-id"] != "a b\t<script>" and len(response.headers["x-request-id"]) == 32


def test_standard_library_logs_of_uvicorn_and_dramatiq_come_out_as_json(json_stack):
    api_loggers = {record["logger"] for record in json_lines(json_stack.api_log)}
    worker_loggers = {record["logger"] for record in json_lines(json_stack.workers_log)}
    assert any(name.startswith("uvicorn") for name in api_loggers), api_loggers
    assert any(name.startswith("dramatiq") for name in worker_loggers), worker_loggers
