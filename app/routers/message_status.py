"""GET /api/{message_id} and GET /tasks/{message_id}: where a message is in its life."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal, Optional

import redis
from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from actors import INGEST_QUEUE, status_writer
from actors.message_status import read_status
from actors.stats import redis_client
from app.errors import ErrorResponse, validation_response
from app.auth import Principal, requires
from app.json_route import OrjsonRoute
from app.links import PREDICT_WITH_RESULT
from app.tenancy import sees
from config import get_settings

router = APIRouter(route_class=OrjsonRoute)

MessageId = Path(
    pattern=r"^[A-Za-z0-9-]{1,64}$",
    description="The `message_id` the POST answered with.",
    examples=["6f1c3cfa-5d8c-4d67-9a53-2f0b1f1b7c11"],
)
BAD_ID = validation_response(
    "message_id", "String should match pattern '^[A-Za-z0-9-]{1,64}$'", "string_pattern_mismatch"
)


class MessageStatus(BaseModel):
    message_id: str
    state: Literal["queued", "running", "retrying", "succeeded", "failed", "dead-lettered"] = Field(
        description="`queued` once RabbitMQ confirmed it; `running` in a worker; `retrying` after a failed "
        "attempt; `succeeded`; `failed` (an error that is not retried) or `dead-lettered` (retries ran out): "
        "both wait in the dead-letter queue for GET/POST /dead-letters."
    )
    queue: Optional[str] = None
    actor: Optional[str] = None
    attempts: Optional[int] = Field(None, description="Attempts started so far (1 = the first).")
    last_error: Optional[str] = Field(None, description="The error of the latest failed attempt.")
    progress: Optional[dict[str, Any]] = Field(None, description="What the task reported while running.")
    result: Any = Field(None, description="What the actor returned, once `succeeded`.")
    enqueued_at: Optional[int] = Field(
        None, description="ms since the epoch: when the API built the message, just before publishing it."
    )
    started_at: Optional[int] = Field(None, description="Start of the latest attempt, ms since the epoch.")
    finished_at: Optional[int] = Field(None, description="ms since the epoch.")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "message_id": "6f1c3cfa-5d8c-4d67-9a53-2f0b1f1b7c11",
                    "state": "succeeded",
                    "queue": "ingest",
                    "actor": "write_detection_rows",
                    "attempts": 1,
                    "result": {"rows_written": 3, "duplicate": False},
                    "enqueued_at": 1764094800123,
                    "started_at": 1764094800131,
                    "finished_at": 1764094800140,
                },
                {
                    "message_id": "0b7e1a0e-3f0c-4a47-8a0e-0f8d7b1e2c33",
                    "state": "retrying",
                    "queue": "ingest",
                    "actor": "write_detection_rows",
                    "attempts": 2,
                    "last_error": "OSError: [Errno 28] No space left on device",
                },
            ]
        }
    }


NOT_FOUND = {
    404: {
        "model": ErrorResponse,
        "description": "No such message, or its status expired (STATUS_TTL_SECONDS).",
        "content": {"application/json": {"example": {"detail": "no message 6f1c3cfa-... (unknown, or its status expired)"}}},
    },
    503: {
        "model": ErrorResponse,
        "description": "Redis, where statuses live, is unreachable.",
        "headers": {"Retry-After": {"description": "Seconds to wait before asking again.", "schema": {"type": "integer"}}},
        "content": {"application/json": {"example": {"detail": "message status unavailable (Redis: ...); retry later"}}},
    },
}


#: GET /tasks/{id} for a training that succeeded: its result names the model to predict with.
TRAINING_SUCCEEDED = {
    "message_id": "2b0f6a4e-6c1e-4f0e-9d7e-5b1f3c2a9e10",
    "state": "succeeded",
    "queue": "training",
    "actor": "train_model",
    "attempts": 1,
    "progress": {"step": "storing"},
    "result": {
        "model_id": "2b0f6a4e-6c1e-4f0e-9d7e-5b1f3c2a9e10",
        "artifact_uri": "file:///srv/data/models/2b0f6a4e-6c1e-4f0e-9d7e-5b1f3c2a9e10/model.joblib",
        "metrics": {"model": "logistic_regression", "dataset": "iris", "accuracy": 0.973684},
    },
    "enqueued_at": 1764094800123,
    "started_at": 1764094800131,
    "finished_at": 1764094801412,
}


@lru_cache
def _client() -> redis.Redis:
    return redis_client(get_settings().redis_url, timeout=1)


async def _lookup(message_id: str, wanted, principal: Principal) -> MessageStatus:
    try:
        record = await run_in_threadpool(read_status, _client(), status_writer.namespace, message_id)
    except redis.RedisError as error:
        raise HTTPException(
            503, f"message status unavailable (Redis: {error!r}); retry later", headers={"Retry-After": "1"}
        ) from None
    # Another tenant's message is as unknown as one that never was: its existence is not told either.
    if record is None or not wanted(record.get("queue")) or not sees(principal, record):
        raise HTTPException(404, f"no message {message_id} (unknown, or its status expired)")
    record.pop("tenant", None)
    return MessageStatus(message_id=message_id, **record)


@router.get(
    "/api/{message_id}",
    response_model=MessageStatus,
    response_model_exclude_none=True,
    tags=["ingest"],
    summary="Where a detection is: queued, running, retrying, succeeded (rows written), failed, dead-lettered",
    responses={**BAD_ID, **NOT_FOUND},
)
async def detection_status(message_id: str = MessageId, principal: Principal = requires("read")) -> MessageStatus:
    return await _lookup(message_id, lambda queue: queue == INGEST_QUEUE, principal)


@router.get(
    "/tasks/{message_id}",
    response_model=MessageStatus,
    response_model_exclude_none=True,
    tags=["tasks"],
    summary="Where a task is, with its progress and, once done, its result",
    responses={
        200: {"links": PREDICT_WITH_RESULT, "content": {"application/json": {"example": TRAINING_SUCCEEDED}}},
        **BAD_ID,
        **NOT_FOUND,
    },
)
async def task_status(message_id: str = MessageId, principal: Principal = requires("read")) -> MessageStatus:
    return await _lookup(message_id, lambda queue: queue is not None and queue != INGEST_QUEUE, principal)
