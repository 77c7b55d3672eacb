"""Uploads built to make the API hold too much get a clear answer, and cost nothing accepted.

Against a real stack whose MAX_BODY_BYTES is small, so the bounds are reached
with small files: a record that never ends, a payload assembled from many
small rows, a workbook of too many files.
"""

from __future__ import annotations

import io
import random
import uuid
import zipfile

import pytest

from pipeline.rows import HEADER, encode_rows
from tests.support.csv_check import assert_rows_match, wait_for_rows
from tests.support.payloads import random_payload
from tests.support.stack import isolated_stack

pytestmark = pytest.mark.slow

MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    with isolated_stack(tmp_path_factory.mktemp("oversized"), "oversized", processes=1, threads=4,
                        max_body_bytes=str(MAX_BODY_BYTES), max_xlsx_entries="100") as stack:
        yield stack.start()


def upload(stack, name: str, data: bytes):
    return stack.http.post("/file/upload", files={"file": (name, data)}, timeout=60)


def payload(seed: int, preds: int, frame_bytes: int) -> dict:
    body = random_payload(random.Random(seed), frame_bytes=frame_bytes)
    body["data"]["preds"] = (body["data"]["preds"] * preds)[:preds]
    return body


def test_a_payload_assembled_over_the_body_limit_is_rejected_and_its_neighbours_written(small_stack):
    small, big, last = payload(1, 2, 256), payload(2, 40, 2048), payload(3, 3, 256)  # big: ~110 KB of rows
    ids = [str(uuid.uuid4()) for _ in range(3)]
    data = (HEADER + "".join(encode_rows(mid, body)[0].decode() for mid, body in zip(ids, (small, big, last)))).encode()
    answer = upload(small_stack, "three.csv", data)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["enqueued"], body["rejected"], body["complete"]) == (2, 1, True)
    (rejection,) = body["rejections"]
    assert rejection["message_id"] == ids[1] and rejection["errors"][0]["field"] == "body"
    accepted = {ids[0]: small, ids[2]: last}
    wait_for_rows(small_stack.csv_path, accepted)
    assert_rows_match(small_stack.csv_path, accepted)


def test_a_record_that_never_ends_stops_the_reading_where_it_starts(small_stack):
    first = payload(4, 2, 256)
    mid = str(uuid.uuid4())
    data = (HEADER + encode_rows(mid, first)[0].decode()).encode() + b'"unclosed,' + b"a short line\r\n" * 10_000
    answer = upload(small_stack, "unclosed.csv", data)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["complete"] is False and body["enqueued"] == 1
    assert "record starting at line 4" in body["rejections"][-1]["errors"][0]["message"]
    wait_for_rows(small_stack.csv_path, {mid: first})


def test_a_workbook_of_too_many_files_is_413_before_it_is_opened(small_stack):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for number in range(500):
            archive.writestr(f"xl/media/{number}.bin", b"")
    answer = upload(small_stack, "many.xlsx", out.getvalue())
    assert answer.status_code == 413 and "MAX_XLSX_ENTRIES" in answer.json()["detail"]
