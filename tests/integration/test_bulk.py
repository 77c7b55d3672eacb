"""Bulk ingest end to end: POST /api/batch and POST /file/upload through RabbitMQ and the workers to the CSV."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import random
import uuid

import httpx
import openpyxl
import orjson
import pytest

from app.auth import OPEN
from app.bulk_ingest import file_message_id, validate
from pipeline.rows import COLUMNS, HEADER, encode_rows
from tests.support import csv_check
from tests.support.csv_check import assert_rows_match, count_rows
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.processes import peak_rss_mb
from tests.support.rabbit import queue_state
from tests.support.stack import Stack, free_port, isolated_stack
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def second_stack(tmp_path_factory):
    """A stack of its own (vhost, CSV): the service whose CSV is uploaded to the shared one."""
    with isolated_stack(tmp_path_factory.mktemp("bulk-source"), "bulk") as stack:
        yield stack.start()


def payloads(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    return [random_payload(rng, frame_bytes=512) for _ in range(count)]


def invalid(payload: dict) -> dict:
    broken = copy.deepcopy(payload)
    broken["data"]["preds"][0]["prob"] = 1.5
    return broken


def wait_for_rows(stack: Stack, accepted: dict[str, dict]) -> None:
    csv_check.wait_for_rows(stack.csv_path, accepted)


def duplicates(stack: Stack) -> int:
    """Messages the workers found already written (the sink's dedup), from GET /status."""
    return stack.http.get("/status", timeout=10).json()["duplicates"]


def wait_for_duplicates(stack: Stack, at_least: int) -> None:
    wait_for(lambda: duplicates(stack) >= at_least, timeout=120, interval=0.5,
             what=f"{at_least} duplicate messages skipped by the workers")


def post_batch(stack: Stack, content: bytes, content_type: str = "application/json", **headers) -> httpx.Response:
    return stack.http.post("/api/batch", content=content, timeout=60,
                      headers={"content-type": content_type, **headers})


def upload(stack: Stack, name: str, data: bytes, **headers) -> httpx.Response:
    return stack.http.post("/file/upload", files={"file": (name, data)}, headers=headers, timeout=120)


# -- POST /api/batch ---------------------------------------------------------------------------


def test_a_batch_of_valid_and_invalid_items_writes_each_valid_one_exactly_once(stack):
    sent = payloads(1, 300)
    items = [invalid(payload) if index % 7 == 3 else payload for index, payload in enumerate(sent)]
    response = post_batch(stack, orjson.dumps(items))

    assert response.status_code == 200
    answer = response.json()
    bad = {index for index in range(len(items)) if index % 7 == 3}
    assert [item["index"] for item in answer["items"]] == list(range(len(items)))
    assert {item["index"] for item in answer["items"] if item["status"] == "rejected"} == bad
    assert (answer["received"], answer["rejected"], answer["unavailable"]) == (len(items) - len(bad), len(bad), 0)
    accepted = {item["message_id"]: items[item["index"]] for item in answer["items"] if item["status"] == "received"}
    wait_for_rows(stack, accepted)
    assert_rows_match(stack.csv_path, accepted)


def test_an_ndjson_batch_is_written_like_a_json_one(stack):
    items = payloads(2, 50)
    body = b"".join(orjson.dumps(item) + b"\n" for item in items)
    answer = post_batch(stack, body, "application/x-ndjson").json()

    assert answer["received"] == 50
    accepted = {item["message_id"]: items[item["index"]] for item in answer["items"]}
    wait_for_rows(stack, accepted)
    assert_rows_match(stack.csv_path, accepted)


def test_a_batch_retried_with_its_idempotency_key_is_written_once(stack):
    items = payloads(3, 40)
    key = f"batch-{uuid.uuid4()}"
    first = post_batch(stack, orjson.dumps(items), **{"Idempotency-Key": key}).json()
    accepted = {item["message_id"]: items[item["index"]] for item in first["items"]}
    wait_for_rows(stack, accepted)
    skipped_before = duplicates(stack)

    retry = post_batch(stack, orjson.dumps(items), **{"Idempotency-Key": key}).json()

    assert [item["message_id"] for item in retry["items"]] == [item["message_id"] for item in first["items"]]
    assert retry["received"] == 40, "the retry is published again: the sink, not the API, drops the copies"
    wait_for_duplicates(stack, skipped_before + 40)
    assert_rows_match(stack.csv_path, accepted)


def test_a_batch_over_the_item_limit_is_refused_with_422_and_over_the_byte_limit_with_413(stack):
    from config import get_settings

    settings = get_settings()
    too_many = post_batch(stack, orjson.dumps(payloads(4, 1) * (settings.max_batch_items + 1)))
    assert too_many.status_code == 422 and "MAX_BATCH_ITEMS" in too_many.json()["detail"][0]["message"]

    def over_the_byte_limit():
        yield b"["
        for _ in range(settings.max_batch_bytes // (1 << 20) + 1):
            yield b" " * (1 << 20)
        yield b"]"

    too_large = stack.http.post("/api/batch", content=over_the_byte_limit(), timeout=60,
                           headers={"content-type": "application/json"})
    assert too_large.status_code == 413 and "MAX_BATCH_BYTES" in too_large.json()["detail"]


def test_a_batch_answers_503_with_retry_after_when_rabbitmq_is_unreachable(tmp_path):
    stack = Stack(tmp_path, f"amqp://guest:guest@127.0.0.1:{free_port()}/")  # nothing listens there
    stack.start_api(wait_ready=False)
    try:
        response = post_batch(stack, orjson.dumps(payloads(5, 3)))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        refused_upload = upload(stack, "rows.ndjson", orjson.dumps(payloads(5, 1)[0]))
        assert refused_upload.status_code == 503 and "Upload the same file again" in refused_upload.json()["detail"]
    finally:
        stack.stop()


# -- POST /file/upload -------------------------------------------------------------------------


def test_the_csv_one_service_wrote_uploaded_to_another_reproduces_its_rows_and_twice_adds_nothing(
    stack, second_stack
):
    sent = payloads(6, 200)
    answers = post_all(f"{second_stack.base_url}/api", sent, concurrency=32, key=second_stack.admin_key)
    accepted = {answer.body["message_id"]: sent[answer.index] for answer in answers}
    wait_for_rows(second_stack, accepted)
    wait_for(lambda: queue_state(second_stack.rabbitmq_url, "ingest")[0] == 0, timeout=30, what="an empty queue")
    written = second_stack.csv_path.read_bytes()

    first = upload(stack, "data.csv", written).json()
    assert (first["payloads"], first["enqueued"], first["rejected"], first["complete"]) == (200, 200, 0, True)
    wait_for_rows(stack, accepted)
    assert_rows_match(stack.csv_path, accepted)

    skipped_before = duplicates(stack)
    again = upload(stack, "data.csv", written).json()
    assert again["enqueued"] == 200
    wait_for_duplicates(stack, skipped_before + 200)
    assert_rows_match(stack.csv_path, accepted)


def test_an_xlsx_upload_writes_its_rows_with_their_message_ids(stack):
    sent = {str(uuid.uuid4()): validate(payload, OPEN)[0] for payload in payloads(7, 30)}
    records = list(csv.reader(io.StringIO(HEADER + "".join(encode_rows(mid, body)[0].decode()
                                                             for mid, body in sent.items()), newline="")))
    workbook = openpyxl.Workbook()
    # Counts as numbers; prob as the CSV's text: a workbook's numbers keep only 15-17 digits.
    numeric = {COLUMNS.index("pred_index"), COLUMNS.index("pred_count")}
    workbook.active.append(records[0])
    for record in records[1:]:
        workbook.active.append([float(cell) if i in numeric else cell for i, cell in enumerate(record)])
    out = io.BytesIO()
    workbook.save(out)

    answer = upload(stack, "detections.xlsx", out.getvalue()).json()

    assert (answer["format"], answer["enqueued"], answer["rejected"]) == ("xlsx", 30, 0)
    wait_for_rows(stack, sent)
    assert_rows_match(stack.csv_path, sent)


def test_an_ndjson_upload_gets_ids_derived_from_its_content(stack):
    sent = payloads(8, 30)
    data = b"".join(orjson.dumps(payload) + b"\n" for payload in sent)
    content_sha256 = hashlib.sha256(data).hexdigest()

    answer = upload(stack, "detections.ndjson", data).json()

    assert answer["enqueued"] == 30
    accepted = {file_message_id(None, content_sha256, index, stack.id_scope()): payload for index, payload in enumerate(sent)}
    wait_for_rows(stack, accepted)
    assert_rows_match(stack.csv_path, accepted)


def test_a_file_with_bad_rows_reports_each_with_its_line_and_reason_and_enqueues_the_rest(stack):
    sent = {str(uuid.uuid4()): validate(payload, OPEN)[0] for payload in payloads(9, 20)}
    bad_index, torn, bad_tags = [mid for mid, body in sent.items() if len(body["data"]["preds"]) > 1][:3]
    out = io.StringIO(HEADER, newline="")
    out.seek(0, io.SEEK_END)
    for mid, body in sent.items():
        records = list(csv.reader(io.StringIO(encode_rows(mid, body)[0].decode(), newline="")))
        if mid == bad_index:
            records[0][COLUMNS.index("pred_index")] = "zero"
        elif mid == torn:
            records = records[1:]  # its first row is missing
        elif mid == bad_tags:
            records[0][COLUMNS.index("tags")] = "not json"
        csv.writer(out, lineterminator="\r\n").writerows(records)

    answer = upload(stack, "data.csv", out.getvalue().encode()).json()

    assert (answer["enqueued"], answer["rejected"], answer["complete"]) == (17, 3, True)
    reasons = {rejection["message_id"]: {error["type"] for error in rejection["errors"]}
               for rejection in answer["rejections"]}
    assert reasons == {bad_index: {"pred_index"}, torn: {"incomplete_payload", "pred_index"}, bad_tags: {"tags_json"}}
    assert all(rejection["line"] >= 2 for rejection in answer["rejections"])
    good = {mid: body for mid, body in sent.items() if mid not in reasons}
    wait_for_rows(stack, good)
    assert_rows_match(stack.csv_path, good)
    assert count_rows(stack.csv_path, set(reasons)) == 0


# -- memory --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_uploading_an_80_mb_csv_needs_far_less_memory_than_the_file(tmp_path):
    with isolated_stack(tmp_path, "bulk-memory") as stack:
        stack.start()
        rng = random.Random(10)
        frames = [random_payload(rng, frame_bytes=6 * 1024)["data"]["preds"][0]["image_frame"] for _ in range(50)]
        path = tmp_path / "big.csv"
        accepted = {}
        with open(path, "wb") as out:
            out.write(HEADER.encode())
            while out.tell() < 80 * 1024 * 1024:
                mid, body = str(uuid.uuid4()), validate(random_payload(rng, frames=frames), OPEN)[0]
                accepted[mid] = body
                out.write(encode_rows(mid, body)[0])
        size_mb = path.stat().st_size / 1e6
        before = peak_rss_mb(stack.api.pid)

        with open(path, "rb") as data:
            answer = stack.http.post("/file/upload", files={"file": ("big.csv", data)}, timeout=300).json()

        growth = peak_rss_mb(stack.api.pid) - before
        assert (answer["enqueued"], answer["rejected"]) == (len(accepted), 0)
        assert growth < size_mb / 4, f"peak RSS grew {growth:.0f} MB for a {size_mb:.0f} MB file"
        wait_for(lambda: count_rows(stack.csv_path, set(accepted)) >= answer["rows_read"], timeout=300, interval=2,
                 what="every row of the big file")
