"""The last minutes of GET /status, for the console's charts: sampled into Redis, read by anyone.

Every API process runs a sampler; each period, the first to claim the period's slot in Redis
(SET NX) takes one reading of /status (RabbitMQ's queues and the shared totals) and appends it
to a capped Redis list. So the history is the same for every API process on every host, one
sample per period however many processes run, and it survives any one of them.

A sample keeps the totals as they were (cumulative), not rates: a missed period or a restarted
process then costs resolution, never a wrong figure, because the rates are the differences
between neighbouring samples, worked out when the history is read. The latency histogram is
cumulative too (actors/stats.py), so each interval's p50 and p99 come from its own messages.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import orjson
import redis
from loguru import logger

from actors.stats import LATENCY_BOUNDS_MS, read_latency, redis_client

#: The totals a sample keeps; the rates of the first four are what the charts draw.
COUNTED = ("accepted", "rows_written", "retries", "dead_lettered", "messages_written")


def history_key(namespace: str) -> str:
    return f"{namespace}:history"


class History:
    """Sample `read_status()` every `period` seconds into Redis, keeping `keep_seconds` of samples."""

    def __init__(self, read_status: Callable[[], dict[str, Any]], redis_url: str, namespace: str, *,
                 period: float, keep_seconds: float):
        self.read_status = read_status
        self.redis_url = redis_url
        self.namespace = namespace
        self.period = period
        self.keep = max(2, int(keep_seconds // period) + 1)
        self._client: redis.Redis | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_at = 0.0

    def _redis(self) -> redis.Redis:
        self._client = self._client or redis_client(self.redis_url)
        return self._client

    def sample(self, now: float | None = None) -> bool:
        """Take this period's sample unless another process has; True if this one did. (`now`: for tests.)"""
        slot = int((time.time() if now is None else now) // self.period)
        client = self._redis()
        if not client.set(f"{history_key(self.namespace)}:slot:{slot}", 1, nx=True, ex=int(self.period * 4) + 1):
            return False
        status = self.read_status()
        ingest = status.get("queues", {}).get("ingest") or {}
        point = {
            "t": round(time.time() if now is None else now, 3),  # when the figures were read (it may take a while)
            **{name: status.get(name) for name in COUNTED},
            "dead_letters": status.get("dead_letters"),
            "queue_depth": ingest.get("ready"),
            "delayed": ingest.get("delayed"),
            "latency": read_latency(client, self.namespace),
        }
        pipe = client.pipeline(transaction=False)
        pipe.rpush(history_key(self.namespace), orjson.dumps(point))
        pipe.ltrim(history_key(self.namespace), -self.keep, -1)
        pipe.execute()
        return True

    def read(self, now: float | None = None) -> list[dict[str, Any]]:
        """The chart points: per interval between neighbouring samples, the rates and latencies."""
        now = time.time() if now is None else now
        raw = self._redis().lrange(history_key(self.namespace), 0, -1)
        samples = sorted((s for s in map(orjson.loads, raw) if now - s["t"] <= self.keep * self.period),
                         key=lambda sample: sample["t"])  # pushed as each read finished: not always in order
        # Two samples much closer than a period (a slow read of one period finishing just before the
        # next period's) would make a rate of noise: the later one is skipped.
        kept = samples[:1]
        for sample in samples[1:]:
            if sample["t"] - kept[-1]["t"] >= self.period / 2:
                kept.append(sample)
        return [point(before, after) for before, after in zip(kept, kept[1:])]

    # The sampler thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._stop = threading.Event()  # its own: a thread of an earlier start that has not ended stays stopped
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="history-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the sampler to end; it does within a period (it is a daemon: nothing waits for it)."""
        self._stop.set()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.period - time.time() % self.period):
            try:
                self.sample()
            except Exception as error:  # noqa: BLE001 (the charts wait; the sampler and the service go on)
                self._client = None
                if time.monotonic() - self._warned_at > 60:
                    self._warned_at = time.monotonic()
                    logger.warning("console history not sampled ({!r}); the charts have a gap", error)


def point(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One chart point at `after`'s time: rates over the interval, levels as `after` saw them."""
    seconds = max(after["t"] - before["t"], 1e-3)

    def rate(name: str) -> float | None:
        if before.get(name) is None or after.get(name) is None:
            return None
        return round(max(after[name] - before[name], 0) / seconds, 2)  # a reset counter reads as 0

    written = [max(a - b, 0) for a, b in zip(after["latency"], before["latency"])]
    return {
        "t": after["t"],
        "accepted_per_second": rate("accepted"),
        "rows_per_second": rate("rows_written"),
        "messages_per_second": rate("messages_written"),
        "retries_per_second": rate("retries"),
        "dead_lettered": after.get("dead_lettered"),
        "dead_letters": after.get("dead_letters"),
        "queue_depth": after.get("queue_depth"),
        "latency_p50_ms": quantile(written, 0.5),
        "latency_p99_ms": quantile(written, 0.99),
    }


def quantile(counts: list[int], q: float) -> float | None:
    """The q-quantile of a histogram over LATENCY_BOUNDS_MS, interpolated within its bucket (as
    Prometheus's histogram_quantile does); None without messages. Beyond the last bound: that bound."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])
            lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
            return round(lower + (LATENCY_BOUNDS_MS[index] - lower) * (rank - seen) / count, 1)
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])
