"""Liveness and readiness."""

from __future__ import annotations

import pika
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from config import get_settings

router = APIRouter(tags=["health"])

#: Readiness must answer quickly even when RabbitMQ is down.
PROBE_TIMEOUT_SECONDS = 2.0


@router.get("/health", summary="The API process is alive")
async def health() -> dict:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="RabbitMQ is reachable (AMQP handshake on the configured vhost)",
    responses={503: {"description": "RabbitMQ unreachable; the answer says why."}},
)
def ready() -> JSONResponse:
    parameters = pika.URLParameters(get_settings().rabbitmq_url)
    parameters.socket_timeout = PROBE_TIMEOUT_SECONDS
    parameters.stack_timeout = PROBE_TIMEOUT_SECONDS
    parameters.blocked_connection_timeout = PROBE_TIMEOUT_SECONDS
    parameters.connection_attempts = 1
    try:
        pika.BlockingConnection(parameters).close()
    except Exception as error:  # any failure means "not ready"; the reason goes to the client
        return JSONResponse({"status": "unavailable", "broker": repr(error)}, status_code=503)
    return JSONResponse({"status": "ready"})
