"""The benchmark runs from a clean checkout and its pipeline is exact (speed is judged in bench/RESULTS.md)."""

from __future__ import annotations

import pytest

from bench.run import main

pytestmark = pytest.mark.slow


def test_benchmark_smoke_run_loses_and_duplicates_nothing():
    report = main(["--requests", "500", "--concurrency", "32", "--label", "smoke"])
    assert report["accepted"] == 500
    assert report["rows"] > 0
    assert (report["lost_rows"], report["duplicated_rows"], report["unexpected_rows"]) == (0, 0, 0)
    assert report["post_latency_ms"][99] > 0 and report["peak_rss_mb"]["api"] > 0
