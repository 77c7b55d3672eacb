"""Prometheus metrics from the API and the workers move by exactly what a known load did."""

from __future__ import annotations

import random

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.schemas import SEED_EXAMPLE
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.rabbit import queue_state
from tests.support.waiting import wait_for


def metric(source: str | httpx.Client, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`; `source`: the workers' metrics
    URL, or a stack's client (the API's /metrics needs a key)."""
    text = source.get("/metrics").text if isinstance(source, httpx.Client) else httpx.get(source, timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def test_api_and_worker_metrics_count_a_known_load_exactly(stack):
    api, workers = stack.http, stack.metrics_url
    wait_for(lambda: httpx.get(workers, timeout=5).status_code == 200, timeout=30, what="the workers' metrics server")
    wait_for(lambda: queue_state(stack.rabbitmq_url, "ingest")[0] == 0, timeout=60, what="an idle pipeline")

    def snapshot() -> dict[str, float]:
        return {
            "accepted": metric(api, "ingest_http_requests_total", route="/api", status="202"),
            "refused": metric(api, "ingest_http_requests_total", route="/api", status="422"),
            "published": metric(api, "ingest_publish_duration_seconds_count", queue="ingest"),
            "processed": metric(workers, "dramatiq_messages_total", actor_name="write_detection_rows"),
            "messages": metric(workers, "ingest_messages_written_total"),
            "rows": metric(workers, "ingest_rows_written_total"),
            "fsyncs": metric(workers, "ingest_fsync_duration_seconds_count"),
        }

    before = snapshot()
    rng = random.Random(7)
    payloads = [random_payload(rng, frame_bytes=64) for _ in range(20)]
    rows = sum(len(payload["data"]["preds"]) for payload in payloads)
    assert {answer.status for answer in post_all(f"{stack.base_url}/api", payloads, key=stack.admin_key)} == {202}
    assert stack.http.post("/api", json={**SEED_EXAMPLE, "device_id": ""}).status_code == 422

    wait_for(lambda: snapshot()["rows"] >= before["rows"] + rows, timeout=60, what=f"{rows} more rows in the metrics")
    wait_for(lambda: snapshot()["processed"] >= before["processed"] + 20, timeout=30, what="20 more processed")
    after = snapshot()
    delta = {name: after[name] - before[name] for name in after}
    assert delta["accepted"] == 20
    assert delta["refused"] == 1
    assert delta["published"] == 20
    assert delta["processed"] == 20
    assert delta["messages"] == 20
    assert delta["rows"] == rows
    assert 1 <= delta["fsyncs"] <= 20, "group commit: at most one fsync per message"


def test_worker_metrics_include_dramatiqs_own(stack):
    text = wait_for(lambda: httpx.get(stack.metrics_url, timeout=5).text, timeout=30, what="the metrics server")
    for name in ("dramatiq_message_duration_milliseconds", "dramatiq_messages_inprogress", "ingest_rows_written_total"):
        assert name in text
