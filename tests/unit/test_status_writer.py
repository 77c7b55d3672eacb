"""actors/message_status.StatusWriter: one Redis write per message, the same record as one write per call."""

from __future__ import annotations

import os
import uuid

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.message_status import StatusWriter, _coalesce, status_key

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def client():
    return redis.Redis.from_url(REDIS_URL, decode_responses=True)


def writer_flushed_by_the_test() -> StatusWriter:
    """A writer on a namespace of its own, without its background flusher: the test calls flush()."""
    writer = StatusWriter(REDIS_URL, f"test-{uuid.uuid4().hex[:8]}", ttl_seconds=60)
    writer._owner_pid = os.getpid()  # as if its flusher were already running in this process
    return writer


def naive_apply(records):
    """What one HSETNX/HSET per record would leave in each hash (the writer's behaviour before coalescing)."""
    hashes: dict[str, dict[str, str]] = {}
    for message_id, fields, only_if_new in records:
        record = hashes.setdefault(message_id, {})
        values = {name: str(value) for name, value in fields.items()}
        for first in ("tenant", "accepted"):  # first writer wins, always
            if first in values:
                record.setdefault(first, values.pop(first))
        if only_if_new:
            state = values.pop("state")
            record.setdefault("state", state)
        record.update(values)
    return hashes


field_values = st.one_of(st.sampled_from(["queued", "running", "succeeded", "retrying"]), st.integers(0, 10**13))
records = st.lists(
    st.tuples(
        st.sampled_from(["m-1", "m-2", "m-3"]),
        st.dictionaries(st.sampled_from(["state", "attempts", "started_at", "result", "queue", "tenant"]), field_values),
        st.booleans(),
    ).map(lambda r: (r[0], {**r[1], "state": r[1].get("state", "queued")} if r[2] else r[1], r[2])),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(records)
def test_a_coalesced_flush_leaves_what_one_write_per_record_would(client, batch):
    writer = writer_flushed_by_the_test()
    namespace = writer.namespace
    for message_id, fields, only_if_new in batch:
        writer.record(message_id, fields, only_if_new=only_if_new)
    writer.flush()
    try:
        for message_id, expected in naive_apply(batch).items():
            key = status_key(namespace, message_id)
            assert client.hgetall(key) == expected
            if expected:
                assert 0 < client.ttl(key) <= 60
    finally:
        keys = [status_key(namespace, m) for m in ("m-1", "m-2", "m-3")]
        client.delete(*keys)


def test_a_worker_s_three_records_of_a_message_become_one_write():
    running = ("m-1", {"state": "running", "attempts": 1, "started_at": 1}, False)
    result = ("m-1", {"result": '{"rows_written": 3}'}, False)
    succeeded = ("m-1", {"state": "succeeded", "finished_at": 2}, False)
    assert _coalesce([running, result, succeeded]) == {
        "m-1": ({}, {"state": "succeeded", "attempts": 1, "started_at": 1,
                       "result": '{"rows_written": 3}', "finished_at": 2}),
    }


def test_queued_after_a_worker_s_state_in_the_same_batch_does_not_override_it():
    running = ("m-1", {"state": "running"}, False)
    queued = ("m-1", {"state": "queued", "enqueued_at": 5}, True)
    assert _coalesce([running, queued]) == {"m-1": ({}, {"state": "running", "enqueued_at": 5})}


def test_the_first_tenant_written_stays_so_a_later_copy_cannot_take_a_status_over(client):
    writer = writer_flushed_by_the_test()
    writer.record("m-1", {"state": "running", "tenant": "acme"})
    writer.flush()
    writer.record("m-1", {"state": "running", "tenant": "ops"})  # e.g. an admin re-uploading acme's rows
    writer.flush()
    key = status_key(writer.namespace, "m-1")
    try:
        assert client.hget(key, "tenant") == "acme"
    finally:
        client.delete(key)


def test_enqueued_at_is_the_message_s_own_timestamp_so_never_after_a_worker_s_start(client):
    from dramatiq.message import Message

    from actors.message_status import queued_record

    writer = writer_flushed_by_the_test()
    namespace = writer.namespace
    message = Message(queue_name="ingest", actor_name="write_detection_rows", args=(), kwargs={}, options={},
                      message_timestamp=1_700_000_000_000)
    message_id, fields, only_if_new = queued_record(message)
    writer.record(message_id, fields, only_if_new=only_if_new)
    writer.flush()
    key = status_key(namespace, message.message_id)
    try:
        assert client.hgetall(key) == {"state": "queued", "queue": "ingest", "actor": "write_detection_rows",
                                       "enqueued_at": "1700000000000", "tenant": "", "accepted": "1"}
    finally:
        client.delete(key)


def test_an_accepted_message_is_counted_once_however_often_its_batch_is_sent_again(client):
    from dramatiq.message import Message

    from actors.message_status import queued_record
    from actors.stats import totals_key

    writer = writer_flushed_by_the_test()
    messages = [Message(queue_name="ingest", actor_name="a", args=(), kwargs={}, options={}) for _ in range(3)]
    batch = [queued_record(message) for message in messages]
    try:
        writer._write(batch)
        writer._write(batch)  # as after a timeout that came once the script had run
        writer._write([(messages[0].message_id, {"state": "running"}, False)])
        assert client.hget(totals_key(writer.namespace), "accepted") == "3"
    finally:
        client.delete(totals_key(writer.namespace), *[status_key(writer.namespace, m.message_id) for m in messages])
