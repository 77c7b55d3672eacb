"""What a benchmark run drives: our stack, or the demo-style baseline, started the same way."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import httpx

from config import Settings
from pipeline.rows import read_csv
from pipeline.shard_files import read_shard
from tests.support.rabbit import queue_state
from tests.support.stack import ROOT, Stack, free_port
from tests.support.waiting import wait_for


#: The workers' shape a run takes unless told: the one the service runs with (config.py).
WORKER_PROCESSES = Settings.model_fields["worker_processes"].default
WORKER_THREADS = Settings.model_fields["worker_threads"].default


class OursTarget:
    """`auth`: the API has keys and the load sends an `ingest` key, as in production; off, the API is open."""

    label = "ours"

    #: Settings of this target's stack besides the broker's URL.
    settings: dict[str, str] = {}

    def __init__(self, workdir: Path, rabbitmq_url: str, processes: int, threads: int, auth: bool = True):
        self.stack = Stack(workdir, rabbitmq_url, processes=processes, threads=threads, auth=auth, **self.settings)
        self.csv_path = self.stack.csv_path
        #: The load's key: `ingest` only, as a client's would be. Its name is its tenant.
        self.load_key = "bench-load"
        #: What every load request sends besides its body.
        self.headers = self.stack.auth_headers(self.stack.add_key(self.load_key, "ingest") if auth else None)

    def start(self) -> None:
        self.stack.start()
        self.api_pid, self.workers_pid = self.stack.api.pid, self.stack.workers.pid
        self.url = f"{self.stack.base_url}/api"

    def committed(self) -> dict[str, float]:
        """message id -> when its rows became durable (the sink's ledger)."""
        ledger = Path(f"{self.csv_path}.ledger")
        if not ledger.exists():
            return {}
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
            return dict(db.execute("SELECT message_id, committed_at FROM commits"))

    def rows(self) -> list[dict]:
        return list(read_shard(self.csv_path))

    def stop(self) -> None:
        self.stack.stop()


class OursOnClusterTarget(OursTarget):
    """Ours on a 3-node cluster (`bench.run --cluster`): every node in RABBITMQ_URL, quorum queues."""

    label = "ours-cluster"
    settings = {"rabbitmq_queue_type": "quorum"}


class BaselineTarget:
    """bench/baseline: pika publisher without confirms, one aio_pika consumer, no fsync."""

    label = "baseline"
    headers: dict[str, str] = {}

    def __init__(self, workdir: Path, rabbitmq_url: str, processes: int, threads: int, auth: bool = True):
        self.workdir = workdir
        self.csv_path = workdir / "baseline.csv"
        self.port = free_port()
        self.rabbitmq_url = rabbitmq_url
        self.env = {**os.environ, "RABBITMQ_URL": rabbitmq_url, "CSV_PATH": str(self.csv_path)}
        self.processes: list[subprocess.Popen] = []

    def _spawn(self, *args: str, log: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "python"), *args],
            cwd=ROOT,
            env=self.env,
            stdout=open(self.workdir / log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start(self) -> None:
        consumer = self._spawn("-m", "bench.baseline.consumer", log="baseline-consumer.log")
        api = self._spawn(
            "-m", "uvicorn", "bench.baseline.api:app", "--host", "127.0.0.1", "--port", str(self.port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            log="baseline-api.log",
        )  # fmt: skip
        self.api_pid, self.workers_pid = api.pid, consumer.pid
        self.url = f"http://127.0.0.1:{self.port}/api"
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{self.port}/docs").status_code == 200, timeout=60,
                 what="the baseline API")
        wait_for(lambda: queue_state(self.rabbitmq_url, "baseline")[1] >= 1, timeout=60, what="the baseline consumer")

    def committed(self) -> dict[str, float]:
        times = Path(f"{self.csv_path}.times")
        if not times.exists():
            return {}
        done = {}
        for line in times.read_text().splitlines():
            message_id, _, stamp = line.partition(" ")
            if stamp:
                done[message_id] = float(stamp)
        return done

    def rows(self) -> list[dict]:
        return read_csv(self.csv_path)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


TARGETS = {"ours": OursTarget, "ours-cluster": OursOnClusterTarget, "baseline": BaselineTarget}
