"""The payload contract: the seed example passes, every kind of bad field is named."""

from __future__ import annotations

import base64
import copy
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.auth import OPEN
from app.idempotency import IdempotencyStore, get_idempotency_store, message_id_for
from app.tenancy import scoped_key
from app.schemas import BASE64_PATTERN, SEED_EXAMPLE, IngestPayload, is_padded_base64
from config import get_settings
from tests.support.memory_store import MemoryStore


@pytest.fixture()
def client(monkeypatch):
    """The app with publishing replaced, so a test sees what would be enqueued."""
    from app.main import create_app
    from app.routers import ingest, tasks

    sent = []

    async def fake_publish(actor, payload, sender, message_id=None):
        sent.append(payload)
        return message_id or "id-1"

    monkeypatch.setattr(ingest, "publish", fake_publish)
    monkeypatch.setattr(tasks, "publish", fake_publish)  # unit tests never publish for real
    app = create_app()
    app.dependency_overrides[get_idempotency_store] = lambda: MEMORY_STORE
    MEMORY_STORE.records.clear()
    test_client = TestClient(app)
    test_client.sent = sent
    return test_client


MEMORY_STORE = MemoryStore()


def with_change(path: str, value):
    body = copy.deepcopy(SEED_EXAMPLE)
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return body


_DELETE = object()


def test_seed_example_is_accepted_and_enqueued(client):
    response = client.post("/api", json=SEED_EXAMPLE)
    assert response.status_code == 202
    assert response.json() == {"status": "received", "message_id": "id-1"}
    assert client.sent[0]["data"]["preds"][0]["image_frame"] == "aGVsbG8gd29ybGQ="


@pytest.mark.parametrize(
    "created_at",
    ["2023-02-13 10:49:06.613585", "2023-02-13T10:49:06", "2023-02-13T10:49:06Z", "2023-02-13T10:49:06.5+02:00"],
)
def test_created_at_accepts_the_seed_format_and_iso_8601(created_at):
    IngestPayload.model_validate(with_change("created_at", created_at))


BAD_FIELDS = [
    ("device_id", _DELETE, "device_id"),
    ("device_id", 17, "device_id"),
    ("device_id", "", "device_id"),
    ("device_id", "x" * (get_settings().max_id_length + 1), "device_id"),
    ("client_id", None, "client_id"),
    ("created_at", "yesterday", "created_at"),
    ("created_at", 0, "created_at"),  # pydantic alone reads numbers, and digit strings, as Unix time
    ("created_at", "1676285346", "created_at"),
    ("created_at", "2023-02-13", "created_at"),
    ("data.license_id", _DELETE, "data.license_id"),
    ("data.preds", [], "data.preds"),
    ("data.preds", [SEED_EXAMPLE["data"]["preds"][0]] * (get_settings().max_preds + 1), "data.preds"),
    ("data.preds.0.prob", 1.5, "data.preds.0.prob"),
    ("data.preds.0.prob", -0.1, "data.preds.0.prob"),
    ("data.preds.0.prob", "0.5", "data.preds.0.prob"),
    ("data.preds.0.image_frame", "not base64!", "data.preds.0.image_frame"),
    ("data.preds.0.image_frame", "aGVsbG8", "data.preds.0.image_frame"),
    ("data.preds.0.tags", "person", "data.preds.0.tags"),
    ("data.preds.0.tags", [1], "data.preds.0.tags.0"),
    ("data.preds.0.unexpected", 1, "data.preds.0.unexpected"),
    ("extra", 1, "extra"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD_FIELDS, ids=[f"{p}={str(v)[:20]}" for p, v, _ in BAD_FIELDS])
def test_bad_field_gets_422_naming_it_and_nothing_is_enqueued(client, path, value, field):
    response = client.post("/api", json=with_change(path, value))
    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["detail"]]
    assert client.sent == []


def test_lone_surrogate_is_refused_because_it_cannot_be_written(client):
    body = b'{"device_id": "\\ud800", "client_id": "c", "created_at": "2023-02-13T10:49:06", "data": {"license_id": "l", "preds": [{"image_frame": "aGk=", "prob": 0.1, "tags": []}]}}'
    response = client.post("/api", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body"  # refused by the strict JSON parser
    assert client.sent == []


def test_the_schema_itself_refuses_lone_surrogates_for_callers_that_bypass_http():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="string_unicode"):
        IngestPayload.model_validate(with_change("device_id", "\ud800"))


def test_malformed_json_gets_422_naming_the_body(client):
    response = client.post("/api", content=b'{"device_id": ', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body"
    assert client.sent == []


def test_body_over_the_limit_gets_413_before_it_is_read(client):
    size = get_settings().max_body_bytes + 1
    response = client.post("/api", content=b"{" + b" " * size, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.json()["detail"]
    assert client.sent == []


def test_chunked_body_over_the_limit_gets_413(client):
    limit = get_settings().max_body_bytes

    def chunks():
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    response = client.post("/api", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert client.sent == []


def test_countdown_rejects_negative_and_too_long_seconds(client):
    assert client.post("/tasks", json={"seconds": -1}).status_code == 422
    too_long = client.post("/tasks", json={"seconds": get_settings().max_countdown_seconds + 1})
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["field"] == "seconds"


def test_broker_url_gets_timeouts_but_keeps_the_vhost_and_the_operators_own():
    from urllib.parse import parse_qs, urlsplit

    from actors import url_with_timeouts

    url = url_with_timeouts("amqp://u:p@host:5672/my-vhost?socket_timeout=9", 2.5)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == "/my-vhost"
    assert query["socket_timeout"] == ["9"]
    assert query["blocked_connection_timeout"] == ["2.5"]
    assert query["connection_attempts"] == ["1"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_not_declared_as_json_gets_415(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/api", content=b'{"device_id": "x"}', headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    assert client.sent == []


def test_json_with_a_charset_is_accepted(client):
    import json

    body = json.dumps(SEED_EXAMPLE).encode()
    response = client.post("/api", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 202


def test_a_retry_with_the_same_idempotency_key_is_enqueued_once(client):
    first = client.post("/api", json=SEED_EXAMPLE, headers={"Idempotency-Key": "order-7"})
    again = client.post("/api", json=SEED_EXAMPLE, headers={"Idempotency-Key": "order-7"})
    assert first.status_code == 202 and first.json()["status"] == "received"
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "message_id": first.json()["message_id"]}
    assert len(client.sent) == 1


def test_an_idempotency_key_reused_for_another_body_is_refused(client):
    client.post("/api", json=SEED_EXAMPLE, headers={"Idempotency-Key": "order-8"})
    response = client.post("/api", json=with_change("device_id", "other"), headers={"Idempotency-Key": "order-8"})
    assert response.status_code == 409
    assert response.json()["detail"][0]["field"] == "Idempotency-Key"
    assert len(client.sent) == 1


@pytest.mark.parametrize("key", ["has space", "x" * 256, "tab\there"])
def test_a_malformed_idempotency_key_gets_422_naming_the_header(client, key):
    response = client.post("/api", json=SEED_EXAMPLE, headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "Idempotency-Key"
    assert client.sent == []


def test_an_idempotency_key_maps_to_the_same_message_id_in_every_process():
    # A literal: changing the namespace would break retries across a deploy.
    assert message_id_for("order-7") == "01349fe8-0785-5f3e-b798-217b39059165"
    assert message_id_for("order-7") != message_id_for("order-8")


def test_without_keys_an_idempotency_key_names_the_id_it_had_before_tenants_existed():
    # So a retry across the upgrade lands on the id already written, and is written once.
    assert scoped_key(OPEN, "order-7") == "order-7"


def test_without_redis_a_keyed_request_is_still_published_with_the_keys_message_id(monkeypatch):
    from app.main import create_app
    from app.routers import ingest

    sent = []

    async def fake_publish(actor, payload, sender, message_id=None):
        sent.append(message_id)
        return message_id

    monkeypatch.setattr(ingest, "publish", fake_publish)
    app = create_app()
    app.dependency_overrides[get_idempotency_store] = lambda: IdempotencyStore("redis://127.0.0.1:1/0", 60)
    response = TestClient(app).post("/api", json=SEED_EXAMPLE, headers={"Idempotency-Key": "order-9"})
    assert response.status_code == 202
    assert sent == [message_id_for(scoped_key(OPEN, "order-9"))]


@pytest.mark.parametrize("body", [b"\xff\xfe{", b'{"device_id": NaN}', b"[1, 2"], ids=["not utf-8", "NaN", "cut short"])
def test_a_body_that_is_not_strict_json_gets_422_naming_the_body(client, body):
    response = client.post("/api", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body"
    assert client.sent == []


def test_countdown_accepts_an_integral_float_but_not_a_string(client):
    assert client.post("/tasks", json={"seconds": 2.0}).status_code == 202
    assert client.post("/tasks", json={"seconds": 2.5}).status_code == 422
    assert client.post("/tasks", json={"seconds": "2"}).status_code == 422


@pytest.mark.parametrize("value", [True, "5", 5.5])
def test_integers_in_request_bodies_are_json_integers_only(value):
    """What JSON Schema calls an integer (5 or 5.0), never a boolean or a string (found by the fuzzer)."""
    from pydantic import ValidationError

    from app.routers.dead_letters import ReplayRequest
    from app.schemas import CountdownRequest

    with pytest.raises(ValidationError):
        ReplayRequest.model_validate({"limit": value})
    with pytest.raises(ValidationError):
        CountdownRequest.model_validate({"seconds": value})
    assert ReplayRequest.model_validate({"limit": 5.0}).limit == 5


base64_like = st.text(alphabet=st.sampled_from("AQgw+/=9z\n -é"), max_size=16)
real_base64 = st.binary(max_size=24).map(lambda raw: base64.b64encode(raw).decode())


@settings(max_examples=2000)
@given(st.one_of(base64_like, real_base64, st.text(max_size=12), real_base64.map(lambda t: t + "=")))
def test_the_fast_base64_check_is_the_published_pattern(text):
    assert is_padded_base64(text) == bool(re.fullmatch(BASE64_PATTERN, text))


@pytest.mark.parametrize("frame", ["AAAA====", "aGk=AAAA", "aGk", "a Gk=", "aGk=\n", "é==="])
def test_a_frame_off_the_pattern_is_refused_with_the_reason(frame):
    body = copy.deepcopy(SEED_EXAMPLE)
    body["data"]["preds"][0]["image_frame"] = frame
    with pytest.raises(ValidationError, match="image_frame must be standard base64 with padding"):
        IngestPayload.model_validate(body)
