"""The README's locust run against the real stack: every request it counts as a success is in the CSV."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.csv_check import rows_by_key
from tests.support.rabbit import queue_state
from tests.support.stack import ROOT, Stack, isolated_stack
from tests.support.waiting import wait_for


@pytest.fixture()
def own_stack(tmp_path):
    """Not the shared stack: its CSV must hold locust's rows and nobody else's."""
    with isolated_stack(tmp_path, "locust", processes=2, threads=8) as stack:
        yield stack.start()


def run_locust(stack: Stack, stats_prefix: str) -> subprocess.CompletedProcess:
    command = [
        str(ROOT / ".venv" / "bin" / "locust"),
        *("-f", str(ROOT / "locustfile.py"), "--headless", "--host", stack.base_url),
        *("-u", "8", "-r", "8", "--run-time", "4s", "--only-summary"),
        # Users finish the request they are in: one cut off at the end could still be published,
        # a row that locust never counted.
        *("--stop-timeout", "15", "--exit-code-on-error", "1"),
        # The JSON is the final count; the --csv stats file is a snapshot up to a second old.
        *("--json-file", stats_prefix),
    ]
    return subprocess.run(
        command, cwd=ROOT, env={**os.environ, "LOCUST_SEED": "7", "API_KEY": stack.add_key("locust", "ingest")}, capture_output=True, text=True, timeout=90
    )


def test_locust_run_is_exactly_its_rows(own_stack, tmp_path):
    result = run_locust(own_stack, str(tmp_path / "locust"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    stats = {(entry["method"], entry["name"]): entry for entry in json.loads((tmp_path / "locust.json").read_text())}
    assert stats.keys() == {("POST", "/api")}, "the load is POST /api only"
    requests, failures = stats["POST", "/api"]["num_requests"], stats["POST", "/api"]["num_failures"]
    assert requests > 0
    assert failures == 0, result.stderr[-4000:]

    def drained() -> dict | None:
        found = rows_by_key(own_stack.csv_path)
        messages = {message_id: rows[0]["pred_count"] for (message_id, _), rows in found.items()}
        complete = sum(len(rows) for rows in found.values()) >= sum(messages.values())
        if len(messages) >= requests and complete and queue_state(own_stack.rabbitmq_url, "ingest")[0] == 0:
            return found
        return None

    found = wait_for(drained, timeout=120, interval=0.5, what=f"the rows of {requests} messages")

    indexes: dict[str, set[int]] = {}
    pred_counts: dict[str, int] = {}
    for (message_id, index), rows in found.items():
        indexes.setdefault(message_id, set()).add(index)
        pred_counts[message_id] = rows[0]["pred_count"]
    assert len(indexes) == requests, "one message per successful request, no more, no fewer"
    duplicated = [key for key, rows in found.items() if len(rows) > 1]
    assert not duplicated, f"{len(duplicated)} rows written twice, e.g. {duplicated[:3]}"
    torn = [mid for mid, seen in indexes.items() if seen != set(range(pred_counts[mid])) or not 1 <= pred_counts[mid] <= 10]
    assert not torn, f"{len(torn)} messages without exactly their 1-10 rows, e.g. {torn[:3]}"
