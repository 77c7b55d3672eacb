"""Error answers that name the offending field and say what to do."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.schemas import ErrorResponse


def field_path(location: tuple | list) -> str:
    """`("body", "data", "preds", 0, "prob")` -> `data.preds.0.prob`; `("header", "Idempotency-Key")` -> the header."""
    parts = list(location)
    if parts and parts[0] in ("body", "header", "query", "path"):
        parts = parts[1:]
    return ".".join(str(part) for part in parts) or "body"


async def validation_error_handler(request: Request, error: RequestValidationError) -> JSONResponse:
    details = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            message = f"body is not valid JSON: {item.get('ctx', {}).get('error', item['msg'])}"
            details.append({"field": "body", "message": message, "type": "json_invalid"})
            continue
        details.append({"field": field_path(item["loc"]), "message": item["msg"], "type": item["type"]})
    return JSONResponse({"detail": details}, status_code=422)


VALIDATION_RESPONSE = {422: {"model": ErrorResponse, "description": "A field is missing or invalid; `field` names it."}}
UNAVAILABLE_RESPONSE = {
    503: {"model": ErrorResponse, "description": "RabbitMQ is unreachable; nothing was enqueued. Retry after `Retry-After`."}
}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_handler)
