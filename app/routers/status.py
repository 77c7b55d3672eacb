"""GET /status (numbers) and GET / (the live status page that shows them)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from actors import INGEST_QUEUE, PREDICTIONS_QUEUE, TASKS_QUEUE, TRAINING_QUEUE, broker
from actors.stats import namespace_for
from app.auth import requires
from app.json_route import OrjsonRoute
from app.status import StatusReader, cluster_probe
from config import get_settings

router = APIRouter(tags=["status"], route_class=OrjsonRoute)

PAGE = Path(__file__).resolve().parent.parent / "static" / "status.html"


class QueueStatus(BaseModel):
    ready: int = Field(description="Messages waiting for a worker.")
    consumers: int = Field(description="Worker processes consuming the queue (one consumer each).")
    delayed: int = Field(description="Messages waiting out a retry backoff (`<queue>.DQ`).")
    dead_letters: int = Field(description="Messages given up on (`<queue>.XQ`); see GET /dead-letters.")


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
                        "ingest": {"ready": 12, "consumers": 2, "delayed": 0, "dead_letters": 1},
                        "tasks": {"ready": 0, "consumers": 2, "delayed": 0, "dead_letters": 0},
                        "training": {"ready": 3, "consumers": 1, "delayed": 0, "dead_letters": 0},
                        "predictions": {"ready": 0, "consumers": 1, "delayed": 0, "dead_letters": 0},
                    },
                    "workers": 2,
                    "dead_letters": 1,
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
    )


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
    summary="Live status page (HTML, no external assets)",
    description="A page for people: it polls `GET /status` and shows the figures; scripts should read `/status`.",
    response_description="The page, `text/html`.",
)
async def status_page() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text())
