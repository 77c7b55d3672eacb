"""app/status_records.QueuedRecords: a request's `queued` record is in Redis before it is answered,
the requests waiting together share one write, and Redis failing costs a request no more than
TIMEOUT_SECONDS and loses no record."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
from dramatiq.message import Message

import app.status_records as status_records
from actors.message_status import StatusWriter, status_key
from app.status_records import QueuedRecords
from tests.support.stack import free_port
from tests.unit.test_status_writer import REDIS_URL, writer_flushed_by_the_test


@pytest.fixture(scope="module")
def client():
    return redis.Redis.from_url(REDIS_URL, decode_responses=True)


def message(number: int = 0) -> Message:
    return Message(queue_name="ingest", actor_name="write_detection_rows", args=(), kwargs={},
                   options={"tenant": "acme"}, message_timestamp=1_700_000_000_000 + number)


def test_a_queued_record_is_in_redis_when_record_returns(client):
    writer = writer_flushed_by_the_test()
    sent = message()
    asyncio.run(QueuedRecords(writer).record([sent]))
    key = status_key(writer.namespace, sent.message_id)
    try:
        assert client.hgetall(key) == {"state": "queued", "queue": "ingest", "actor": "write_detection_rows",
                                       "enqueued_at": "1700000000000", "tenant": "acme", "accepted": "1"}
        assert 0 < client.ttl(key) <= writer.ttl_seconds
    finally:
        client.delete(key)
    assert not writer._pending  # nothing was left to the writer's thread


def test_the_records_of_requests_waiting_together_share_one_write(client, monkeypatch):
    writes = []
    writer = writer_flushed_by_the_test()
    real = writer.script_arguments
    monkeypatch.setattr(writer, "script_arguments", lambda batch: writes.append(len(batch)) or real(batch))
    records = QueuedRecords(writer)
    sent = [message(number) for number in range(40)]

    async def forty_requests() -> None:
        await asyncio.gather(*(records.record([one]) for one in sent))

    asyncio.run(forty_requests())
    try:
        assert sum(writes) == 40 and len(writes) <= 2, writes  # the first alone at most, then the rest
        assert all(client.hget(status_key(writer.namespace, one.message_id), "state") == "queued" for one in sent)
    finally:
        client.delete(*(status_key(writer.namespace, one.message_id) for one in sent))


def test_records_redis_refuses_go_to_the_writer_and_the_request_is_answered_at_once():
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    writer = StatusWriter(unreachable, f"test-{uuid.uuid4().hex[:8]}", ttl_seconds=60)
    writer._owner_pid = __import__("os").getpid()  # no flusher thread: what it keeps stays in view
    sent = [message(1), message(2)]
    started = time.monotonic()
    asyncio.run(QueuedRecords(writer).record(sent))
    assert time.monotonic() - started < status_records.TIMEOUT_SECONDS + 0.5
    assert [message_id for message_id, _, _ in writer._pending] == [one.message_id for one in sent]


def test_a_write_slower_than_the_timeout_lets_the_request_go_and_still_lands(client, monkeypatch):
    writer = writer_flushed_by_the_test()
    records = QueuedRecords(writer)
    sent = message(3)
    monkeypatch.setattr(status_records, "TIMEOUT_SECONDS", 0.05)

    async def request_then_wait_for_the_write() -> float:
        loop = asyncio.get_running_loop()
        records._start_on(loop)
        script = records._script

        async def slow_script(**arguments):
            await asyncio.sleep(0.3)
            return await script(**arguments)

        records._script = slow_script
        started = time.monotonic()
        await records.record([sent])
        answered_after = time.monotonic() - started
        await records._flusher  # the write goes on after the request was answered
        return answered_after

    assert asyncio.run(request_then_wait_for_the_write()) < 0.25
    key = status_key(writer.namespace, sent.message_id)
    try:
        assert client.hget(key, "state") == "queued"
    finally:
        client.delete(key)


def test_no_messages_means_no_wait():
    records = QueuedRecords(writer_flushed_by_the_test())
    started = time.monotonic()
    asyncio.run(records.record([]))
    assert time.monotonic() - started < status_records.TIMEOUT_SECONDS / 2


def test_the_shared_write_carries_no_request_s_id(monkeypatch):
    """It writes for every request waiting, so its log lines must not name the one that started it."""
    from logs import REQUEST_ID

    seen = []
    writer = writer_flushed_by_the_test()
    real = writer.script_arguments
    monkeypatch.setattr(writer, "script_arguments", lambda batch: seen.append(REQUEST_ID.get()) or real(batch))
    records = QueuedRecords(writer)

    async def a_request() -> None:
        REQUEST_ID.set("trace-of-one-request")
        await records.record([message(4)])

    asyncio.run(a_request())
    assert seen and "trace-of-one-request" not in seen
