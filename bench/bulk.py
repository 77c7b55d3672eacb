"""Benchmark: enqueue the same payloads by single POSTs, by POST /api/batch and by POST /file/upload.

    .venv/bin/python -m bench.bulk                        # 10,000 payloads, each way
    .venv/bin/python -m bench.bulk --payloads 2000 --methods batch,file

Each method gets a fresh stack (API + workers of the default shape, its own vhost and CSV), so
no run inherits another's backlog. The payloads are bench/run.py's (seed 1,
1-10 preds, ~8 KB base64 frames). Printed per method: the time to enqueue
(first byte sent to last answer: every payload confirmed by RabbitMQ), the
time until the last row is durable, the API's CPU seconds and peak RSS, and
exactness (every payload's rows once, none lost or doubled).

- single: bench/load.py, concurrency 64, one POST /api per payload.
- batch: POST /api/batch with --batch-size items each, --batch-concurrency in flight.
- file: one POST /file/upload of a CSV in the service's own format (message ids included).

By default the workers drain while the API enqueues, as in production; on 2
cores they compete for CPU. `--workers-after` starts them once everything is
enqueued, which shows what the API alone can take ("all rows durable" then
includes the workers' start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import load_from_a_process  # noqa: E402
from bench.procstat import TreeSampler  # noqa: E402
from app.tenancy import scoped_file_id  # noqa: E402
from bench.targets import WORKER_PROCESSES, WORKER_THREADS, OursTarget  # noqa: E402
from pipeline.rows import HEADER_BYTES, encode_rows  # noqa: E402
from tests.support.payloads import random_payload  # noqa: E402
from tests.support.rabbit import create_vhost, delete_vhost, vhost_url  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

METHODS = ("single", "batch", "file")


async def _post_batches(url: str, batches: list[bytes], concurrency: int, headers: dict[str, str]) -> list[str]:
    slots = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def post(body: bytes) -> list[str]:
            async with slots:
                async with session.post(url, data=body, headers={"content-type": "application/json", **headers}
                                        ) as response:
                    answer = orjson.loads(await response.read())
                    if response.status != 200 or answer["received"] != answer["total"]:
                        raise AssertionError(f"batch answered {response.status}: {str(answer)[:300]}")
                    return [item["message_id"] for item in answer["items"]]

        answers = await asyncio.gather(*(post(body) for body in batches))
    return [message_id for ids in answers for message_id in ids]


def enqueue_single(target: OursTarget, payloads: list[dict], args) -> list[str]:
    bodies = [orjson.dumps(payload) for payload in payloads]
    report = load_from_a_process(target.url, bodies, args.concurrency, headers=target.headers)
    ids = [result[3] for result in report["results"] if result and 200 <= result[2] < 300]
    if len(ids) != len(payloads):
        statuses = sorted({result[2] for result in report["results"] if result and not 200 <= result[2] < 300})
        raise AssertionError(f"{len(payloads) - len(ids)} single POSTs were not accepted (answered {statuses})")
    # The window is first request sent to last answer, not the load process's start-up (it unpickles the bodies).
    return ids, min(r[0] for r in report["results"]), max(r[0] + r[1] for r in report["results"])


def enqueue_batch(target: OursTarget, payloads: list[dict], args) -> list[str]:
    size = args.batch_size
    batches = [orjson.dumps(payloads[start : start + size]) for start in range(0, len(payloads), size)]
    started = time.time()
    ids = asyncio.run(_post_batches(f"{target.stack.base_url}/api/batch", batches, args.batch_concurrency,
                                    target.headers))
    return ids, started, time.time()


def enqueue_file(target: OursTarget, payloads: list[dict], args) -> list[str]:
    started = time.time()
    asyncio.run(_upload(f"{target.stack.base_url}/file/upload", args.csv_path, len(payloads), target.headers))
    # The file's own ids, as the API maps them into the (non-admin) load key's tenant.
    scope = target.stack.id_scope(target.load_key)
    return [scoped_file_id(scope, message_id) for message_id in args.file_ids], started, time.time()


async def _upload(url: str, path: Path, expected: int, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1200)) as session:
        with open(path, "rb") as data:
            form = aiohttp.FormData()
            form.add_field("file", data, filename="detections.csv", content_type="text/csv")
            async with session.post(url, data=form, headers=headers) as response:
                answer = orjson.loads(await response.read())
    if response.status != 200 or answer["enqueued"] != expected:
        raise AssertionError(f"upload answered {response.status}: {str(answer)[:300]}")


ENQUEUE = {"single": enqueue_single, "batch": enqueue_batch, "file": enqueue_file}


def run_method(method: str, payloads: list[dict], args) -> dict:
    vhost = create_vhost("bench-bulk")
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-bulk-{method}-"))
    target = OursTarget(workdir, vhost_url(vhost), args.processes, args.threads)
    print(f"[{method}]", flush=True)
    try:
        if args.workers_after:  # the API alone while enqueuing: what it can take when the cores are its own
            target.stack.start_api()
            target.api_pid, target.url = target.stack.api.pid, f"{target.stack.base_url}/api"
        else:
            target.start()
        api = TreeSampler(target.api_pid)
        api.sample()
        cpu_before = api.cpu_seconds
        ids, started, enqueued = ENQUEUE[method](target, payloads, args)
        api.sample()
        if args.workers_after:
            target.stack.start_workers()

        def all_durable():
            api.sample()
            done = target.committed()
            return done if len(done) >= len(ids) else None

        durable = wait_for(all_durable, timeout=900, interval=0.5, what="every payload's rows")
        rows = target.rows()
    finally:
        target.stop()
        delete_vhost(vhost)
        shutil.rmtree(workdir, ignore_errors=True)  # a CSV as large as the payloads: do not keep it

    expected = {(mid, i) for mid, payload in zip(ids, payloads) for i in range(len(payload["data"]["preds"]))}
    seen: dict[tuple[str, int], int] = {}
    for row in rows:
        key = (row["message_id"], row["pred_index"])
        seen[key] = seen.get(key, 0) + 1
    return {
        "method": method,
        "payloads": len(payloads),
        "rows": len(rows),
        "enqueue_seconds": enqueued - started,
        "payloads_per_s": len(payloads) / (enqueued - started),
        "durable_seconds": max(durable.values()) - started,
        "api_cpu_seconds": api.cpu_seconds - cpu_before,
        "api_peak_rss_mb": api.peak_rss_mb,
        "lost_rows": len(expected - seen.keys()),
        "duplicated_rows": sum(count - 1 for count in seen.values() if count > 1),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payloads", type=int, default=10_000)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: single, batch, file")
    parser.add_argument("--concurrency", type=int, default=64, help="single POSTs in flight")
    parser.add_argument("--batch-size", type=int, default=250, help="payloads per batch (~11 MB at 250)")
    parser.add_argument("--batch-concurrency", type=int, default=1, help="batches in flight")
    parser.add_argument("--processes", type=int, default=WORKER_PROCESSES, help="dramatiq worker processes")
    parser.add_argument("--threads", type=int, default=WORKER_THREADS, help="threads per worker process")
    parser.add_argument("--frame-bytes", type=int, default=6 * 1024, help="raw bytes per frame (x4/3 in base64)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers-after", action="store_true",
                        help="start the workers only once everything is enqueued (the API has the cores to itself)")
    args = parser.parse_args(argv)
    methods = [method.strip() for method in args.methods.split(",")]
    if not set(methods) <= set(METHODS):
        parser.error(f"--methods takes {', '.join(METHODS)}")

    rng = random.Random(args.seed)
    payloads = [random_payload(rng, frame_bytes=args.frame_bytes) for _ in range(args.payloads)]
    args.file_ids = [str(uuid.uuid4()) for _ in payloads]
    args.csv_path = Path(tempfile.mkdtemp(prefix="bench-bulk-file-")) / "detections.csv"
    with open(args.csv_path, "wb") as out:
        out.write(HEADER_BYTES)
        for message_id, payload in zip(args.file_ids, payloads):
            out.write(encode_rows(message_id, payload)[0])
    rows = sum(len(payload["data"]["preds"]) for payload in payloads)
    print(f"{args.payloads} payloads, {rows} rows; CSV file {args.csv_path.stat().st_size / 1e6:.0f} MB; "
          f"{multiprocessing.cpu_count()} cores, Python {platform.python_version()}")

    try:
        results = [run_method(method, payloads, args) for method in methods]
    finally:
        shutil.rmtree(args.csv_path.parent, ignore_errors=True)
    print(f"\n{'method':<8} {'enqueue s':>10} {'payloads/s':>11} {'all rows durable s':>19} "
          f"{'API CPU s':>10} {'API peak RSS MB':>16} {'lost/dup':>9}")
    for r in results:
        print(f"{r['method']:<8} {r['enqueue_seconds']:>10.2f} {r['payloads_per_s']:>11,.0f} "
              f"{r['durable_seconds']:>19.2f} {r['api_cpu_seconds']:>10.1f} {r['api_peak_rss_mb']:>16.0f} "
              f"{r['lost_rows']:>4}/{r['duplicated_rows']}")
    return results


if __name__ == "__main__":
    outcome = main()
    sys.exit(0 if all(r["lost_rows"] == r["duplicated_rows"] == 0 for r in outcome) else 1)
