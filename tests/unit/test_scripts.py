"""The README's commands fail fast and say what to do when there is no broker to start."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ensure_rabbitmq_fails_at_once_with_one_line_for_an_unreachable_remote_broker():
    # Loopback, but not an address the script would start a local server for; nothing listens there.
    env = {**os.environ, "RABBITMQ_URL": "amqp://guest:guest@127.0.0.2:1/"}
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "scripts" / "ensure_rabbitmq.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 10
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "RABBITMQ_URL" in lines[0]


def test_ensure_rabbitmq_succeeds_silently_when_the_broker_answers():
    result = subprocess.run([str(ROOT / "scripts" / "ensure_rabbitmq.sh")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr == ""


def test_the_three_worker_groups_between_them_consume_every_queue_once():
    import re

    from actors import INGEST_QUEUE, PREDICTIONS_QUEUE, TASKS_QUEUE, TRAINING_QUEUE, broker
    from config import Settings

    script = (ROOT / "entrypoint_dramatiq.sh").read_text()

    def queues_of(role: str) -> set[str]:
        return set(re.search(rf"^ +{role}\)\n +queues=\"([^\"]+)\"", script, re.MULTILINE)[1].split())

    groups = {"main": set(Settings.model_fields["worker_queues"].default.split()),
              "tasks": queues_of("tasks"), "ml": queues_of("ml")}
    assert groups == {"main": {INGEST_QUEUE}, "tasks": {TASKS_QUEUE}, "ml": {TRAINING_QUEUE, PREDICTIONS_QUEUE}}
    assert set().union(*groups.values()) == broker.get_declared_queues()
