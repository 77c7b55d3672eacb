"""Error answers that name the offending field and say what to do."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.schemas import ErrorResponse


def field_path(location: tuple | list) -> str:
    """`("body", "data", "preds", 0, "prob")` -> `data.preds.0.prob`; `("header", "Idempotency-Key")` -> the header."""
    parts = list(location)
    if parts and parts[0] in ("body", "header", "query", "path"):
        parts = parts[1:]
    return ".".join(str(part) for part in parts) or "body"


def field_error(field: str, message: str, error_type: str) -> HTTPException:
    """A 422 for one field, shaped as FastAPI's own validation errors are answered here."""
    return HTTPException(422, detail=[{"field": field, "message": message, "type": error_type}])


async def validation_error_handler(request: Request, error: RequestValidationError) -> JSONResponse:
    details = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            message = f"body is not valid JSON: {item.get('ctx', {}).get('error', item['msg'])}"
            details.append({"field": "body", "message": message, "type": "json_invalid"})
            continue
        details.append({"field": field_path(item["loc"]), "message": item["msg"], "type": item["type"]})
    return JSONResponse({"detail": details}, status_code=422)


def validation_response(field: str, message: str, error_type: str) -> dict:
    """The 422 entry for `responses=`, its example an answer the route really gives (a unit test asks it)."""
    example = {"detail": [{"field": field, "message": message, "type": error_type}]}
    return {
        422: {
            "model": ErrorResponse,
            "description": "A parameter or field is missing or invalid; `field` names it (`body`: not JSON).",
            "content": {"application/json": {"example": example}},
        }
    }


VALIDATION_RESPONSE = validation_response(
    "data.preds.0.prob", "Input should be less than or equal to 1", "less_than_equal"
)

#: `RETRY_AFTER_SECONDS` of app.publishing; a unit test keeps them equal.
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer"},
        "example": 1,
    }
}
UNAVAILABLE_RESPONSE = {
    503: {
        "model": ErrorResponse,
        "description": "RabbitMQ is unreachable or did not answer in time; retry after `Retry-After` seconds.",
        "headers": RETRY_AFTER_HEADER,
        "content": {
            "application/json": {
                "example": {
                    "detail": "message broker unavailable (no confirm in time); nothing was confirmed, retry later"
                }
            }
        },
    }
}
TOO_LARGE_RESPONSE = {
    413: {
        "model": ErrorResponse,
        "description": "The body is over MAX_BODY_BYTES; it is refused without being read whole.",
        "content": {
            "application/json": {
                "example": {"detail": "request body is 4194305 bytes; the limit is 4194304 (MAX_BODY_BYTES)"}
            }
        },
    }
}
NOT_JSON_RESPONSE = {
    415: {
        "model": ErrorResponse,
        "description": "The body is not declared as JSON (`application/json` or `application/*+json`).",
        "content": {
            "application/json": {
                "example": {"detail": "send the body as JSON with 'Content-Type: application/json' (got 'text/plain')"}
            }
        },
    }
}
#: Besides its 422: what a route behind `require_json` answers before it reads the body.
JSON_BODY_RESPONSES = {**TOO_LARGE_RESPONSE, **NOT_JSON_RESPONSE}
#: Every operation, /health and /ready too: the Host check answers before any route does.
HOST_REFUSED_RESPONSE = {
    400: {
        "description": "The Host header is not one of ALLOWED_HOSTS (a page elsewhere pointing a DNS name at "
        "this address is refused: DNS rebinding).",
        "content": {"text/plain": {"schema": {"type": "string"}, "example": "Invalid host header"}},
    }
}
KEY_REUSED_RESPONSE = {
    409: {
        "model": ErrorResponse,
        "description": "The Idempotency-Key was used before for a different body; nothing was enqueued.",
        "content": {
            "application/json": {
                "example": {
                    "detail": [
                        {
                            "field": "Idempotency-Key",
                            "message": "this key was already used for a different body; use a new key per request",
                            "type": "idempotency_key_reused",
                        }
                    ]
                }
            }
        },
    }
}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_handler)
