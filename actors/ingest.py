"""Detections: turn one enqueued payload into CSV rows, exactly once."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from loguru import logger

from actors import INGEST_QUEUE, broker, settings
from actors.metrics import SinkMetrics
from actors.stats import SharedStats
from pipeline.csv_sink import CsvSink, Rotation
from pipeline.rows import encode_rows
from pipeline.shard_files import host_label

sink = CsvSink(settings.csv_path, retry_max_seconds=settings.sink_retry_max_seconds,
               rotation=Rotation(settings.csv_rotate_bytes, settings.csv_rotate_seconds, host_label(settings.csv_host)),
               linger_seconds=settings.sink_commit_linger_ms / 1000, linger_until=settings.worker_threads)
broker.add_middleware(SinkMetrics(sink))
# The shared status counters hear what the sink committed, and when the disk stops it.
for shared in (m for m in broker.middleware if isinstance(m, SharedStats)):
    sink.observers.append(shared.observe)
    sink.fault_observers.append(shared.observe_fault)


# The sink waits out a disk that cannot be written, however long it takes; a time limit would turn
# that wait into a failure and spend a retry. RabbitMQ's consumer_timeout (30 min by default) still
# returns a message held longer, and its redelivery is recognised once the rows are written.
@dramatiq.actor(queue_name=INGEST_QUEUE, time_limit=24 * 60 * 60 * 1000)
def write_detection_rows(payload: dict[str, Any]) -> dict[str, Any]:
    """Append one row per pred; the result is what GET /api/{message_id} shows.

    Returning is what makes Dramatiq ack, so the rows are on disk first.
    """
    message = CurrentMessage.get_current_message()
    data, rows = encode_rows(message.message_id, payload)
    origin = (message.options.get("tenant", ""), str(payload["client_id"]), str(payload["device_id"]))
    if sink.append(message.message_id, data, rows, origin):
        # Per message at DEBUG only: a loguru line costs ~60 us, and the sink sums its commits each second.
        logger.debug("wrote {} rows", rows)
        return {"rows_written": rows, "duplicate": False}
    logger.info("already committed; redelivery acknowledged without writing")
    return {"rows_written": 0, "duplicate": True}
