"""Request limits enforced before a body is read whole."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Settings


class BodySizeLimit:
    """Answer 413 for a body larger than its route's limit, without buffering it.

    A declared Content-Length is checked up front; a chunked body is counted
    as it arrives, and reading stops at the limit. `max_bytes` applies to every
    path except those in `per_path` (path -> (limit, name of its setting)): the
    bulk routes take far larger bodies than one detection, and only they should.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, tuple[int, str]] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, setting = self.per_path.get(scope["path"], (self.max_bytes, "MAX_BODY_BYTES"))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            response = JSONResponse(
                {"detail": f"request body is {int(declared)} bytes; the limit is {max_bytes} ({setting})"},
                status_code=413,
            )
            await response(scope, receive, send)
            return

        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading, so this becomes a 413.
                    raise HTTPException(413, f"request body exceeds the limit of {max_bytes} bytes ({setting})")
            return message

        await self.app(scope, counted_receive, send)


class ConcurrencyLimit:
    """At most `limit` requests in flight in this API process; the next is answered 503 at once.

    Each request in flight can hold up to its body limit in memory, so the bound on requests is a
    bound on memory: MAX_BODY_BYTES times API_MAX_CONCURRENT_REQUESTS, not what a crowd of clients
    chooses. uvicorn's own --limit-concurrency would answer a bare text 503 with no Retry-After;
    this one answers like every other refusal here. `/health` and `/ready` are never refused: an
    orchestrator must not restart a process for being busy.
    """

    EXEMPT = frozenset({"/health", "/ready"})

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            response = JSONResponse(
                {"detail": f"{self.active} requests in flight, the most this API process takes "
                 "(API_MAX_CONCURRENT_REQUESTS); retry after Retry-After seconds"},
                status_code=503, headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        self.active += 1  # one event loop per process: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def bulk_body_limits(settings: Settings) -> dict[str, tuple[int, str]]:
    """The routes whose bodies may exceed MAX_BODY_BYTES, with their own limits and settings."""
    return {
        "/api/batch": (settings.max_batch_bytes, "MAX_BATCH_BYTES"),
        "/file/upload": (settings.max_upload_bytes, "MAX_UPLOAD_BYTES"),
    }


def body_limit_for(path: str, settings: Settings) -> tuple[int, str]:
    """(limit in bytes, setting) that BodySizeLimit applies to a request for `path`."""
    return bulk_body_limits(settings).get(path, (settings.max_body_bytes, "MAX_BODY_BYTES"))


def declares_json(content_type: str) -> bool:
    """`application/json` or `application/*+json`, parameters (charset) ignored."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


async def require_json(request: Request) -> None:  # async: a sync dependency costs a thread hop
    """415 unless the body is declared as JSON (`application/json` or `*/*+json`)."""
    declared = request.headers.get("content-type", "")
    if not declares_json(declared):
        raise HTTPException(
            415, f"send the body as JSON with 'Content-Type: application/json' (got {declared or 'no Content-Type'!r})"
        )
