"""actors/stats.py: counters reach Redis off the hot path, survive a Redis outage, and read back."""

from __future__ import annotations

import uuid

import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from actors.stats import RATE_LAG_SECONDS, RATE_WINDOW_SECONDS, SharedStats, namespace_for, read_stats
from pipeline.csv_sink import CommitReport

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture()
def namespace():
    name = f"ingest-stats:test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)


def message(failed: bool = False) -> MessageProxy:
    msg = MessageProxy(Message(queue_name="ingest", actor_name="a", args=(), kwargs={}, options={}))
    if failed:
        msg.fail()
    return msg


def test_the_namespace_is_the_vhost():
    assert namespace_for("amqp://guest:guest@127.0.0.1:5672/bench-1?heartbeat=0") == "ingest-stats:bench-1"
    assert namespace_for("amqp://guest:guest@127.0.0.1:5672/") == "ingest-stats:/"
    assert namespace_for("amqp://guest:guest@127.0.0.1:5672/%2F") == "ingest-stats:/"


def test_commits_retries_and_dead_letters_are_counted_in_redis(namespace):
    stats = SharedStats(REDIS_URL, namespace)
    stats.observe(CommitReport(messages_written=3, rows_written=17, duplicates=1, fsync_seconds=0.001))
    stats.observe(CommitReport(messages_written=0, rows_written=0, duplicates=2, fsync_seconds=0.0))
    stats.after_process_message(None, message(), exception=RuntimeError("try again"))
    stats.after_process_message(None, message(failed=True), exception=RuntimeError("given up"))  # not a retry
    stats.after_process_message(None, message())  # success
    stats.after_nack(None, message(failed=True))
    assert read_stats(redis.Redis.from_url(REDIS_URL), namespace)["rows_written"] == 0, "nothing before a flush"
    stats.flush()
    got = read_stats(redis.Redis.from_url(REDIS_URL), namespace)
    assert {k: got[k] for k in ("rows_written", "messages_written", "duplicates", "retries", "dead_lettered")} == {
        "rows_written": 17, "messages_written": 3, "duplicates": 3, "retries": 1, "dead_lettered": 1}


def test_messages_per_second_averages_the_recent_whole_seconds(namespace, monkeypatch):
    client = redis.Redis.from_url(REDIS_URL)
    now = 1_800_000_000.5
    newest = int(now) - RATE_LAG_SECONDS
    for second in range(newest - RATE_WINDOW_SECONDS + 1, newest + 1):
        client.set(f"{namespace}:messages:{second}", 100)
    client.set(f"{namespace}:messages:{newest + 1}", 10_000)  # too recent: may still be filling
    client.set(f"{namespace}:messages:{newest - RATE_WINDOW_SECONDS}", 10_000)  # too old
    assert read_stats(client, namespace, now=now)["messages_per_second"] == 100.0


def test_a_redis_outage_keeps_the_counts_for_the_next_flush(namespace):
    stats = SharedStats("redis://127.0.0.1:1/0", namespace)  # nothing listens on port 1
    stats.observe(CommitReport(messages_written=2, rows_written=5, duplicates=0, fsync_seconds=0.0))
    stats.flush()  # fails quietly (logged), keeps the counts
    stats.redis_url, stats._client = REDIS_URL, None  # Redis is back
    stats.flush()
    got = read_stats(redis.Redis.from_url(REDIS_URL), namespace)
    assert (got["rows_written"], got["messages_written"]) == (5, 2)


def test_each_written_message_counts_in_the_ingest_to_row_histogram_and_nothing_else_does(namespace):
    import time

    from actors.stats import latency_bucket, read_latency

    stats = SharedStats(REDIS_URL, namespace)
    written = message()
    written.message_timestamp = int(time.time() * 1000) - 400  # enqueued 400 ms ago
    stats.after_process_message(None, written, result={"rows_written": 3, "duplicate": False})
    stats.after_process_message(None, message(), result={"rows_written": 0, "duplicate": True})  # a redelivery
    stats.after_process_message(None, message(), result={"seconds": 3})  # a task: no rows
    stats.flush()
    counts = read_latency(redis.Redis.from_url(REDIS_URL), namespace)
    assert sum(counts) == 1 and counts[latency_bucket(400)] == 1
