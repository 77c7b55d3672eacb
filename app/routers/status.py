"""GET /status (numbers), GET /status/history (their last minutes) and GET / (the console that shows them)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

import redis
from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from actors import INGEST_QUEUE, PREDICTIONS_QUEUE, TASKS_QUEUE, TRAINING_QUEUE, broker
from actors.stats import namespace_for
from app.auth import requires
from app.errors import UNAVAILABLE_RESPONSE
from app.history import History
from app.json_route import OrjsonRoute
from app.status import StatusReader, cluster_probe
from config import get_settings

router = APIRouter(tags=["status"], route_class=OrjsonRoute)

STATIC = Path(__file__).resolve().parent.parent / "static"
#: The console holds an admin key: nothing but its own script may run in it, nothing may frame it,
#: and it talks to this API only.
CONSOLE_POLICY = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class QueueStatus(BaseModel):
    ready: int = Field(description="Messages waiting for a worker.")
    consumers: int = Field(description="Worker processes consuming the queue (one consumer each).")
    unacked: Optional[int] = Field(None, description="Messages workers have taken and not yet acknowledged "
                                   "(running or prefetched), as the workers report (Redis); null without it.")
    delayed: int = Field(description="Messages waiting out a retry backoff: in `<queue>.DQ`, and those the workers "
                         "hold until they are due.")
    dead_letters: int = Field(description="Messages given up on (`<queue>.XQ`); see GET /dead-letters.")
    oldest_ready_seconds: Optional[float] = Field(
        None, description="The oldest ready message is at most this old: the enqueue time of the newest message a "
        "worker took (in a FIFO queue the ready ones came after it); exact while messages flow. Not a bound for "
        "messages put back after a worker died, a retry or a replay (they keep their first timestamp). 0 when none "
        "is ready; null when no worker has taken any yet, or without Redis.")


class SinkFaultOut(BaseModel):
    worker: str = Field(description="`host:pid` of the worker process.")
    reason: str = Field(description="What the disk said, e.g. `OSError: [Errno 28] No space left on device`.")
    since: float = Field(description="When it began, epoch seconds.")
    waiting: int = Field(description="Messages the worker holds until it can write them.")


class ClusterStatus(BaseModel):
    state: str = Field(description="`ok`: every node accepts connections; `degraded`: some do not (quorum queues "
                       "go on while a majority is up); `down`: none does.")
    nodes: int = Field(description="Nodes RABBITMQ_URL lists.")
    down: list[str] = Field(description="`host:port` of each node that did not accept a connection.")


class Status(BaseModel):
    queues: dict[str, QueueStatus] = Field(description="Empty when RabbitMQ is unreachable.")
    workers: Optional[int] = Field(description="Worker processes consuming the ingest queue, on every host.")
    dead_letters: Optional[int] = Field(description="Dead letters in all queues.")
    accepted: Optional[int] = Field(None, description="Messages the API has had confirmed by RabbitMQ (its 2xx), "
                                    "every API process (Redis counter).")
    rows_written: Optional[int] = Field(description="CSV rows written and fsynced, all workers (Redis counter).")
    messages_written: Optional[int] = Field(description="Messages whose rows were written.")
    duplicates: Optional[int] = Field(description="Redelivered messages recognised and not written again.")
    retries: Optional[int] = Field(description="Failed attempts that were retried.")
    dead_lettered: Optional[int] = Field(description="Messages dead-lettered after their last retry.")
    messages_per_second: Optional[float] = Field(description="Messages written per second, last 5 s (2 s ago).")
    sink_faults: Optional[list[SinkFaultOut]] = Field(
        description="Workers that cannot write the CSV now (disk full, I/O error, read-only, permissions): "
        "they hold their messages and retry, spending none of their retries, and resume by themselves. "
        "Empty while every worker writes.")
    rabbitmq: str = Field(description="`ok`, or why the queue figures are missing.")
    redis: str = Field(description="`ok`, or why the totals are missing (null).")
    cluster: Optional[ClusterStatus] = Field(
        None, description="Only when RABBITMQ_URL lists several nodes: which of them answer.")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "queues": {
                        "ingest": {"ready": 12, "unacked": 16, "consumers": 2, "delayed": 0, "dead_letters": 1,
                                   "oldest_ready_seconds": 0.4},
                        "tasks": {"ready": 0, "unacked": 1, "consumers": 2, "delayed": 0, "dead_letters": 0,
                                  "oldest_ready_seconds": 0.0},
                        "training": {"ready": 3, "unacked": 1, "consumers": 1, "delayed": 0, "dead_letters": 0,
                                     "oldest_ready_seconds": 41.2},
                        "predictions": {"ready": 0, "unacked": 0, "consumers": 1, "delayed": 0, "dead_letters": 0,
                                        "oldest_ready_seconds": 0.0},
                    },
                    "workers": 2,
                    "dead_letters": 1,
                    "accepted": 10016,
                    "rows_written": 55012,
                    "messages_written": 10003,
                    "duplicates": 3,
                    "retries": 5,
                    "dead_lettered": 1,
                    "messages_per_second": 712.4,
                    "sink_faults": [],
                    "rabbitmq": "ok",
                    "redis": "ok",
                }
            ]
        }
    }


@lru_cache
def get_reader() -> StatusReader:
    settings = get_settings()
    return StatusReader(
        broker.parameters, settings.redis_url, namespace_for(settings.rabbitmq_url),
        [INGEST_QUEUE, TASKS_QUEUE, TRAINING_QUEUE, PREDICTIONS_QUEUE], cluster_probe(),
        declare=lambda queue: broker.declare_queue(queue, ensure=True),
    )


@lru_cache
def get_history() -> History:
    settings = get_settings()
    return History(lambda: get_reader().read(max_age=0), settings.redis_url, namespace_for(settings.rabbitmq_url),
                   period=settings.history_sample_seconds or 5.0, keep_seconds=settings.history_seconds)


class HistoryPoint(BaseModel):
    t: float = Field(description="When the interval ended, epoch seconds.")
    accepted_per_second: Optional[float] = Field(description="Messages the API had confirmed, per second.")
    rows_per_second: Optional[float] = Field(description="CSV rows written, per second.")
    messages_per_second: Optional[float] = Field(description="Messages written, per second.")
    retries_per_second: Optional[float] = Field(description="Failed attempts retried, per second.")
    dead_lettered: Optional[int] = Field(description="Messages dead-lettered so far (a total).")
    dead_letters: Optional[int] = Field(description="Dead letters waiting in all queues then.")
    queue_depth: Optional[int] = Field(description="Ready messages in `ingest` then.")
    latency_p50_ms: Optional[float] = Field(
        description="Median ingest-to-row time of the messages written in the interval (from the message's "
        "timestamp to its rows on disk); null when none was.")
    latency_p99_ms: Optional[float] = Field(description="Their 99th percentile.")


class HistoryOut(BaseModel):
    model_config = {"json_schema_extra": {"examples": [{
        "period_seconds": 5.0, "seconds": 900,
        "points": [{"t": 1764763205.0, "accepted_per_second": 702.4, "rows_per_second": 3861.0,
                    "messages_per_second": 698.2, "retries_per_second": 0.0, "dead_lettered": 1, "dead_letters": 1,
                    "queue_depth": 12, "latency_p50_ms": 31.5, "latency_p99_ms": 212.0}],
    }]}}

    period_seconds: float = Field(description="Seconds between samples (HISTORY_SAMPLE_SECONDS).")
    seconds: int = Field(description="How far back it goes (HISTORY_SECONDS).")
    points: list[HistoryPoint] = Field(description="Oldest first; a gap where no sample was taken (Redis down).")


@router.get(
    "/status/history",
    response_model=HistoryOut,
    summary="The last minutes of /status as rates, levels and latencies (the console's charts)",
    description="One point per interval between samples, for every API process and host alike (the samples "
    "are in Redis). 503 with `Retry-After` while Redis is unavailable.",
    dependencies=[requires("admin")],
    responses={503: {**UNAVAILABLE_RESPONSE[503], "description": "Redis is unreachable; retry after `Retry-After` "
                     "seconds.", "content": {"application/json": {"example": {
                         "detail": "history unavailable (Redis: ConnectionError('Connection refused')); retry later"}}}}},
)
async def status_history() -> HistoryOut:
    history = get_history()
    try:
        points = await run_in_threadpool(history.read)
    except (redis.RedisError, OSError) as error:
        raise HTTPException(503, f"history unavailable (Redis: {error!r}); retry later",
                            headers={"Retry-After": "1"}) from None
    settings = get_settings()
    return HistoryOut(period_seconds=history.period, seconds=settings.history_seconds, points=points)


@router.get(
    "/status",
    response_model=Status,
    summary="Queue depths, workers, rows written, retries, dead letters, messages/s",
    description="What the status page at `/` shows. Cached for one second. A missing source "
    "(RabbitMQ or Redis) leaves its figures empty and says why; the others still show.",
    dependencies=[requires("admin")],
)
async def status() -> dict:
    return await run_in_threadpool(get_reader().read)


@router.get(
    "/",
    response_class=HTMLResponse,
    summary="The operator console (HTML, no external assets)",
    description="For people: live charts, queues, dead letters (replay, discard), message lookup and models, "
    "each from the API with the visitor's key; scripts should call the API.",
    response_description="The page, `text/html`.",
)
async def console_page() -> HTMLResponse:
    return HTMLResponse((STATIC / "console.html").read_text(), headers=CONSOLE_POLICY)


@router.get("/console.js", include_in_schema=False)
async def console_script() -> Response:
    return Response((STATIC / "console.js").read_text(), media_type="text/javascript", headers=CONSOLE_POLICY)
