"""A disk that fills mid-load is waited out: nothing dead-lettered, no retry spent, no operator.

The CSV lives on a small tmpfs of the test's own, nearly full, which the load
fills; after DISK_FULL_SECONDS (default 120) the test grows it, as an operator
freeing space would. Meanwhile the workers hold their messages and retry the
write; `/status` and the `ingest_sink_stalled` metric say why. Afterwards every
accepted detection is in the CSV once, and the logs of the whole episode are
small and hold no frame. `DISK_FULL_SECONDS=600` runs the issue's 10 minutes.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.csv_check import assert_rows_match, wait_for_rows
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.rabbit import queue_state
from tests.support.stack import isolated_stack
from tests.support.waiting import wait_for

EPISODE_SECONDS = float(os.environ.get("DISK_FULL_SECONDS", "120"))

# The suite's per-test timeout (600 s) is less than a 10-minute episode: this test's own grows with it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(EPISODE_SECONDS + 400)]
DETECTIONS = 300
LOG_BUDGET_BYTES = 1024 * 1024


@pytest.fixture()
def small_disk(tmp_path):
    """A 4 MiB tmpfs with about 256 KiB free; grown by the test."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs: run it as root (as CI does here)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True)
    try:
        free = os.statvfs(mount_point).f_bavail * os.statvfs(mount_point).f_frsize
        (mount_point / "filler").write_bytes(b"\0" * (free - 256 * 1024))
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def grow(mount_point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=128m", str(mount_point)], check=True)


def sink_faults(stack) -> list[dict]:
    return stack.http.get("/status").json()["sink_faults"] or []


def stalled_metric(stack) -> float:
    for line in httpx.get(stack.metrics_url, timeout=5).text.splitlines():
        if line.startswith("ingest_sink_stalled"):
            return float(line.split()[-1])
    return 0.0


def test_a_full_disk_dead_letters_nothing_and_recovers_by_itself(small_disk, tmp_path):
    csv_path = small_disk / "data.csv"
    with isolated_stack(tmp_path / "stack", "diskfull", processes=2, threads=8, csv_path=str(csv_path)) as stack:
        stack.start()
        rng = random.Random(28)
        payloads = [random_payload(rng) for _ in range(DETECTIONS)]
        answers = post_all(f"{stack.base_url}/api", payloads, key=stack.admin_key, concurrency=16)
        assert {answer.status for answer in answers} == {202}, "the API does not depend on the workers' disk"
        accepted = {answer.body["message_id"]: payloads[answer.index] for answer in answers}

        faults = wait_for(lambda: sink_faults(stack), timeout=60, what="/status to name the sink fault")
        assert any(words in faults[0]["reason"] for words in ("No space left", "disk is full")), faults
        assert faults[0]["waiting"] >= 1
        wait_for(lambda: stalled_metric(stack) == 1, timeout=30, what="ingest_sink_stalled to be 1")

        # The episode: the disk stays full while the workers wait. Nothing may be retried or
        # dead-lettered meanwhile; checked every few seconds, not slept through.
        ends = time.monotonic() + EPISODE_SECONDS
        while time.monotonic() < ends:
            status = stack.http.get("/status").json()
            assert status["retries"] == 0 and status["dead_lettered"] == 0, status
            assert status["sink_faults"], "the fault lasts as long as the disk is full"
            time.sleep(min(5.0, max(0.0, ends - time.monotonic())))

        grow(small_disk)  # what an operator freeing space does; nothing else is touched
        wait_for_rows(csv_path, accepted, timeout=120)
        assert_rows_match(csv_path, accepted)
        wait_for(lambda: not sink_faults(stack) and stalled_metric(stack) == 0, timeout=30,
                 what="the fault to clear by itself")
        status = stack.http.get("/status").json()
        assert status["retries"] == 0 and status["dead_lettered"] == 0, status
        assert queue_state(stack.rabbitmq_url, "ingest.XQ")[0] == 0, "nothing dead-lettered"

        logs = stack.workers_log.read_bytes() + stack.api_log.read_bytes()
        assert len(logs) < LOG_BUDGET_BYTES, f"{len(logs)} bytes of logs for a {EPISODE_SECONDS:.0f} s episode"
        frames = {pred["image_frame"][:64].encode() for payload in payloads for pred in payload["data"]["preds"]}
        assert not [frame for frame in frames if frame in logs], "no frame (no payload) is ever logged"
