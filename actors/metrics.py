"""Worker metrics of our own, beside Dramatiq's: what the sink did.

Served by Dramatiq's exposition server (PROMETHEUS_PORT): entrypoint_dramatiq.sh
sets PROMETHEUS_MULTIPROC_DIR to the same directory Dramatiq uses, so these
samples land in the files it serves. prometheus_client is imported only after
process boot, like Dramatiq does, so the multiprocess mode is certain.
"""

from __future__ import annotations

from dramatiq.middleware import Middleware

from pipeline.csv_sink import CommitReport, CsvSink


class SinkMetrics(Middleware):
    """ingest_rows_written_total, ingest_duplicate_messages_total, ingest_fsync_duration_seconds."""

    def __init__(self, sink: CsvSink):
        self.sink = sink

    def after_process_boot(self, broker) -> None:
        import prometheus_client as prom

        registry = prom.CollectorRegistry()  # samples go to the multiprocess files; this only scopes names
        self.rows = prom.Counter("ingest_rows_written_total", "CSV rows written and fsynced.", registry=registry)
        self.messages = prom.Counter(
            "ingest_messages_written_total", "Messages whose rows were written.", registry=registry
        )
        self.duplicates = prom.Counter(
            "ingest_duplicate_messages_total",
            "Messages already in the CSV (redeliveries, retries, re-sends): acknowledged, not written again.",
            registry=registry,
        )
        self.fsync = prom.Histogram(
            "ingest_fsync_duration_seconds",
            "Time of one group commit's fdatasync.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=registry,
        )
        self.sink.observers.append(self.observe)

    def observe(self, report: CommitReport) -> None:
        self.rows.inc(report.rows_written)
        self.messages.inc(report.messages_written)
        self.duplicates.inc(report.duplicates)
        if report.messages_written:
            self.fsync.observe(report.fsync_seconds)
