"""POST /api: validate a detection and enqueue it for the CSV workers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Response

from actors.ingest import write_detection_rows
from app.json_route import OrjsonRoute
from app.errors import UNAVAILABLE_RESPONSE, VALIDATION_RESPONSE
from app.idempotency import KEY_PATTERN, Accepted, IdempotencyStore, fingerprint, get_idempotency_store, message_id_for
from app.limits import require_json
from app.publishing import publish
from app.schemas import ErrorResponse, IngestAccepted, IngestPayload

router = APIRouter(tags=["ingest"], route_class=OrjsonRoute)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Optional; 1-255 visible ASCII characters (a UUID is ideal). Retrying with the same key "
        "enqueues once: the retry is answered 200 `duplicate` with the first message id.",
    ),
]


@router.post(
    "/api",
    status_code=202,
    response_model=IngestAccepted,
    summary="Enqueue one detection; its preds become CSV rows",
    dependencies=[Depends(require_json)],
    responses={
        200: {"model": IngestAccepted, "description": "A retry of an accepted Idempotency-Key; nothing enqueued."},
        **VALIDATION_RESPONSE,
        409: {"model": ErrorResponse, "description": "The Idempotency-Key was used before for a different body."},
        413: {"description": "Body over MAX_BODY_BYTES."},
        415: {"description": "Body not declared as JSON."},
        **UNAVAILABLE_RESPONSE,
    },
)
async def ingest(
    payload: IngestPayload,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    store: IdempotencyStore = Depends(get_idempotency_store),
) -> IngestAccepted:
    # Async on purpose: the confirm is awaited on the event loop; no thread waits for RabbitMQ.
    body = payload.model_dump(mode="json")
    if idempotency_key is None:
        return IngestAccepted(message_id=await publish(write_detection_rows, body))

    accepted = Accepted(message_id_for(idempotency_key), fingerprint(body))
    known = await store.lookup(idempotency_key)
    if known is not None:
        if known.fingerprint != accepted.fingerprint:
            raise HTTPException(
                409,
                detail=[
                    {
                        "field": "Idempotency-Key",
                        "message": "this key was already used for a different body; use a new key per request",
                        "type": "idempotency_key_reused",
                    }
                ],
            )
        response.status_code = 200
        return IngestAccepted(status="duplicate", message_id=known.message_id)
    await publish(write_detection_rows, body, message_id=accepted.message_id)
    await store.remember(idempotency_key, accepted)
    return IngestAccepted(message_id=accepted.message_id)
