"""Property-based fuzzing of the live API from its own OpenAPI schema (schemathesis).

The `st` CLI runs against a real stack (keys on, the model workers with their
samples) with every check and every phase: the schema's examples, coverage
of each constraint, fuzzing, and stateful sequences that follow the schema's
links (train -> task status -> predict, ingest -> status, dead letters ->
replay). What is relaxed is relaxed per operation, with its reason, in
tests/faults/schemathesis.toml; tests/faults/fuzz_hooks.py adds the NDJSON
serializer and records what the API accepted. Afterwards the CSV must hold
exactly the rows of the accepted payloads.

FUZZ_MAX_EXAMPLES (default 50) and FUZZ_SEED (default 1) widen or vary a run:
`FUZZ_MAX_EXAMPLES=300 FUZZ_SEED=7 ./test.sh tests/faults/test_fuzz_api.py`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

from pipeline.shard_files import read_shard
from tests.support.csv_check import assert_rows_match, wait_for_rows
from tests.support.rabbit import queue_state
from tests.support.stack import ROOT, isolated_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
#: Far above a run's ~30 s at the default size: a hung request fails the test, never the session.
RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory):
    # Short countdowns: the fuzzer must not occupy worker threads for an hour.
    with isolated_stack(tmp_path_factory.mktemp("fuzz"), "fuzz", max_countdown_seconds="2") as stack:
        stack.start()
        stack.start_model_workers()  # they install the samples the training and predict examples name
        yield stack


@pytest.fixture(scope="module")
def fuzz_run(fuzz_stack, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    accepted = tmp_path_factory.mktemp("fuzz-accepted") / "accepted.ndjson"
    command = [
        str(ROOT / ".venv" / "bin" / "st"), "--config-file", str(CONFIG), "--no-color",
        "run", f"{fuzz_stack.base_url}/openapi.json",
        "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
        "--header", f"Authorization: Bearer {fuzz_stack.admin_key}",
        "--max-examples", os.environ.get("FUZZ_MAX_EXAMPLES", "50"),
        "--seed", os.environ.get("FUZZ_SEED", "1"),
        # One worker: hypothesis describes its filters by parsing source with `ast`, which on
        # Python 3.11 fails in two threads at once ("AST constructor recursion depth mismatch").
        "--workers", "1",
        "--request-timeout", "10",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.faults.fuzz_hooks", "FUZZ_ACCEPTED_FILE": str(accepted)}
    try:
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"schemathesis did not finish in {RUN_TIMEOUT} s; its output so far:\n{error.stdout}")
    return run, accepted


def test_no_request_of_any_phase_breaks_a_check(fuzz_run):
    run, _ = fuzz_run
    assert run.returncode == 0, f"schemathesis found failures:\n{run.stdout[-12000:]}\n{run.stderr[-3000:]}"
    # Every phase ran, and the stateful one followed the schema's own links.
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in run.stdout, f"{phase} did not pass:\n{run.stdout[:3000]}"
    assert "API Links:" in run.stdout and " 0 covered" not in run.stdout


def test_the_csv_holds_exactly_the_fuzzed_payloads_that_were_accepted(fuzz_stack, fuzz_run):
    _, accepted_file = fuzz_run
    records = [orjson.loads(line) for line in accepted_file.read_bytes().splitlines()] if accepted_file.exists() else []
    accepted = {record["message_id"]: record["payload"] for record in records if record["message_id"] != "upload"}
    uploaded = sum(record["payload"] for record in records if record["message_id"] == "upload")
    assert accepted, "the fuzzer should have produced some valid payloads"
    wait_for_rows(fuzz_stack.csv_path, accepted)
    wait_for(lambda: queue_state(fuzz_stack.rabbitmq_url, "ingest")[0] == 0, timeout=60, what="an empty queue")
    assert_rows_match(fuzz_stack.csv_path, accepted)
    # Nothing else: every message in the CSV is one the API said it accepted.
    written = {row["message_id"] for row in read_shard(fuzz_stack.csv_path)}
    assert len(written) == len(accepted) + uploaded
