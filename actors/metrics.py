"""Worker metrics of our own, beside Dramatiq's: what the sink did.

Served by Dramatiq's exposition server (PROMETHEUS_PORT): entrypoint_dramatiq.sh
sets PROMETHEUS_MULTIPROC_DIR to the same directory Dramatiq uses, so these
samples land in the files it serves. prometheus_client is imported only after
process boot, like Dramatiq does, so the multiprocess mode is certain.
"""

from __future__ import annotations

from dramatiq.middleware import Middleware

from pipeline.csv_sink import CommitReport, CsvSink, SinkFault


class SinkMetrics(Middleware):
    """ingest_rows_written_total, ingest_duplicate_messages_total, ingest_fsync_duration_seconds,
    and while the disk refuses the CSV: ingest_sink_stalled, ingest_sink_write_failures_total."""

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
        self.stalled = prom.Gauge(
            "ingest_sink_stalled",
            "1 while the CSV cannot be written and this worker holds its messages, retrying (see /status).",
            multiprocess_mode="livemax", registry=registry,
        )
        self.failures = prom.Counter(
            "ingest_sink_write_failures_total", "Tries to write the CSV that the disk refused, by reason.",
            ["reason"], registry=registry,
        )
        self.sink.observers.append(self.observe)
        self.sink.fault_observers.append(self.observe_fault)

    def observe_fault(self, fault: SinkFault | None) -> None:
        self.stalled.set(0 if fault is None else 1)
        if fault is not None:
            self.failures.labels(fault.reason).inc()

    def observe(self, report: CommitReport) -> None:
        self.rows.inc(report.rows_written)
        self.messages.inc(report.messages_written)
        self.duplicates.inc(report.duplicates)
        if report.messages_written:
            self.fsync.observe(report.fsync_seconds)
