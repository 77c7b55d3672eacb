"""The answers of the bulk routes (POST /api/batch, POST /file/upload) and their documented examples.

A batch is answered item by item, so that one bad item never costs the
others; an upload is answered with counts and the rejected lines, because a
file may hold millions of payloads.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import SEED_EXAMPLE, FieldError

EXAMPLE_ID = "0f5bb7a4-2c3e-4d6b-9a41-5c1e8f7d2b90"
EXAMPLE_ERROR = {"field": "data.preds.0.prob", "message": "Input should be less than or equal to 1",
                 "type": "less_than_equal"}


class BatchItemReceived(BaseModel):
    index: int = Field(description="Position of the item in the batch (0-based).")
    status: Literal["received"] = "received"
    message_id: str = Field(description="RabbitMQ confirmed it; its rows will carry this id.")


class BatchItemRejected(BaseModel):
    index: int
    status: Literal["rejected"] = "rejected"
    errors: list[FieldError] = Field(description="As in a 422 of POST /api; nothing was enqueued for it.")


class BatchItemUnavailable(BaseModel):
    index: int
    status: Literal["unavailable"] = "unavailable"
    message_id: str = Field(description="The id it was sent with; with an Idempotency-Key a retry reuses it.")
    error: str = Field(description="Why RabbitMQ did not confirm it; it may still have arrived.")


BatchItem = Annotated[Union[BatchItemReceived, BatchItemRejected, BatchItemUnavailable], Field(discriminator="status")]


class BatchAnswer(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "total": 2,
                    "received": 1,
                    "rejected": 1,
                    "unavailable": 0,
                    "items": [
                        {"index": 0, "status": "received", "message_id": EXAMPLE_ID},
                        {"index": 1, "status": "rejected", "errors": [EXAMPLE_ERROR]},
                    ],
                }
            ]
        }
    )

    total: int = Field(description="Items in the batch.")
    received: int
    rejected: int
    unavailable: int
    items: list[BatchItem] = Field(description="One answer per item, in the batch's order.")


class UploadRejection(BaseModel):
    line: int = Field(description="First line (CSV, NDJSON) or row (XLSX) of the payload; the header is line 1.")
    last_line: int = Field(description="Its last line; a CSV payload has one line per pred.")
    message_id: Optional[str] = Field(None, description="The file's message_id for it, if the file has that column.")
    errors: list[FieldError] = Field(description="Why: `field` is the column (CSV, XLSX) or the JSON path (NDJSON).")


class UploadAnswer(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "filename": "data.csv",
                    "format": "csv",
                    "rows_read": 1204,
                    "payloads": 301,
                    "enqueued": 300,
                    "rejected": 1,
                    "complete": True,
                    "rejections": [
                        {
                            "line": 57,
                            "last_line": 58,
                            "message_id": EXAMPLE_ID,
                            "errors": [{"field": "prob", "message": "line 58: prob 'high' is not a number",
                                        "type": "float_parsing"}],
                        }
                    ],
                    "job_id": "8b7c1e2a-3f4d-4e5a-9b6c-7d8e9f0a1b2c",
                }
            ]
        }
    )

    filename: str
    format: Literal["csv", "xlsx", "ndjson"]
    rows_read: int = Field(description="Data rows (CSV, XLSX) or non-blank lines (NDJSON) read.")
    payloads: int = Field(description="Payloads found: enqueued + rejected.")
    enqueued: int = Field(description="Payloads RabbitMQ confirmed (a payload whose id is already in the CSV is "
                          "confirmed too, and the workers skip it).")
    rejected: int = Field(description="Payloads refused; the first 1,000 are listed in `rejections`.")
    complete: bool = Field(description="False when reading had to stop before the end of the file; the last "
                           "rejection says where and why.")
    rejections: list[UploadRejection]
    job_id: str = Field(description="The upload's job: `GET /tasks/{job_id}` shows its progress while it runs and "
                        "this answer afterwards (for STATUS_TTL_SECONDS).")


class UploadSubmitted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "8b7c1e2a-3f4d-4e5a-9b6c-7d8e9f0a1b2c", "status": "submitted",
        "status_url": "/tasks/8b7c1e2a-3f4d-4e5a-9b6c-7d8e9f0a1b2c"}]})

    job_id: str
    status: Literal["submitted"]
    status_url: str = Field(description="`GET` it for the progress (`rows_read`, `payloads`, `enqueued`, "
                            "`rejected`), then the upload's answer as `result`.")


# -- documented answers of the routes ----------------------------------------------------------

BATCH_REQUEST_EXAMPLES = {
    "seed": {"summary": "The seed example, and one item with a bad prob", "value": [
        SEED_EXAMPLE,
        {**SEED_EXAMPLE, "data": {**SEED_EXAMPLE["data"], "preds": [{**SEED_EXAMPLE["data"]["preds"][0], "prob": 1.5}]}},
    ]},
}
NDJSON_REQUEST_EXAMPLE = (
    '{"device_id": "cam-01", "client_id": "acme", "created_at": "2023-02-13 10:49:06.613585", "data": '
    '{"license_id": "lic-42", "preds": [{"image_frame": "aGVsbG8gd29ybGQ=", "prob": 0.87, "tags": ["person", '
    '"entrance"]}]}}\n'
    '{"device_id": "cam-02", "client_id": "acme", "created_at": "2023-02-13T10:49:07Z", "data": '
    '{"license_id": "lic-42", "preds": [{"image_frame": "Zm9vYmFy", "prob": 0.41, "tags": []}]}}\n'
)
