"""POST /api/batch and POST /file/upload: many detections in one request.

Thin: the media type, the limits, the Idempotency-Key and the status codes
are decided here; reading, validating and publishing are `app.bulk_ingest`'s.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, File, Header, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from actors import status_writer
from app.auth import Principal, requires
from app.bulk_ingest import ContentDigest, content_problem, enqueue_batch, enqueue_file, file_format, parse_ndjson
from app.bulk_schemas import (BATCH_REQUEST_EXAMPLES, NDJSON_REQUEST_EXAMPLE, BatchAnswer, UploadAnswer,
                               UploadSubmitted)
from app.errors import KEY_REUSED_RESPONSE, RETRY_AFTER_HEADER, validation_response
from app.idempotency import KEY_PATTERN, Accepted, IdempotencyStore, get_idempotency_store
from app.json_route import OrjsonRoute
from app.links import FIRST_ITEM_STATUS
from app.schemas import ErrorResponse
from app.tenancy import scoped_key
from app.upload_jobs import BackgroundUploads, UploadJob, copy_of, failure_text
from config import get_settings
from pipeline.bulk import UnreadableFile

router = APIRouter(tags=["bulk ingest"], route_class=OrjsonRoute)

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")
#: What an unreadable file is answered, by `UnreadableFile.kind`.
UNREADABLE_STATUS = {"header": 422, "broken": 422, "format": 415, "too_large": 413}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Optional; 1-255 visible ASCII characters. The message ids are derived from it (and each "
        "item's position), so a retry of the same request re-sends the same ids and the rows are written once. "
        "Reusing it for a different body is refused (409).",
    ),
]


def _error(status: int, detail: str, description: str) -> dict:
    return {status: {"model": ErrorResponse, "description": description,
                     "content": {"application/json": {"example": {"detail": detail}}}}}


def _unavailable(detail: str, description: str) -> dict:
    documented = _error(503, detail, description)
    documented[503]["headers"] = RETRY_AFTER_HEADER
    return documented


async def batch_media_type(request: Request) -> str:
    """`json` or `ndjson` from Content-Type; 415 for anything else."""
    declared = request.headers.get("content-type", "")
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return "json"
    if media_type in NDJSON_TYPES:
        return "ndjson"
    raise HTTPException(
        415,
        "send a JSON array with 'Content-Type: application/json', or one payload per line with "
        f"'Content-Type: application/x-ndjson' (got {declared or 'no Content-Type'!r})",
    )


async def require_multipart(request: Request) -> None:
    declared = request.headers.get("content-type", "")
    if declared.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise HTTPException(
            415,
            "upload the file as multipart/form-data, in a field named 'file' "
            f"(got {declared or 'no Content-Type'!r})",
        )


async def check_key(store: IdempotencyStore, key: str, scope: str, fingerprint: str) -> Accepted:
    """409 if `key` was accepted before for another body; else what to remember once enqueued."""
    accepted = Accepted(scope, fingerprint)
    known = await store.lookup(f"{key} {scope}")
    if known is not None and known.fingerprint != fingerprint:
        raise HTTPException(409, detail=[{
            "field": "Idempotency-Key",
            "message": "this key was already used for a different body; use a new key per request",
            "type": "idempotency_key_reused",
        }])
    return accepted


_settings = get_settings()
#: Uploads read in the background (Prefer: respond-async), at most MAX_UPLOAD_JOBS at once.
background_uploads = BackgroundUploads(_settings.max_upload_jobs)


@router.post(
    "/api/batch",
    response_model=BatchAnswer,
    summary="Enqueue many detections at once; each is answered by its index",
    description=(
        "The body is a JSON array of `POST /api` bodies (`Content-Type: application/json`), or one body per "
        "line (`Content-Type: application/x-ndjson`; blank lines are skipped). Each item is validated on its "
        "own, exactly like `POST /api`, so a bad item is answered `rejected` with its errors and never holds "
        "the others back. The valid ones are published together, with pipelined publisher confirms, and "
        "each is answered `received` (RabbitMQ has it) or `unavailable` (RabbitMQ refused it or did not "
        "confirm within BATCH_CONFIRM_TIMEOUT_SECONDS; it may still arrive). "
        f"At most MAX_BATCH_ITEMS ({_settings.max_batch_items}) items (else 422) and MAX_BATCH_BYTES "
        f"({_settings.max_batch_bytes}) bytes (else 413).\n\n"
        "**Retrying.** With an `Idempotency-Key`, item *i*'s message id is derived from the key and *i*: "
        "resend the same body with the same key (after a 503, a timeout or `unavailable` items) and the "
        "rows are written once. Without one, the ids are random and a retry of an item whose fate was "
        "unknown may write its rows twice."
    ),
    response_description="One answer per item, in order, and the counts.",
    responses={
        200: {"links": FIRST_ITEM_STATUS},
        **validation_response(
            "body", "the body must be a JSON array of POST /api bodies (got an object)", "list_type"
        ),
        **KEY_REUSED_RESPONSE,
        **_error(413, f"request body is {_settings.max_batch_bytes + 1} bytes; the limit is "
                 f"{_settings.max_batch_bytes} (MAX_BATCH_BYTES)",
                 "The body is over MAX_BATCH_BYTES; it is refused without being read whole."),
        **_error(415, "send a JSON array with 'Content-Type: application/json', or one payload per line with "
                 "'Content-Type: application/x-ndjson' (got 'text/plain')",
                 "The body is neither JSON nor NDJSON."),
        **_unavailable(
            f"message broker unavailable (no confirm within {_settings.batch_confirm_timeout_seconds} s); "
            "nothing was confirmed, retry later",
            "RabbitMQ confirmed none of the valid items (it is down or too slow); retry after `Retry-After` "
            "seconds, with the same Idempotency-Key.",
        ),
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": _settings.max_batch_items,
                        "items": {"description": "A POST /api body (IngestPayload), validated on its own: "
                                  "an invalid one is answered `rejected`."},
                    },
                    "examples": BATCH_REQUEST_EXAMPLES,
                },
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": "One POST /api body per line."},
                    "example": NDJSON_REQUEST_EXAMPLE,
                },
            }
        }
    },
)
async def ingest_batch(
    request: Request,
    body: Annotated[Any, Body()],
    media_type: Annotated[str, Depends(batch_media_type)],
    principal: Principal = requires("ingest"),
    idempotency_key: IdempotencyKey = None,
    store: IdempotencyStore = Depends(get_idempotency_store),
) -> dict:
    settings = get_settings()
    key = None if idempotency_key is None else scoped_key(principal, idempotency_key)
    if media_type == "ndjson":
        items = await run_in_threadpool(parse_ndjson, body, settings.max_body_bytes)
        if items and all(errors for _, errors in items):  # not NDJSON at all: refuse it like a broken JSON body
            raise HTTPException(422, detail=[errors[0] for _, errors in items[:10]])
    elif isinstance(body, list):
        items = [(value, []) for value in body]
    else:
        kind = {dict: "an object", str: "a string"}.get(type(body), type(body).__name__)
        raise HTTPException(422, detail=[{
            "field": "body", "message": f"the body must be a JSON array of POST /api bodies (got {kind})",
            "type": "list_type",
        }])
    if not items:
        raise HTTPException(422, detail=[{"field": "body", "message": "the batch is empty", "type": "too_short"}])
    if len(items) > settings.max_batch_items:  # 422, not 413: the schema says maxItems, like any field limit
        raise HTTPException(422, detail=[{
            "field": "body",
            "message": f"the batch has {len(items)} items; the limit is {settings.max_batch_items} "
            "(MAX_BATCH_ITEMS): split it",
            "type": "too_long",
        }])
    accepted = None
    if key is not None:
        fingerprint = hashlib.sha256(await request.body()).hexdigest()
        accepted = await check_key(store, key, "batch", fingerprint)
    answer = await enqueue_batch(items, key, settings, principal)
    if accepted is not None and answer["received"]:
        await store.remember(f"{key} batch", accepted)
    return answer


@router.post(
    "/file/upload",
    response_model=UploadAnswer,
    summary="Enqueue every detection of a CSV, XLSX or NDJSON file",
    description=(
        "Upload one file as `multipart/form-data`, field `file`. The file's name says its format:\n\n"
        "- `.csv`, `.xlsx`: the columns of the service's own CSV (docs/csv-format.md), one row "
        "per pred, header first, any column order; `message_id`, `pred_index` and `pred_count` are "
        "optional. Consecutive rows with the same `message_id` (without one: the same device_id, "
        "client_id, created_at and license_id) are one payload, complete at `pred_count` rows. Cells "
        "protected with a leading `'` are restored; `tags` is a JSON array. XLSX: the first sheet.\n"
        "- `.ndjson`: one `POST /api` body per line.\n\n"
        "Each payload is validated like `POST /api`. Valid ones are enqueued as the file is read (in "
        "chunks of up to 1,000), rejected ones are listed with their line and reason (the first 1,000; "
        "`rejected` counts all). A row's `message_id` is kept, so uploading a file the service wrote, or "
        "the same file twice, never duplicates rows; payloads without one get an id derived from the "
        "file's content (or the `Idempotency-Key`) and their position, which is just as stable. "
        f"At most MAX_UPLOAD_BYTES ({_settings.max_upload_bytes}) bytes. CSV and NDJSON are read as a "
        "stream; an XLSX workbook's shared strings are held in memory (MAX_XLSX_STRINGS_BYTES)."
    ),
    response_description="What was read, enqueued and rejected.",
    dependencies=[Depends(require_multipart)],
    responses={
        202: {"model": UploadSubmitted, "description": "With `Prefer: respond-async`: the file is received and "
              "is being read in the background.", "headers": {
                  "Preference-Applied": {"description": "`respond-async`", "schema": {"type": "string"}},
                  "Location": {"description": "The job's status URL.", "schema": {"type": "string"}}}},
        **validation_response(
            "file", "line 1 must be the header: missing column(s) prob. Expected the columns device_id, "
            "client_id, created_at, license_id, prob, tags, image_frame (any order), optionally message_id, "
            "pred_index, pred_count", "file_header"
        ),
        **KEY_REUSED_RESPONSE,
        **_error(400, "Invalid multipart data.", "The multipart body itself is malformed (Starlette's parser)."),
        **_error(413, f"request body is {_settings.max_upload_bytes + 1} bytes; the limit is "
                 f"{_settings.max_upload_bytes} (MAX_UPLOAD_BYTES)",
                 "The body is over MAX_UPLOAD_BYTES, or a workbook unpacks to more than "
                 "MAX_XLSX_UNPACKED_BYTES (or its shared strings to more than MAX_XLSX_STRINGS_BYTES)."),
        **_error(415, "upload the file as multipart/form-data, in a field named 'file' (got 'text/plain')",
                 "Not a multipart upload, a file name other than .csv, .xlsx or .ndjson, or content that is "
                 "not of that kind."),
        **_unavailable(
            f"message broker unavailable (no confirm within {_settings.batch_confirm_timeout_seconds} s); 3000 "
            "payloads were enqueued before that "
            "and reading stopped at line 12001. Upload the same file again later: its message ids are "
            "deterministic, so nothing is written twice",
            "RabbitMQ failed during the upload; what was enqueued before stays, and uploading the same file "
            "again (after `Retry-After` seconds) enqueues the rest without duplicating anything.",
        ),
    },
)
async def upload_file(
    file: Annotated[UploadFile, File(description="A .csv, .xlsx or .ndjson file.")],
    principal: Principal = requires("ingest"),
    idempotency_key: IdempotencyKey = None,
    prefer: Annotated[str | None, Header(
        description="`respond-async`: answer 202 with the job's id as soon as the file is received, and read it "
        "in the background; `GET /tasks/{job_id}` shows its progress and then this route's answer.")] = None,
    store: IdempotencyStore = Depends(get_idempotency_store),
) -> Any:
    settings = get_settings()
    key = None if idempotency_key is None else scoped_key(principal, idempotency_key)
    kind = file_format(file.filename)
    if kind is None:
        raise HTTPException(415, f"upload a .csv, .xlsx or .ndjson file (got {file.filename!r})")
    head = await file.read(4)
    await file.seek(0)
    mismatch = content_problem(head, kind)
    if mismatch is not None:
        raise HTTPException(415, f"{file.filename!r}: {mismatch}")
    respond_async = prefer is not None and "respond-async" in prefer.lower()
    source = file.file
    if respond_async:
        background_uploads.admit()
        try:
            source = await run_in_threadpool(copy_of, file.file)  # the request's file closes when it ends
        except BaseException:
            background_uploads.release()
            raise
    try:
        content = ContentDigest(source)
        accepted = None
        if key is not None:
            accepted = await check_key(store, key, "upload", await run_in_threadpool(content.hexdigest))
    except BaseException:
        if respond_async:
            background_uploads.release()
            source.close()
        raise
    job = UploadJob(file.filename, principal)

    async def read() -> dict:
        try:
            answer = await enqueue_file(source, file.filename, kind, key, content, settings, principal, job.progress)
        except UnreadableFile as error:
            raise unreadable(error) from None
        answer["job_id"] = job.job_id
        if accepted is not None and answer["enqueued"]:
            await store.remember(f"{key} upload", accepted)
        return answer

    if respond_async:
        async def in_background() -> dict:
            try:
                return await read()
            finally:
                source.close()

        background_uploads.start(job, in_background)
        await asyncio.wrap_future(status_writer.flushed())  # a GET right after the 202 finds the job
        return JSONResponse({"job_id": job.job_id, "status": "submitted", "status_url": job.status_url},
                            status_code=202, headers={"Preference-Applied": "respond-async",
                                                      "Location": job.status_url})
    try:
        answer = await read()
    except BaseException as error:
        job.failed(failure_text(error))
        raise
    job.succeeded(answer)
    return answer


def unreadable(error: UnreadableFile) -> HTTPException:
    status = UNREADABLE_STATUS[error.kind]
    detail: Any = error.message
    if status == 422:
        detail = [{"field": "file", "message": error.message, "type": f"file_{error.kind}"}]
    return HTTPException(status, detail=detail)
