"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from actors import broker

router = APIRouter(tags=["health"])


@router.get("/health", summary="The API process is alive")
async def health() -> dict:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="The API can publish: its RabbitMQ connection is open with confirms on",
    responses={503: {"description": "Not connected to RabbitMQ; the answer says why. Recovers by itself."}},
)
async def ready() -> JSONResponse:
    publisher = broker.publisher
    if publisher.ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse(
        {"status": "unavailable", "broker": publisher.last_error}, status_code=503, headers={"Retry-After": "1"}
    )
