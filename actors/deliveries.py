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
counted: the count is of starts.
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

    def _key(self, message_id: str) -> str:
        return f"{self.namespace}:unfinished-starts:{message_id}"

    def _counted(self, message) -> bool:
        """Only redelivered messages are counted (and cleared), and only while there is a limit."""
        return getattr(message, "redelivered", False) and self.max_deliveries > 0

    def _redis(self) -> redis.Redis:
        self._client = self._client or redis_client(self.redis_url, retry=False)
        return self._client

    def before_process_message(self, broker, message) -> None:
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
        if not self._counted(message):
            return
        try:
            self._redis().delete(self._key(message.message_id))
        except redis.RedisError:
            pass  # the count expires by itself

    after_skip_message = after_process_message
