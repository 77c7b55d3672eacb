"""A real stack rotating its CSV by size under concurrent load: every accepted pred once across the
live and sealed files, and `python -m pipeline.shards verify` passes every one of them."""

from __future__ import annotations

import random
import subprocess
import sys

from pipeline.shard_files import sealed_files, shard_files
from tests.support.csv_check import assert_rows_match, wait_for_rows
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.stack import ROOT, isolated_stack


def test_workers_rotating_the_csv_under_load_write_each_accepted_pred_once_across_the_files(tmp_path):
    with isolated_stack(tmp_path, "rotation", processes=2, threads=4, csv_rotate_bytes="400000",
                        csv_host="host-a") as stack:
        stack.start()
        rng = random.Random(41)
        payloads = [random_payload(rng) for _ in range(300)]
        answers = post_all(f"{stack.base_url}/api", payloads, concurrency=32, key=stack.admin_key)
        assert {answer.status for answer in answers} == {202}
        accepted = {answer.body["message_id"]: payloads[answer.index] for answer in answers}
        wait_for_rows(stack.csv_path, accepted)
        assert_rows_match(stack.csv_path, accepted)
        sealed = sealed_files(stack.csv_path)
        assert len(sealed) >= 10 and {name.host for name in sealed} == {"host-a"}
        assert [name.sequence for name in sealed] == list(range(1, len(sealed) + 1))
        verified = subprocess.run([sys.executable, "-m", "pipeline.shards", "verify",
                                   *map(str, shard_files(stack.csv_path))],
                                  cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]
