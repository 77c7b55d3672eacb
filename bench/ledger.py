"""Benchmark: the sink's group commit alone, from several processes, without RabbitMQ or threads.

    .venv/bin/python -m bench.ledger                    # 2 processes x 2,000 commits of 4 messages
    .venv/bin/python -m bench.ledger --processes 1      # no other process invalidating the ledger's cache

What a commit costs the worker in CPU (user and kernel, from the children's
`getrusage`), which the end-to-end run can only show as a few percent among
the API, RabbitMQ and the load; run it under `strace -f -c` for the syscalls
a commit makes. Each process commits batches of distinct messages to one
shard, as the workers' committers do, so the processes take turns at the lock
and each one's ledger cache is made stale by the other's commits.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.csv_sink import DurableCsvFile, PendingAppend  # noqa: E402


def commit_batches(path: Path, commits: int, batch: int, row_bytes: int) -> None:
    file = DurableCsvFile(path)
    data = b"x" * (row_bytes - 1) + b"\n"  # the ledger keeps up, so no recovery reads the rows back
    for _ in range(commits):
        file.commit([PendingAppend(uuid.uuid4().hex, data, 1, ("tenant", "client", "device"))
                     for _ in range(batch)])
    file.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--commits", type=int, default=2000, help="commits a process")
    parser.add_argument("--batch", type=int, default=4, help="messages a commit (the workers' mean under load)")
    parser.add_argument("--row-bytes", type=int, default=6000)
    args = parser.parse_args(argv)

    # On the repository's disk, not a tmpfs /tmp may be: the fdatasync is part of what a commit costs.
    directory = Path(tempfile.mkdtemp(prefix="bench-ledger-", dir=ROOT / "bench" / "results"))
    try:
        return _measure(directory / "data.csv", args)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _measure(path: Path, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    children = []
    for _ in range(args.processes):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                commit_batches(path, args.commits, args.batch, args.row_bytes)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    failed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    wall = time.perf_counter() - started
    if failed:
        raise SystemExit(f"{len(failed)} committing process(es) failed")
    with closing(sqlite3.connect(f"{path}.ledger")) as ledger:
        (recorded,) = ledger.execute("SELECT count(*) FROM commits").fetchone()
    commits = args.processes * args.commits
    if recorded != commits * args.batch:
        raise SystemExit(f"the ledger holds {recorded} messages, not {commits * args.batch}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {"commits": commits, "wall_seconds": round(wall, 2),
              "user_us_per_commit": round(1e6 * usage.ru_utime / commits),
              "system_us_per_commit": round(1e6 * usage.ru_stime / commits)}
    print(f"{commits} commits of {args.batch} messages from {args.processes} process(es) in {wall:.2f} s; "
          f"CPU a commit: user {result['user_us_per_commit']} us, kernel {result['system_us_per_commit']} us")
    return result


if __name__ == "__main__":
    main()
