"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal, Optional

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from actors import broker
from app.status import cluster_probe
from app.errors import RETRY_AFTER_HEADER

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    """Documents the answers of /ready, which are built by hand to set the status code."""

    status: Literal["ready", "unavailable"]
    broker: Optional[str] = Field(None, description="Why the publisher is not connected; only when `unavailable`.")
    cluster: Optional[str] = Field(
        None, description="Only when RABBITMQ_URL lists several nodes: `ok`, `degraded` (some nodes do not accept "
        "connections; publishing goes on while a majority is up) or `down`.")
    nodes_down: Optional[list[str]] = Field(None, description="With `cluster`: `host:port` of each node that is down.")


@router.get(
    "/health",
    summary="The API process is alive",
    description="Answers while the process serves requests, whatever the state of RabbitMQ (that is `/ready`).",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def health() -> dict:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="The API can publish: its RabbitMQ connection is open with confirms on",
    description="For a readiness probe: while it answers 503, POSTs that publish would answer 503 too.",
    responses={
        200: {"model": Readiness, "content": {"application/json": {"example": {"status": "ready"}}}},
        503: {
            "model": Readiness,
            "description": "Not connected to RabbitMQ; the answer says why. Recovers by itself.",
            "headers": RETRY_AFTER_HEADER,
            "content": {
                "application/json": {
                    "example": {
                        "status": "unavailable",
                        "broker": "AMQPConnectionError: (AMQPConnectionWorkflowFailed: 1 exceptions in all; "
                        "last exception - AMQPConnectorSocketConnectError: ConnectionRefusedError(111, "
                        "'Connection refused'); first exception - None,)",
                    }
                }
            },
        },
    },
)
async def ready() -> JSONResponse:
    publisher = broker.publisher
    nodes = cluster_probe()
    cluster = {}
    if nodes.cluster:
        seen = await run_in_threadpool(nodes.read)
        cluster = {"cluster": seen["state"], "nodes_down": seen["down"]}
    if publisher.ready:
        return JSONResponse({"status": "ready", **cluster})
    return JSONResponse(
        {"status": "unavailable", "broker": publisher.last_error, **cluster}, status_code=503,
        headers={"Retry-After": "1"},
    )
