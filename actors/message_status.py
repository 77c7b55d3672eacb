"""Where each message is in its life: queued, running, retrying, succeeded, failed, dead-lettered.

Dramatiq's Results middleware keeps what an actor returned (or its final
exception), but not the states before that, the attempt count or the last
error of a retry: those are recorded here, in one Redis hash per message
(`message-status:<namespace>:<message id>`), expiring after
STATUS_TTL_SECONDS. The API writes `queued` once RabbitMQ confirmed the
message; the workers write the rest. Writes are queued in memory and sent by
one background thread per process every few milliseconds, so neither a
request nor an actor ever waits on Redis for bookkeeping; a Redis outage loses
status detail, never a message or a row.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from collections.abc import Iterable
from typing import Any

import orjson
import redis
from dramatiq.message import Message
from dramatiq.results import ResultFailure
from dramatiq.results.backend import Missing, ResultBackend
from dramatiq.results.result import unwrap_result
from dramatiq.middleware import CurrentMessage, Middleware
from loguru import logger

from actors.deliveries import WorkerDied
from actors.stats import redis_client, totals_key

FLUSH_INTERVAL_SECONDS = 0.02
#: One script call writes a whole flush, its one argument a JSON array: a pipeline of
#: HSETNX/HSET/EXPIRE cost redis-py ~50 us of packing per command, and a flat argument list
#: still ~13 us of packing a message (each argument encoded in Python), against a few for
#: orjson (bench/RESULTS.md). KEYS: the shared totals (actors.stats). ARGV: the TTL, then
#: `[[key, [set-if-absent name, value, ...], [name, value, ...]], ...]`, values as text. A message
#: is counted in the totals' `accepted` (the console's charts) when its `accepted` field is first
#: set: once, however often a batch is sent again after a timeout.
WRITE_SCRIPT = """
local ttl = tonumber(ARGV[1])
for _, entry in ipairs(cjson.decode(ARGV[2])) do
  local key, absent, values = entry[1], entry[2], entry[3]
  for i = 1, #absent, 2 do
    if redis.call('HSETNX', key, absent[i], absent[i + 1]) == 1 and absent[i] == 'accepted' then
      redis.call('HINCRBY', KEYS[1], 'accepted', 1)
    end
  end
  if #values > 0 then
    redis.call('HSET', key, unpack(values))
  end
  redis.call('EXPIRE', key, ttl)
end
return 0
"""
#: Bound on writes waiting for Redis (an outage); past it the oldest are dropped, with a warning.
MAX_PENDING_WRITES = 200_000
#: A longer error message is cut: it is for people, and the hash should stay small.
MAX_ERROR_LENGTH = 2000

QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED, DEAD_LETTERED = (
    "queued", "running", "retrying", "succeeded", "failed", "dead-lettered"
)
#: Set by the first write only: whose message it is never changes. A later copy under the same id
#: (an admin re-uploading rows of another tenant, a replay) must not take a status over. And
#: `accepted` (1, from the API's `queued` record) is counted once in the totals when first set.
FIRST_WRITER_FIELDS = ("tenant", "accepted")


def status_key(namespace: str, message_id: str) -> str:
    return f"message-status:{namespace}:{message_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _error_text(error: BaseException | None) -> str:
    text = f"{type(error).__name__}: {error}" if error is not None else "rejected"
    return text[:MAX_ERROR_LENGTH]


class StatusWriter:
    """Buffered, ordered HSETs to Redis from a background thread (one per process, fork-safe)."""

    def __init__(self, redis_url: str, namespace: str, ttl_seconds: int):
        self.redis_url = redis_url
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        self._pending: deque[tuple[str, dict[str, Any], bool]] = deque()
        self._lock = threading.Lock()
        self._owner_pid: int | None = None
        self._client: redis.Redis | None = None
        self._script = None
        self._warned_at = 0.0
        self._wake = threading.Event()
        #: Resolved by the next flush (see `flushed`); None while nobody waits.
        self._next_flush: Future | None = None

    def record(self, message_id: str, fields: dict[str, Any], *, only_if_new: bool = False) -> None:
        """Set fields of one message's record; `only_if_new` sets `state` only if it has none yet."""
        self._ensure_flusher()
        with self._lock:
            if len(self._pending) >= MAX_PENDING_WRITES:
                self._pending.popleft()
                self.warn("status writes dropped: Redis has been unreachable for too long")
            self._pending.append((message_id, fields, only_if_new))

    def _ensure_flusher(self) -> None:
        if self._owner_pid == os.getpid():
            return
        with self._lock:
            if self._owner_pid != os.getpid():
                self._pending.clear()  # a forked child does not inherit its parent's duty
                self._client = self._script = self._next_flush = None
                self._wake = threading.Event()
                threading.Thread(target=self._flush_forever, name="status-writer", daemon=True).start()
                self._owner_pid = os.getpid()

    def flushed(self) -> Future:
        """A future resolved once everything recorded so far has been sent to Redis (True), or
        kept for later because Redis failed (False). Asking for one flushes at once instead of
        at the next interval; the records of everyone who asks meanwhile share that flush."""
        self._ensure_flusher()
        with self._lock:
            if self._next_flush is None:
                self._next_flush = Future()
            future = self._next_flush
        self._wake.set()
        return future

    def _flush_forever(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL_SECONDS)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            waiting, self._next_flush = self._next_flush, None
        written = True
        try:
            if batch:
                self._write(batch)
        except redis.RedisError as error:
            written = False
            with self._lock:
                self._pending.extendleft(reversed(batch))  # in order, before newer writes
                while len(self._pending) > MAX_PENDING_WRITES:
                    self._pending.popleft()
            self.warn(f"message status not written to Redis yet (kept for later): {error!r}")
        finally:
            if waiting is not None:
                waiting.set_result(written)

    def _write(self, batch: list[tuple[str, dict[str, Any], bool]]) -> None:
        if self._client is None:
            self._client = redis_client(self.redis_url, timeout=1)
            self._script = self._client.register_script(WRITE_SCRIPT)
        self._script(**self.script_arguments(batch))

    def script_arguments(self, batch: list[tuple[str, dict[str, Any], bool]]) -> dict[str, list]:
        """WRITE_SCRIPT's keys and args for `batch`, for whoever calls it (this thread, or the API's
        event loop: app.status_records)."""
        return {"keys": [totals_key(self.namespace)], "args": [self.ttl_seconds, write_argument(self.namespace, batch)]}

    def warn(self, text: str) -> None:
        """A warning at most once a minute: a Redis outage would otherwise write one a flush."""
        if time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()
            logger.warning(text)


def queued_record(message: Message) -> tuple[str, dict[str, Any], bool]:
    """(message id, fields, only_if_new) of a message RabbitMQ has confirmed, as `record` takes them
    (the API writes them before its answer: app.status_records).

    `enqueued_at` is the message's own timestamp, taken when it was built just before
    publishing: the time of the confirm could come after a fast worker's `started_at`.
    """
    fields = {"state": QUEUED, "queue": message.queue_name, "actor": message.actor_name,
              "enqueued_at": message.message_timestamp, "tenant": message.options.get("tenant", ""), "accepted": 1}
    return message.message_id, fields, True  # a fast worker may already have written `running` or more


def write_argument(namespace: str, batch: Iterable[tuple[str, dict[str, Any], bool]]) -> bytes:
    """WRITE_SCRIPT's JSON argument for `batch`, coalesced to one entry per message."""
    return orjson.dumps([
        [status_key(namespace, message_id), _pairs(if_absent), _pairs(values)]
        for message_id, (if_absent, values) in _coalesce(batch).items()
    ])


def _pairs(fields: dict[str, str | int]) -> list[str]:
    """name, value, name, value...: as HSET takes them, numbers as the text Redis would store."""
    pairs: list[str] = []
    for name, value in fields.items():
        pairs += (name, value if isinstance(value, str) else str(value))
    return pairs


def _coalesce(
    batch: Iterable[tuple[str, dict[str, Any], bool]],
) -> dict[str, tuple[dict[str, str | int], dict[str, str | int]]]:
    """One write per message instead of one per record, with the same end result.

    A worker records three things per message (running, its result,
    succeeded), usually within one flush: sent one by one that was six Redis
    commands per message and a tenth of a worker's time. Per message this
    returns the fields to set only if the hash has none of them yet (`state`
    of an `only_if_new` record, unless an earlier record in the batch already
    set one; the FIRST_WRITER_FIELDS always), and the fields to set, later
    records overriding earlier ones, as the separate writes would.
    """
    merged: dict[str, tuple[dict[str, str | int], dict[str, str | int]]] = {}
    for message_id, fields, only_if_new in batch:
        if_absent, values = merged.get(message_id, ({}, {}))
        encoded = {name: _encode(value) for name, value in fields.items()}
        for name in FIRST_WRITER_FIELDS:
            if name in encoded:
                if_absent.setdefault(name, encoded.pop(name))
        if only_if_new:
            state = encoded.pop("state")
            if "state" not in if_absent and "state" not in values:
                if_absent["state"] = state
        values.update(encoded)
        merged[message_id] = (if_absent, values)
    return merged


def _encode(value: Any) -> str | int:
    if isinstance(value, (str, int)):
        return value
    return orjson.dumps(value).decode()


def read_status(client: redis.Redis, namespace: str, message_id: str) -> dict[str, Any] | None:
    """The record as stored (JSON fields decoded), or None when unknown or expired."""
    raw = client.hgetall(status_key(namespace, message_id))
    if not raw:
        return None
    record: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    record.pop("accepted", None)  # bookkeeping of the totals, not the message's
    for name in ("attempts", "enqueued_at", "started_at", "finished_at"):
        if name in record:
            record[name] = int(record[name])
    if "progress" in record:
        record["progress"] = orjson.loads(record["progress"])
    if "result" in record:
        result = orjson.loads(record.pop("result"))
        try:
            record["result"] = unwrap_result(result)
        except ResultFailure as failure:  # what Results stores for a message given up on
            record.setdefault("last_error", f"{failure.orig_exc_type}: {failure.orig_exc_msg}")
    return record


class MessageLifecycle(Middleware):
    """Record each state change of every message (workers).

    Listed before Retries so that its after-hooks run after Retries' (they run
    in reverse order), when `message.failed` says whether a failure will be retried.
    """

    def __init__(self, writer: StatusWriter, max_retries: int):
        self.writer = writer
        self.max_retries = max_retries

    def before_process_message(self, broker, message) -> None:
        self.writer.record(
            message.message_id,
            {
                "state": RUNNING,
                "queue": message.queue_name,
                "actor": message.actor_name,
                "attempts": message.options.get("retries", 0) + 1,
                "started_at": _now_ms(),
                # Also here, not only in `queued`: a fast worker's record may reach Redis first, and
                # the status API shows a record only to its tenant.
                "tenant": message.options.get("tenant", ""),
            },
        )

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if exception is None and not message.failed:  # (failed without an exception: DeliveryLimit)
            self.writer.record(message.message_id, {"state": SUCCEEDED, "finished_at": _now_ms()})
        elif not message.failed:
            self.writer.record(message.message_id, {"state": RETRYING, "last_error": _error_text(exception)})
        # A failure Retries gave up on ends in after_nack.

    def after_nack(self, broker, message) -> None:
        error = getattr(message, "_exception", None)
        retries = message.options.get("retries", 0)
        try:
            actor = broker.get_actor(message.actor_name)
            max_retries = message.options.get("max_retries", actor.options.get("max_retries", self.max_retries))
        except Exception:  # an actor this worker does not know: Dramatiq rejects it
            max_retries = self.max_retries
        # Retries counts the failure before giving up: past the limit means retries ran out. A message
        # that killed its workers too often is dead-lettered too (it would be retried if it could).
        state = DEAD_LETTERED if retries > max_retries or isinstance(error, WorkerDied) else FAILED
        self.writer.record(
            message.message_id,
            {"state": state, "last_error": _error_text(error), "finished_at": _now_ms(),
             "attempts": max(1, retries)},
        )

    def report_progress(self, progress: dict[str, Any]) -> None:
        """For actors: show how far the current message got (e.g. a countdown's seconds left)."""
        message = CurrentMessage.get_current_message()
        if message is not None:
            self.writer.record(message.message_id, {"progress": progress})


class StatusResultBackend(ResultBackend):
    """Dramatiq's Results middleware, storing into the message's status record.

    With the stock RedisBackend every message would pay a synchronous Redis
    round trip in its worker thread and the result would live apart from the
    state. Here `store_result` hands the result to the StatusWriter (buffered,
    same hash, same expiry) and `get_result` reads it back, so
    `message.get_result(backend=...)` and the status API agree.
    """

    def __init__(self, writer: StatusWriter, redis_url: str):
        super().__init__(namespace=writer.namespace)
        self.writer = writer
        self.redis_url = redis_url
        self._client: redis.Redis | None = None

    def build_message_key(self, message) -> str:
        return message.message_id

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        self.writer.record(message_key, {"result": self.encoder.encode(result).decode()})

    def _get(self, message_key: str) -> Any:
        self._client = self._client or redis_client(self.redis_url, timeout=1)
        raw = self._client.hget(status_key(self.writer.namespace, message_key), "result")
        return Missing if raw is None else self.encoder.decode(raw)
