"""app/request_context.RequestContext: one layer gives every request its id, its access line and its metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.main import create_app
from config import Settings


def requests_counted(method: str, route: str, status: str) -> float:
    return REGISTRY.get_sample_value(
        "ingest_http_requests_total", {"method": method, "route": route, "status": status}
    ) or 0.0


def durations_counted(method: str, route: str) -> float:
    return REGISTRY.get_sample_value(
        "ingest_http_request_duration_seconds_count", {"method": method, "route": route}
    ) or 0.0


def test_a_request_is_counted_timed_and_answered_with_its_id():
    client = TestClient(create_app(Settings()))
    before, timed_before = requests_counted("GET", "/health", "200"), durations_counted("GET", "/health")
    answer = client.get("/health", headers={"X-Request-ID": "req-observed-1"})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "req-observed-1"
    assert requests_counted("GET", "/health", "200") == before + 1
    assert durations_counted("GET", "/health") == timed_before + 1


def test_a_body_refused_before_routing_is_counted_too():
    client = TestClient(create_app(Settings(max_body_bytes=1024)))
    before = requests_counted("POST", "unmatched", "413")
    answer = client.post("/api", content=b"{" + b" " * 4096 + b"}", headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.headers["x-request-id"]
    assert requests_counted("POST", "unmatched", "413") == before + 1
