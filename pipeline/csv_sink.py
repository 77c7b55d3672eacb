"""Append rows to one CSV file durably and exactly once, from many threads and processes.

Why it is shaped this way:

- **Group commit.** Actor threads hand their encoded rows to one committer
  thread per process and wait. The committer writes everything queued in one
  `write` and one `fdatasync`, so many messages share one disk flush. The
  actor returns (and Dramatiq acks) only after that flush.
- **One writer at a time.** An exclusive `flock` on `<csv>.lock` serialises
  the committers of all processes on the host, so rows are never interleaved
  or torn by a concurrent writer.
- **Exactly once.** RabbitMQ delivers at least once: a worker killed after
  writing but before acking gets its message redelivered, possibly to another
  process. A ledger (`<csv>.ledger`, SQLite) maps every committed
  `message_id` to the byte offset where its rows end (and when they became durable); a message already in it
  is acknowledged without writing again. Lookups are by primary key, so no
  message re-reads the CSV.
- **The CSV is the truth, the ledger a cache.** The ledger is updated after
  the CSV flush and may lag it (a kill in between, or SQLite's relaxed sync).
  Before every batch, under the lock, the committer compares the file size
  with the ledger's last offset: complete messages past it are added to the
  ledger, and a torn tail (a writer that died mid-write; never acked) is
  truncated. A missing or stale ledger is rebuilt from the file.

- **A disk that cannot be written is waited out, not blamed on the message.**
  ENOSPC, EIO, a read-only file system or lost permissions would fail every
  message the same way: raised to the actors, each would spend its Dramatiq
  retries and end in the dead-letter queue for an operator to replay. Instead
  the committer keeps the batch, retries the write with backoff (up to
  SINK_RETRY_MAX_SECONDS between tries) and says why in `fault`; the actor
  threads wait, so the workers take no new messages beyond their prefetch.
  When the disk is back the batch commits and the actors return as usual. A
  torn tail left by the failed write is truncated, as after a crash; whole
  messages it left are the batch's own and count as written.

Several hosts: give each host its own `CSV_PATH` (a shard); exactly-once holds
within a shard, and `merge_shards` (by `message_id, pred_index`) removes the
copies a redelivery to another host may leave across shards.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from pipeline.rows import COLUMNS, HEADER_BYTES, QUOTING, restore_cell

#: Upper bound of one group commit; larger batches only add latency.
MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCH_MESSAGES = 1024
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class ForeignCsvError(RuntimeError):
    """CSV_PATH holds a file this sink did not write."""


#: What a disk, a file system or its permissions say, as opposed to what a message could cause.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.ENOENT, errno.ENOTDIR, errno.ESTALE})
_SQLITE_DISK_WORDS = ("disk", "full", "readonly", "read-only", "unable to open", "locking protocol")


def disk_fault(error: BaseException) -> str | None:
    """Why the CSV cannot be written, when `error` says it is the disk's doing; else None."""
    if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
        return f"{type(error).__name__}: [Errno {error.errno}] {os.strerror(error.errno)}"
    if isinstance(error, sqlite3.OperationalError) and any(word in str(error) for word in _SQLITE_DISK_WORDS):
        return f"ledger: {error}"
    return None


@dataclass(frozen=True)
class SinkFault:
    """The CSV cannot be written: why, since when (epoch seconds), and how many messages wait."""

    reason: str
    since: float
    waiting: int


class Ledger:
    """Which messages are committed, and where their rows end in the CSV."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(path, isolation_level=None)
        # WAL + NORMAL: never corrupt, may lose its last transactions on power
        # loss; the sink's recovery re-derives those from the CSV.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS commits (message_id TEXT PRIMARY KEY, end_offset INTEGER NOT NULL,"
            " committed_at REAL NOT NULL) WITHOUT ROWID"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS commits_by_end ON commits (end_offset)")

    def end_offset(self) -> int:
        """Offset just past the last committed message, 0 when empty."""
        (end,) = self._db.execute("SELECT coalesce(max(end_offset), 0) FROM commits").fetchone()
        return end

    def known(self, message_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(message_ids), 500):
            chunk = message_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT message_id FROM commits WHERE message_id IN ({marks})", chunk)
            found.update(message_id for (message_id,) in rows)
        return found

    def record(self, entries: Iterable[tuple[str, int]]) -> None:
        """Record committed messages, stamped now (unix seconds): when their rows became durable."""
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO commits VALUES (?, ?, ?)", ((mid, end, now) for mid, end in entries)
            )

    def clear(self) -> None:
        with self._db:
            self._db.execute("DELETE FROM commits")

    def close(self) -> None:
        self._db.close()


def scan_complete_messages(lines: Iterable[bytes], start: int) -> tuple[list[tuple[str, int]], int]:
    """Find the whole messages in CSV bytes that begin at offset `start`.

    Returns `(message_id, end_offset)` per complete message and the offset just
    past the last one. A message is complete when its rows 0..pred_count-1 are
    all there, each ending in a newline; anything after the last complete
    message (a torn write) is not counted.
    """
    offset = start

    def decoded() -> Iterator[str]:
        nonlocal offset
        for raw in lines:
            if not raw.endswith(b"\n"):
                return
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                return
            offset += len(raw)
            yield text

    entries: list[tuple[str, int]] = []
    good_end = start
    current, expected, count = None, 0, 0
    try:
        for cells in csv.reader(decoded()):
            if len(cells) != len(COLUMNS):
                break
            message_id, index, total = restore_cell(cells[0]), int(cells[1]), int(cells[2])
            if index == 0:
                current, expected, count = message_id, 0, total
            if message_id != current or index != expected:
                break
            expected += 1
            if expected == count:
                entries.append((message_id, offset))
                good_end = offset
                current = None
    except (csv.Error, ValueError):
        pass
    return entries, good_end


@dataclass(frozen=True)
class CommitReport:
    """What one group commit did; handed to the sink's observers (metrics, shared stats)."""

    messages_written: int
    rows_written: int
    duplicates: int
    fsync_seconds: float


@dataclass(eq=False)
class PendingAppend:
    message_id: str
    data: bytes
    rows: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    written: bool = False
    error: BaseException | None = None


class DurableCsvFile:
    """The CSV file, its lock and its ledger; used by one committer thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        #: Where an append that may not be durable began; the lock is held until it is cut off.
        self._unsure_from: int | None = None
        # Opened while the disk may be failing, again on every try: what opened is closed if the rest fails.
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except BaseException:
            os.close(self._fd)
            raise
        # Under the lock: two processes creating the ledger at once (its first commit) would
        # race on switching it to WAL, and SQLite answers the loser "database is locked".
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._ledger = Ledger(Path(f"{self.path}.ledger"))
        except BaseException:
            os.close(self._fd)
            os.close(self._lock_fd)  # releases the lock too
            raise
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close it; again is a no-op (a failed try and its caller may both close it)."""
        if self._fd < 0:
            return
        self._ledger.close()
        os.close(self._fd)
        os.close(self._lock_fd)
        self._fd = self._lock_fd = -1

    def commit(self, batch: list[PendingAppend]) -> CommitReport:
        """Write the batch's new messages, flush them, record them; mark each pending."""
        fsync_seconds = 0.0
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._undo_unsure_tail()
            end = self._recover()
            known = self._ledger.known([pending.message_id for pending in batch])
            parts: list[bytes] = []
            entries: list[tuple[str, int]] = []
            offset = end
            for pending in batch:
                if pending.message_id in known:
                    continue
                known.add(pending.message_id)
                parts.append(pending.data)
                offset += len(pending.data)
                entries.append((pending.message_id, offset))
                pending.written = True
            if parts:
                fsync_seconds = self._write_durably(parts, end, batch)
                self._ledger.record(entries)
        finally:
            if self._unsure_from is None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        written = [pending for pending in batch if pending.written]
        return CommitReport(
            messages_written=len(written),
            rows_written=sum(pending.rows for pending in written),
            duplicates=len(batch) - len(written),
            fsync_seconds=fsync_seconds,
        )

    def _write_durably(self, parts: list[bytes], end: int, batch: list[PendingAppend]) -> float:
        """Append and flush, or leave the file as it was; the seconds the flush took.

        A failed fdatasync (EIO, ENOSPC on thin storage) may leave the pages in
        the page cache marked clean: the rows read back, and the next fdatasync,
        on any descriptor, succeeds. `_recover` would then vouch for rows that
        may never reach the disk, so they are cut off before the lock goes; if
        even that fails, the lock is kept until a later try manages it.
        """
        try:
            _write_all(self._fd, parts)
            started = time.perf_counter()
            os.fdatasync(self._fd)
            return time.perf_counter() - started
        except BaseException:
            for pending in batch:
                pending.written = False
            self._unsure_from = end
            self._undo_unsure_tail()
            raise

    @property
    def unsure(self) -> bool:
        """An append that may not be durable is still in the file: keep this object (and its lock)."""
        return self._unsure_from is not None

    def _undo_unsure_tail(self) -> None:
        if self._unsure_from is not None:
            os.ftruncate(self._fd, self._unsure_from)
            self._unsure_from = None

    def _recover(self) -> int:
        """Bring file and ledger into agreement; return the file's committed end."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            self._ledger.clear()
            _write_all(self._fd, [HEADER_BYTES])
            os.fdatasync(self._fd)
            return len(HEADER_BYTES)
        if os.pread(self._fd, len(HEADER_BYTES), 0) != HEADER_BYTES:
            raise ForeignCsvError(
                f"{self.path} does not start with this service's CSV header; "
                "move it away or point CSV_PATH at another file"
            )
        committed = self._ledger.end_offset() or len(HEADER_BYTES)
        if committed == size:
            return size
        if committed > size:
            logger.warning("{} is shorter than its ledger says; rebuilding the ledger from the file", self.path)
            self._ledger.clear()
            committed = len(HEADER_BYTES)
        with open(self.path, "rb") as reader:
            reader.seek(committed)
            entries, good_end = scan_complete_messages(reader, committed)
        if good_end < size:
            logger.warning("{}: truncating {} bytes of an unfinished write", self.path, size - good_end)
            os.ftruncate(self._fd, good_end)
        # The writer that left these rows may have died before its flush; flush
        # them before the ledger vouches for them (their redelivery will be acked).
        os.fdatasync(self._fd)
        self._ledger.record(entries)
        return good_end


#: Seconds between the committer's log lines: what it wrote meanwhile, summed.
COMMIT_LOG_SECONDS = 1.0


class CommitLog:
    """The commits of the last second as one log line, not one line each.

    A line per message was ~6% of a worker's CPU; a line per commit, with
    ~4 messages a commit under load, still 1.5-5% (profiles in
    bench/RESULTS.md), and the operator reads a rate either way. So commits
    are summed, and written once a second, or as soon as the sink goes idle
    (the committer calls `write` when no work arrives within `due_in`): a
    quiet service still logs its last commits within a second. The actor
    logs each message at DEBUG, with its ids.
    """

    def __init__(self, path: Path | str, every: float = COMMIT_LOG_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.every = every
        self.clock = clock
        self._reset(clock())

    def _reset(self, now: float) -> None:
        self.since = now
        self.commits = self.messages = self.rows = self.duplicates = 0
        self.fsync_max = 0.0

    def add(self, report: CommitReport) -> None:
        if report.messages_written or report.duplicates:
            if not self.commits:
                self.since = self.clock()  # a line's span starts at its first commit, not at the last line
            self.commits += 1
            self.messages += report.messages_written
            self.rows += report.rows_written
            self.duplicates += report.duplicates
            self.fsync_max = max(self.fsync_max, report.fsync_seconds)
        if self.clock() - self.since >= self.every:
            self.write()

    def due_in(self) -> float | None:
        """Seconds until the pending line is due (0 if it is), or None when nothing waits."""
        if not self.commits:
            return None
        return max(0.0, self.every - (self.clock() - self.since))

    def write(self) -> None:
        """Log the sums so far and start again; never raises (a failing line must not end the committer)."""
        now = self.clock()
        rows, messages, commits, since, fsync_max, duplicates = (
            self.rows, self.messages, self.commits, self.since, self.fsync_max, self.duplicates)
        self._reset(now)
        if not messages:
            return
        try:
            logger.info("wrote {} to {} in {} over {:.1f} s (fsync max {:.1f} ms){}",
                        f"{_count(rows, 'row')} of {_count(messages, 'message')}", self.path,
                        _count(commits, "commit"), now - since, 1000 * fsync_max,
                        f"; {duplicates} already there" if duplicates else "")
        except Exception:  # noqa: BLE001
            pass


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _closed_unless_unsure(file: DurableCsvFile | None) -> DurableCsvFile | None:
    """None, the file closed, after a failed try; the file itself while it must keep its lock."""
    if file is None or file.unsure:
        return file
    file.close()
    return None


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write every part, in order, without first copying them into one buffer."""
    pending = [memoryview(part) for part in parts if part]
    while pending:
        written = os.writev(fd, pending[:_IOV_MAX])
        while written:  # drop what went out; a short write leaves the rest of one part
            if written >= len(pending[0]):
                written -= len(pending.pop(0))
            else:
                pending[0] = pending[0][written:]
                written = 0


class CsvSink:
    """Process-wide entry point: `append` blocks until the rows are on disk.

    The committer thread and the file are created lazily and again after a
    fork, because Dramatiq's CLI forks worker processes after import.
    """

    def __init__(self, path: Path | str, observers: Iterable[Callable[[CommitReport], None]] = (),
                 retry_max_seconds: float = 5.0):
        self.path = Path(path)
        #: Called from the committer thread after every group commit (metrics, shared stats):
        #: they must be quick and must not block.
        self.observers = list(observers)
        #: Called from the committer thread with a SinkFault when the disk stops it, on every
        #: retry while it lasts, and with None when it writes again.
        self.fault_observers: list[Callable[[SinkFault | None], None]] = []
        self.retry_max_seconds = retry_max_seconds
        #: The current fault, None while the CSV is written.
        self.fault: SinkFault | None = None
        self._queue: queue.SimpleQueue[PendingAppend] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._owner_pid: int | None = None

    def append(self, message_id: str, data: bytes, rows: int = 0) -> bool:
        """Commit one message's rows; False when that message was already committed."""
        self._ensure_committer()
        pending = PendingAppend(message_id, data, rows)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.written

    def _ensure_committer(self) -> None:
        if self._owner_pid == os.getpid():
            return
        with self._start_lock:
            if self._owner_pid != os.getpid():
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._run, name="csv-committer", daemon=True).start()
                self._owner_pid = os.getpid()

    def _run(self) -> None:
        work = self._queue
        file: DurableCsvFile | None = None
        log = CommitLog(self.path)
        while True:
            try:
                batch = [work.get(timeout=log.due_in())]
            except queue.Empty:  # idle: the commits so far are logged now, not at the next one
                log.write()
                continue
            size = len(batch[0].data)
            while size < MAX_BATCH_BYTES and len(batch) < MAX_BATCH_MESSAGES:
                try:
                    pending = work.get_nowait()
                except queue.Empty:
                    break
                batch.append(pending)
                size += len(pending.data)
            report = None
            try:
                file, report = self._commit_waiting_out_the_disk(file, batch)
                self._tell(self.observers, report)
            except BaseException as error:  # hand every other failure to the waiting actors
                for pending in batch:
                    pending.written = False
                    pending.error = error
                file = _closed_unless_unsure(file)
            finally:
                for pending in batch:
                    pending.done.set()
            if report is not None:
                log.add(report)  # once the actors are released: a line (~60 us) is not theirs to wait for

    def _commit_waiting_out_the_disk(self, file: DurableCsvFile | None, batch: list[PendingAppend]
                                     ) -> tuple[DurableCsvFile, CommitReport]:
        """Commit the batch, retrying for as long as the disk refuses it; other errors are raised.

        A message a failed try marked `written` stays marked: if its rows landed whole, the next
        try's recovery puts them in the ledger and skips them, and they are still this batch's own.
        """
        delay = 0.1
        while True:
            try:
                file = file or DurableCsvFile(self.path)
                report = file.commit(batch)
                break
            except BaseException as error:
                reason = disk_fault(error)
                file = _closed_unless_unsure(file)
                if reason is None:
                    self._fault_cleared()  # whatever this is, it is no longer the disk's fault
                    raise
                if self.fault is None:
                    logger.error("the CSV cannot be written ({}): holding {} message(s) and retrying until it can; "
                                 "no message is failed for it", reason, len(batch) + self._queue.qsize())
                self.fault = SinkFault(reason, self.fault.since if self.fault else time.time(),
                                       len(batch) + self._queue.qsize())
                self._tell(self.fault_observers, self.fault)
                time.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
        if self.fault is not None:
            logger.warning("the CSV is written again after {:.0f} s ({})", time.time() - self.fault.since,
                           self.fault.reason)
        self._fault_cleared()
        return file, report

    def _fault_cleared(self) -> None:
        if self.fault is not None:
            self.fault = None
            self._tell(self.fault_observers, None)

    @staticmethod
    def _tell(observers: list[Callable], value) -> None:
        for observer in observers:
            try:
                observer(value)
            except Exception:  # metrics and stats must never fail a commit
                logger.exception("sink observer failed")


def merge_shards(shards: Iterable[Path], out: Path) -> int:
    """Merge per-host CSV shards into one file, keeping each (message_id, pred_index) once.

    Returns the number of rows written. Streams the shards; memory grows with
    the number of distinct keys, not with the data.
    """
    seen: set[tuple[str, str]] = set()
    count = 0
    with open(out, "w", newline="", encoding="utf-8") as target:
        target.write(HEADER_BYTES.decode())
        writer = csv.writer(target, lineterminator="\r\n", quoting=QUOTING)
        for shard in shards:
            with open(shard, newline="", encoding="utf-8") as source:
                reader = csv.reader(source)
                next(reader, None)
                for cells in reader:
                    key = (cells[0], cells[1])
                    if key in seen:
                        continue
                    seen.add(key)
                    writer.writerow(cells)
                    count += 1
    return count
