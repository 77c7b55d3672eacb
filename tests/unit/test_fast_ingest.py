"""The fast path of POST /api answers exactly as the FastAPI route would, and is taken when it should be."""

from __future__ import annotations

import json
import random

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

import app.fast_ingest
import app.routers.ingest
from app.main import create_app
from tests.support.fast_path import spy_on_fast_answers
from tests.support.payloads import random_payload

MESSAGE_ID = "id-1"


@pytest.fixture(scope="module")
def monkeymodule():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def fast_answers(monkeymodule):
    """Statuses the fast path answered itself (the rest went on to the FastAPI route)."""
    return spy_on_fast_answers(monkeymodule)


@pytest.fixture(scope="module")
def clients(monkeymodule, fast_answers):
    """(with the fast path, FastAPI only), publishing replaced: both paths publish the route's way."""
    async def fake_publish(actor, body, sender, message_id=None):
        return message_id or MESSAGE_ID

    monkeymodule.setattr(app.routers.ingest, "publish", fake_publish)

    class Store:  # Idempotency-Key records, in memory
        def __init__(self):
            self.known = {}

        async def lookup(self, key):
            return self.known.get(key)

        async def remember(self, key, accepted):
            self.known[key] = accepted

    made = []
    for fast in (True, False):
        application = create_app(fast_ingest=fast)
        application.dependency_overrides[app.routers.ingest.get_idempotency_store] = _provide(Store())
        made.append(TestClient(application))
    return made


def _provide(store):
    def provide():
        return store

    return provide


def post(client, body: bytes, **headers):
    return client.post("/api", content=body, headers={"content-type": "application/json", **headers})


def test_a_valid_detection_takes_the_fast_path(clients, fast_answers):
    fast, plain = clients
    body = orjson.dumps(random_payload(random.Random(1), frame_bytes=64))
    before = len(fast_answers)
    response = post(fast, body)
    assert fast_answers[before:] == [202], "answered by the fast path"
    assert (response.status_code, response.json()) == (202, {"status": "received", "message_id": MESSAGE_ID})
    assert post(plain, body).json() == response.json()
    metrics = fast.get("/metrics").text
    assert 'ingest_http_requests_total{method="POST",route="/api",status="202"}' in metrics


def test_an_idempotency_key_goes_to_the_route(clients, fast_answers):
    fast, _ = clients
    body = orjson.dumps(random_payload(random.Random(2), frame_bytes=64))
    before = len(fast_answers)
    first = post(fast, body, **{"Idempotency-Key": "k-1"})
    again = post(fast, body, **{"Idempotency-Key": "k-1"})
    assert fast_answers[before:] == [], "the route handled both"
    assert first.status_code == 202 and first.json()["message_id"] != MESSAGE_ID
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")


BAD_BODIES = [
    b"", b"nope", b"[]", b"{}", b'{"device_id": 1}', b"\xff\xfe", b'{"a": NaN}',
    orjson.dumps(random_payload(random.Random(3), frame_bytes=64) | {"extra": 1}),
    orjson.dumps(random_payload(random.Random(4), frame_bytes=64) | {"device_id": ""}),
    # Where the two JSON parsers could differ: a lone surrogate escape, a byte that is not UTF-8.
    orjson.dumps(random_payload(random.Random(5), frame_bytes=64) | {"device_id": "?"}).replace(b'"?"', b'"\\ud800"'),
    orjson.dumps(random_payload(random.Random(6), frame_bytes=64) | {"device_id": "?"}).replace(b'"?"', b'"\xc3"'),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_refusals_are_the_routes_own_answers(clients, body):
    fast, plain = clients
    a, b = post(fast, body), post(plain, body)
    assert (a.status_code, a.json()) == (b.status_code, b.json())
    assert a.status_code == 422


@given(st.data())
def test_any_mutation_of_a_payload_is_answered_the_same_by_both_paths(clients, data):
    fast, plain = clients
    payload = random_payload(random.Random(data.draw(st.integers(0, 1000))), frame_bytes=16)
    path = data.draw(st.sampled_from(["device_id", "client_id", "created_at", "data.license_id",
                                      "data.preds.0.prob", "data.preds.0.image_frame", "data.preds.0.tags"]))
    value = data.draw(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                st.text(max_size=20), st.lists(st.text(max_size=5), max_size=3)))
    target = payload
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    body = json.dumps(payload).encode()  # the stdlib: it also writes integers past 64 bits
    a, b = post(fast, body), post(plain, body)
    assert (a.status_code, a.json()) == (b.status_code, b.json())


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_other_content_types_get_the_routes_415(clients, content_type):
    fast, plain = clients
    body = orjson.dumps(random_payload(random.Random(5), frame_bytes=64))
    a = fast.post("/api", content=body, headers={"content-type": content_type})
    b = plain.post("/api", content=body, headers={"content-type": content_type})
    assert (a.status_code, a.json()) == (b.status_code, b.json()) and a.status_code == 415


def test_a_chunked_body_over_the_limit_is_413_on_both_paths(clients):
    from config import get_settings

    fast, plain = clients
    too_big = b"x" * (get_settings().max_body_bytes + 1)

    def chunks():
        for start in range(0, len(too_big), 65536):
            yield too_big[start : start + 65536]

    a = fast.post("/api", content=chunks(), headers={"content-type": "application/json"})
    b = plain.post("/api", content=chunks(), headers={"content-type": "application/json"})
    assert (a.status_code, a.json()) == (b.status_code, b.json()) and a.status_code == 413


def test_a_broker_refusal_is_the_same_503_with_retry_after(clients, monkeypatch):
    from app.publishing import broker_unavailable

    async def refuse(*args, **kwargs):
        raise broker_unavailable("no confirm in time")

    monkeypatch.setattr(app.routers.ingest, "publish", refuse)
    fast, plain = clients
    body = orjson.dumps(random_payload(random.Random(6), frame_bytes=64))
    a, b = post(fast, body), post(plain, body)
    assert (a.status_code, a.json(), a.headers["retry-after"]) == (b.status_code, b.json(), b.headers["retry-after"])
    assert a.status_code == 503


def test_fastapi_opentelemetry_is_off_unless_asked_for():
    """It would check for OpenTelemetry providers on every request; Prometheus is the metrics path."""
    from config import Settings

    assert create_app(Settings())._telemetry["tracing"] is False
    assert create_app(Settings(opentelemetry=True))._telemetry["tracing"] is True
