"""Request limits enforced before a body is read whole."""

from __future__ import annotations

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Answer 413 for a body larger than `max_bytes`, without buffering it.

    A declared Content-Length is checked up front; a chunked body is counted
    as it arrives, and reading stops at the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(
                {"detail": f"request body is {int(declared)} bytes; the limit is {self.max_bytes} (MAX_BODY_BYTES)"},
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
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading, so this becomes a 413.
                    raise HTTPException(
                        413, f"request body exceeds the limit of {self.max_bytes} bytes (MAX_BODY_BYTES)"
                    )
            return message

        await self.app(scope, counted_receive, send)


async def require_json(request: Request) -> None:  # async: a sync dependency costs a thread hop
    """415 unless the body is declared as JSON (`application/json` or `*/*+json`)."""
    declared = request.headers.get("content-type", "")
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (media_type.startswith("application/") and media_type.endswith("+json")):
        raise HTTPException(
            415, f"send the body as JSON with 'Content-Type: application/json' (got {declared or 'no Content-Type'!r})"
        )
