"""The console's history: one sample a period across processes, rates and latencies from neighbours."""

from __future__ import annotations

import pytest
import redis

from actors.stats import LATENCY_BOUNDS_MS, latency_bucket, latency_key
from app.history import History, quantile

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture()
def namespace(request):
    name = f"test-history:{request.node.name}"
    client = redis.Redis.from_url(REDIS_URL)
    yield name
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)


def status_with(**totals) -> dict:
    return {"queues": {"ingest": {"ready": totals.pop("ready", 0), "delayed": 0}}, "dead_letters": 0,
            "accepted": 0, "rows_written": 0, "messages_written": 0, "retries": 0, "dead_lettered": 0, **totals}


def test_of_many_processes_one_takes_each_periods_sample_and_the_points_are_rates_between_samples(namespace):
    readings = iter([status_with(accepted=100, rows_written=500, messages_written=100, ready=3),
                     status_with(accepted=150, rows_written=800, messages_written=160, retries=5, ready=7)])
    first = History(lambda: next(readings), REDIS_URL, namespace, period=5, keep_seconds=900)
    second = History(lambda: pytest.fail("the period was taken already"), REDIS_URL, namespace, period=5,
                     keep_seconds=900)
    assert first.sample(now=1000.0) and not second.sample(now=1001.0)
    assert first.sample(now=1005.0)
    (point,) = first.read(now=1006.0)
    assert point["t"] == 1005.0 and point["queue_depth"] == 7
    assert (point["accepted_per_second"], point["rows_per_second"], point["messages_per_second"],
            point["retries_per_second"]) == (10.0, 60.0, 12.0, 1.0)
    assert point["latency_p50_ms"] is None, "no message was written in the interval"
    assert second.read(now=1006.0) == [point], "every process reads the same history"


def test_latencies_are_those_of_the_messages_written_in_each_interval(namespace):
    client = redis.Redis.from_url(REDIS_URL)
    history = History(status_with, REDIS_URL, namespace, period=5, keep_seconds=900)
    client.hincrby(latency_key(namespace), str(latency_bucket(3_000)), 1000)  # long before: not in any interval
    history.sample(now=1000.0)
    client.hincrby(latency_key(namespace), str(latency_bucket(40)), 99)
    client.hincrby(latency_key(namespace), str(latency_bucket(800)), 1)
    history.sample(now=1005.0)
    (point,) = history.read(now=1006.0)
    assert 25 < point["latency_p50_ms"] <= 50
    assert 25 < point["latency_p99_ms"] <= 50, "the 99th of 100 is still in the 50 ms bucket"


def test_samples_older_than_the_window_are_dropped_and_a_reset_counter_never_reads_negative(namespace):
    readings = iter([status_with(accepted=10), status_with(accepted=20), status_with(accepted=5)])
    history = History(lambda: next(readings), REDIS_URL, namespace, period=5, keep_seconds=60)
    for now in (1000.0, 1005.0, 1010.0):
        history.sample(now=now)
    assert [p["accepted_per_second"] for p in history.read(now=1011.0)] == [2.0, 0.0]
    assert [p["t"] for p in history.read(now=1000.0 + 60 + 5 + 1)] == [1010.0], "the first sample is too old"
    assert redis.Redis.from_url(REDIS_URL).llen(f"{namespace}:history") <= history.keep


def test_quantiles_interpolate_within_the_bucket_and_cap_at_the_last_bound():
    counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    assert quantile(counts, 0.5) is None
    counts[latency_bucket(20)] = 10  # (10, 25] ms
    assert quantile(counts, 0.5) == 17.5
    counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    counts[-1] = 3
    assert quantile(counts, 0.99) == float(LATENCY_BOUNDS_MS[-1])


def test_samples_pushed_out_of_order_or_too_close_together_make_no_wild_rates(namespace):
    readings = iter([status_with(accepted=0), status_with(accepted=100), status_with(accepted=50),
                     status_with(accepted=101)])
    history = History(lambda: next(readings), REDIS_URL, namespace, period=5, keep_seconds=900)
    history.sample(now=1000.0)
    history.sample(now=1010.0)  # pushed before the slow read of the period before it
    history.sample(now=1005.0)
    history.sample(now=1010.2)  # a slow read of the last period, finishing just after the next one's
    assert [(p["t"], p["accepted_per_second"]) for p in history.read(now=1011.0)] == [(1005.0, 10.0), (1010.0, 10.0)]


def test_the_sampler_goes_on_after_an_error_of_any_kind(namespace):
    import threading

    calls = []
    done = threading.Event()

    def read_status():
        calls.append(1)
        if len(calls) == 1:
            raise AssertionError("pika's, say")
        done.set()
        return status_with()

    history = History(read_status, REDIS_URL, namespace, period=1, keep_seconds=60)
    history.start()
    try:
        assert done.wait(timeout=10), "a second sample after the failed one"
    finally:
        history.stop()


def test_a_sample_period_under_a_second_is_refused_naming_the_setting():
    from pydantic import ValidationError

    from config import Settings

    with pytest.raises(ValidationError, match="HISTORY_SAMPLE_SECONDS"):
        Settings(history_sample_seconds=0.01)
    assert Settings(history_sample_seconds=0).history_sample_seconds == 0
