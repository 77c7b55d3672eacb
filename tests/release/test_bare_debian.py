"""The release check: the README's two commands on a bare Debian, nothing installed by hand.

Each test makes a machine of its own from today's minbase image (tests/support/bare_debian.py),
copies a clean checkout of this repository's HEAD in, and runs one command there as a new user
would. It takes about half an hour in all, so it is not part of the suite CI runs: it is opt-in,
`./test.sh -m bare -s` (`-s` shows how long each command took; the README quotes the last run).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from pipeline.shard_files import read_shard
from tests.support import bare_debian
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.bare]

README_DETECTION = {
    "device_id": "cam-01", "client_id": "acme", "created_at": "2023-02-13 10:49:06.613585",
    "data": {"license_id": "lic-42", "preds": [{"image_frame": "aGVsbG8gd29ybGQ=", "prob": 0.87,
                                                "tags": ["person", "entrance"]}]},
}


@pytest.fixture()
def machine(tmp_path):
    reason = bare_debian.available()
    if reason:
        pytest.fail(reason)
    made = bare_debian.Machine(tmp_path, bare_debian.base_image())
    yield made
    made.remove()


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.timeout(1800)
def test_the_run_command_on_a_bare_debian_installs_what_it_needs_and_a_posted_detection_becomes_its_row(
        machine, tmp_path):
    checkout = machine.clone(ROOT)
    log = tmp_path / "run.log"
    started = time.monotonic()
    service = machine.start(f"cd {checkout} && ./run.sh", log)

    def serving() -> bool:
        if service.poll() is not None:
            pytest.fail(f"./run.sh exited {service.returncode} before it served /ready:\n{tail(log)}")
        return machine.http("GET", "http://127.0.0.1:8000/ready")[0] == 200

    wait_for(serving, timeout=1500, interval=2,
             what=lambda: f"./run.sh to serve /ready; the end of its output:\n{tail(log)}")
    serving_after = time.monotonic() - started

    status, page = machine.http("GET", "http://127.0.0.1:8000/")
    assert status == 200 and "<title>Detections ingest: console</title>" in page, "the console is served"
    status, body = machine.http("POST", "http://127.0.0.1:8000/api", README_DETECTION)
    assert status == 202, (status, body, tail(log))
    message_id = json.loads(body)["message_id"]
    csv_path = machine.root / checkout.lstrip("/") / "data" / "data.csv"
    rows = wait_for(lambda: [row for row in read_shard(csv_path) if row["message_id"] == message_id]
                    if csv_path.exists() else None, timeout=60, what="the detection's row in data/data.csv")
    assert [(row["pred_index"], row["client_id"], row["tags"], row["image_frame"]) for row in rows] == [
        (0, "acme", ["person", "entrance"], "aGVsbG8gd29ybGQ=")]
    print(f"\nbare Debian: ./run.sh served /ready {serving_after:.0f} s after it started (fresh clone, "
          f"nothing installed); the README's detection was its row moments later")


@pytest.mark.timeout(3600)
def test_the_test_command_on_a_bare_debian_installs_what_it_needs_and_the_whole_suite_passes(machine, tmp_path):
    checkout = machine.clone(ROOT)
    log = tmp_path / "test.log"
    started = time.monotonic()
    status = machine.run(f"cd {checkout} && ./test.sh -p no:cacheprovider", log, timeout=3300)
    took = time.monotonic() - started
    assert status == 0, f"./test.sh exited {status} after {took:.0f} s:\n{tail(log)}"
    summary = re.findall(r"=+ (.*(?:passed|failed).*) in [\d.]+s", log.read_text(errors="replace"))
    assert summary and "failed" not in summary[-1] and "error" not in summary[-1], tail(log)
    print(f"\nbare Debian: ./test.sh took {took / 60:.1f} min (fresh clone, nothing installed): {summary[-1]}")
