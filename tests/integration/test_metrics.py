"""Workers expose Dramatiq's Prometheus metrics on PROMETHEUS_PORT."""

from __future__ import annotations

import random

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.waiting import wait_for


def processed(stack, actor: str) -> float:
    text = httpx.get(stack.metrics_url, timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dramatiq_messages_total" and sample.labels.get("actor_name") == actor:
                total += sample.value
    return total


def test_worker_metrics_count_the_messages_processed(stack):
    before = wait_for(lambda: processed(stack, "write_detection_rows") + 1, timeout=30, what="the metrics server") - 1
    rng = random.Random(7)
    answers = post_all(f"{stack.base_url}/api", [random_payload(rng, frame_bytes=64) for _ in range(20)])
    assert {answer.status for answer in answers} == {202}
    wait_for(
        lambda: processed(stack, "write_detection_rows") >= before + 20,
        timeout=60,
        what="dramatiq_messages_total to count 20 more messages",
    )
    text = httpx.get(stack.metrics_url, timeout=5).text
    for name in ("dramatiq_message_duration_milliseconds", "dramatiq_messages_inprogress"):
        assert name in text
