"""Benchmark: the sink alone, draining a full queue (issue #5's "rows/s written and fsynced").

    .venv/bin/python -m bench.sink                     # 10,000 messages, the workers' shape of config.py
    .venv/bin/python -m bench.sink --requests 500      # quick look

End to end (bench/run.py), the workers share the 2 cores with the API, RabbitMQ
and the load generator, so rows/s there measures the machine. Here the API
enqueues everything first, with no worker running; then the workers start and
the clock runs from the first row made durable to the last (the sink's ledger
timestamps), with RabbitMQ delivering and nothing else competing. Exactness is
checked row by row, as everywhere.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.procstat import TreeSampler  # noqa: E402
from bench.targets import WORKER_PROCESSES, WORKER_THREADS, OursTarget  # noqa: E402
from tests.support.csv_check import assert_rows_match  # noqa: E402
from tests.support.load import post_all  # noqa: E402
from tests.support.payloads import random_payload  # noqa: E402
from tests.support.rabbit import create_vhost, delete_vhost, vhost_url  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=WORKER_PROCESSES)
    parser.add_argument("--threads", type=int, default=WORKER_THREADS)
    parser.add_argument("--frame-bytes", type=int, default=6 * 1024)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    payloads = [random_payload(rng, frame_bytes=args.frame_bytes) for _ in range(args.requests)]
    rows = sum(len(payload["data"]["preds"]) for payload in payloads)
    vhost = create_vhost("bench-sink")
    target = OursTarget(Path(tempfile.mkdtemp(prefix="bench-sink-")), vhost_url(vhost), args.processes, args.threads)
    try:
        target.stack.start_api()
        answers = post_all(f"{target.stack.base_url}/api", payloads, key=target.stack.admin_key)
        accepted = {a.body["message_id"]: payloads[a.index] for a in answers if a.status == 202}
        print(f"enqueued {len(accepted)}/{args.requests} messages ({rows} rows); starting the workers")
        target.stack.start_workers(wait=False)
        workers = TreeSampler(target.stack.workers.pid)

        def drained():
            workers.sample()
            done = target.committed()
            return done if len(done) >= len(accepted) else None

        started = time.time()
        durable = wait_for(drained, timeout=600, interval=0.2, what="every message's rows")
        assert_rows_match(target.csv_path, accepted)
    finally:
        target.stop()
        delete_vhost(vhost)

    first, last = min(durable.values()), max(durable.values())
    report = {
        "messages": len(accepted),
        "rows": rows,
        "rows_per_s": rows / (last - first),
        "messages_per_s": len(accepted) / (last - first),
        "seconds_first_to_last_row": last - first,
        "seconds_including_worker_start": last - started,
        "worker_cpu_seconds": workers.cpu_seconds,
        "worker_peak_rss_mb": workers.peak_rss_mb,
    }
    print(
        f"sink: {report['rows_per_s']:,.0f} rows/s, {report['messages_per_s']:,.0f} messages/s "
        f"({rows} rows in {last - first:.2f} s, first to last durable row; {last - started:.2f} s with worker start)\n"
        f"workers: {args.processes}x{args.threads}, CPU {workers.cpu_seconds:.1f} s, peak RSS {workers.peak_rss_mb:.0f} MB "
        f"per process; exactness checked row by row"
    )
    return report


if __name__ == "__main__":
    main()
