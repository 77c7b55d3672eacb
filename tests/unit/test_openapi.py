"""The OpenAPI schema is the API's manual: every route is documented, and its examples are true.

The structural checks walk whatever routes the app has, so a route added
without a summary, examples or its error answers fails here, by name. The
examples are then checked against their schemas and, for the routes below,
against what the app really answers.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import re
from datetime import datetime
from types import SimpleNamespace

import jsonschema_rs  # comes with schemathesis (requirements-dev.txt)
import pytest
from fastapi import routing
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from app.idempotency import get_idempotency_store
from app.limits import require_json
from app.main import app
from app.publishing import RETRY_AFTER_SECONDS
from app.schemas import ErrorResponse, IngestPayload
from tests.support.memory_store import MemoryStore

#: Written out rather than imported: a change to the seed's example must show up here.
SEED = {
    "device_id": "cam-01",
    "client_id": "acme",
    "created_at": "2023-02-13 10:49:06.613585",
    "data": {
        "license_id": "lic-42",
        "preds": [{"image_frame": "aGVsbG8gd29ybGQ=", "prob": 0.87, "tags": ["person", "entrance"]}],
    },
}

#: POSTs that never publish to RabbitMQ, so cannot answer 503. None yet.
POSTS_WITHOUT_BROKER: frozenset[str] = frozenset()

SCHEMA = app.openapi()
# Walked as get_openapi walks them: app.routes holds included routers, not their routes.
ROUTES = {
    (method.lower(), route.path_format): route
    for route in routing.iter_route_contexts(app.routes)
    if isinstance(route.original_route, routing.APIRoute)
    for method in route.methods
}
OPERATIONS = [
    pytest.param(path, method, operation, id=f"{method.upper()} {path}")
    for path, item in SCHEMA["paths"].items()
    for method, operation in item.items()
]


def label(path: str, method: str) -> str:
    return f"{method.upper()} {path}"


def resolve(schema: dict) -> dict:
    while "$ref" in schema:
        *_, name = schema["$ref"].split("/")
        schema = SCHEMA["components"]["schemas"][name]
    return schema


def json_media(content: dict) -> dict | None:
    for media_type, media in content.items():
        if media_type == "application/json" or re.fullmatch(r"application/.+\+json", media_type):
            return media
    return None


def examples_of(media: dict) -> list:
    """Media-type examples first (what Swagger UI offers), then those of the schema."""
    found = [example["value"] for example in media.get("examples", {}).values() if "value" in example]
    if "example" in media:
        found.append(media["example"])
    return found + list(resolve(media.get("schema", {})).get("examples", []))


def schema_errors(schema: dict, instance) -> list[str]:
    # Formats unchecked: the seed's `created_at` (a space, no zone) is accepted, yet no RFC 3339 date-time.
    validator = jsonschema_rs.Draft202012Validator(
        {**schema, "components": SCHEMA["components"]}, validate_formats=False
    )
    return [f"/{'/'.join(map(str, error.instance_path))}: {error.message}" for error in validator.iter_errors(instance)]


def json_body(operation: dict) -> dict | None:
    return json_media(operation.get("requestBody", {}).get("content", {}))


def dependency_calls(dependant) -> set:
    calls = {dependant.call}
    for sub in dependant.dependencies:
        calls |= dependency_calls(sub)
    return calls


# -- every route, whoever added it --------------------------------------------------------


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_every_operation_has_a_summary(path, method, operation):
    assert operation.get("summary", "").strip(), f"{label(path, method)} has no summary"


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_every_json_request_body_has_an_example(path, method, operation):
    media = json_body(operation)
    if media is not None:
        assert examples_of(media), f"{label(path, method)}: no request example (openapi_examples= or the model's)"


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_every_response_is_described_and_every_json_one_has_an_example(path, method, operation):
    for code, response in operation["responses"].items():
        assert response.get("description", "").strip(), f"{label(path, method)} {code}: no description"
        media = json_media(response.get("content", {}))
        if media is not None:
            assert examples_of(media), f"{label(path, method)} {code}: no example of the answer"


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_every_operation_documents_the_400_of_a_host_not_allowed(path, method, operation):
    assert "400" in operation["responses"], f"{label(path, method)}: the Host check's 400 is not documented"


def test_a_host_not_allowed_is_answered_400_before_any_route_open_ones_included():
    with TestClient(app) as client:
        for path in ("/health", "/api/some-id"):
            answer = client.get(path, headers={"host": "rebound.example"})
            assert answer.status_code == 400 and answer.text == "Invalid host header", path


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_no_operation_promises_fastapis_default_validation_body(path, method, operation):
    """Our handler answers 422 as `ErrorResponse`; FastAPI documents its own shape unless told otherwise."""
    assert "HTTPValidationError" not in json.dumps(operation["responses"]), (
        f"{label(path, method)} documents FastAPI's default 422 body; "
        "document ours with app.errors.validation_response(...)"
    )


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_operations_reading_a_body_document_its_errors(path, method, operation):
    responses = operation["responses"]
    if json_body(operation) is not None:
        assert "422" in responses, f"{label(path, method)}: takes JSON, 422 undocumented (validation_response)"
    if "requestBody" in operation:
        assert "413" in responses, f"{label(path, method)}: takes a body, 413 undocumented (JSON_BODY_RESPONSES)"
    route = ROUTES[(method, path)]
    if require_json in dependency_calls(route.dependant):
        assert "415" in responses, f"{label(path, method)}: requires JSON, 415 undocumented (JSON_BODY_RESPONSES)"


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_publishing_operations_document_503_with_retry_after(path, method, operation):
    responses = operation["responses"]
    if method == "post" and path not in POSTS_WITHOUT_BROKER:
        assert "503" in responses, (
            f"{label(path, method)} publishes to RabbitMQ but does not document 503 "
            "(app.errors.UNAVAILABLE_RESPONSE; or list it in POSTS_WITHOUT_BROKER)"
        )
    if "503" in responses:
        assert "Retry-After" in responses["503"].get("headers", {}), f"{label(path, method)} 503: Retry-After"


def _keys(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_every_bound_is_written_as_json_schema_spells_it(path, method, operation):
    """pydantic's own `ge`/`le` leak into the schema when a validator comes before `Query(...)`; clients
    and fuzzers read only `minimum`/`maximum`, so the bound would be invisible to them."""
    leaked = {"ge", "le", "gt", "lt"} & set(_keys(operation.get("parameters", [])))
    assert not leaked, f"{label(path, method)}: {leaked} (put Query(...) before the validator)"


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_every_example_fits_its_schema(path, method, operation):
    where = label(path, method)
    for parameter in operation.get("parameters", []):
        values = [e["value"] for e in parameter.get("examples", {}).values() if "value" in e]
        values += [parameter["example"]] if "example" in parameter else []
        for value in values + parameter.get("schema", {}).get("examples", []):
            assert not schema_errors(parameter["schema"], value), f"{where} parameter {parameter['name']}: {value!r}"

    media = json_body(operation)
    if media is not None:
        body_type = TypeAdapter(ROUTES[(method, path)].body_field.field_info.annotation)
        for example in examples_of(media):
            assert not schema_errors(media["schema"], example), (where, schema_errors(media["schema"], example))
            # What the API does with it: validate the parsed JSON.
            body_type.validate_python(json.loads(json.dumps(example)))

    for code, response in operation["responses"].items():
        answer = json_media(response.get("content", {}))
        if answer is None:
            continue
        for example in examples_of(answer):
            errors = schema_errors(answer.get("schema", {}), example)
            assert not errors, (f"{where} {code}", errors)
            if code == "422":
                detail = ErrorResponse.model_validate(example).detail
                assert isinstance(detail, list) and detail, f"{where} 422: `detail` lists the fields"
        for name, header in response.get("headers", {}).items():
            if "example" in header:
                assert not schema_errors(header["schema"], header["example"]), f"{where} {code} header {name}"


# -- links: how the answers chain ------------------------------------------------------------

OPERATION_IDS = {operation["operationId"]: operation for item in SCHEMA["paths"].values() for operation in item.values()}
LINKS = [
    pytest.param(operation, code, link, id=f"{label(path, method)} {code} -> {name}")
    for path, item in SCHEMA["paths"].items()
    for method, operation in item.items()
    for code, response in operation["responses"].items()
    for name, link in response.get("links", {}).items()
]


def body_pointer(expression: str) -> list[str]:
    prefix = "$response.body#/"
    assert expression.startswith(prefix), f"{expression}: links here take values from the answer's body"
    return expression[len(prefix):].split("/")


def follow(document, pointer: list[str]):
    for part in pointer:
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


def link_expressions(link: dict) -> list[tuple[str, str]]:
    """(what it sets, the expression) for each parameter and body field of a link."""
    found = list(link.get("parameters", {}).items())
    return found + list(link.get("requestBody", {}).items())


def test_the_answers_that_name_a_new_message_link_to_its_status():
    linked = {(path, method) for path, item in SCHEMA["paths"].items() for method, operation in item.items()
              if any(response.get("links") for response in operation["responses"].values())}
    assert {("/api", "post"), ("/api/batch", "post"), ("/tasks", "post"), ("/tasks/train", "post"),
            ("/tasks/{message_id}", "get"), ("/dead-letters", "get"), ("/models", "get")} <= linked


@pytest.mark.parametrize(("operation", "code", "link"), LINKS)
def test_every_link_targets_an_operation_and_sets_what_it_takes(operation, code, link):
    target = OPERATION_IDS.get(link["operationId"])
    assert target is not None, f"no operation {link['operationId']!r}"
    names = {parameter["name"] for parameter in target.get("parameters", [])}
    assert set(link.get("parameters", {})) <= names, (link["operationId"], names)
    if "requestBody" in link:
        fields = resolve(json_body(target)["schema"])["properties"]
        assert set(link["requestBody"]) <= set(fields), (link["operationId"], set(fields))


@pytest.mark.parametrize(("operation", "code", "link"), LINKS)
def test_every_link_finds_its_values_in_the_documented_answer(operation, code, link):
    examples = examples_of(json_media(operation["responses"][code]["content"]))
    assert examples, "an answer with links needs an example to check them against"
    for sets, expression in link_expressions(link):
        assert any(_finds(example, body_pointer(expression)) for example in examples), (sets, expression)


def _finds(example, pointer: list[str]) -> bool:
    try:
        return follow(example, pointer) is not None
    except (KeyError, IndexError, ValueError):
        return False


# -- POST /api, as the issue asks -----------------------------------------------------------


def test_the_first_request_example_of_post_api_is_the_seed_example():
    media = json_body(SCHEMA["paths"]["/api"]["post"])
    examples = examples_of(media)
    assert examples[0] == SEED
    assert resolve(media["schema"])["examples"][0] == SEED


def test_post_api_also_shows_several_preds_and_a_zoned_iso_8601_time():
    examples = examples_of(json_body(SCHEMA["paths"]["/api"]["post"]))
    assert any(
        len(example["data"]["preds"]) > 1 and datetime.fromisoformat(example["created_at"]).tzinfo is not None
        for example in examples
    )
    for example in examples:
        IngestPayload.model_validate(example)


def test_the_status_page_is_documented_as_html():
    assert "text/html" in SCHEMA["paths"]["/"]["get"]["responses"]["200"]["content"]


# -- the documented errors are what the app answers -------------------------------------------


@pytest.fixture()
def client():
    from app.main import create_app
    from app.routers import dead_letters

    fresh = create_app()
    store = MemoryStore()
    fresh.dependency_overrides[get_idempotency_store] = lambda: store
    fresh.dependency_overrides[dead_letters.get_office] = lambda: None  # never reached: the request is refused
    return TestClient(fresh)


@pytest.fixture()
def publish_succeeds(monkeypatch):
    from app.routers import ingest

    async def fake_publish(actor, *args, sender, message_id=None):
        return message_id or "id-1"

    monkeypatch.setattr(ingest, "publish", fake_publish)


@pytest.fixture()
def rabbitmq_never_confirms(monkeypatch):
    """The real publish path, with a broker that takes messages and never confirms them."""
    from actors.ingest import write_detection_rows

    broker = write_detection_rows.broker
    monkeypatch.setattr(broker, "queue_ready", lambda queue_name: True)
    monkeypatch.setattr(broker, "publish_message", lambda message, **options: concurrent.futures.Future())
    monkeypatch.setattr(broker, "publish_timeout", 0.01)


def documented(path: str, method: str, code: int):
    return SCHEMA["paths"][path][method]["responses"][str(code)]["content"]["application/json"]["example"]


def digits_aside(text: str) -> str:
    return re.sub(r"\d+", "N", text)


def bad_prob() -> dict:
    body = copy.deepcopy(SEED)
    body["data"]["preds"][0]["prob"] = 1.5
    return body


#: (method, path, URL, request) that gets each route's documented 422.
INVALID_REQUESTS = [
    ("post", "/api", "/api", {"json": bad_prob()}),
    ("post", "/tasks", "/tasks", {"json": {"seconds": -1}}),
    ("get", "/dead-letters", "/dead-letters", {"params": {"limit": 0}}),
    ("post", "/dead-letters/replay", "/dead-letters/replay", {"json": {"queue": "orders"}}),
    ("post", "/dead-letters/discard", "/dead-letters/discard", {"json": {"queue": "ingest", "message_ids": []}}),
    ("get", "/api/{message_id}", "/api/not!an-id", {}),
    ("get", "/tasks/{message_id}", "/tasks/not!an-id", {}),
]


@pytest.mark.parametrize(
    ("method", "path", "url", "request_options"),
    INVALID_REQUESTS,
    ids=[label(path, method) for method, path, *_ in INVALID_REQUESTS],
)
def test_the_422_examples_are_real_answers(client, method, path, url, request_options):
    response = client.request(method.upper(), url, **request_options)
    assert response.status_code == 422
    assert response.json() == documented(path, method, 422)


@pytest.mark.parametrize("limit", ["9\t", " 9", "+9", "9_0", "\u0669"])
def test_an_integer_query_parameter_is_digits_and_nothing_else(client, limit):
    """The schema says integer; int() alone would read each of these as a number (schemathesis found `9\\t`)."""
    response = client.get("/dead-letters", params={"limit": limit})
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["detail"]] == ["limit"]


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_the_415_and_413_examples_are_real_answers(client, path, method, operation):
    responses = operation["responses"]
    if "{" in path and {"413", "415"} & set(responses):
        pytest.skip("would need a real path parameter")
    if "415" in responses:
        response = client.request(method.upper(), path, content=b"hello", headers={"content-type": "text/plain"})
        assert (response.status_code, response.json()) == (415, documented(path, method, 415))
    if "413" in responses:
        # Refused on the declared length, whatever the route's limit; the numbers differ, not the words.
        declared = {"content-type": "application/json", "content-length": str(10**12)}
        response = client.request(method.upper(), path, content=b"{}", headers=declared)
        assert response.status_code == 413
        assert digits_aside(response.json()["detail"]) == digits_aside(documented(path, method, 413)["detail"])


def test_the_409_and_duplicate_examples_of_post_api_are_real_answers(client, publish_succeeds):
    first = client.post("/api", json=SEED, headers={"Idempotency-Key": "key-1"})
    retry = client.post("/api", json=SEED, headers={"Idempotency-Key": "key-1"})
    reused = client.post("/api", json=SEED | {"device_id": "cam-02"}, headers={"Idempotency-Key": "key-1"})

    assert first.status_code == 202
    assert retry.status_code == 200
    assert retry.json() == documented("/api", "post", 200) | {"message_id": first.json()["message_id"]}
    assert (reused.status_code, reused.json()) == (409, documented("/api", "post", 409))


def test_the_503_example_of_post_api_is_a_real_answer(client, rabbitmq_never_confirms):
    response = client.post("/api", json=SEED)
    documented_503 = SCHEMA["paths"]["/api"]["post"]["responses"]["503"]
    assert response.status_code == 503
    assert response.json() == documented_503["content"]["application/json"]["example"]
    assert response.headers["Retry-After"] == str(documented_503["headers"]["Retry-After"]["example"])
    assert documented_503["headers"]["Retry-After"]["example"] == RETRY_AFTER_SECONDS


@pytest.mark.parametrize("connected", [True, False])
def test_the_ready_examples_are_real_answers(client, monkeypatch, connected):
    from app.routers import health

    documented_ready = SCHEMA["paths"]["/ready"]["get"]["responses"]["200" if connected else "503"]
    example = documented_ready["content"]["application/json"]["example"]
    publisher = SimpleNamespace(ready=connected, last_error=example.get("broker", ""))
    monkeypatch.setattr(health, "broker", SimpleNamespace(publisher=publisher))

    response = client.get("/ready")
    assert response.json() == example
    if not connected:
        assert response.status_code == 503
        assert response.headers["Retry-After"] == str(documented_ready["headers"]["Retry-After"]["example"])


def test_the_health_example_is_the_real_answer(client):
    assert client.get("/health").json() == documented("/health", "get", 200)


def test_the_console_and_its_script_run_under_a_policy_that_lets_nothing_else_in(client):
    for path, kind in (("/", "text/html"), ("/console.js", "text/javascript")):
        answer = client.get(path)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
    page = client.get("/").text
    assert '<script src="/console.js"></script>' in page and "<script>" not in page, "no inline script to allow"
