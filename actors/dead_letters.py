"""Dead letters: why a message was given up on, and how an operator gets it back.

Dramatiq rejects a message that exhausted its retries, and RabbitMQ moves it
to `<queue>.XQ`. The body there is the message as it was last *published*, so
it does not carry the final error: the `DeadLetterReasons` middleware records
that in Redis when the message is rejected. Listing peeks at the dead-letter
queue without consuming it; replaying publishes each chosen message back to its
queue, with its original message id, and only then removes the dead copy: a
crash in between leaves a duplicate message, which the sink writes once.
Discarding removes named dead letters for good, for payloads that should never
be written (a test message, a device's garbage).

Each of the three walks the queue with `basic.get`, and a message it holds unacked
is invisible to any other walk: a replay running beside a listing would miss the
page the listing holds and answer that those ids are not there. So a walk first
takes the queue's turn (`_walk`), which is one connection at a time, across every
API process and cluster node, and is given back when that connection closes, a
crashed walker included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import orjson
import pika
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import q_name, xq_name
from dramatiq.errors import DecodeError
from dramatiq.message import Message
from dramatiq.middleware import Middleware
from loguru import logger

from actors.stats import redis_client

#: Reasons live as long as RabbitMQ keeps dead letters (Dramatiq's default, 7 days).
REASON_TTL_SECONDS = 7 * 24 * 3600
#: Options a replayed message starts without, so it gets its full retries again.
RETRY_STATE_OPTIONS = ("retries", "traceback", "requeue_timestamp", "eta")


class DeadLettersBusy(Exception):
    """Another listing, replay or discard held this queue's dead letters for the whole wait."""

    def __init__(self, queue: str, waited: float):
        super().__init__(f"another listing, replay or discard of {queue}'s dead letters held them for {waited:g} s; "
                         "retry when it is done")


def _reason_key(message_id: str) -> str:
    return f"dead-letter-reason:{message_id}"


class DeadLetterReasons(Middleware):
    """Record the final error of every message that is dead-lettered."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self._client: Optional[redis.Redis] = None

    def before_nack(self, broker, message) -> None:
        error = getattr(message, "_exception", None)
        reason = f"{type(error).__name__}: {error}" if error is not None else "rejected"
        record = {
            "reason": reason,
            # Retries counts failures (it increments before deciding); without it, one attempt.
            "attempts": max(1, message.options.get("retries", 0)),
            "rejected_at": int(time.time() * 1000),
        }
        try:
            self._client = self._client or redis_client(self.redis_url, retry=False)
            self._client.set(_reason_key(message.message_id), orjson.dumps(record), ex=REASON_TTL_SECONDS)
        except redis.RedisError as failure:
            logger.warning("reason of dead letter {} not recorded: {!r}", message.message_id, failure)


@dataclass
class DeadLetter:
    message_id: str
    queue: str
    actor_name: str
    reason: str
    attempts: int
    rejected_at: Optional[int]
    args: list[Any]
    #: The name of the API key that sent it, and its tenant ("" when the API had no keys).
    key: str = ""
    tenant: str = ""


class DeadLetterOffice:
    """Peek at and replay one queue's dead letters over a short-lived connection."""

    def __init__(self, broker: RabbitmqBroker, redis_url: str, timeout: float):
        self.broker = broker
        self.redis_url = redis_url
        self.timeout = timeout

    def _connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(self.broker.parameters)  # a cluster: each node in turn

    @contextmanager
    def _walk(self, queue: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
        """A channel on a connection that has `queue`'s dead letters to itself until it closes.

        The turn is an exclusive queue, `<queue>.XQ.walk`: RabbitMQ lets one connection at a
        time declare it (405 to any other, on any node) and deletes it with that connection,
        so it needs no Redis and can never be left held. The wait is bounded by `timeout`.
        """
        connection = self._connect()
        try:
            deadline = time.monotonic() + self.timeout
            while not self._take_turn(connection, queue):
                if time.monotonic() >= deadline:
                    raise DeadLettersBusy(queue, self.timeout)
                self._wait_turn(connection)
            yield connection.channel()
        finally:
            try:
                connection.close()  # unacked gets go back to the queue, in order; the turn goes too
            except pika.exceptions.AMQPError:
                pass  # lost already (and so are its turn and its unacked gets): the first error is the answer

    @staticmethod
    def _take_turn(connection: pika.BlockingConnection, queue: str) -> bool:
        try:
            connection.channel().queue_declare(f"{xq_name(queue)}.walk", exclusive=True, auto_delete=True,
                                               arguments={"x-queue-type": "classic"})
        except pika.exceptions.ChannelClosedByBroker as refused:
            if refused.reply_code != 405:  # RESOURCE_LOCKED: another connection has the turn
                raise
            return False
        return True

    @staticmethod
    def _wait_turn(connection: pika.BlockingConnection) -> None:
        connection.sleep(0.05)  # pika's own sleep: heartbeats go on meanwhile

    def _reasons(self, message_ids: list[str]) -> dict[str, dict]:
        if not message_ids:
            return {}
        try:
            raw = redis_client(self.redis_url, retry=False).mget([_reason_key(mid) for mid in message_ids])
        except redis.RedisError as failure:
            logger.warning("dead-letter reasons unavailable: {!r}", failure)
            return {}
        return {mid: orjson.loads(value) for mid, value in zip(message_ids, raw) if value is not None}

    @staticmethod
    def _count(channel, queue: str) -> int:
        return channel.queue_declare(xq_name(queue), passive=True).method.message_count

    def peek(self, queue: str, limit: int, offset: int = 0, max_bytes: int = 8 * 1024 * 1024
             ) -> tuple[int, list[DeadLetter], int | None]:
        """(how many dead letters, up to `limit` of them from `offset` on, the offset of the next
        page or None); consumes nothing.

        A page stops at `max_bytes` of bodies too (always one message at least): a dead letter is
        a whole payload, and a thousand of them would be a gigabyte in the API's memory.
        """
        self.broker.declare_queue(queue, ensure=True)  # the XQ exists from then on
        with self._walk(queue) as channel:
            count = self._count(channel, queue)
            bodies: list[bytes] = []
            size, position = 0, 0
            while position < count and len(bodies) < limit:
                method, _properties, body = channel.basic_get(xq_name(queue), auto_ack=False)
                if method is None:
                    break
                position += 1
                if position <= offset:
                    continue  # before the page: read past, not kept
                if bodies and size + len(body) > max_bytes:
                    position -= 1  # this one starts the next page
                    break
                bodies.append(body)
                size += len(body)
        messages = [_decode(body) for body in bodies]
        reasons = self._reasons([m.message_id for m in messages if m is not None])
        letters = [self._describe(message, reasons) for message in messages if message is not None]
        return count, letters, (position if position < count and bodies else None)

    @staticmethod
    def _describe(message: Message, reasons: dict[str, dict]) -> DeadLetter:
        recorded = reasons.get(message.message_id, {})
        fallback = (message.options.get("traceback") or "rejected").strip().splitlines()[-1]
        return DeadLetter(
            message_id=message.message_id,
            queue=q_name(message.queue_name),
            actor_name=message.actor_name,
            reason=recorded.get("reason", fallback),
            # The dead copy was published after its second-to-last failure: one attempt more.
            attempts=recorded.get("attempts", message.options.get("retries", 0) + 1),
            rejected_at=recorded.get("rejected_at"),
            args=list(message.args),
            key=message.options.get("key", ""),
            tenant=message.options.get("tenant", ""),
        )

    def replay(self, queue: str, message_ids: Optional[set[str]], limit: int) -> tuple[list[str], int]:
        """Move dead letters back to `queue`; return (replayed ids, dead letters left)."""
        return self._take(queue, message_ids, limit, send_back=True)

    def discard(self, queue: str, message_ids: set[str]) -> tuple[list[str], int]:
        """Drop the chosen dead letters for good; return (discarded ids, dead letters left).

        Only named ones: there is no "discard all", so a mistaken click cannot empty a queue
        whose payloads exist nowhere else."""
        return self._take(queue, message_ids, None, send_back=False)

    def _take(self, queue: str, message_ids: Optional[set[str]], limit: Optional[int], *, send_back: bool
              ) -> tuple[list[str], int]:
        """Walk the dead-letter queue once and ack the chosen messages (at most `limit`; every copy
        of each named one when None), after publishing each back to `queue` first when
        `send_back`; the others stay unacked, so they are back in place, in order, when the
        connection closes. A queue can hold two copies of one id (a crash between a replay's
        publish and its ack): both are taken, and the id is answered once."""
        self.broker.declare_queue(queue, ensure=True)
        taken: list[str] = []
        with self._walk(queue) as channel:
            channel.confirm_delivery()
            count = self._count(channel, queue)
            for _ in range(count):
                if limit is not None and len(taken) >= limit:
                    break
                method, _properties, body = channel.basic_get(xq_name(queue), auto_ack=False)
                if method is None:
                    break
                message = _decode(body)
                if message is None or (message_ids is not None and message.message_id not in message_ids):
                    continue
                if send_back and not self._send_back(channel, message):
                    # The queue is at RabbitMQ's length bound: this one and the rest stay dead
                    # letters, and `left` says how many.
                    logger.warning("replay to {} stopped after {}: the queue is at its length bound", queue,
                                   len(taken))
                    break
                channel.basic_ack(method.delivery_tag)
                taken.append(message.message_id)
        if taken:
            try:
                redis_client(self.redis_url, retry=False).delete(*[_reason_key(mid) for mid in taken])
            except redis.RedisError:
                pass
            logger.info("{} {} dead letter(s) of {}: {}", "replayed" if send_back else "discarded", len(taken),
                        queue, ", ".join(taken[:20]) + (" ..." if len(taken) > 20 else ""))
        # Not a fresh count: this channel still holds the skipped ones, which a count would miss.
        return list(dict.fromkeys(taken)), count - len(taken)

    @staticmethod
    def _send_back(channel, message: Message) -> bool:
        """Publish a fresh copy (same id, retries from zero) to its queue; False if RabbitMQ refused it."""
        options = {k: v for k, v in message.options.items() if k not in RETRY_STATE_OPTIONS}
        fresh = message.copy(queue_name=q_name(message.queue_name), options=options)
        try:
            channel.basic_publish(
                "",
                fresh.queue_name,
                fresh.encode(),
                pika.BasicProperties(delivery_mode=2, message_id=fresh.message_id),
                mandatory=True,
            )  # returns once confirmed
        except pika.exceptions.NackError:
            return False
        return True


def _decode(body: bytes) -> Optional[Message]:
    try:
        return Message.decode(body)
    except DecodeError:
        logger.warning("a dead letter is not a Dramatiq message; left in place")
        return None
