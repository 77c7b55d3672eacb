"""Uploads as jobs: an id at once, progress while the file is read, the answer kept by that id.

A large upload takes minutes to read and enqueue, and a client that only gets its answer at
the end sees nothing meanwhile. So every upload is a job: its record lives with the messages'
status records (actors.message_status: same Redis hash, same expiry), so `GET /tasks/{job_id}`
shows it `running` with `progress` (rows read, payloads, enqueued, rejected), then `succeeded`
with the upload's whole answer as `result`, or `failed` with why, and the console's lookup shows
it like any task. With `Prefer: respond-async` (RFC 7240) the API answers 202 with the job id as
soon as the file is received, reading it in the background; without it, the request waits for
the answer as before, and the answer names its job.

A background job reads its own copy of the file (the request's spooled file is closed when the
request ends), so each holds up to MAX_UPLOAD_BYTES of disk: at most MAX_UPLOAD_JOBS run at once
per API process, and the next is answered 503 with `Retry-After`. A job whose API process stops
is marked failed where it can be; uploading the same file again is always safe, because a file's
message ids are deterministic.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from typing import Any, BinaryIO

from fastapi import HTTPException
from loguru import logger

from actors import status_writer
from actors.message_status import FAILED, RUNNING, SUCCEEDED
from app.auth import Principal

UPLOADS_QUEUE = "uploads"  # not a RabbitMQ queue: the name the status records file jobs under
#: Progress is written at most this often (a chunk of 1,000 payloads may take a few ms).
PROGRESS_INTERVAL_SECONDS = 0.5


def _now_ms() -> int:
    return int(time.time() * 1000)


class UploadJob:
    """One upload's status record, written through the status writer (buffered, never blocking)."""

    def __init__(self, filename: str, sender: Principal):
        self.job_id = str(uuid.uuid4())
        self.filename = filename
        self._written_at = 0.0
        now = _now_ms()
        status_writer.record(self.job_id, {
            "state": RUNNING, "queue": UPLOADS_QUEUE, "actor": "file_upload", "tenant": sender.tenant,
            "attempts": 1, "enqueued_at": now, "started_at": now,
            "progress": {"filename": filename, "rows_read": 0, "payloads": 0, "enqueued": 0, "rejected": 0},
        })

    @property
    def status_url(self) -> str:
        return f"/tasks/{self.job_id}"

    def progress(self, counts: dict[str, Any]) -> None:
        if time.monotonic() - self._written_at < PROGRESS_INTERVAL_SECONDS:
            return
        self._written_at = time.monotonic()
        status_writer.record(self.job_id, {"progress": {"filename": self.filename, **counts}})

    def succeeded(self, answer: dict[str, Any]) -> None:
        counts = {name: answer[name] for name in ("rows_read", "payloads", "enqueued", "rejected")}
        status_writer.record(self.job_id, {"state": SUCCEEDED, "finished_at": _now_ms(), "result": answer,
                                           "progress": {"filename": self.filename, **counts}})

    def failed(self, reason: str) -> None:
        status_writer.record(self.job_id, {"state": FAILED, "finished_at": _now_ms(), "last_error": reason[:2000]})


def failure_text(error: BaseException) -> str:
    """What a failed job's `last_error` says: the client's own 4xx/503 detail where there is one."""
    if isinstance(error, HTTPException):
        detail = error.detail
        if isinstance(detail, list):
            detail = "; ".join(f"{item.get('field')}: {item.get('message')}" for item in detail)
        return f"{error.status_code}: {detail}"
    return f"{type(error).__name__}: {error}"


class BackgroundUploads:
    """The jobs this API process reads in the background, bounded in number."""

    def __init__(self, limit: int):
        self.limit = limit
        self._running: set[asyncio.Task] = set()
        self._reserved = 0  # admitted, not started yet: their files are being copied

    def admit(self) -> None:
        """Hold a place for a job, or refuse it beyond the bound, before anything is copied or recorded.
        The place is taken by `start`, or given back by `release`."""
        if len(self._running) + self._reserved >= self.limit:
            raise HTTPException(503, f"{self.limit} uploads are being read in the background by this API process "
                                     "(MAX_UPLOAD_JOBS); retry later, or upload without Prefer: respond-async",
                                headers={"Retry-After": "5"})
        self._reserved += 1

    def release(self) -> None:
        self._reserved = max(self._reserved - 1, 0)

    def start(self, job: UploadJob, work) -> None:
        """Run `work()` (a coroutine function answering the upload) as `job`, in the background."""
        self.release()
        task = asyncio.create_task(self._run(job, work), name=f"upload-{job.job_id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    @staticmethod
    async def _run(job: UploadJob, work) -> None:
        try:
            job.succeeded(await work())
        except asyncio.CancelledError:
            job.failed("the API process stopped while reading the file; upload it again (nothing is written twice)")
            raise
        except Exception as error:  # noqa: BLE001 (the job says why; the process goes on)
            if not isinstance(error, HTTPException):
                logger.exception("upload job {} failed", job.job_id)
            job.failed(failure_text(error))
        else:
            logger.info("upload job {} done", job.job_id)

    async def stop(self) -> None:
        """At shutdown: the jobs still running are cancelled (and marked failed)."""
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(set(self._running), timeout=5)


def copy_of(source: BinaryIO) -> BinaryIO:
    """The upload's bytes in a temporary file of the job's own (deleted when closed)."""
    copy = tempfile.TemporaryFile(prefix="upload-job-")
    source.seek(0)
    shutil.copyfileobj(source, copy, 1024 * 1024)
    copy.seek(0)
    return copy
