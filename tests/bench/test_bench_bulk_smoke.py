"""bench/bulk.py runs from a clean checkout, and every way of enqueuing it compares is exact."""

from __future__ import annotations

import pytest

from bench.bulk import main

pytestmark = pytest.mark.slow


def test_bulk_benchmark_smoke_run_loses_and_duplicates_nothing():
    results = main(["--payloads", "200", "--batch-size", "50"])
    assert [result["method"] for result in results] == ["single", "batch", "file"]
    for result in results:
        assert result["rows"] > 0 and result["enqueue_seconds"] > 0
        assert (result["lost_rows"], result["duplicated_rows"]) == (0, 0), result
