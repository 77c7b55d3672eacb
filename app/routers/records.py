"""GET /records: the rows this host's shard holds, read back by who sent them and when they were written.

The route only turns the query string into a pipeline.records.RecordQuery
(the caller's tenant decides whose rows: a key sees its tenant's, an admin key
every tenant's) and the page into JSON; the bounds of a page come from config.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Optional

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.auth import Principal, requires
from app.errors import RETRY_AFTER_HEADER, ErrorResponse, field_error, validation_response
from app.json_route import OrjsonRoute
from app.schemas import DIGITS_ONLY, iso_8601_text
from config import get_settings
from pipeline.records import CURSOR_PATTERN, RecordQuery, RecordsUnavailable, read_page

router = APIRouter(tags=["records"], route_class=OrjsonRoute)
#: In the schema, so a client (and schemathesis) knows the bound before asking.
_MAX_ROWS = get_settings().max_records_page_rows

EXAMPLE_ROW = {
    "message_id": "6f1c3cfa-5d8c-4d67-9a53-2f0b1f1b7c11",
    "pred_index": 0,
    "pred_count": 2,
    "device_id": "cam-01",
    "client_id": "acme",
    "created_at": "2023-02-13T10:49:06.613585+01:00",
    "license_id": "lic-7",
    "prob": 0.91,
    "tags": ["person"],
    "image_frame": "iVBORw0KGgo=",
    "written_at": "2026-12-03T07:30:12.345Z",
}


class Record(BaseModel):
    """One CSV row, typed, and when it became durable."""

    message_id: str
    pred_index: int
    pred_count: int
    device_id: str
    client_id: str
    created_at: str = Field(description="As the client sent it.")
    license_id: str
    prob: float
    tags: list[Any]
    image_frame: Optional[str] = Field(None, description="Left out with `frames=false`.")
    written_at: str = Field(description="When the worker's commit made the row durable (UTC).")


class RecordsPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "records": [EXAMPLE_ROW], "next": "3.1048576.1", "more": True, "scanned": 1, "unavailable": []}]})

    records: list[Record] = Field(description="In the order they were written.")
    next: str = Field(description="Pass it as `cursor`, with the same filters, for the next page. On the last "
                      "page too: keep it to read, later, the rows written since.")
    more: bool = Field(description="The page stopped at a bound (`limit`, MAX_RECORDS_SCAN ledger entries, "
                       "MAX_RECORDS_PAGE_BYTES) with more to look at; false: this is all there is now.")
    scanned: int = Field(description="Ledger entries (messages) this page examined.")
    unavailable: list[str] = Field(description="Sealed files the shard's ledger names that are no longer beside "
                                   "CSV_PATH (moved or merged away): their rows were skipped.")


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@router.get(
    "/records",
    response_model=RecordsPage,
    response_model_exclude_none=True,
    summary="Rows written, by client, device and time, a page at a time",
    description="Reads this host's shard (CSV_PATH and the files sealed from it) through its ledger: each page "
    "examines at most MAX_RECORDS_SCAN messages and reads at most MAX_RECORDS_PAGE_BYTES, whatever the size "
    "of the shard. A key reads its tenant's rows; an admin key every tenant's.",
    responses={
        **validation_response("limit", f"Input should be less than or equal to {_MAX_ROWS}", "less_than_equal"),
        503: {"model": ErrorResponse, "headers": RETRY_AFTER_HEADER,
              "description": "The shard's ledger cannot be read now, or a file disagrees with it.",
              "content": {"application/json": {"example": {"detail": "records unavailable (...); retry later"}}}},
    },
)
async def list_records(
    client_id: Annotated[Optional[str], Query(description="Only rows of this `client_id`.")] = None,
    device_id: Annotated[Optional[str], Query(description="Only rows of this `device_id`.")] = None,
    since: Annotated[Optional[datetime], iso_8601_text("since"),
                     Query(description="Rows written at or after (ISO 8601; UTC if no zone).",
                           examples=["2026-12-03T00:00:00Z"])] = None,
    until: Annotated[Optional[datetime], iso_8601_text("until"), Query(description="Rows written before.")] = None,
    limit: Annotated[int, Query(ge=1, le=_MAX_ROWS, description="At most this many rows (MAX_RECORDS_PAGE_ROWS)."),
                     DIGITS_ONLY] = 100,
    cursor: Annotated[Optional[str], Query(pattern=CURSOR_PATTERN, description="`next` of the page before.")] = None,
    frames: Annotated[bool, Query(description="Include each row's `image_frame`.")] = True,
    principal: Principal = requires("read"),
) -> dict:
    settings = get_settings()
    for name, value in (("client_id", client_id), ("device_id", device_id)):
        if value is not None and len(value) > settings.max_id_length:
            raise field_error(name, f"{name} is longer than {settings.max_id_length} characters (MAX_ID_LENGTH)",
                              "string_too_long")
    query = RecordQuery(
        tenant=None if principal.admin else principal.tenant,
        client_id=client_id, device_id=device_id, since=_epoch(since), until=_epoch(until), limit=limit,
        scan=settings.max_records_scan, max_bytes=settings.max_records_page_bytes,
    )
    try:
        page = await run_in_threadpool(read_page, settings.csv_path, query, cursor)
    except RecordsUnavailable as error:
        raise HTTPException(503, f"records unavailable ({error}); retry later", headers={"Retry-After": "5"}) from None
    if not frames:
        for row in page.records:
            row.pop("image_frame")
    return {"records": page.records, "next": page.next, "more": page.more, "scanned": page.scanned,
            "unavailable": page.unavailable}
