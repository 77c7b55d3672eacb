"""What workers hold, as /status shows it: unacked, retries held for their backoff, the oldest ready."""

from __future__ import annotations

import types

import redis

from actors.stats import holdings_of, read_holdings
from app.status import _add_holdings

REDIS_URL = "redis://127.0.0.1:6379/0"


def worker_with(**consumers) -> types.SimpleNamespace:
    """A stand-in for a Dramatiq Worker: queue -> (delivery tags held, newest enqueue time taken,
    whether its connection is closed), or None for a consumer not made yet."""
    threads = {queue: types.SimpleNamespace(consumer=None if held is None else types.SimpleNamespace(
        known_tags=set(range(held[0])), newest_taken=held[1],
        connection=types.SimpleNamespace(is_closed=held[2] if len(held) > 2 else False)))
        for queue, held in consumers.items()}
    return types.SimpleNamespace(consumers=threads)


def test_a_workers_holdings_are_its_connected_consumers_unacked_tags_and_the_newest_message_taken():
    # "training" lost its connection: RabbitMQ has put its tags back, whatever the old consumer still lists.
    worker = worker_with(ingest=(3, 1_000_000), **{"ingest.DQ": (2, None), "tasks": None,
                                                   "training": (4, 5, True)})
    assert holdings_of(worker) == {"ingest": {"unacked": 3, "newest_taken": 1_000_000},
                                   "ingest.DQ": {"unacked": 2, "newest_taken": None}}


def test_every_live_workers_holdings_add_up_and_a_long_dead_ones_are_dropped():
    import orjson

    client = redis.Redis.from_url(REDIS_URL)
    namespace = "test-holdings"
    client.delete(f"{namespace}:holdings")
    try:
        client.hset(f"{namespace}:holdings", mapping={
            "h:1": orjson.dumps({"seen": 1000.0, "queues": {"ingest": {"unacked": 3, "newest_taken": 900_000}}}),
            "h:2": orjson.dumps({"seen": 999.0, "queues": {"ingest": {"unacked": 5, "newest_taken": 950_000}}}),
            "h:3": orjson.dumps({"seen": 990.5, "queues": {"ingest": {"unacked": 8, "newest_taken": 990_000}}}),
            "h:4": orjson.dumps({"seen": 100.0, "queues": {"ingest": {"unacked": 9, "newest_taken": 1}}}),
        })
        assert read_holdings(client, namespace, now=1001.0) == {"ingest": {"unacked": 8, "newest_taken": 950_000}}
        assert set(client.hkeys(f"{namespace}:holdings")) == {b"h:1", b"h:2", b"h:3"}, "h:4 is a minute gone"
    finally:
        client.delete(f"{namespace}:holdings")


def test_the_queue_figures_gain_unacked_the_held_retries_and_an_upper_bound_on_the_oldest_ready():
    holdings = {"ingest": {"unacked": 16, "newest_taken": 990_000}, "ingest.DQ": {"unacked": 4, "newest_taken": 1}}
    queue = {"ready": 12, "consumers": 2, "delayed": 1, "dead_letters": 0}
    _add_holdings("ingest", queue, holdings, now=1000.0)
    assert queue == {"ready": 12, "consumers": 2, "delayed": 5, "dead_letters": 0, "unacked": 16,
                     "oldest_ready_seconds": 10.0}
    idle = {"ready": 0, "consumers": 1, "delayed": 0, "dead_letters": 0}
    _add_holdings("tasks", idle, holdings, now=1000.0)
    assert idle["unacked"] == 0 and idle["oldest_ready_seconds"] == 0.0
    waiting = {"ready": 3, "consumers": 0, "delayed": 0, "dead_letters": 0}
    _add_holdings("training", waiting, holdings, now=1000.0)
    assert waiting["oldest_ready_seconds"] is None, "no worker took one yet: unknown, not 0"
    unknown = {"ready": 3, "consumers": 1, "delayed": 0, "dead_letters": 0}
    _add_holdings("ingest", unknown, None)
    assert unknown["unacked"] is None and unknown["oldest_ready_seconds"] is None


def test_status_says_what_the_node_probe_says_now_even_from_its_cached_figures():
    """/ready and /status share the probe: a /status answered from its one-second cache must not
    still call the cluster whole after /ready saw a node go down."""
    import pika

    from app.status import StatusReader

    states = iter([{"state": "ok", "nodes": 3, "down": []}, {"state": "degraded", "nodes": 3, "down": ["b:5672"]}])
    probe = types.SimpleNamespace(cluster=True, read=lambda: next(states))
    reader = StatusReader(pika.ConnectionParameters("127.0.0.1"), REDIS_URL, "test-probe", ["ingest"], probe)
    reads = []
    reader._read = lambda: reads.append(1) or {"queues": {}}
    assert reader.read()["cluster"]["state"] == "ok"
    assert reader.read()["cluster"]["state"] == "degraded" and len(reads) == 1, "figures cached, cluster fresh"
