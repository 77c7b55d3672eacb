"""Benchmark: what the frameworks we keep cost alone, doing nothing, for the same requests and messages.

    .venv/bin/python -m bench.floor                    # 10,000 requests, then 10,000 messages
    .venv/bin/python -m bench.floor --requests 500     # the smoke size

Issue #12 asks for half of the start's CPU a request, API and workers together. Part of any such
figure is spent before our code runs at all: uvicorn reading a ~45 KB body and writing an answer,
and a Dramatiq worker taking a ~45 KB message from RabbitMQ, decoding it and acking it. This
measures those parts on their own, with our settings (uvloop, httptools, the workers' processes and
threads of config.py, Dramatiq's default prefetch, our message encoding, glibc's malloc settings), on the
bodies and payloads `bench.run` sends:

- **http**: uvicorn serving an ASGI app that reads the body and answers 202 with a message id;
- **http+schema**: the same, validating the body with our `IngestPayload` (pydantic) first;
- **http+publish**, a rung above: the same, publishing as POST /api does (our publisher on the event
  loop, RabbitMQ's confirm, the `queued` record in Redis), without our middleware, keys or FastAPI;
- **api (ours)**, the top: our API from its entrypoint, keys on, as `bench.run` drives it, alone;
- **dramatiq**: the `dramatiq` CLI consuming the payloads as messages of an actor that does nothing
  but one `write` of a byte (so the run can tell every message was taken), no middleware;
- **dramatiq+defaults**: the same with Dramatiq's default middleware;
- **dramatiq+sink**, a rung above the floor: the no-op actor also writes the payload's rows through
  our sink (`pipeline/`: rows, group commit, fsync, ledger), with only CurrentMessage for the id.

CPU is counted from the moment each server is ready (start-up apart), per request or message, as
`bench.run` counts it. What our API and workers spend above these floors is what our code costs
(validation, confirms, the publish, the sink, the ledger, status and metrics): the only part any
change inside this shape can reduce.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

#: The queue and actor of the Dramatiq floor (bench/floor_worker.py declares the actor).
QUEUE, ACTOR = "floor", "floor_noop"
_ANSWER_HEADERS = [(b"content-type", b"application/json")]


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*_ANSWER_HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def http_app(scope, receive, send) -> None:
    """Read the body, answer 202 with a new message id: what any HTTP ingest does at the least."""
    if scope["type"] != "http":
        return
    await _read_body(receive)
    await _answer(send, 202, orjson.dumps({"status": "received", "message_id": str(uuid.uuid4())}))


async def http_schema_app(scope, receive, send) -> None:
    """`http_app`, validating the body against the payload contract first (422 when it does not hold)."""
    from app.schemas import IngestPayload
    from pydantic import ValidationError

    if scope["type"] != "http":
        return
    body = await _read_body(receive)
    try:
        IngestPayload.model_validate_json(body)
    except ValidationError:
        await _answer(send, 422, b'{"detail":"invalid"}')
        return
    await _answer(send, 202, orjson.dumps({"status": "received", "message_id": str(uuid.uuid4())}))


async def http_publish_app(scope, receive, send):
    """`http_schema_app`, publishing the payload as POST /api does (our broker's publisher on this
    loop, RabbitMQ's confirm, the `queued` record in Redis), without our middleware, keys or FastAPI."""
    if scope["type"] == "lifespan":
        await _publisher_lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    from app.auth import OPEN
    from app.routers.ingest import publish, write_detection_rows
    from app.schemas import IngestPayload
    from pydantic import ValidationError

    body = await _read_body(receive)
    try:
        payload = IngestPayload.model_validate_json(body)
    except ValidationError:
        await _answer(send, 422, b'{"detail":"invalid"}')
        return
    message_id = await publish(write_detection_rows, payload.model_dump(mode="json"), sender=OPEN)
    await _answer(send, 202, orjson.dumps({"status": "received", "message_id": message_id}))


async def _publisher_lifespan(receive, send) -> None:
    """As app.main's lifespan: the publisher on the event loop from start-up, closed at shutdown."""
    import asyncio

    from actors import broker

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            broker.publish_on(asyncio.get_running_loop())
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await broker.publisher.aclose(timeout=5)
            await send({"type": "lifespan.shutdown.complete"})
            return


def our_encoder():
    """Our message encoding (actors/encoding.py), loaded from its file: imported as `actors.encoding`
    it would run `actors/__init__`, which builds our broker and its middleware, the very things
    these floors leave out."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("floor_encoding", ROOT / "actors" / "encoding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OrjsonEncoder()


def _malloc_environment() -> dict[str, str]:
    """glibc's malloc settings our entrypoints export, so a floor is not charged page faults ours does not pay."""
    from config import get_settings, malloc_environment

    return malloc_environment(get_settings())


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                start_new_session=True)


def _part(name: str, count: int, seconds: float, tree) -> dict:
    """One rung's figures: CPU ms each from the tree's sampler, and the rate."""
    return {"part": name, "count": count, "per_s": count / seconds, "cpu_seconds": tree.cpu_seconds,
            "cpu_ms_each": 1000 * tree.cpu_seconds / count,
            "kernel_share": tree.kernel_seconds / max(tree.cpu_seconds, 1e-9)}


def _under_load(pid: int, url: str, headers: dict[str, str], bodies: list[bytes], concurrency: int,
                name: str, log: Path) -> dict:
    """CPU ms a request of the process tree `pid` (counted from now) under bench.run's load at `url`."""
    from bench.load import load_from_a_process
    from bench.procstat import TreeSampler

    tree = TreeSampler(pid, from_now=True)
    load = load_from_a_process(url, bodies, concurrency, headers=headers, meanwhile=tree.sample)
    tree.sample()
    accepted = sum(1 for result in load["results"] if result and result[2] == 202)
    if accepted != len(bodies):
        raise AssertionError(f"{name}: {accepted} of {len(bodies)} requests answered 202 (log: {log})")
    return _part(name, accepted, load["elapsed"], tree)


def measure_http(app: str, name: str, bodies: list[bytes], concurrency: int, workdir: Path) -> dict:
    """CPU ms a request of uvicorn serving `app` (bench.floor:<app>, with our uvicorn flags).

    The publishing app gets a RabbitMQ vhost of its own, with no bound on its queue's length (no
    worker takes the messages)."""
    import httpx

    from tests.support.rabbit import create_vhost, delete_vhost, vhost_url
    from tests.support.stack import free_port, stop_tree
    from tests.support.waiting import wait_for

    vhost = create_vhost("bench-floor") if app == "http_publish_app" else None
    environment = {**_malloc_environment(),
                   **({"RABBITMQ_URL": vhost_url(vhost), "MAX_QUEUE_MESSAGES": "0"} if vhost else {})}
    port, log = free_port(), workdir / f"{app}.log"
    server = _spawn([sys.executable, "-m", "uvicorn", f"bench.floor:{app}", "--host", "127.0.0.1", "--port", str(port),
                     "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"],
                    log, environment)
    try:
        url = f"http://127.0.0.1:{port}/api"
        wait_for(lambda: httpx.post(url, content=bodies[0], timeout=2).status_code == 202, timeout=60,
                 what=f"uvicorn serving bench.floor:{app} (log: {log})")
        return _under_load(server.pid, url, {}, bodies, concurrency, name, log)
    finally:
        stop_tree(server)
        if vhost:
            delete_vhost(vhost)


def measure_our_api(bodies: list[bytes], concurrency: int, workdir: Path) -> dict:
    """CPU ms a request of our API alone (its entrypoint, keys on, an `ingest` key), as bench.run
    drives it but with no worker beside it: the top of the HTTP ladder."""
    from bench.targets import OursTarget
    from tests.support.rabbit import create_vhost, delete_vhost, vhost_url

    vhost = create_vhost("bench-floor")

    class ApiAlone(OursTarget):
        settings = {"max_queue_messages": "0"}  # no worker takes the messages

    (workdir / "api").mkdir(exist_ok=True)
    target = ApiAlone(workdir / "api", vhost_url(vhost), 1, 1)
    try:
        target.stack.start_api()
        return _under_load(target.stack.api.pid, f"{target.stack.base_url}/api", target.headers, bodies,
                           concurrency, "api (ours)", target.stack.workdir / "api.log")
    finally:
        target.stop()
        delete_vhost(vhost)


def measure_dramatiq(payloads: list[dict], middleware: str, processes: int, threads: int, workdir: Path) -> dict:
    """CPU ms a message of the dramatiq CLI consuming `payloads` with a no-op actor, on a vhost of its own."""
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    from bench.procstat import TreeSampler
    from tests.support.rabbit import create_vhost, delete_vhost, queue_state, vhost_url
    from tests.support.stack import stop_tree
    from tests.support.waiting import wait_for

    vhost = create_vhost("bench-floor")
    url = vhost_url(vhost)
    taken = workdir / f"taken-{middleware}"
    taken.write_bytes(b"")
    log = workdir / f"dramatiq-{middleware}.log"
    dramatiq.set_encoder(our_encoder())
    publisher = RabbitmqBroker(url=url, middleware=[])
    workers = None
    try:
        publisher.declare_queue(QUEUE, ensure=True)  # before the workers, as the queue_state probe needs it
        workers = _spawn([sys.executable, "-m", "dramatiq", "bench.floor_worker", "--processes", str(processes),
                          "--threads", str(threads), "--queues", QUEUE],
                         log, {**_malloc_environment(), "FLOOR_RABBITMQ_URL": url, "FLOOR_MIDDLEWARE": middleware,
                               "FLOOR_TAKEN": str(taken), "FLOOR_CSV": str(workdir / f"floor-{middleware}.csv")})
        wait_for(lambda: queue_state(url, QUEUE)[1] >= processes, timeout=60,
                 what=f"{processes} dramatiq consumers on {QUEUE} (log: {log})")
        tree = TreeSampler(workers.pid, from_now=True)
        started = time.perf_counter()
        for payload in payloads:
            publisher.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name=ACTOR, args=(payload,), kwargs={},
                                               options={}))

        def drained() -> bool:
            tree.sample()
            return taken.stat().st_size >= len(payloads)

        wait_for(drained, timeout=600, interval=0.2, what=f"every message taken (log: {log})")
        elapsed = time.perf_counter() - started
        tree.sample()
    finally:
        publisher.close()
        if workers is not None:
            stop_tree(workers)
        delete_vhost(vhost)
    count = taken.stat().st_size
    if count != len(payloads):
        raise AssertionError(f"dramatiq+{middleware}: {count} messages taken of {len(payloads)} (log: {log})")
    return _part("dramatiq" if middleware == "none" else f"dramatiq+{middleware}", count, elapsed, tree)


def main(argv: list[str] | None = None) -> list[dict]:
    from bench.targets import WORKER_PROCESSES, WORKER_THREADS
    from tests.support.payloads import random_payload

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=WORKER_PROCESSES)
    parser.add_argument("--threads", type=int, default=WORKER_THREADS)
    parser.add_argument("--frame-bytes", type=int, default=6 * 1024)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)  # the same payloads and bodies as bench.run's
    payloads = [random_payload(rng, frame_bytes=args.frame_bytes) for _ in range(args.requests)]
    bodies = [orjson.dumps(payload) for payload in payloads]
    workdir = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    parts = [
        measure_http("http_app", "http", bodies, args.concurrency, workdir),
        measure_http("http_schema_app", "http+schema", bodies, args.concurrency, workdir),
        measure_http("http_publish_app", "http+publish", bodies, args.concurrency, workdir),
        measure_our_api(bodies, args.concurrency, workdir),
        measure_dramatiq(payloads, "none", args.processes, args.threads, workdir),
        measure_dramatiq(payloads, "defaults", args.processes, args.threads, workdir),
        measure_dramatiq(payloads, "sink", args.processes, args.threads, workdir),
    ]
    for part in parts:
        print(f"{part['part']:<18} {part['cpu_ms_each']:.3f} ms CPU each ({part['kernel_share']:.0%} in the kernel), "
              f"{part['per_s']:,.0f}/s, {part['count']} of {args.requests}")
    each = {part["part"]: part["cpu_ms_each"] for part in parts}
    print(f"floor, http + dramatiq: {each['http'] + each['dramatiq']:.3f} ms CPU a request "
          f"(with the schema and Dramatiq's defaults: {each['http+schema'] + each['dramatiq+defaults']:.3f})")
    return parts


if __name__ == "__main__":
    main()
