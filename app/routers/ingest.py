"""POST /api: validate a detection and enqueue it for the CSV workers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Response

from actors.ingest import write_detection_rows
from app.auth import Principal, requires
from app.json_route import OrjsonRoute
from app.errors import JSON_BODY_RESPONSES, KEY_REUSED_RESPONSE, UNAVAILABLE_RESPONSE, VALIDATION_RESPONSE
from app.idempotency import KEY_PATTERN, Accepted, IdempotencyStore, fingerprint, get_idempotency_store, message_id_for
from app.limits import require_json
from app.links import DETECTION_STATUS
from app.publishing import publish
from app.tenancy import require_client, scoped_key
from app.schemas import SEED_EXAMPLE, SEVERAL_PREDS_EXAMPLE, IngestAccepted, IngestPayload

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

#: Named request examples for Swagger UI's picker; the seed's example comes first.
INGEST_EXAMPLES = {
    "seed": {"summary": "The seed example: one pred", "value": SEED_EXAMPLE},
    "several_preds": {"summary": "Several preds, created_at in ISO 8601 with a zone", "value": SEVERAL_PREDS_EXAMPLE},
}


@router.post(
    "/api",
    status_code=202,
    response_model=IngestAccepted,
    summary="Enqueue one detection; its preds become CSV rows",
    description="Answers 202 once RabbitMQ has confirmed the message: from then on it is not lost, "
    "and a worker appends one CSV row per pred, once. Send an `Idempotency-Key` to retry safely.",
    response_description="Enqueued; `message_id` is the Dramatiq message id the rows will carry.",
    dependencies=[Depends(require_json)],
    responses={
        202: {"links": DETECTION_STATUS},
        200: {
            "model": IngestAccepted,
            "links": DETECTION_STATUS,
            "description": "A retry of an accepted Idempotency-Key; nothing enqueued.",
            "content": {
                "application/json": {
                    "example": {"status": "duplicate", "message_id": "0f5bb7a4-2c3e-4d6b-9a41-5c1e8f7d2b90"}
                }
            },
        },
        **VALIDATION_RESPONSE,
        **KEY_REUSED_RESPONSE,
        **JSON_BODY_RESPONSES,
        **UNAVAILABLE_RESPONSE,
    },
)
async def ingest(
    payload: Annotated[IngestPayload, Body(openapi_examples=INGEST_EXAMPLES)],
    response: Response,
    principal: Principal = requires("ingest"),
    idempotency_key: IdempotencyKey = None,
    store: IdempotencyStore = Depends(get_idempotency_store),
) -> IngestAccepted:
    # Async on purpose: the confirm is awaited on the event loop; no thread waits for RabbitMQ.
    require_client(principal, payload.client_id)
    body = payload.model_dump(mode="json")
    if idempotency_key is None:
        return IngestAccepted(message_id=await publish(write_detection_rows, body, sender=principal))

    key = scoped_key(principal, idempotency_key)  # tenant's and deployment's own
    accepted = Accepted(message_id_for(key), fingerprint(body))
    known = await store.lookup(key)
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
    await publish(write_detection_rows, body, sender=principal, message_id=accepted.message_id)
    await store.remember(key, accepted)
    return IngestAccepted(message_id=accepted.message_id)
