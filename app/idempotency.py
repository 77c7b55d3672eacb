"""Idempotency-Key: a client's retry of the same request is enqueued once.

The message id is derived from the key (uuid5). So even when the first
attempt's outcome was unknown to the client (a timeout, a lost confirm, a 503
after RabbitMQ had in fact stored the message) and the retry publishes again,
both copies carry one message id and the sink writes the rows once.

Redis remembers the keys that were accepted, with a fingerprint of their body:
a retry is then answered "duplicate" without publishing, and a key reused for a
different body is refused. Redis is an optimisation of the answer, not of the
guarantee: when it is unreachable the request is published as usual.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from functools import lru_cache

import orjson
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from loguru import logger

from config import get_settings

#: Fixed namespace: the same key must map to the same message id in every API process, forever.
_NAMESPACE = uuid.UUID("4d1b7c52-6a39-4b0c-9f0e-2f4f6d8a9e11")
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


def message_id_for(key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, key))


def fingerprint(payload: dict) -> str:
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class Accepted:
    message_id: str
    fingerprint: str


class IdempotencyStore:
    """`key`s here are scoped to their tenant already (app.tenancy.scoped_key); records are kept per
    deployment (`namespace`, the RabbitMQ vhost), so stacks sharing a Redis never see each other's."""

    def __init__(self, url: str, ttl_seconds: int, namespace: str = ""):
        # Short timeouts and no retries (redis-py retries by default): this bookkeeping
        # must never make a request hang.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        self._ttl = ttl_seconds
        self._prefix = f"idempotency:{namespace}:" if namespace else "idempotency:"

    async def lookup(self, key: str) -> Accepted | None:
        try:
            raw = await self._redis.get(self._prefix + key)
        except RedisError as error:
            logger.warning("Idempotency-Key lookup skipped, Redis unavailable: {!r}", error)
            return None
        if raw is None:
            return None
        message_id, _, body = raw.decode().partition(" ")
        return Accepted(message_id, body)

    async def remember(self, key: str, accepted: Accepted) -> None:
        try:
            await self._redis.set(
                self._prefix + key, f"{accepted.message_id} {accepted.fingerprint}", nx=True, ex=self._ttl
            )
        except RedisError as error:
            logger.warning("Idempotency-Key not recorded, Redis unavailable: {!r}", error)


@lru_cache
def _store() -> IdempotencyStore:
    from actors.stats import namespace_for

    settings = get_settings()
    return IdempotencyStore(settings.redis_url, settings.idempotency_ttl_seconds, namespace_for(settings.rabbitmq_url))


async def get_idempotency_store() -> IdempotencyStore:
    """FastAPI dependency; async, because FastAPI runs a sync one in its thread pool."""
    return _store()
