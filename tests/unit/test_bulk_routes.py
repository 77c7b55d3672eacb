"""POST /api/batch and POST /file/upload without a broker: answers, limits, ids, refusals."""

from __future__ import annotations

import copy
import io
import uuid

import openpyxl
import orjson
import pytest
from fastapi.testclient import TestClient

from app.idempotency import get_idempotency_store
from app.publishing import PublishOutcome
from app.schemas import SEED_EXAMPLE
from config import get_settings
from pipeline.rows import HEADER, encode_rows
from tests.support.memory_store import MemoryStore


class FakePublisher:
    """Records what would be enqueued; `refuse` makes the broker fail the given positions of a call."""

    def __init__(self):
        self.sent: list[tuple[str, dict]] = []
        self.calls = 0
        self.refuse: set[int] | None = None

    async def __call__(self, actor, arguments, message_ids, *, sender, confirm_timeout):
        self.calls += 1
        outcomes = []
        for position, (args, message_id) in enumerate(zip(arguments, message_ids)):
            message_id = message_id or str(uuid.uuid4())
            if self.refuse is not None and (not self.refuse or position in self.refuse):
                outcomes.append(PublishOutcome(message_id, "RabbitMQ connection is down: refused"))
            else:
                self.sent.append((message_id, args[0]))
                outcomes.append(PublishOutcome(message_id))
        return outcomes


@pytest.fixture()
def publisher(monkeypatch):
    from app import bulk_ingest

    fake = FakePublisher()
    monkeypatch.setattr(bulk_ingest, "publish_many", fake)
    return fake


@pytest.fixture()
def client(publisher):
    from app.main import create_app

    app = create_app()
    store = MemoryStore()
    app.dependency_overrides[get_idempotency_store] = lambda: store
    return TestClient(app)


def bad_prob() -> dict:
    body = copy.deepcopy(SEED_EXAMPLE)
    body["data"]["preds"][0]["prob"] = 1.5
    return body


def ndjson(*values) -> bytes:
    return b"".join(orjson.dumps(value) + b"\n" for value in values)


NDJSON = {"content-type": "application/x-ndjson"}


# -- POST /api/batch -------------------------------------------------------------------------------


def test_each_item_is_answered_by_its_index_and_only_valid_ones_are_enqueued(client, publisher):
    response = client.post("/api/batch", json=[SEED_EXAMPLE, bad_prob(), "nonsense", SEED_EXAMPLE])
    assert response.status_code == 200
    answer = response.json()
    assert (answer["total"], answer["received"], answer["rejected"], answer["unavailable"]) == (4, 2, 2, 0)
    assert [item["status"] for item in answer["items"]] == ["received", "rejected", "rejected", "received"]
    assert answer["items"][1]["errors"] == [
        {"field": "data.preds.0.prob", "message": "Input should be less than or equal to 1", "type": "less_than_equal"}
    ]
    assert [mid for mid, _ in publisher.sent] == [answer["items"][0]["message_id"], answer["items"][3]["message_id"]]
    assert publisher.calls == 1, "the valid items go to the publisher together"


def test_an_ndjson_batch_is_one_item_per_line_and_a_line_that_is_not_json_is_rejected_alone(client, publisher):
    body = ndjson(SEED_EXAMPLE) + b"{not json\n\n" + ndjson(bad_prob())
    answer = client.post("/api/batch", content=body, headers=NDJSON).json()
    assert [item["status"] for item in answer["items"]] == ["received", "rejected", "rejected"]
    assert "line 2 is not valid JSON" in answer["items"][1]["errors"][0]["message"]
    assert len(publisher.sent) == 1


def test_a_body_that_is_not_ndjson_at_all_is_refused_naming_its_lines(client, publisher):
    response = client.post("/api/batch", content=b"a,b,c\n1,2,3\n", headers=NDJSON)
    assert response.status_code == 422
    assert [error["message"].split(" is")[0] for error in response.json()["detail"]] == ["line 1", "line 2"]
    assert not publisher.sent


@pytest.mark.parametrize(("body", "words"), [({"a": 1}, "got an object"), ([], "empty"), ("text", "got a string")])
def test_a_json_body_that_is_not_a_nonempty_array_is_refused(client, body, words):
    response = client.post("/api/batch", json=body)
    assert response.status_code == 422
    assert words in response.json()["detail"][0]["message"]


def test_a_broken_json_body_is_refused_with_its_position(client):
    response = client.post("/api/batch", content=b"[{}, {", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_more_items_than_max_batch_items_are_refused_with_422(client, publisher):
    limit = get_settings().max_batch_items
    response = client.post("/api/batch", json=[SEED_EXAMPLE] * (limit + 1))
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "too_long"
    assert "MAX_BATCH_ITEMS" in response.json()["detail"][0]["message"]
    assert not publisher.sent


def test_the_batch_route_has_its_own_body_limit_and_other_routes_keep_theirs(client):
    settings = get_settings()
    over = {"content-type": "application/json", "content-length": str(settings.max_batch_bytes + 1)}
    response = client.post("/api/batch", content=b"[]", headers=over)
    assert (response.status_code, "MAX_BATCH_BYTES" in response.json()["detail"]) == (413, True)
    big = b"[" + b" " * (settings.max_body_bytes + 10) + b"]"
    assert client.post("/api", content=big, headers={"content-type": "application/json"}).status_code == 413
    assert client.post("/api/batch", content=big, headers={"content-type": "application/json"}).status_code == 422


def test_a_chunked_body_over_the_batch_limit_is_cut_off_with_413(client, monkeypatch):
    limit = get_settings().max_batch_bytes

    def chunks():
        sent = 0
        while sent <= limit:
            yield b" " * (1 << 20)
            sent += 1 << 20

    response = client.post("/api/batch", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_batch_neither_json_nor_ndjson_is_refused_with_415(client):
    response = client.post("/api/batch", content=b"hello", headers={"content-type": "text/csv"})
    assert response.status_code == 415


def test_an_idempotency_key_makes_every_item_id_deterministic(client, publisher):
    first = client.post("/api/batch", json=[SEED_EXAMPLE, bad_prob(), SEED_EXAMPLE], headers={"Idempotency-Key": "b-1"})
    retry = client.post("/api/batch", json=[SEED_EXAMPLE, bad_prob(), SEED_EXAMPLE], headers={"Idempotency-Key": "b-1"})
    other = client.post("/api/batch", json=[SEED_EXAMPLE], headers={"Idempotency-Key": "b-2"})
    ids = [[item.get("message_id") for item in r.json()["items"]] for r in (first, retry)]
    assert ids[0] == ids[1] and ids[0][1] is None and len(set(ids[0][::2])) == 2
    assert other.json()["items"][0]["message_id"] not in ids[0]


def test_an_idempotency_key_reused_for_another_batch_is_refused_with_409(client, publisher):
    client.post("/api/batch", json=[SEED_EXAMPLE], headers={"Idempotency-Key": "b-3"})
    response = client.post("/api/batch", json=[SEED_EXAMPLE, SEED_EXAMPLE], headers={"Idempotency-Key": "b-3"})
    assert response.status_code == 409
    assert len(publisher.sent) == 1


def test_items_the_broker_did_not_confirm_are_answered_unavailable_and_the_rest_received(client, publisher):
    publisher.refuse = {1}
    answer = client.post("/api/batch", json=[SEED_EXAMPLE] * 3).json()
    assert [item["status"] for item in answer["items"]] == ["received", "unavailable", "received"]
    assert "refused" in answer["items"][1]["error"]


def test_a_batch_the_broker_confirmed_nothing_of_is_answered_503_with_retry_after(client, publisher):
    publisher.refuse = set()
    response = client.post("/api/batch", json=[SEED_EXAMPLE, bad_prob()])
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "nothing was confirmed" in response.json()["detail"]


def test_once_a_whole_chunk_is_refused_the_rest_of_the_batch_is_not_sent(client, publisher, monkeypatch):
    from app import bulk_ingest

    monkeypatch.setattr(bulk_ingest, "MAX_IN_FLIGHT", 2)
    publisher.refuse = set()
    response = client.post("/api/batch", json=[SEED_EXAMPLE] * 5)
    assert (response.status_code, publisher.calls) == (503, 1)


# -- POST /file/upload -----------------------------------------------------------------------------


def service_csv(*bodies: dict, ids: list[str] | None = None) -> bytes:
    ids = ids or [str(uuid.uuid4()) for _ in bodies]
    return (HEADER + "".join(encode_rows(mid, body)[0].decode() for mid, body in zip(ids, bodies))).encode()


def seed_json() -> dict:
    """The seed as the API enqueues it (validated, created_at in ISO 8601)."""
    from app.auth import OPEN
    from app.bulk_ingest import validate

    return validate(SEED_EXAMPLE, OPEN)[0]


def upload(client, name: str, data: bytes, **headers):
    return client.post("/file/upload", files={"file": (name, data, "application/octet-stream")}, headers=headers)


def test_a_csv_upload_keeps_the_files_message_ids(client, publisher):
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    answer = upload(client, "rows.csv", service_csv(seed_json(), seed_json(), ids=ids)).json()
    assert (answer["rows_read"], answer["payloads"], answer["enqueued"], answer["rejected"]) == (2, 2, 2, 0)
    assert publisher.sent == [(ids[0], seed_json()), (ids[1], seed_json())]


def test_rejected_rows_are_listed_with_line_and_reason_and_the_good_ones_enqueued(client, publisher):
    data = service_csv(seed_json(), bad_prob() | {"created_at": "2023-02-13T10:49:06"}, seed_json())
    answer = upload(client, "rows.csv", data).json()
    assert (answer["enqueued"], answer["rejected"], answer["complete"]) == (2, 1, True)
    assert answer["rejections"] == [{
        "line": 3, "last_line": 3, "message_id": answer["rejections"][0]["message_id"],
        "errors": [{"field": "prob", "message": "line 3: Input should be less than or equal to 1",
                    "type": "less_than_equal"}],
    }]


def test_payloads_without_ids_get_the_same_ids_for_the_same_file_and_others_for_another(client, publisher):
    rows = service_csv(seed_json()).decode().split("\r\n")
    no_ids = "\r\n".join(line.split(",", 3)[3] for line in rows[:-1]).encode() + b"\r\n"
    for data in (no_ids, no_ids, no_ids + no_ids[no_ids.index(b"\r\n") + 2 :]):
        upload(client, "rows.csv", data)
    ids = [mid for mid, _ in publisher.sent]
    assert len(ids) == 3, "the third file's two identical rows are one payload of two preds"
    assert ids[0] == ids[1] and ids[2] != ids[0]


def test_an_idempotency_key_reused_for_another_file_is_refused_with_409(client, publisher):
    upload(client, "a.ndjson", ndjson(SEED_EXAMPLE), **{"Idempotency-Key": "f-1"})
    assert upload(client, "a.ndjson", ndjson(SEED_EXAMPLE), **{"Idempotency-Key": "f-1"}).status_code == 200
    assert upload(client, "b.ndjson", ndjson(SEED_EXAMPLE, SEED_EXAMPLE), **{"Idempotency-Key": "f-1"}).status_code == 409


def test_an_xlsx_upload_is_read_like_a_csv(client, publisher):
    workbook = openpyxl.Workbook()
    mid = str(uuid.uuid4())
    for row in [HEADER.strip().split(","), [mid, 0, 1, "cam-01", "acme", "2023-02-13T10:49:06.613585", "lic-42",
                                           0.87, '["person", "entrance"]', "aGVsbG8gd29ybGQ="]]:
        workbook.active.append(row)
    out = io.BytesIO()
    workbook.save(out)
    answer = upload(client, "rows.XLSX", out.getvalue()).json()
    assert (answer["format"], answer["enqueued"]) == ("xlsx", 1)
    assert publisher.sent == [(mid, seed_json())]


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("rows.txt", b"hello", "upload a .csv, .xlsx or .ndjson file"),
        ("rows.xlsx", b"device_id,client_id\r\n", "is not"),
        ("rows.csv", b"PK\x03\x04rest of a zip", "zip archive"),
        ("rows.xlsx", b"PK\x03\x04 not really a zip", "not a zip archive"),
    ],
)
def test_a_file_of_another_kind_is_refused_with_415(client, publisher, name, data, words):
    response = upload(client, name, data)
    assert response.status_code == 415
    assert words in response.json()["detail"]
    assert not publisher.sent


def test_a_body_that_is_not_a_multipart_upload_is_refused_with_415(client):
    assert client.post("/file/upload", json={"file": "rows.csv"}).status_code == 415


def test_a_csv_with_a_wrong_header_is_refused_with_422_before_anything_is_enqueued(client, publisher):
    response = upload(client, "rows.csv", b"device,client\r\n1,2\r\n")
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "file_header"
    assert not publisher.sent


def test_a_file_that_breaks_mid_way_is_answered_with_what_was_enqueued_and_where_it_stopped(client, publisher):
    data = service_csv(seed_json(), seed_json()) + b"\xff\xfe\r\n" + service_csv(seed_json())[len(HEADER):]
    answer = upload(client, "rows.csv", data).json()
    assert (answer["enqueued"], answer["complete"]) == (2, False)
    assert answer["rejections"][-1]["line"] == 4
    assert answer["rejections"][-1]["errors"][0]["type"] == "file_broken"


def test_an_upload_interrupted_by_the_broker_is_answered_503_with_how_far_it_got(client, publisher):
    publisher.refuse = set()
    response = upload(client, "rows.csv", service_csv(seed_json()))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "0 payloads were enqueued" in response.json()["detail"]


def test_a_chunked_upload_over_max_upload_bytes_is_cut_off_with_413(publisher):
    from app.main import create_app
    from config import Settings

    app = create_app(Settings(max_upload_bytes=64 * 1024))

    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"rows.csv\"\r\n\r\n"
        for _ in range(100):
            yield b"x" * 1024
        yield b"\r\n--b--\r\n"

    response = TestClient(app).post("/file/upload", content=chunks(),
                                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert "MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert not publisher.sent


def documented(path: str, code: int) -> dict:
    from app.main import app

    return app.openapi()["paths"][path]["post"]["responses"][str(code)]["content"]["application/json"]["example"]


def test_the_documented_422_examples_are_real_answers(client):
    assert client.post("/api/batch", json={"a": 1}).json() == documented("/api/batch", 422)
    header = ",".join(name for name in HEADER.strip().split(",") if name != "prob").encode()
    assert upload(client, "rows.csv", header + b"\r\n").json() == documented("/file/upload", 422)


def test_every_bulk_body_limit_is_a_real_route():
    from app.limits import bulk_body_limits
    from app.main import app

    assert set(bulk_body_limits(get_settings())) <= set(app.openapi()["paths"])


def test_background_uploads_beyond_max_upload_jobs_are_refused_with_retry_after_before_anything_is_copied():
    import asyncio

    from fastapi import HTTPException

    from app.upload_jobs import BackgroundUploads

    async def scenario() -> HTTPException:
        uploads = BackgroundUploads(limit=1)
        release = asyncio.Event()

        class Job:
            job_id = "j"

            def succeeded(self, answer):
                pass

        uploads.start(Job(), lambda: release.wait())
        try:
            uploads.admit()
        except HTTPException as refused:
            release.set()
            await asyncio.sleep(0)
            return refused
        raise AssertionError("a second job was admitted")

    refused = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers == {"Retry-After": "5"}
    assert "MAX_UPLOAD_JOBS" in refused.detail
