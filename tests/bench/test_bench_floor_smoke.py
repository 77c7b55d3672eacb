"""bench.floor runs from a clean checkout, and each floor answers every request or takes every message."""

from __future__ import annotations

import pytest

from bench.floor import main

pytestmark = pytest.mark.slow


def test_the_floor_benchmark_serves_every_request_and_takes_every_message_with_and_without_middleware():
    parts = {part["part"]: part for part in main(["--requests", "300", "--concurrency", "16"])}
    assert set(parts) == {"http", "http+schema", "http+publish", "api (ours)", "dramatiq", "dramatiq+defaults",
                          "dramatiq+sink"}
    for part in parts.values():
        assert part["count"] == 300 and part["cpu_ms_each"] > 0, part
