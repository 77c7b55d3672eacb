"""A message that kills its worker is not redelivered forever.

An OOM kill or a segfault while a message runs leaves it unacked, and
RabbitMQ hands it out again: without a limit the same message takes the
workers down in a loop, and Dramatiq's retries never see it (no exception is
ever raised). The count must outlive the process it kills, so it lives in
Redis: each start of a message that RabbitMQ marks `redelivered` adds one,
and a finish (success or failure, anything but a death) clears it. When the
count reaches MAX_DELIVERIES the message is not run again: it is failed into
the dead-letter queue with the reason "worker died N times".

First deliveries, nearly all of them, never touch Redis. Without Redis the
message runs (counting is bookkeeping, and refusing work for it would be worse).
A message that was only requeued before it started (a graceful restart) is not
counted: the count is of starts. Nor is one that a graceful stop gave up
waiting for (`--worker-shutdown-timeout`; a message waiting out a full disk,
say): the messages still running when the worker has shut down take back the
start they will be counted for, so a restart during an outage is no death.
"""

from __future__ import annotations

from typing import Optional

import redis
from dramatiq.middleware import Middleware
from loguru import logger

from actors.stats import redis_client

#: A message's count outlives a long outage of its workers, not forever.
COUNT_TTL_SECONDS = 24 * 3600


class WorkerDied(RuntimeError):
    """The reason a crash-looping message is dead-lettered with."""


class DeliveryLimit(Middleware):
    def __init__(self, redis_url: str, namespace: str, max_deliveries: int):
        self.redis_url = redis_url
        self.namespace = namespace
        self.max_deliveries = max_deliveries
        self._client: Optional[redis.Redis] = None
        #: Ids of the messages running in this process (set.add/discard/copy are atomic).
        self._running: set[str] = set()

    def _key(self, message_id: str) -> str:
        return f"{self.namespace}:unfinished-starts:{message_id}"

    def _counted(self, message) -> bool:
        """Only redelivered messages are counted (and cleared), and only while there is a limit."""
        return getattr(message, "redelivered", False) and self.max_deliveries > 0

    def _redis(self) -> redis.Redis:
        self._client = self._client or redis_client(self.redis_url, retry=False)
        return self._client

    def before_process_message(self, broker, message) -> None:
        if self.max_deliveries > 0:
            self._running.add(message.message_id)
        if not self._counted(message):
            return
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.incr(self._key(message.message_id))
            pipe.expire(self._key(message.message_id), COUNT_TTL_SECONDS)
            died = pipe.execute()[0]  # the first delivery is not counted: every count is a death
        except redis.RedisError as error:
            logger.warning("deliveries of {} not counted (Redis: {!r}); running it", message.message_id, error)
            return
        if died >= self.max_deliveries:
            logger.error("{}({}) killed its worker {} times (MAX_DELIVERIES): dead-lettered without running it",
                         message.actor_name, message.message_id, died)
            message.stuff_exception(WorkerDied(f"worker died {died} times while processing it (MAX_DELIVERIES)"))
            message.fail()  # Dramatiq then skips the actor and rejects the message into <queue>.XQ

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        self._running.discard(message.message_id)
        if not self._counted(message):
            return
        try:
            self._redis().delete(self._key(message.message_id))
        except redis.RedisError:
            pass  # the count expires by itself

    after_skip_message = after_process_message

    def after_worker_shutdown(self, broker, worker) -> None:
        interrupted = self._running.copy()
        if not interrupted:
            return
        try:
            pipe = self._redis().pipeline(transaction=False)
            for message_id in interrupted:
                pipe.decr(self._key(message_id))  # -1 for a first delivery: its redelivery counts 0
                pipe.expire(self._key(message_id), COUNT_TTL_SECONDS)
            pipe.execute()
        except redis.RedisError as error:
            logger.warning("{} messages interrupted by the shutdown may count it as a death (Redis: {!r})",
                           len(interrupted), error)
