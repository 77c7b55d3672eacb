"""Totals of what every worker did, on every host, kept in Redis for the status page.

Prometheus counters live per process (and per host); an API process cannot
sum them. These few counters go to Redis instead, under a namespace per
RabbitMQ vhost (one deployment), so any API process answers `GET /status`
with the same numbers. They are for people, not for accounting: the CSV and
its ledger are the record. Increments are added up in memory and flushed by a
background thread twice a second, so the sink's commit path never waits on
Redis, and a Redis outage only delays them.
"""

from __future__ import annotations

import bisect
import os
import socket
import threading
import time
from collections import Counter
from typing import Any

import orjson
import redis
from dramatiq.middleware import Middleware
from loguru import logger
from redis.backoff import NoBackoff
from redis.retry import Retry

from actors.cluster import vhost_of
from pipeline.csv_sink import CommitReport, SinkFault

#: Totals (a Redis hash) and the per-second buckets behind messages/s. `accepted` is counted by
#: the API's status writer (actors.message_status), with the `queued` records it writes anyway.
TOTALS = ("accepted", "rows_written", "messages_written", "duplicates", "retries", "dead_lettered")
#: Upper bounds (ms) of the buckets of ingest-to-row latency: from the message's timestamp (taken
#: by the API just before publishing) to its rows being on disk. A cumulative histogram in Redis,
#: so any two readings give the latencies between them (app/history.py).
LATENCY_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000)
#: messages/s is averaged over this many whole seconds...
RATE_WINDOW_SECONDS = 5
#: ...ending this many seconds ago, so that every flush of those seconds has landed.
RATE_LAG_SECONDS = 2
FLUSH_INTERVAL_SECONDS = 0.5
BUCKET_TTL_SECONDS = 120
#: A worker's sink fault and holdings are shown while confirmed this recently (a dead worker's fade out).
FAULT_FRESH_SECONDS = 10
#: How often a worker process reports what its consumers hold (holdings_of).
HOLDINGS_INTERVAL_SECONDS = 1.0


def namespace_for(rabbitmq_url: str) -> str:
    """One namespace per vhost: the vhost is what separates deployments (and test runs).

    Of the first node when RABBITMQ_URL lists several (actors.cluster: they all name the same one)."""
    vhost = vhost_of(rabbitmq_url.split(";")[0].strip())
    return f"ingest-stats:{vhost}"


def totals_key(namespace: str) -> str:
    return f"{namespace}:totals"


def latency_key(namespace: str) -> str:
    return f"{namespace}:latency"


def latency_bucket(milliseconds: float) -> int:
    """The index of the first bucket whose bound holds `milliseconds` (len(bounds): beyond the last)."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, milliseconds)


def redis_client(url: str, timeout: float = 0.5, *, retry: bool = True) -> redis.Redis:
    """A Redis client that gives up quickly: everything Redis holds here is bookkeeping.

    `retry=False` for calls made on a message's own path (a nack), where redis-py's
    default retries would multiply the wait when Redis is down.
    """
    options = {} if retry else {"retry": Retry(NoBackoff(), 0)}
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, **options)


class SharedStats(Middleware):
    """Count rows and messages written (via the sink), retries and dead letters, into Redis."""

    def __init__(self, redis_url: str, namespace: str):
        self.redis_url = redis_url
        self.namespace = namespace
        self._pending: Counter[str] = Counter()  # totals
        self._per_second: Counter[int] = Counter()  # messages written, by epoch second
        self._latency: Counter[int] = Counter()  # messages written, by latency bucket
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._worker = None  # whose consumers' holdings are reported (holdings())
        self._holdings_at = 0.0
        self._warned_at = 0.0
        self._client: redis.Redis | None = None
        #: This process's sink fault, and whether Redis still has to hear that it ended.
        self._fault: SinkFault | None = None
        self._fault_cleared = False
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"

    # Sources -------------------------------------------------------------------------------

    def observe(self, report: CommitReport) -> None:
        """A CsvSink observer: called by its committer thread after each group commit."""
        self._add(
            rows_written=report.rows_written, messages_written=report.messages_written, duplicates=report.duplicates
        )
        if report.messages_written:
            with self._lock:
                self._per_second[int(time.time())] += report.messages_written

    def observe_fault(self, fault: SinkFault | None) -> None:
        """A CsvSink fault observer: the disk refuses the CSV (a SinkFault), or writes again (None)."""
        with self._lock:
            self._fault_cleared = fault is None and (self._fault is not None or self._fault_cleared)
            self._fault = fault

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        # Listed before Retries, so this runs after it: a failure it did not give up on is a retry.
        if exception is not None and not message.failed:
            self._add(retries=1)
        elif isinstance(result, dict) and result.get("rows_written"):  # an ingest message's rows are on disk
            bucket = latency_bucket(time.time() * 1000 - message.message_timestamp)
            with self._lock:
                self._latency[bucket] += 1

    def after_nack(self, broker, message) -> None:
        self._add(dead_lettered=1)

    # Flushing ------------------------------------------------------------------------------

    def after_worker_boot(self, broker, worker) -> None:
        self._worker = worker
        self._stop.clear()
        self._flusher = threading.Thread(target=self._flush_forever, name="stats-flusher", daemon=True)
        self._flusher.start()

    def after_worker_shutdown(self, broker, worker) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=2)
        self._worker = None
        self.flush()
        try:  # it holds nothing now
            self._client = self._client or redis_client(self.redis_url)
            self._client.hdel(f"{self.namespace}:holdings", self.worker_name)
        except redis.RedisError:
            pass  # its report fades out after FAULT_FRESH_SECONDS

    def _add(self, **counts: int) -> None:
        with self._lock:
            self._pending.update({name: n for name, n in counts.items() if n})

    def _flush_forever(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_SECONDS):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, Counter()
            per_second, self._per_second = self._per_second, Counter()
            latency, self._latency = self._latency, Counter()
            fault, cleared = self._fault, self._fault_cleared
        holdings = None
        if self._worker is not None and time.monotonic() - self._holdings_at >= HOLDINGS_INTERVAL_SECONDS:
            self._holdings_at = time.monotonic()
            holdings = holdings_of(self._worker)
        if not pending and not per_second and not latency and fault is None and not cleared and holdings is None:
            return
        try:
            self._client = self._client or redis_client(self.redis_url)
            pipe = self._client.pipeline(transaction=False)
            if fault is not None:  # rewritten every flush while it lasts: `seen` keeps it fresh
                pipe.hset(f"{self.namespace}:sink_faults", self.worker_name, orjson.dumps(
                    {"worker": self.worker_name, "reason": fault.reason, "since": fault.since,
                     "waiting": fault.waiting, "seen": time.time()}))
            elif cleared:
                pipe.hdel(f"{self.namespace}:sink_faults", self.worker_name)
            if holdings is not None:
                pipe.hset(f"{self.namespace}:holdings", self.worker_name,
                          orjson.dumps({"seen": time.time(), "queues": holdings}))
            for name, count in pending.items():
                pipe.hincrby(totals_key(self.namespace), name, count)
            for bucket, count in latency.items():
                pipe.hincrby(latency_key(self.namespace), str(bucket), count)
            for second, count in per_second.items():
                pipe.incrby(f"{self.namespace}:messages:{second}", count)
                pipe.expire(f"{self.namespace}:messages:{second}", BUCKET_TTL_SECONDS)
            pipe.execute()
            if cleared:
                with self._lock:
                    if self._fault is None:  # (a clear lost to a race fades out: FAULT_FRESH_SECONDS)
                        self._fault_cleared = False
        except redis.RedisError as error:
            with self._lock:  # kept for the next flush
                self._pending.update(pending)
                self._per_second.update(per_second)
                self._latency.update(latency)
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                logger.warning("status counters not flushed to Redis (kept for later): {!r}", error)


def holdings_of(worker) -> dict[str, dict[str, Any]]:
    """Per queue this worker process consumes: the messages its consumers took and have not acked
    (`unacked`: running, prefetched, or for a delay queue waiting out their backoff here), and the
    enqueue time of the newest one taken (`newest_taken`, ms). RabbitMQ's passive declare gives
    neither; only the management plugin would, and it is not there by default."""
    held: dict[str, dict[str, Any]] = {}
    for queue, thread in list(worker.consumers.items()):
        consumer = getattr(thread, "consumer", None)
        connection = getattr(consumer, "connection", None)
        if consumer is None or connection is None or connection.is_closed:
            continue  # not connected (yet, or again): RabbitMQ has put back what its channel held
        held[queue] = {"unacked": len(getattr(consumer, "known_tags", ())),
                       "newest_taken": getattr(consumer, "newest_taken", None)}
    return held


def read_holdings(client: redis.Redis, namespace: str, now: float | None = None) -> dict[str, dict[str, Any]]:
    """Every live worker's holdings summed per queue: `unacked` added up, `newest_taken` the newest."""
    now = time.time() if now is None else now
    summed: dict[str, dict[str, Any]] = {}
    gone = []
    for worker, raw in client.hgetall(f"{namespace}:holdings").items():
        report = orjson.loads(raw)
        if now - report["seen"] >= FAULT_FRESH_SECONDS:
            if now - report["seen"] > 60:
                gone.append(worker)  # a worker killed without its goodbye: its line goes
            continue
        for queue, held in report["queues"].items():
            total = summed.setdefault(queue, {"unacked": 0, "newest_taken": None})
            total["unacked"] += held["unacked"]
            if held["newest_taken"] is not None:
                total["newest_taken"] = max(total["newest_taken"] or 0, held["newest_taken"])
    if gone:
        client.hdel(f"{namespace}:holdings", *gone)
    return summed


def read_stats(client: redis.Redis, namespace: str, now: float | None = None) -> dict[str, Any]:
    """The totals, messages/s over the last RATE_WINDOW_SECONDS whole seconds, and the workers
    whose CSV cannot be written now (`sink_faults`)."""
    newest = int(now if now is not None else time.time()) - RATE_LAG_SECONDS
    seconds = range(newest - RATE_WINDOW_SECONDS + 1, newest + 1)
    pipe = client.pipeline(transaction=False)
    pipe.hmget(totals_key(namespace), list(TOTALS))
    pipe.mget([f"{namespace}:messages:{second}" for second in seconds])
    pipe.hvals(f"{namespace}:sink_faults")
    totals, buckets, faults = pipe.execute()
    stats: dict[str, Any] = {name: int(value or 0) for name, value in zip(TOTALS, totals)}
    stats["messages_per_second"] = round(sum(int(b or 0) for b in buckets) / RATE_WINDOW_SECONDS, 1)
    now_wall = now if now is not None else time.time()
    fresh = [fault for fault in map(orjson.loads, faults) if now_wall - fault["seen"] < FAULT_FRESH_SECONDS]
    stats["sink_faults"] = sorted(({key: fault[key] for key in ("worker", "reason", "since", "waiting")}
                                   for fault in fresh), key=lambda fault: fault["worker"])
    return stats


def read_latency(client: redis.Redis, namespace: str) -> list[int]:
    """The cumulative ingest-to-row histogram: messages written per bucket of LATENCY_BOUNDS_MS, and
    a last one for those beyond it."""
    raw = client.hgetall(latency_key(namespace))
    counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for bucket, count in raw.items():
        counts[min(int(bucket), len(LATENCY_BOUNDS_MS))] += int(count)
    return counts
