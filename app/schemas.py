"""The payload contract of the API and its validation messages.

Limits come from `config.Settings`, read once at import. Unknown fields are
rejected rather than dropped, so a client's typo never loses data silently.
"""

from __future__ import annotations

import binascii
import re
from datetime import datetime
from typing import Annotated, Literal

import pybase64
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, StringConstraints, field_validator

from config import get_settings

_settings = get_settings()



# Strict str also refuses lone surrogates ("\ud800"), which could not be written as UTF-8.
Identifier = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=_settings.max_id_length)]
Tag = Annotated[str, StringConstraints(strict=True, max_length=_settings.max_tag_length)]

BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def is_padded_base64(value: str) -> bool:
    """Whether `value` matches BASE64_PATTERN (RFC 4648 base64, padded), without a regex.

    Checking the frames is the largest part of validating a request (~5 frames of 8 KB). binascii's
    decoding took a sixth of the API's time; deleting the alphabet with `bytes.translate`, 3 us a
    frame and ~4% of the API under perf; pybase64's SIMD decoder, which refuses anything off the
    alphabet or its padding, 0.8 us (bench/RESULTS.md). tests/unit/test_schemas.py checks it
    against the pattern on any text.
    """
    if not value.isascii():
        return False
    try:
        pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def integral_float_to_int(value: object) -> object:
    """JSON Schema counts 5.0 as an integer; accept it, but never a string."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def decimal_digits(value: object) -> object:
    """A query parameter's text as JSON Schema's integer: int() alone also takes " 9", "9\\t", "+9" and "9_0".

    Use it as `Annotated[int, Query(...), DIGITS_ONLY]`, in that order: with `= Query(...)` as the
    default FastAPI drops the validator, and with the validator first the schema shows `ge`/`le`
    instead of `minimum`/`maximum`.
    """
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number in decimal digits, e.g. 100")
    return value


#: For an integer query parameter: written in digits and nothing else.
DIGITS_ONLY = BeforeValidator(decimal_digits)


SEED_EXAMPLE = {
    "device_id": "cam-01",
    "client_id": "acme",
    "created_at": "2023-02-13 10:49:06.613585",
    "data": {
        "license_id": "lic-42",
        "preds": [{"image_frame": "aGVsbG8gd29ybGQ=", "prob": 0.87, "tags": ["person", "entrance"]}],
    },
}

#: What the seed does not show: ISO 8601 with a zone, and several preds (one CSV row each).
SEVERAL_PREDS_EXAMPLE = {
    "device_id": "cam-07",
    "client_id": "acme",
    "created_at": "2023-02-13T10:49:06.613585+01:00",
    "data": {
        "license_id": "lic-42",
        "preds": [
            {"image_frame": "aGVsbG8gd29ybGQ=", "prob": 0.93, "tags": ["person"]},
            {"image_frame": "Zm9vYmFy", "prob": 0.41, "tags": ["vehicle", "parking"]},
            {"image_frame": "YmF6", "prob": 0.05, "tags": []},
        ],
    },
}


class Prediction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_frame: str = Field(
        min_length=1,
        max_length=_settings.max_frame_length,
        strict=True,
        description="The frame, standard base64 (RFC 4648) with padding.",
        # In the schema for clients and fuzzers; checked by binascii, whose messages say more.
        json_schema_extra={"pattern": BASE64_PATTERN},
    )
    prob: StrictFloat = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="Confidence in [0, 1].")
    tags: list[Tag] = Field(max_length=_settings.max_tags, description="Labels; any text.")

    @field_validator("image_frame")
    @classmethod
    def image_frame_is_base64(cls, value: str) -> str:
        if is_padded_base64(value):
            return value
        try:  # only to say what is wrong: binascii's messages are precise
            binascii.a2b_base64(value, strict_mode=True)
        except ValueError as error:  # binascii.Error, or "only ASCII characters"
            reason = str(error)
        else:  # binascii lets a run of extra "=" after the last group through; RFC 4648 does not
            reason = "excess padding"
        raise ValueError(f"image_frame must be standard base64 with padding ({reason})")


class Detection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    license_id: Identifier
    preds: list[Prediction] = Field(
        min_length=1, max_length=_settings.max_preds, description="One CSV row is written per item."
    )


_ISO_DATE_START = re.compile(r"\d{4}-\d{2}-\d{2}[Tt _]")


def iso_8601_text(field: str) -> BeforeValidator:
    """pydantic would also read a number, or a string of digits, as Unix time; the contract is ISO 8601 text."""

    def check(value: object) -> object:
        if not isinstance(value, str) or not _ISO_DATE_START.match(value):
            raise ValueError(f"{field} must be ISO 8601 text with a date and a time, e.g. 2023-02-13T10:49:06+01:00")
        return value

    return BeforeValidator(check)


class IngestPayload(BaseModel):
    """One detection report from a device."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SEED_EXAMPLE, SEVERAL_PREDS_EXAMPLE]})

    device_id: Identifier
    client_id: Identifier
    created_at: Annotated[datetime, iso_8601_text("created_at")] = Field(
        description="ISO 8601, with or without zone; `2023-02-13 10:49:06.613585` works too. "
        "Stored in ISO 8601 form, zone kept as sent."
    )
    data: Detection


class IngestAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "received", "message_id": "0f5bb7a4-2c3e-4d6b-9a41-5c1e8f7d2b90"}]}
    )

    status: Literal["received", "duplicate"] = Field(
        "received", description="`duplicate`: this Idempotency-Key was accepted before; nothing new was enqueued."
    )
    message_id: str = Field(description="Dramatiq message id; the rows carry it in `message_id`.")


#: An integer as JSON Schema means it: 5 and 5.0, but never true or "5" (pair with strict=True).
JsonInt = Annotated[int, BeforeValidator(integral_float_to_int)]


class CountdownRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"seconds": 5}]})

    seconds: JsonInt = Field(
        ge=0, le=_settings.max_countdown_seconds, strict=True, examples=[5]
    )


class CountdownSubmitted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"message_id": "6c2d1e9f-8b4a-4f3e-a1d7-3e5b9c0f4a12", "seconds": 5, "status": "submitted"}]
        }
    )

    message_id: str
    seconds: int
    status: Literal["submitted"] = "submitted"


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. `data.preds.0.prob`.")
    message: str
    type: str


class ErrorResponse(BaseModel):
    detail: str | list[FieldError]
