"""Every request, observed once: its X-Request-ID, its access line and its metrics.

The id, from the client or made here, is set for the request's log lines
(logs.REQUEST_ID), echoed in the response, and `app.publishing` puts it into
the message's options, so the worker's log lines for that message carry it
too. The same wrapper of `send` sees the status for the access line and for
the request metrics (app.metrics), so the hot path pays for one layer, not two.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import observe_request
from logs import info_line, log_context

HEADER = b"x-request-id"
#: A client's id is kept only if it is safe to log and to put in a header: short, visible ASCII.
_ACCEPTABLE = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == HEADER:
            if _ACCEPTABLE.fullmatch(value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


class RequestContext:
    """Give each HTTP request an id; count and time it; log one access line when `access_log` is on.

    Outermost of the app's middlewares, so requests refused by the body limit (413) are counted too.
    """

    def __init__(self, app: ASGIApp, access_log: bool = True):
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, request_id.encode("ascii"))]
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                observe_request(scope, status, seconds)
                if self.access_log:
                    duration_ms = round(seconds * 1000, 2)
                    method, path = scope["method"], scope["path"]
                    info_line(__name__, f"{method} {path} {status} {duration_ms} ms",
                              method=method, path=path, status=status, duration_ms=duration_ms)
