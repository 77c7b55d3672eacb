"""Dead letters: list them with the reason, replay them after a fix, or discard the ones never to be written."""

from __future__ import annotations

import asyncio
import weakref
from typing import Annotated, Any, Literal, Optional

from dramatiq.errors import BrokerError
from fastapi import APIRouter, Depends, HTTPException, Query
from pika.exceptions import AMQPError
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from actors import INGEST_QUEUE, PREDICTIONS_QUEUE, TASKS_QUEUE, TRAINING_QUEUE, broker
from actors.dead_letters import DeadLetterOffice, DeadLettersBusy
from app.auth import requires
from app.json_route import OrjsonRoute
from app.errors import JSON_BODY_RESPONSES, UNAVAILABLE_RESPONSE, validation_response
from app.limits import require_json
from app.links import REPLAY_QUEUE
from app.publishing import RETRY_AFTER_SECONDS, broker_unavailable
from app.schemas import DIGITS_ONLY, SEED_EXAMPLE, IngestPayload, JsonInt
from config import get_settings

# Dead letters hold every tenant's payloads, and replay re-sends them: admin only.
router = APIRouter(prefix="/dead-letters", tags=["dead letters"], route_class=OrjsonRoute,
                   dependencies=[requires("admin")])

QueueName = Literal["ingest", "tasks", "training", "predictions"]
assert set(QueueName.__args__) == {INGEST_QUEUE, TASKS_QUEUE, TRAINING_QUEUE, PREDICTIONS_QUEUE}

#: 503 here also means another walk of the queue's dead letters held them for the whole wait.
WALK_UNAVAILABLE = {503: {
    **UNAVAILABLE_RESPONSE[503],
    "description": "RabbitMQ is unreachable or did not answer in time, or another listing, replay or discard "
    "of this queue held its dead letters for PUBLISH_TIMEOUT_SECONDS; retry after `Retry-After` seconds.",
}}

EXAMPLE_ID = "3d0c8f5e-7a2b-4c61-b9e4-1f6a2d8c5b07"


class DeadLetterOut(BaseModel):
    message_id: str
    queue: str
    actor_name: str
    reason: str = Field(description="The final error, e.g. `OSError: [Errno 28] No space left on device`.")
    attempts: int = Field(description="Times it was tried and failed (MAX_RETRIES + 1 when retries ran out).")
    rejected_at: Optional[int] = Field(None, description="When it was dead-lettered, ms since the epoch.")
    args: list[Any] = Field(description="The actor's arguments (for ingest: the payload).")
    key: str = Field("", description="The name of the API key that sent it (empty when the API had no keys).")
    tenant: str = Field("", description="That key's tenant.")


class DeadLetterList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "queue": "ingest",
                    "count": 1,
                    "messages": [
                        {
                            "message_id": EXAMPLE_ID,
                            "queue": "ingest",
                            "actor_name": "write_detection_rows",
                            "reason": "OSError: [Errno 28] No space left on device",
                            "attempts": 6,
                            "rejected_at": 1676281746613,
                            # As enqueued: the payload after validation, created_at in ISO 8601.
                            "args": [IngestPayload.model_validate(SEED_EXAMPLE).model_dump(mode="json")],
                            "key": "acme-cameras",
                            "tenant": "acme",
                        }
                    ],
                    "next_offset": None,
                }
            ]
        }
    )

    queue: str
    count: int = Field(description="Dead letters in the queue (may exceed the messages listed).")
    messages: list[DeadLetterOut]
    next_offset: Optional[int] = Field(
        None, description="Pass it as `offset` for the next page; null on the last one. Pages follow the "
        "queue's order, so one replayed or added meanwhile shifts them.")


class ReplayRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"queue": "ingest"}, {"queue": "ingest", "message_ids": [EXAMPLE_ID]}]},
    )

    queue: QueueName = "ingest"
    message_ids: Optional[list[str]] = Field(
        None, max_length=10_000, description="Only these; all of the queue's dead letters when omitted."
    )
    limit: JsonInt = Field(10_000, ge=1, le=100_000, strict=True, description="Replay at most this many.")


class ReplayResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"queue": "ingest", "replayed": [EXAMPLE_ID], "remaining": 0}]}
    )

    queue: str
    replayed: list[str] = Field(description="Message ids sent back to the queue, ids unchanged.")
    remaining: int = Field(description="Dead letters left in the queue.")


class DiscardRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"queue": "ingest", "message_ids": [EXAMPLE_ID]}]},
    )

    queue: QueueName = "ingest"
    message_ids: list[str] = Field(
        min_length=1, max_length=10_000,
        description="The dead letters to drop for good. Required: there is no \"discard all\".")


class DiscardResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"queue": "ingest", "discarded": [EXAMPLE_ID], "remaining": 0}]}
    )

    queue: str
    discarded: list[str] = Field(description="Message ids dropped; ids asked for that were not there are absent.")
    remaining: int = Field(description="Dead letters left in the queue.")


def get_office() -> DeadLetterOffice:
    settings = get_settings()
    return DeadLetterOffice(broker, settings.redis_url, settings.publish_timeout_seconds)


#: Per event loop, per queue: this process's walks of one queue wait their turn here, not each
#: in a thread of the pool that every blocking route shares (a few open consoles would fill it).
_TURNS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]]" = weakref.WeakKeyDictionary()


def _busy(busy: DeadLettersBusy) -> HTTPException:
    return HTTPException(503, detail=str(busy), headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def walked(office: DeadLetterOffice, queue: str, step, *args):
    """`step(queue, *args)`, one of the office's walks, in a thread once this process's turn for
    `queue` comes (the office then takes the broker's, for every process); a broker down or a
    turn not had within the office's timeout answers 503 with Retry-After."""
    turns = _TURNS.setdefault(asyncio.get_running_loop(), {})
    turn = turns.setdefault(queue, asyncio.Lock())
    try:
        await asyncio.wait_for(turn.acquire(), office.timeout)
    except asyncio.TimeoutError:
        raise _busy(DeadLettersBusy(queue, office.timeout)) from None
    try:
        return await run_in_threadpool(step, queue, *args)
    except DeadLettersBusy as busy:  # this process had its turn, another process had the broker's
        raise _busy(busy) from None
    except (AMQPError, BrokerError, OSError) as error:
        raise broker_unavailable(repr(error)) from None
    finally:
        turn.release()


@router.get(
    "",
    response_model=DeadLetterList,
    summary="Messages given up on after their retries, with the reason",
    description="Peeks without consuming: listing leaves the messages in the dead-letter queue. Paginated: "
    "at most `limit` messages and MAX_DEAD_LETTER_PAGE_BYTES of payloads per page; `next_offset` "
    "gives the next one.",
    responses={
        200: {"links": REPLAY_QUEUE},
        **validation_response("limit", "Input should be greater than or equal to 1", "greater_than_equal"),
        **WALK_UNAVAILABLE,
    },
)
async def list_dead_letters(
    queue: QueueName = "ingest",
    limit: Annotated[int, Query(ge=1, le=1000, description="List at most this many."), DIGITS_ONLY] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Skip this many (from `next_offset`)."),
                      DIGITS_ONLY] = 0,
    office: DeadLetterOffice = Depends(get_office),
) -> DeadLetterList:
    max_bytes = get_settings().max_dead_letter_page_bytes
    count, letters, next_offset = await walked(office, queue, office.peek, limit, offset, max_bytes)
    return DeadLetterList(queue=queue, count=count, messages=[DeadLetterOut(**vars(letter)) for letter in letters],
                          next_offset=next_offset)


@router.post(
    "/replay",
    response_model=ReplayResult,
    summary="Send dead letters back to their queue, after the cause is fixed",
    description="Each message keeps its id, so rows already written are not written again. "
    "Retries start from zero.",
    dependencies=[Depends(require_json)],
    responses={
        **validation_response("queue", "Input should be 'ingest', 'tasks', 'training' or 'predictions'", "literal_error"),
        **JSON_BODY_RESPONSES,
        **WALK_UNAVAILABLE,
    },
)
async def replay_dead_letters(request: ReplayRequest, office: DeadLetterOffice = Depends(get_office)) -> ReplayResult:
    wanted = set(request.message_ids) if request.message_ids is not None else None
    replayed, remaining = await walked(office, request.queue, office.replay, wanted, request.limit)
    return ReplayResult(queue=request.queue, replayed=replayed, remaining=remaining)


@router.post(
    "/discard",
    response_model=DiscardResult,
    summary="Drop chosen dead letters for good (they are never written)",
    description="Only the named messages; their payloads exist nowhere else afterwards. Replay is "
    "the way to keep one.",
    dependencies=[Depends(require_json)],
    responses={
        **validation_response("message_ids", "List should have at least 1 item after validation, not 0",
                              "too_short"),
        **JSON_BODY_RESPONSES,
        **WALK_UNAVAILABLE,
    },
)
async def discard_dead_letters(request: DiscardRequest, office: DeadLetterOffice = Depends(get_office)
                               ) -> DiscardResult:
    discarded, remaining = await walked(office, request.queue, office.discard, set(request.message_ids))
    return DiscardResult(queue=request.queue, discarded=discarded, remaining=remaining)
