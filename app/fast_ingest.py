"""POST /api's common case without FastAPI's per-request machinery.

Profiles of the API under load put about a third of its CPU in FastAPI's
routing, dependency solving, request objects and response-model
serialisation, for a route whose work is: parse, validate, publish, answer.
This ASGI middleware does exactly that for a well-formed detection declared
as JSON without an Idempotency-Key, with the same schema, the same
authentication (app.auth.check) and the same publish path. Every other
request to POST /api (another content type, an Idempotency-Key, a key that
is missing, lacks `ingest` or is over its rate, a body that does not validate
or a client_id the key may not send for) goes on to the FastAPI route, with
the body replayed if it was read already, so that every error
answer, and the OpenAPI entry, stay the route's own. Measured: 744 -> ~1,050
accepted req/s on the benchmark (bench/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import CHECKED, check
from app.limits import declares_json
from app.routers import ingest as ingest_route
from app.schemas import IngestPayload
from app.tenancy import client_problem

PATH = "/api"


class FastIngest:
    def __init__(self, app: ASGIApp, api: Any):
        self.app = app
        self.api = api
        self._route: Any = None

    @property
    def route(self) -> Any:
        """The FastAPI route of POST /api: request metrics label by its template, as for any route."""
        if self._route is None:
            for context in iter_route_contexts(self.api.routes):
                route = context.original_route
                if isinstance(route, APIRoute) and route.path == PATH and "POST" in route.methods:
                    self._route = route
                    break
            else:
                raise LookupError(f"POST {PATH} is not a route of the app")
        return self._route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST"):
            await self.app(scope, receive, send)
            return
        content_type = authorization = b""
        for name, value in scope["headers"]:
            if name == b"idempotency-key":
                await self.app(scope, receive, send)
                return
            if name == b"content-type":
                content_type = value
            elif name == b"authorization" and not authorization:  # the first, as Starlette reads it
                authorization = value
        if not declares_json(content_type.decode("latin-1")):
            await self.app(scope, receive, send)
            return
        try:
            principal = await check(authorization.decode("latin-1"), ["ingest"], scope.get("server"), scope["headers"])
        except HTTPException:  # 401, 403, 429: the route words it (and counts nothing twice)
            await self.app(scope, receive, send)
            return

        try:
            body = await _read_body(receive)
        except HTTPException as error:  # the body limit, counted as it arrived
            await _answer(send, error.status_code, {"detail": error.detail}, error.headers)
            return
        try:
            # pydantic's own JSON parser: one pass from bytes to the model, without the dict of
            # Python objects orjson.loads would build first (~20% of parse and validate together).
            # Where it and the route's parse differ, it only refuses: any refusal goes to the route.
            payload = IngestPayload.model_validate_json(body)
        except ValidationError:
            payload = None
        if payload is None or client_problem(principal, payload.client_id) is not None:
            scope[CHECKED] = principal  # the route words the 422 or 403; the key was counted once
            await self.app(scope, _replay(body, receive), send)
            return

        scope["route"] = self.route
        try:
            # The route module's publish and actor: one way to enqueue a detection, whichever path.
            message_id = await ingest_route.publish(
                ingest_route.write_detection_rows, payload.model_dump(mode="json"), sender=principal
            )
        except HTTPException as error:  # 503: RabbitMQ unreachable or no confirm in time
            await _answer(send, error.status_code, {"detail": error.detail}, error.headers)
            return
        await _answer(send, 202, {"status": "received", "message_id": message_id})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPException(400, "client disconnected before sending the whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, status: int, content: dict, headers: dict[str, str] | None = None) -> None:
    body = orjson.dumps(content)
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
