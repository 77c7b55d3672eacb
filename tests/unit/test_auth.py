"""Every route states its scope and answers 401/403 before it reads a body; the fast path checks the same."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app import auth
from app.auth import Authenticator
from app.keys import SCOPES, add_key
from app.main import create_app
from app.schemas import SEED_EXAMPLE
from config import Settings

#: Open by design: probes, the schema and the pages that ask for a key (they hold no data).
OPEN_PATHS = {"/health", "/ready", "/"}


@pytest.fixture()
def keys(tmp_path, monkeypatch):
    """An app with a keys file: name -> secret for a key per scope, and one bound to client_id `acme`."""
    path = tmp_path / "api-keys.json"
    made = {scope: add_key(path, f"{scope}-key", [scope]) for scope in SCOPES}
    made["acme-only"] = add_key(path, "acme-only", ["ingest"], ["acme"])
    authenticator = Authenticator(Settings(api_keys_file=path))
    monkeypatch.setattr(auth, "get_authenticator", lambda: authenticator)
    return made


@pytest.fixture()
def published(monkeypatch):
    from app.routers import ingest

    sent = []

    async def fake_publish(actor, body, sender, message_id=None):
        sent.append((body, sender))
        return "0f5bb7a4-2c3e-4d6b-9a41-5c1e8f7d2b90"

    monkeypatch.setattr(ingest, "publish", fake_publish)
    return sent


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def guarded_operations():
    schema = create_app().openapi()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if "security" in operation:
                yield pytest.param(method, path.replace("{message_id}", "6f1c3cfa-5d8c-4d67-9a53-2f0b1f1b7c11"),
                                   operation["security"][0]["ApiKey"][0], id=f"{method.upper()} {path}")


def test_every_route_but_the_probes_and_pages_states_one_scope_in_the_schema():
    schema = create_app().openapi()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "ik_<id>_<secret>",
        "description": schema["components"]["securitySchemes"]["ApiKey"]["description"]}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path in OPEN_PATHS:
                assert "security" not in operation, f"{method} {path}"
                continue
            [requirement] = operation["security"]
            [scope] = requirement["ApiKey"]
            assert scope in SCOPES, f"{method} {path}"
            assert {"401", "403", "429"} <= set(operation["responses"]), f"{method} {path}"


@pytest.mark.parametrize(("method", "path", "scope"), list(guarded_operations()))
def test_a_guarded_route_answers_401_with_www_authenticate_without_a_key_before_reading_its_body(
        keys, method, path, scope):
    client = TestClient(create_app())
    # A body that is not even valid for the route: 401 still comes first.
    response = client.request(method, path, content=b"\x00not a body", headers={"content-type": "application/json"})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    revoked = client.request(method, path, headers=bearer("ik_000000000000_" + "A" * 43))
    assert revoked.status_code == 401 and "unknown or revoked" in revoked.json()["detail"]


@pytest.mark.parametrize(("method", "path", "scope"), list(guarded_operations()))
def test_a_key_without_the_routes_scope_gets_403_naming_the_scope(keys, method, path, scope):
    other = next(s for s in SCOPES if s not in (scope, "admin"))
    response = TestClient(create_app()).request(method, path, headers=bearer(keys[other]))
    assert response.status_code == 403
    assert f"lacks the scope {scope!r}" in response.json()["detail"]


def test_metrics_need_the_metrics_scope(keys):
    client = TestClient(create_app())
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(keys["read"])).status_code == 403
    assert client.get("/metrics", headers=bearer(keys["metrics"])).status_code == 200


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "route"])
def test_post_api_refuses_a_missing_key_a_missing_scope_and_a_foreign_client_id_on_either_path(
        keys, published, fast):
    client = TestClient(create_app(fast_ingest=fast))
    assert client.post("/api", json=SEED_EXAMPLE).status_code == 401
    assert client.post("/api", json=SEED_EXAMPLE, headers=bearer(keys["read"])).status_code == 403
    foreign = client.post("/api", json={**SEED_EXAMPLE, "client_id": "globex"}, headers=bearer(keys["acme-only"]))
    assert foreign.status_code == 403
    assert foreign.json()["detail"][0]["field"] == "client_id"
    assert published == []
    accepted = client.post("/api", json=SEED_EXAMPLE, headers=bearer(keys["acme-only"]))
    assert accepted.status_code == 202
    [(_body, sender)] = published
    assert (sender.key, sender.tenant) == ("acme-only", "acme-only")


def test_an_upload_without_a_key_is_refused_before_its_multipart_body_is_parsed(keys):
    response = TestClient(create_app()).post(
        "/file/upload", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 401  # not 400 "Invalid multipart data": the body was never read


def test_without_a_keys_file_the_api_is_open_with_every_scope(published):
    client = TestClient(create_app())
    assert client.post("/api", json=SEED_EXAMPLE).status_code == 202
    assert client.get("/metrics").status_code == 200


def test_a_host_header_not_in_allowed_hosts_is_refused():
    client = TestClient(create_app(Settings(allowed_hosts="127.0.0.1 localhost")), base_url="http://evil.example")
    assert client.get("/health").status_code == 400
    assert TestClient(create_app(Settings(allowed_hosts="127.0.0.1")), base_url="http://127.0.0.1:8000").get(
        "/health").status_code == 200


@pytest.mark.parametrize(("host", "settings", "refused"), [
    ("127.0.0.1", {}, False),
    ("::1", {}, False),
    ("0.0.0.0", {}, True),
    ("0.0.0.0", {"auth_by_proxy": True}, False),
])
def test_serving_beyond_loopback_needs_keys_or_an_explicit_proxy(tmp_path, host, settings, refused):
    problem = auth.serving_problem(Settings(api_host=host, api_keys_file=tmp_path / "none.json", **settings))
    assert (problem is not None) == refused
    if refused:
        assert "API_KEYS_FILE" in problem and "python -m app.keys add" in problem
    add_key(tmp_path / "none.json", "first", ["admin"])
    assert auth.serving_problem(Settings(api_host=host, api_keys_file=tmp_path / "none.json")) is None


def test_an_open_api_refuses_a_request_that_reached_it_on_a_network_address(tmp_path):
    from fastapi import HTTPException

    authenticator = Authenticator(Settings(api_keys_file=tmp_path / "none.json"))
    assert authenticator.principal_for(None, ("127.0.0.1", 8000)) is auth.OPEN
    assert authenticator.principal_for(None, None) is auth.OPEN  # a Unix socket
    with pytest.raises(HTTPException) as refused:
        authenticator.principal_for(None, ("192.0.2.7", 8000))
    assert refused.value.status_code == 503 and "API_KEYS_FILE" in refused.value.detail
    assert refused.value.headers["Retry-After"] == "5"  # keys are re-read within a second
    behind_proxy = Authenticator(Settings(api_keys_file=tmp_path / "none.json", auth_by_proxy=True))
    assert behind_proxy.principal_for(None, ("192.0.2.7", 8000)) is auth.OPEN


def test_an_authenticated_detection_is_still_answered_by_the_fast_path(keys, published, monkeypatch):
    from tests.support.fast_path import spy_on_fast_answers

    answered = spy_on_fast_answers(monkeypatch)
    response = TestClient(create_app()).post("/api", json=SEED_EXAMPLE, headers=bearer(keys["ingest"]))
    assert response.status_code == 202 and answered == [202]


@pytest.mark.parametrize(("headers", "refused"), [
    ({"Sec-Fetch-Site": "cross-site"}, True),
    ({"Sec-Fetch-Site": "same-site"}, True),
    ({"Origin": "http://evil.example"}, True),
    ({"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:8000"}, False),
    ({"Origin": "http://localhost:8000"}, False),
    ({}, False),  # curl, scripts
])
@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "route"])
def test_an_open_api_refuses_what_another_sites_page_sends_it(published, headers, refused, fast):
    client = TestClient(create_app(fast_ingest=fast))
    response = client.post("/api", json=SEED_EXAMPLE, headers=headers)
    assert response.status_code == (403 if refused else 202), response.text
    upload = client.post("/file/upload", files={"file": ("a.ndjson", b"")}, headers=headers)
    assert (upload.status_code == 403) == refused


def test_a_key_changed_in_the_file_gets_a_principal_of_its_new_scopes(tmp_path):
    import orjson

    from app.keys import RELOAD_INTERVAL_SECONDS
    from tests.support.waiting import wait_for

    path = tmp_path / "keys.json"
    secret = add_key(path, "cams", ["ingest"])
    authenticator = Authenticator(Settings(api_keys_file=path))
    header = f"Bearer {secret}"
    first = authenticator.principal_for(header)
    assert authenticator.principal_for(header) is first and first.scopes == {"ingest"}
    document = orjson.loads(path.read_bytes())
    document["keys"][0]["scopes"] = ["ingest", "read"]  # an operator's edit: same secret, more scopes
    path.write_bytes(orjson.dumps(document))
    wait_for(lambda: authenticator.principal_for(header).scopes == {"ingest", "read"},
             timeout=RELOAD_INTERVAL_SECONDS * 3, what="the new scopes")
