"""A message that keeps failing is dead-lettered, listed with its reason, and replayed once fixed."""

from __future__ import annotations

import random

import pytest

from tests.support.csv_check import assert_rows_match
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def dead_letters(stack) -> dict:
    response = stack.http.get("/dead-letters", params={"queue": "ingest"}, timeout=10)
    assert response.status_code == 200
    return response.json()


def test_poison_message_is_dead_lettered_listed_and_written_once_after_replay(make_stack, tmp_path):
    fixed = tmp_path / "fixed"
    stack = make_stack(
        worker_extra_modules="tests.support.poison",
        poison_fixed=str(fixed),
        max_retries="2",
        min_backoff_ms="50",
        max_backoff_ms="200",
    ).start()
    rng = random.Random(5)
    poison = random_payload(rng, frame_bytes=64) | {"device_id": "poison-device"}
    good = [random_payload(rng, frame_bytes=64) for _ in range(20)]
    answers = post_all(f"{stack.base_url}/api", [poison, *good], key=stack.admin_key)
    assert {answer.status for answer in answers} == {202}
    ids = [answer.body["message_id"] for answer in sorted(answers, key=lambda a: a.index)]
    poison_id, good_ids = ids[0], ids[1:]

    listed = wait_for(lambda: (body := dead_letters(stack))["count"] == 1 and body, timeout=60,
                      what="the poison message in the dead-letter queue")
    (letter,) = listed["messages"]
    assert letter["message_id"] == poison_id
    assert letter["reason"] == "DownstreamFault: poison-device cannot be stored until the fix"
    assert letter["attempts"] == 3, "one try and MAX_RETRIES=2 retries"
    assert letter["args"][0]["device_id"] == "poison-device"
    assert (letter["key"], letter["tenant"]) == ("test-admin", "test-admin"), "who sent it"
    wait_for(lambda: stack.csv_path.exists() and len(stack.csv_path.read_bytes()) > 0, timeout=30, what="rows")
    assert_rows_match(stack.csv_path, dict(zip(good_ids, good)))  # the good ones, and no poison rows

    assert dead_letters(stack)["count"] == 1, "listing must not consume dead letters"

    fixed.touch()
    replay = stack.http.post("/dead-letters/replay", json={"queue": "ingest"}, timeout=30)
    assert replay.status_code == 200
    assert replay.json() == {"queue": "ingest", "replayed": [poison_id], "remaining": 0}

    everything = dict(zip(ids, [poison, *good]))
    wait_for(lambda: _has_rows_of(stack, poison_id), timeout=60, what="the replayed message's rows")
    assert_rows_match(stack.csv_path, everything)
    assert dead_letters(stack)["count"] == 0

    again = stack.http.post("/dead-letters/replay", json={"queue": "ingest"}, timeout=30)
    assert again.json()["replayed"] == []


def _has_rows_of(stack, message_id: str) -> bool:
    from pipeline.shard_files import read_shard

    return any(row["message_id"] == message_id for row in read_shard(stack.csv_path))


def test_unknown_queue_is_refused_with_422(stack):
    response = stack.http.get("/dead-letters", params={"queue": "nope"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "queue"


def test_dead_letters_are_listed_a_bounded_page_at_a_time(make_stack, tmp_path):
    """Each dead letter is a whole payload: a page stops at its count or at MAX_DEAD_LETTER_PAGE_BYTES."""
    stack = make_stack(
        worker_extra_modules="tests.support.poison", poison_fixed=str(tmp_path / "never"),
        max_retries="0", max_dead_letter_page_bytes=str(64 * 1024),
    ).start()
    rng = random.Random(6)
    poison = [random_payload(rng, frame_bytes=16 * 1024) | {"device_id": "poison-device"} for _ in range(5)]
    for body in poison:
        body["data"]["preds"] = body["data"]["preds"][:1]  # ~23 KB each once in base64: two per page
    answers = post_all(f"{stack.base_url}/api", poison, key=stack.admin_key)
    ids = {answer.body["message_id"] for answer in answers}
    wait_for(lambda: dead_letters(stack)["count"] == 5, timeout=60, what="five dead letters")

    seen, offset, pages = [], 0, []
    while offset is not None:
        page = stack.http.get("/dead-letters", params={"queue": "ingest", "limit": 10, "offset": offset}).json()
        pages.append(len(page["messages"]))
        seen += [letter["message_id"] for letter in page["messages"]]
        offset = page["next_offset"]
    assert pages == [2, 2, 1], f"pages bounded in bytes: {pages}"
    assert sorted(seen) == sorted(ids), "every dead letter once, across the pages"
    by_count = stack.http.get("/dead-letters", params={"queue": "ingest", "limit": 1, "offset": 4}).json()
    assert len(by_count["messages"]) == 1 and by_count["next_offset"] is None
