"""Bulk ingest: many payloads, each validated like a POST /api body, given ids, published in chunks.

The routes (`app/routers/bulk.py`) stay thin; this module does the work
between parsing (`pipeline/bulk.py`) and publishing (`app/publishing.py`):

- Validation is the one POST /api uses (`IngestPayload`), item by item, so
  one bad item is reported and the others go on.
- Message ids are deterministic whenever a retry must not duplicate rows:
  from the `Idempotency-Key` and the item's position, from the file's own
  `message_id` column, or from the file's content and the payload's position.
  The sink writes a message id once, so re-sending yields no second row.
- Parsing and validation run in a worker thread, a chunk at a time, so the
  event loop keeps answering other requests while a large file is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

from fastapi import HTTPException
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from actors.ingest import write_detection_rows
from app.auth import Principal
from app.errors import field_path
from app.idempotency import message_id_for
from app.publishing import MAX_IN_FLIGHT, RETRY_AFTER_SECONDS, PublishOutcome, broker_unavailable, publish_many
from app.schemas import IngestPayload
from app.tenancy import client_problem, file_row_id, id_scope, in_scope
from config import Settings
from pipeline.bulk import (
    FilePayload,
    ReadProgress,
    UnreadableFile,
    problem,
    read_csv_payloads,
    read_ndjson_payloads,
    read_xlsx_payloads,
)

#: Rejected payloads listed in an upload's answer; the count covers all of them.
MAX_LISTED_REJECTIONS = 1000
#: Characters of payloads parsed and held at once during an upload (a chunk also ends at MAX_IN_FLIGHT).
#: Small on purpose: measured on an 84 MB CSV, 2 MiB chunks cost the API +11 MB of peak RSS and 32 MiB
#: chunks +139 MB, at the same speed (the confirms of a chunk are batched either way).
CHUNK_CHARS = 2 * 1024 * 1024
FILE_FORMATS = ("csv", "xlsx", "ndjson")
T = TypeVar("T")


def validate(value: Any, sender: Principal) -> tuple[dict | None, list[dict[str, str]]]:
    """(the JSON body to enqueue, []) or (None, the errors in the 422 shape, or the sender's key may
    not send for its client_id)."""
    try:
        payload = IngestPayload.model_validate(value)
    except ValidationError as error:
        return None, [problem(field_path(item["loc"]), item["msg"], item["type"]) for item in error.errors()]
    forbidden = client_problem(sender, payload.client_id)
    if forbidden is not None:
        return None, [forbidden]
    return payload.model_dump(mode="json"), []


def bounded_chunks(items: Iterable[T], size_of: Callable[[T], int]) -> Iterator[list[T]]:
    """`items` in consecutive lists of at most MAX_IN_FLIGHT, and of about CHUNK_CHARS characters."""
    chunk: list[T] = []
    chars = 0
    for item in items:
        chunk.append(item)
        chars += size_of(item)
        if len(chunk) >= MAX_IN_FLIGHT or chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def payload_chars(body: dict) -> int:
    """About the size of a payload's message: its frames and tags make most of it."""
    preds = body["data"]["preds"]
    return 256 + sum(len(pred["image_frame"]) + sum(len(tag) + 4 for tag in pred["tags"]) + 32 for pred in preds)


# `key` is an Idempotency-Key already scoped to its tenant (app.tenancy.scoped_key). The separators
# are spaces, which an Idempotency-Key cannot hold (app.idempotency.KEY_PATTERN): no derived id can
# equal the id of a single POST /api, nor one derived for another route.
def batch_message_id(key: str, index: int) -> str:
    return message_id_for(f"{key} batch {index}")


def file_message_id(key: str | None, content: ContentDigest | str, ordinal: int, scope: str) -> str:
    """Without a key, from the file's SHA-256 (a ContentDigest, or its hex digest) in the sender's
    id scope (app.tenancy.id_scope): two tenants uploading one file get two sets of messages."""
    if key is not None:
        return message_id_for(f"{key} upload {ordinal}")
    content_sha256 = content if isinstance(content, str) else content.hexdigest()
    return message_id_for(in_scope(scope, f"{content_sha256} upload-content {ordinal}"))


# -- POST /api/batch ---------------------------------------------------------------------------


def parse_ndjson(body: bytes, max_line_bytes: int) -> list[tuple[Any, list[dict[str, str]]]]:
    """The items of an NDJSON body, one per non-blank line: (value, []) or (None, why it is not JSON)."""
    lines = read_ndjson_payloads(io.BytesIO(body), max_line_bytes=max_line_bytes, progress=ReadProgress())
    return [(line.payload, line.errors) for line in lines]


async def enqueue_batch(
    items: list[tuple[Any, list[dict[str, str]]]], key: str | None, settings: Settings, sender: Principal
) -> dict:
    """Validate every item, publish the valid ones together, answer each by its index (BatchAnswer).

    `items` are (value, errors): an item that could not even be parsed
    (an NDJSON line that is not JSON) comes with its errors. Raises 503 when
    RabbitMQ confirmed none of the valid items.
    """
    checked = await run_in_threadpool(lambda: [validate(value, sender) if not errors else (None, errors)
                                               for value, errors in items])
    valid = [index for index, (body, _) in enumerate(checked) if body is not None]
    ids = {index: batch_message_id(key, index) if key is not None else str(uuid.uuid4()) for index in valid}
    outcomes: list[PublishOutcome] = []
    # Published a bounded chunk at a time: encoded messages are as large as the batch itself.
    for chunk in bounded_chunks(valid, lambda index: payload_chars(checked[index][0])):
        published = await publish_many(
            write_detection_rows,
            [(checked[index][0],) for index in chunk],
            [ids[index] for index in chunk],
            sender=sender,
            confirm_timeout=settings.batch_confirm_timeout_seconds,
        )
        outcomes += published
        if all(outcome.error for outcome in published):  # RabbitMQ is down: do not wait for it chunk after chunk
            outcomes += [PublishOutcome(ids[index], published[0].error) for index in valid[len(outcomes):]]
            break
    answers: list[dict] = [
        {"index": index, "status": "rejected", "errors": errors} for index, (_, errors) in enumerate(checked)
    ]
    for index, outcome in zip(valid, outcomes):
        if outcome.error is None:
            answers[index] = {"index": index, "status": "received", "message_id": outcome.message_id}
        else:
            answers[index] = {"index": index, "status": "unavailable", "message_id": outcome.message_id,
                              "error": outcome.error}
    counts = {status: 0 for status in ("received", "rejected", "unavailable")}
    for answer in answers:
        counts[answer["status"]] += 1
    if counts["unavailable"] and not counts["received"]:
        raise broker_unavailable(next(o.error for o in outcomes if o.error))
    return {"total": len(items), **counts, "items": answers}


# -- POST /file/upload -------------------------------------------------------------------------


def file_format(filename: str | None) -> str | None:
    """`csv`, `xlsx` or `ndjson` from the file's name, or None."""
    suffix = (filename or "").rsplit(".", 1)[-1].lower() if "." in (filename or "") else ""
    return suffix if suffix in FILE_FORMATS else None


def content_problem(head: bytes, kind: str) -> str | None:
    """Why the first bytes of a file do not fit its declared kind, or None."""
    is_zip = head.startswith(b"PK\x03\x04")
    if kind == "xlsx":
        return None if is_zip else "a .xlsx file is a zip archive; this one is not"
    if is_zip:
        return f"a .{kind} file is text; this one is a zip archive (an .xlsx? then name it so)"
    return None


class ContentDigest:
    """SHA-256 of an uploaded file, computed once and only when asked.

    A file whose rows carry their message ids, uploaded without an
    Idempotency-Key, needs no hash at all (hashing 1 GB takes seconds). It is
    read with `os.pread`, so a reader's position in the file is left alone.
    """

    def __init__(self, file: BinaryIO):
        self._file = file
        self._hex: str | None = None
        self._lock = threading.Lock()

    def hexdigest(self) -> str:
        with self._lock:
            if self._hex is None:
                digest, fd, offset = hashlib.sha256(), self._file.fileno(), 0
                while chunk := os.pread(fd, 1 << 20, offset):
                    digest.update(chunk)
                    offset += len(chunk)
                self._hex = digest.hexdigest()
            return self._hex


@dataclass
class _Upload:
    """What an upload has done so far, for its answer."""

    filename: str
    kind: str
    progress: ReadProgress = field(default_factory=ReadProgress)
    payloads: int = 0
    enqueued: int = 0
    rejected: int = 0
    complete: bool = True
    rejections: list[dict] = field(default_factory=list)

    def reject(self, item: FilePayload, errors: list[dict[str, str]], message_id: str | None) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_LISTED_REJECTIONS:
            self.rejections.append(
                {"line": item.line, "last_line": item.last_line, "message_id": message_id, "errors": errors}
            )

    def counts(self) -> dict:
        return {"rows_read": self.progress.rows_read, "payloads": self.payloads, "enqueued": self.enqueued,
                "rejected": self.rejected}

    def answer(self) -> dict:
        return {
            "filename": self.filename,
            "format": self.kind,
            "rows_read": self.progress.rows_read,
            "payloads": self.payloads,
            "enqueued": self.enqueued,
            "rejected": self.rejected,
            "complete": self.complete,
            "rejections": self.rejections,
        }


@dataclass
class _Checked:
    item: FilePayload
    body: dict | None
    errors: list[dict[str, str]]
    message_id: str | None


async def enqueue_file(
    file: BinaryIO, filename: str, kind: str, key: str | None, content: ContentDigest, settings: Settings,
    sender: Principal, on_progress: Callable[[dict], None] | None = None,
) -> dict:
    """Read, validate and publish a file a chunk at a time; answer counts and rejections (UploadAnswer).

    Raises UnreadableFile when the file cannot be read at all (header,
    format, size): nothing has been published then. Answers 503 (raises)
    as soon as RabbitMQ fails to confirm a chunk, saying how far it got;
    uploading the same file again is safe, because its ids are deterministic.
    `on_progress` hears the counts so far after every chunk (app.upload_jobs).
    """
    upload = _Upload(filename, kind)
    payloads = _reader(file, kind, settings, upload.progress)
    scope = id_scope(sender)

    def checked() -> Iterator[_Checked | UnreadableFile]:
        """Each payload validated, with its id; the error that stopped reading, if one did, comes last."""
        ordinal = -1
        try:
            for ordinal, item in enumerate(payloads):
                if item.message_id:
                    message_id = file_row_id(sender, item.message_id)
                else:
                    message_id = file_message_id(key, content, ordinal, scope)
                if item.errors:
                    yield _Checked(item, None, item.errors, message_id)
                else:
                    body, errors = validate(item.payload, sender)
                    yield _Checked(item, body, _name_lines(errors, item, kind), message_id)
        except UnreadableFile as error:
            if ordinal < 0:
                raise  # nothing read, nothing published: the file is refused whole
            yield error

    chunks = bounded_chunks(checked(), lambda entry: entry.item.size if isinstance(entry, _Checked) else 0)
    # Parsing runs in a thread (the event loop stays free), one chunk ahead of publishing: the next
    # chunk is read while RabbitMQ confirms this one.
    ahead = asyncio.ensure_future(run_in_threadpool(next, chunks, None))
    try:
        while chunk := await ahead:
            ahead = asyncio.ensure_future(run_in_threadpool(next, chunks, None))
            await _publish_chunk_of_file(chunk, upload, settings, sender)
            if on_progress is not None:
                on_progress(upload.counts())
    finally:
        if not ahead.done():  # the file is closed after the answer: let the thread finish with it first
            await asyncio.wait({ahead})
        if ahead.done() and not ahead.cancelled():
            ahead.exception()  # retrieved: a 503 or an error above is what the client hears
    return upload.answer()


async def _publish_chunk_of_file(chunk: list, upload: _Upload, settings: Settings, sender: Principal) -> None:
    """Count and list a chunk's rejections, publish the rest; 503 as soon as RabbitMQ fails."""
    stopped = chunk.pop() if isinstance(chunk[-1], UnreadableFile) else None
    upload.payloads += len(chunk)
    for entry in chunk:
        if entry.body is None:
            upload.reject(entry.item, entry.errors, entry.item.message_id)
    publishable = [entry for entry in chunk if entry.body is not None]
    if publishable:
        outcomes = await publish_many(
            write_detection_rows,
            [(entry.body,) for entry in publishable],
            [entry.message_id for entry in publishable],
            sender=sender,
            confirm_timeout=settings.batch_confirm_timeout_seconds,
        )
        failed = [outcome.error for outcome in outcomes if outcome.error is not None]
        upload.enqueued += len(outcomes) - len(failed)
        if failed:
            raise upload_interrupted(failed[0], upload.enqueued, chunk[-1].item.last_line)
    if stopped is not None:
        upload.complete = False
        line = stopped.line or (chunk[-1].item.last_line + 1 if chunk else 0)
        upload.reject(FilePayload(line, line), [problem("file", stopped.message, f"file_{stopped.kind}")], None)


def upload_interrupted(reason: str, enqueued: int, line: int) -> HTTPException:
    return HTTPException(
        status_code=503,
        detail=f"message broker unavailable ({reason}); {enqueued} payloads were enqueued before that and "
        f"reading stopped at line {line}. Upload the same file again later: its message ids are deterministic, "
        "so nothing is written twice",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _reader(file: BinaryIO, kind: str, settings: Settings, progress: ReadProgress) -> Iterator[FilePayload]:
    if kind == "csv":
        return read_csv_payloads(file, max_preds=settings.max_preds, max_line_bytes=settings.max_body_bytes,
                                 progress=progress)
    if kind == "xlsx":
        return read_xlsx_payloads(file, max_preds=settings.max_preds,
                                  max_unpacked_bytes=settings.max_xlsx_unpacked_bytes,
                                  max_strings_bytes=settings.max_xlsx_strings_bytes, progress=progress,
                                  max_entries=settings.max_xlsx_entries, max_payload_bytes=settings.max_body_bytes)
    return read_ndjson_payloads(file, max_line_bytes=settings.max_body_bytes, progress=progress)


def _name_lines(errors: list[dict[str, str]], item: FilePayload, kind: str) -> list[dict[str, str]]:
    """Validation errors in the file's terms: the column and line (CSV, XLSX), or the line (NDJSON)."""
    named = []
    for error in errors:
        parts = error["field"].split(".")
        line = item.line
        if kind != "ndjson":
            if parts[:2] == ["data", "preds"] and len(parts) > 2 and parts[2].isdigit():
                position = int(parts[2])
                line = item.pred_lines[position] if position < len(item.pred_lines) else item.line
                parts = parts[3:] or ["data", "preds"]
            elif parts[:1] == ["data"] and len(parts) > 1:
                parts = parts[1:]
        named.append({**error, "field": ".".join(parts), "message": f"line {line}: {error['message']}"})
    return named
