"""bench.ledger runs from a clean checkout and counts every message its processes committed."""

from __future__ import annotations

from bench.ledger import main


def test_the_ledger_benchmark_commits_every_batch_from_every_process_and_reports_its_cpu():
    report = main(["--processes", "2", "--commits", "25", "--batch", "3", "--row-bytes", "200"])
    assert report["commits"] == 50
    assert report["user_us_per_commit"] + report["system_us_per_commit"] > 0
