"""What `GET /status` and the status page show: queues from RabbitMQ, totals from Redis.

Queue depths and consumer counts are asked of RabbitMQ itself (passive
queue declarations over one kept connection), so they hold for every host;
totals come from the workers' shared counters (actors/stats.py). Each part
degrades on its own: with Redis down the queues still show, and the other way
round. Answers are cached for a second, so many open pages cost the broker
one question per second.
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache
from collections.abc import Callable
from typing import Any

import pika
import redis
from dramatiq.common import dq_name, xq_name
from loguru import logger
from pika.exceptions import AMQPError, ChannelClosedByBroker

from actors.cluster import NodeProbe, node_urls
from actors.stats import TOTALS, read_holdings, read_stats, redis_client
from config import get_settings

CACHE_SECONDS = 1.0


@lru_cache
def cluster_probe() -> NodeProbe:
    """This process's view of RABBITMQ_URL's nodes, which /ready and /status share."""
    return NodeProbe(node_urls(get_settings().rabbitmq_url))


#: A queue whose declaration failed (the broker's publisher not connected yet) is tried again after this.
DECLARE_RETRY_SECONDS = 30.0


class QueueProbe:
    """Ready messages and consumers of queues, over one lazily (re)opened connection."""

    def __init__(self, parameters: pika.ConnectionParameters | list[pika.ConnectionParameters]):
        self.parameters = parameters  # a cluster's nodes: pika tries each in turn
        self._connection: pika.BlockingConnection | None = None
        self._channel = None

    def _open_channel(self):
        if self._connection is None or self._connection.is_closed:
            self._connection = pika.BlockingConnection(self.parameters)
        if self._channel is None or self._channel.is_closed:
            self._channel = self._connection.channel()
        return self._channel

    def declare(self, queue: str) -> tuple[int, int] | None:
        """(ready messages, consumers); None for a queue that does not exist yet."""
        try:
            frame = self._open_channel().queue_declare(queue, passive=True)
        except ChannelClosedByBroker as error:
            if error.reply_code == 404:
                return None
            raise
        return frame.method.message_count, frame.method.consumer_count

    def close(self) -> None:
        try:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
        except AMQPError:
            pass
        self._connection = self._channel = None


class StatusReader:
    """The figures of /status and the console's charts, read from RabbitMQ and Redis.

    A queue not there yet (no worker has started, nothing was sent) reads as empty, and is
    declared once through `declare` (the broker's, with the configured arguments), as sending to it
    would: each passive declare of a missing queue costs a closed channel and a warning in
    pika's and RabbitMQ's logs, and the history samples every few seconds.
    """

    def __init__(self, parameters: pika.ConnectionParameters | list[pika.ConnectionParameters], redis_url: str,
                 namespace: str, queues: list[str], nodes: NodeProbe | None = None,
                 declare: Callable[[str], None] | None = None):
        self.probe = QueueProbe(parameters)
        self.declare = declare
        self._declared: set[str] = set()
        self._declare_tried: dict[str, float] = {}
        self.nodes = nodes
        self.redis_url = redis_url
        self.namespace = namespace
        self.queues = queues
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._redis: redis.Redis | None = None

    def read(self, max_age: float = CACHE_SECONDS) -> dict[str, Any]:
        """Blocking (RabbitMQ and Redis round trips): call from a thread. An answer up to `max_age`
        seconds old may be reused (the history's sampler wants figures of now: 0)."""
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] >= max_age:
                self._cached = (time.monotonic(), self._read())
            status = self._cached[1]
        if self.nodes is not None and self.nodes.cluster:
            # Not cached with the rest: the probe keeps its own second, shared with /ready, so the
            # two never disagree (a cached answer from before a node went down would).
            status = {**status, "cluster": self.nodes.read()}
        return status

    def _read(self) -> dict[str, Any]:
        queues, rabbitmq = self._queues()
        totals, redis_state = self._totals()
        holdings = totals.pop("holdings", None)
        for name, queue in queues.items():
            _add_holdings(name, queue, holdings)
        status = {
            "queues": queues,
            "workers": queues[self.queues[0]]["consumers"] if queues else None,
            "dead_letters": sum(q["dead_letters"] for q in queues.values()) if queues else None,
            **totals,
            "rabbitmq": rabbitmq,
            "redis": redis_state,
        }
        return status

    def _queues(self) -> tuple[dict[str, dict[str, int]], str]:
        for attempt in (1, 2):  # a connection the broker closed while idle is reopened once
            try:
                queues = {}
                for queue in self.queues:
                    main = self.probe.declare(queue)
                    if main is None:
                        self._declare_missing(queue)
                        delayed = dead = None  # its delay and dead-letter queues are declared after it
                    else:
                        delayed, dead = self.probe.declare(dq_name(queue)), self.probe.declare(xq_name(queue))
                    ready, consumers = main or (0, 0)
                    queues[queue] = {
                        "ready": ready,
                        "consumers": consumers,
                        "delayed": delayed[0] if delayed else 0,
                        "dead_letters": dead[0] if dead else 0,
                    }
                return queues, "ok"
            except (AMQPError, OSError) as error:
                self.probe.close()
                failure = f"unavailable: {error!r}"
        logger.warning("status: RabbitMQ {}", failure)
        return {}, failure

    def _declare_missing(self, queue: str) -> None:
        """Declare `queue` in a thread of its own (the broker's publisher may still be connecting,
        and a reading must not wait for it), once it works; a failed try is tried again after
        DECLARE_RETRY_SECONDS."""
        if self.declare is None or queue in self._declared:
            return
        if time.monotonic() - self._declare_tried.get(queue, -DECLARE_RETRY_SECONDS) < DECLARE_RETRY_SECONDS:
            return
        self._declare_tried[queue] = time.monotonic()

        def declare() -> None:
            try:
                self.declare(queue)
                self._declared.add(queue)  # for good: a queue deleted by hand is not made again by reading
            except Exception as error:  # the figures say 0 meanwhile
                logger.debug("status: queue {} not declared yet ({!r})", queue, error)

        threading.Thread(target=declare, name=f"status-declare {queue}", daemon=True).start()

    def _totals(self) -> tuple[dict[str, Any], str]:
        try:
            self._redis = self._redis or redis_client(self.redis_url)
            return {**read_stats(self._redis, self.namespace),
                    "holdings": read_holdings(self._redis, self.namespace)}, "ok"
        except redis.RedisError as error:
            logger.warning("status: Redis unavailable: {!r}", error)
            return {name: None for name in (*TOTALS, "messages_per_second", "sink_faults")}, f"unavailable: {error!r}"


def _add_holdings(name: str, queue: dict[str, Any], holdings: dict[str, dict[str, Any]] | None,
                  now: float | None = None) -> None:
    """What RabbitMQ's passive declare cannot tell, from what the workers report they hold
    (actors.stats.holdings_of): `unacked`; `delayed` gains the retries the workers hold for their
    backoff (Dramatiq takes them off `<queue>.DQ` at once and keeps them until due); and how old
    the oldest ready message is at most: in a FIFO queue it was enqueued after the newest one a
    worker took. None where the workers' reports are missing (Redis down, or no worker yet)."""
    if holdings is None:
        queue.update(unacked=None, oldest_ready_seconds=None)
        return
    held = holdings.get(name, {"unacked": 0, "newest_taken": None})
    queue["unacked"] = held["unacked"]
    queue["delayed"] += holdings.get(dq_name(name), {"unacked": 0})["unacked"]
    if queue["ready"] == 0:
        queue["oldest_ready_seconds"] = 0.0
    elif held["newest_taken"] is None:
        queue["oldest_ready_seconds"] = None
    else:
        age = (time.time() if now is None else now) - held["newest_taken"] / 1000
        queue["oldest_ready_seconds"] = round(max(age, 0.0), 1)
