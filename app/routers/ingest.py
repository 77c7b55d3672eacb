"""POST /api: validate a detection and enqueue it for the CSV workers."""

from __future__ import annotations

from fastapi import APIRouter

from actors.ingest import write_detection_rows
from app.errors import UNAVAILABLE_RESPONSE, VALIDATION_RESPONSE
from app.publishing import publish
from app.schemas import IngestAccepted, IngestPayload

router = APIRouter(tags=["ingest"])


@router.post(
    "/api",
    status_code=202,
    response_model=IngestAccepted,
    summary="Enqueue one detection; its preds become CSV rows",
    responses={**VALIDATION_RESPONSE, 413: {"description": "Body over MAX_BODY_BYTES."}, **UNAVAILABLE_RESPONSE},
)
def ingest(payload: IngestPayload) -> IngestAccepted:
    # Sync on purpose: pika blocks, so FastAPI runs this in its thread pool.
    message_id = publish(write_detection_rows, payload.model_dump(mode="json"))
    return IngestAccepted(message_id=message_id)
