"""Append rows to one CSV file durably and exactly once, from many threads and processes.

Why it is shaped this way:

- **Group commit.** Actor threads hand their encoded rows to one committer
  thread per process and wait. The committer writes everything queued in one
  `write` and one `fdatasync`, so many messages share one disk flush. The
  actor returns (and Dramatiq acks) only after that flush. Under a heavy load
  the queue fills while the last flush runs; at a moderate rate it would hold
  one message each time, so a small batch waits a moment (`linger_seconds`,
  SINK_COMMIT_LINGER_MS) for the messages right behind it, up to one per
  worker thread (`linger_until`), when no more can come.
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

- **Rotation.** The live file is sealed (renamed, never written again) by size
  and by time (`Rotation`); the ledger says which file every message is in, so
  exactly-once spans all of a host's files, and a seal is recorded before and
  after its rename so a crash in between is finished by the next writer.

Several hosts: give each host its own `CSV_PATH` (a shard); exactly-once holds
within a shard, and `python -m pipeline.shards merge` (by `message_id,
pred_index`) removes the copies a redelivery to another host may leave across
shards.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from pipeline.rows import COLUMNS, HEADER_BYTES, allow_large_cells, restore_cell
from pipeline.shard_files import ledger_path, sealed_files, sealed_path

#: Who sent a message: (tenant, client_id, device_id); the tenant is "" for a message sent without keys.
Origin = tuple[str, str, str]

#: Upper bound of one group commit; larger batches only add latency.
MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCH_MESSAGES = 1024
#: Buffers one scatter-gather system call may carry (the kernel's limit, 1024 on Linux).
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


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
    """Which messages are committed, in which segment of the shard, and where their rows end in it.

    A segment is one file of the shard: the live one (the highest sequence) or
    one sealed out of it. Message ids are unique across segments, so a
    redelivery of a message committed to a file sealed since is still known.
    A seal is recorded in two steps around the file's rename (`begin_seal`,
    `end_seal`), each flushed to disk, so a crash in between is finished by
    whoever opens the shard next (`DurableCsvFile._finish_seals`).
    """

    def __init__(self, path: Path):
        self._db = sqlite3.connect(path, isolation_level=None)
        # WAL + NORMAL: never corrupt, may lose its last transactions on power
        # loss; the sink's recovery re-derives those from the CSV.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS commits (message_id TEXT PRIMARY KEY, end_offset INTEGER NOT NULL,"
            " committed_at REAL NOT NULL, segment INTEGER NOT NULL DEFAULT 1) WITHOUT ROWID"
        )
        if "segment" not in {column for _, column, *_ in self._db.execute("PRAGMA table_info(commits)")}:
            self._db.execute("ALTER TABLE commits ADD COLUMN segment INTEGER NOT NULL DEFAULT 1")  # before rotation
        self._db.execute("DROP INDEX IF EXISTS commits_by_end")
        self._db.execute("CREATE INDEX IF NOT EXISTS commits_by_segment ON commits (segment, end_offset)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS segments (sequence INTEGER PRIMARY KEY, state TEXT NOT NULL, name TEXT,"
            " messages INTEGER, bytes INTEGER, first_commit REAL, last_commit REAL)"
        )
        # Who sent each message, for GET /records (pipeline.records): its own table, so a worker of an
        # older version sharing the shard in a rolling upgrade still records its commits; a message
        # without a sender (re-derived from the CSV) is listed to admin keys only. Keyed first by where
        # the message's rows end: a commit then appends to one page of this table instead of dirtying
        # one per message (ids are random), which was ~15% of a commit's CPU. The id is in the key too,
        # so a row left by a file cut short can never be read as the sender of another message ending
        # at the same offset later. Workers before this kept them by message id in `origins`, which
        # readers still consult (pipeline.shards).
        self._db.execute("CREATE TABLE IF NOT EXISTS senders (segment INTEGER NOT NULL, end_offset INTEGER NOT NULL,"
                         " message_id TEXT NOT NULL, tenant TEXT NOT NULL, client_id TEXT NOT NULL,"
                         " device_id TEXT NOT NULL, PRIMARY KEY (segment, end_offset, message_id)) WITHOUT ROWID")
        #: No segment was recorded yet: a new ledger, or one from before rotation, or one lost and made again.
        self.fresh = self._db.execute("SELECT count(*) FROM segments").fetchone()[0] == 0
        if self.fresh:
            self._db.execute("INSERT INTO segments (sequence, state) VALUES (1, 'live')")

    def live(self) -> int:
        """The live segment's sequence number."""
        return self._db.execute("SELECT max(sequence) FROM segments").fetchone()[0]

    def end_offset(self, segment: int) -> int:
        """Offset just past the segment's last committed message, 0 when it has none."""
        (end,) = self._db.execute(
            "SELECT coalesce(max(end_offset), 0) FROM commits WHERE segment = ?", (segment,)).fetchone()
        return end

    def first_commit(self, segment: int) -> float | None:
        row = self._db.execute("SELECT committed_at FROM commits WHERE segment = ? ORDER BY end_offset LIMIT 1",
                               (segment,)).fetchone()
        return row[0] if row else None

    def summary(self, segment: int) -> tuple[int, float | None, float | None]:
        """(messages, first commit, last commit) of a segment."""
        return self._db.execute("SELECT count(*), min(committed_at), max(committed_at) FROM commits"
                                " WHERE segment = ?", (segment,)).fetchone()

    def known(self, message_ids: list[str]) -> set[str]:
        return {message_id for message_id, _, _ in self.where(message_ids)}

    def where(self, message_ids: list[str]) -> list[tuple[str, int, int]]:
        """(message_id, segment, end_offset) of those of the ids that are committed."""
        found: list[tuple[str, int, int]] = []
        for start in range(0, len(message_ids), 500):
            chunk = message_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found += self._db.execute(
                f"SELECT message_id, segment, end_offset FROM commits WHERE message_id IN ({marks})", chunk)
        return found

    def record(self, entries: Iterable[tuple[str, int]], segment: int, now: float | None = None,
               senders: Iterable[tuple[str, int, Origin]] = ()) -> None:
        """Record committed messages of a segment, stamped `now` (unix seconds): when their rows became durable.

        `senders` are (message_id, end_offset, origin) of those of them sent with one."""
        now = time.time() if now is None else now
        with self.transaction():
            self._db.executemany("INSERT OR IGNORE INTO commits VALUES (?, ?, ?, ?)",
                                 ((mid, end, now, segment) for mid, end in entries))
            self._db.executemany("INSERT OR IGNORE INTO senders VALUES (?, ?, ?, ?, ?, ?)",
                                 ((segment, end, mid, *origin) for mid, end, origin in senders))

    def clear(self, segment: int) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM commits WHERE segment = ?", (segment,))
            self._db.execute("DELETE FROM senders WHERE segment = ?", (segment,))

    def segments(self) -> list[dict]:
        """Every segment recorded, oldest first."""
        cursor = self._db.execute("SELECT sequence, state, name, messages, bytes, first_commit, last_commit"
                                  " FROM segments ORDER BY sequence")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def sealing(self) -> list[tuple[int, str]]:
        """Seals begun and not known to be finished: (sequence, file name)."""
        return list(self._db.execute("SELECT sequence, name FROM segments WHERE state = 'sealing' ORDER BY sequence"))

    def begin_seal(self, segment: int, name: str, size: int, messages: int, first: float, last: float) -> None:
        """Segment `segment` is to be renamed `name`; the next one is live. On disk before the rename."""
        with self._synced():
            self._db.execute("UPDATE segments SET state = 'sealing', name = ?, messages = ?, bytes = ?,"
                             " first_commit = ?, last_commit = ? WHERE sequence = ?",
                             (name, messages, size, first, last, segment))
            self._db.execute("INSERT INTO segments (sequence, state) VALUES (?, 'live')", (segment + 1,))

    def end_seal(self, segment: int) -> None:
        """The rename is done; on disk before the next live file is made."""
        with self._synced():
            self._db.execute("UPDATE segments SET state = 'sealed' WHERE sequence = ?", (segment,))

    def add_sealed(self, segment: int, name: str, entries: list[tuple[str, int]], size: int,
                   first: float, last: float) -> None:
        """Record a sealed file found on disk (the ledger was lost); the segment after it becomes live."""
        with self._synced():
            self._db.executemany("INSERT OR IGNORE INTO commits VALUES (?, ?, ?, ?)",
                                 ((mid, end, last, segment) for mid, end in entries))
            self._db.execute("INSERT OR REPLACE INTO segments VALUES (?, 'sealed', ?, ?, ?, ?, ?)",
                             (segment, name, len(entries), size, first, last))
            self._db.execute("DELETE FROM segments WHERE state = 'live'")
            self._db.execute("INSERT INTO segments (sequence, state) VALUES (?, 'live')", (segment + 1,))

    @contextmanager
    def _synced(self) -> Iterator[None]:
        """One transaction flushed to disk at its commit (with it, every earlier one in the WAL).

        Inside an open one (a seal during a group commit), that one is committed first and begun
        again after: what it did so far goes to disk with this flush, and the caller's step after
        (a rename) finds it there. Splitting it is safe: each statement of it was once its own."""
        resume = self._db.in_transaction
        if resume:
            self._db.execute("COMMIT")
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self.transaction():
                yield
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        if resume:
            self._db.execute("BEGIN IMMEDIATE")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The statements inside as one transaction, or as part of the one already open.

        The connection is in autocommit mode (isolation_level=None), where `with connection:` begins
        none: each statement would commit alone, and a reader could see a commit without its sender,
        or a seal half recorded. A group commit runs in one from its first read to its last write, so
        it takes SQLite's locks, and checks whether another process changed the ledger, once instead
        of once a statement (half of a commit's `fcntl` calls)."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back already (a full disk)
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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
    allow_large_cells()  # else a frame over 128 KiB would read as a torn tail, and be cut off
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


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class PendingAppend:
    """One message's rows, from the actor's thread to the committer's and its outcome back.

    The committer says it is done by releasing a lock the actor's thread waits to acquire,
    not with a threading.Event: an Event's wait wakes, then takes the condition's lock its
    setter may still hold, one more hand-off of the GIL; measured in a loop of two threads,
    ~60 against ~27 us of CPU a round trip (bench/RESULTS.md).
    """

    message_id: str
    data: bytes
    rows: int = 0
    origin: Origin | None = None
    written: bool = False
    error: BaseException | None = None
    _finished: threading.Lock = field(default_factory=_held_lock, repr=False)

    def finish(self) -> None:
        """Let the waiting actor go: once, after `written` and `error` are final."""
        self._finished.release()

    def wait(self) -> None:
        self._finished.acquire()


@dataclass(frozen=True)
class Rotation:
    """When the live file is sealed and the next one begun; 0 turns a rule off.

    By size: before a commit would take the file past `max_bytes` (a file is
    larger only when one commit alone is). By time: at every multiple of
    `every_seconds` since the epoch (3600: on the hour, 86400: at midnight
    UTC), so a file never spans two such windows and daily files are days.
    """

    max_bytes: int = 0
    every_seconds: int = 0
    host: str = "host"

    def window(self, epoch: float) -> int:
        return int(epoch // self.every_seconds)


class DurableCsvFile:
    """The shard's live file, its lock and its ledger; used by one committer thread.

    Every process of the host has one; any of them may seal the live file
    (under the lock), so each follows the file at `path` and the ledger's live
    segment before it commits (`_follow`: a stat and one indexed query).
    """

    def __init__(self, path: Path, rotation: Rotation = Rotation(), clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rotation = rotation
        self._clock = clock  #: unix seconds: commit stamps, and the windows of rotation by time
        #: Where an append that may not be durable began; the lock is held until it is cut off.
        self._unsure_from: int | None = None
        self._fd = -1
        self._identity: tuple[int, int] | None = None
        self._segment = 0
        self._first_commit: float | None = None
        self._ledger: Ledger | None = None
        # Opened while the disk may be failing, again on every try: what opened is closed if the rest fails.
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        # Under the lock: two processes creating the ledger at once (its first commit) would
        # race on switching it to WAL, and SQLite answers the loser "database is locked".
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._ledger = Ledger(ledger_path(self.path))
            if self._ledger.fresh:
                self._rebuild_sealed_segments()
            self._follow()
        except BaseException:
            if self._ledger is not None:
                self._ledger.close()
            if self._fd >= 0:
                os.close(self._fd)
            os.close(self._lock_fd)  # releases the lock too
            raise
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close it; again is a no-op (a failed try and its caller may both close it).

        The lock's descriptor is closed whatever fails before it: kept open, it could keep the
        shard's lock from every other process. The file's may be gone already, given up by a
        `_follow` whose open of the next live file failed (a full disk right after a seal)."""
        if self._lock_fd < 0:
            return
        try:
            # Under the lock: closing the last connection checkpoints the WAL and removes it, which
            # another process opening the ledger at that moment would be told is "database is locked".
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._ledger.close()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
            os.close(self._lock_fd)
            self._fd = self._lock_fd = -1

    def commit(self, batch: list[PendingAppend]) -> CommitReport:
        """Write the batch's new messages, flush them, record them; mark each pending."""
        fsync_seconds = 0.0
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            with self._ledger.transaction():  # rolled back on a failure: the CSV says again what it held
                self._undo_unsure_tail()
                self._follow()
                end = self._recover()
                fresh = self._unknown(batch)
                if fresh:
                    if self._seal_due(end, sum(len(pending.data) for pending in fresh), self._clock()):
                        self._seal(end)
                        end = self._recover()
                    parts: list[bytes] = []
                    entries: list[tuple[str, int]] = []
                    senders: list[tuple[str, int, Origin]] = []
                    offset = end
                    for pending in fresh:
                        parts.append(pending.data)
                        offset += len(pending.data)
                        entries.append((pending.message_id, offset))
                        if pending.origin:
                            senders.append((pending.message_id, offset, pending.origin))
                        pending.written = True
                    fsync_seconds = self._write_durably(parts, end, batch)
                    now = self._clock()
                    self._ledger.record(entries, self._segment, now, senders)
                    if self._first_commit is None:
                        self._first_commit = now
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

    def _unknown(self, batch: list[PendingAppend]) -> list[PendingAppend]:
        """The batch's messages the ledger does not hold, each once (a batch may hold one twice)."""
        known = self._ledger.known([pending.message_id for pending in batch])
        fresh: list[PendingAppend] = []
        for pending in batch:
            if pending.message_id not in known:
                known.add(pending.message_id)
                fresh.append(pending)
        return fresh

    def seal_due_in(self) -> float | None:
        """Seconds until the live file is due to be sealed by time (0: now), None when no rule will."""
        if not self.rotation.every_seconds or self._first_commit is None:
            return None
        window_end = (self.rotation.window(self._first_commit) + 1) * self.rotation.every_seconds
        return max(0.0, window_end - self._clock())

    def seal_if_due(self) -> None:
        """Seal the live file if a rule says so (the committer calls it when idle: a quiet day still ends)."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            with self._ledger.transaction():
                self._undo_unsure_tail()
                self._follow()
                end = self._recover()
                if self._seal_due(end, 0, self._clock()):
                    self._seal(end)
        finally:
            if self._unsure_from is None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _seal_due(self, end: int, incoming: int, now: float) -> bool:
        if end <= len(HEADER_BYTES):
            return False  # nothing to seal
        rule = self.rotation
        if rule.max_bytes and end + incoming > rule.max_bytes:
            return True
        return bool(rule.every_seconds and self._first_commit is not None
                    and rule.window(self._first_commit) != rule.window(now))

    def _seal(self, end: int) -> None:
        """Rename the live file to its sealed name and begin the next; the ledger records both steps first."""
        messages, first, last = self._ledger.summary(self._segment)
        target = sealed_path(self.path, self.rotation.host, self._segment, first, last)
        self._ledger.begin_seal(self._segment, target.name, end, messages, first, last)
        os.rename(self.path, target)
        _fsync_directory(self.path.parent)
        self._ledger.end_seal(self._segment)
        logger.info("sealed {} ({} of {} bytes); {} begins anew", target.name, _count(messages, "message"), end,
                    self.path)
        self._follow()

    def _follow(self) -> None:
        """Point this object at the file now at `path` and the ledger's live segment, if either changed."""
        live = self._ledger.live()
        if live == self._segment and self._fd >= 0 and self._identity == _identity(self.path):
            return
        self._finish_seals()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        stat = os.fstat(self._fd)
        self._identity = (stat.st_dev, stat.st_ino)
        self._segment = self._ledger.live()
        self._first_commit = self._ledger.first_commit(self._segment)

    def _finish_seals(self) -> None:
        """Finish the renames of seals a crash interrupted: the ledger says which, and what name."""
        for segment, name in self._ledger.sealing():
            target = self.path.with_name(name)
            if not target.exists():
                if not self.path.exists():
                    logger.error("{}: segment {} was being sealed as {}, and neither file is there now",
                                 self.path, segment, name)
                else:
                    os.rename(self.path, target)
                    _fsync_directory(self.path.parent)
                    logger.warning("{}: finished sealing {} (a crash interrupted it)", self.path, name)
            self._ledger.end_seal(segment)

    def _rebuild_sealed_segments(self) -> None:
        """A new ledger next to sealed files (it was lost): record their messages, so none is written again."""
        sealed = sealed_files(self.path)
        for name in sealed:
            with open(name.path, "rb") as reader:
                if reader.read(len(HEADER_BYTES)) != HEADER_BYTES:
                    raise ForeignCsvError(f"{name.path} does not start with this service's CSV header; move it away")
                entries, good_end = scan_complete_messages(reader, len(HEADER_BYTES))
            self._ledger.add_sealed(name.sequence, name.path.name, entries, good_end, name.first, name.last)
        if sealed:
            logger.warning("{}: the ledger was made again from the CSV files ({} sealed)", self.path, len(sealed))

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
            self._ledger.clear(self._segment)
            _write_all(self._fd, [HEADER_BYTES])
            os.fdatasync(self._fd)
            _fsync_directory(self.path.parent)  # a file just made (or sealed away) is in its directory for good
            return len(HEADER_BYTES)
        if os.pread(self._fd, len(HEADER_BYTES), 0) != HEADER_BYTES:
            raise ForeignCsvError(
                f"{self.path} does not start with this service's CSV header; "
                "move it away or point CSV_PATH at another file"
            )
        committed = self._ledger.end_offset(self._segment) or len(HEADER_BYTES)
        if committed == size:
            return size
        if committed > size:
            logger.warning("{} is shorter than its ledger says; rebuilding the ledger from the file", self.path)
            self._ledger.clear(self._segment)
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
        # Stamped when the file was last written, which these rows at its end were: a ledger made
        # again from the file then still knows which day the live file began.
        self._ledger.record(entries, self._segment, os.fstat(self._fd).st_mtime)
        if entries and self._first_commit is None:
            self._first_commit = self._ledger.first_commit(self._segment)
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


def _sooner(*delays: float | None) -> float | None:
    """The shortest of the delays that are set; None when none is."""
    return min((delay for delay in delays if delay is not None), default=None)


def _closed_unless_unsure(file: DurableCsvFile | None) -> DurableCsvFile | None:
    """None, the file closed, after a failed try; the file itself while it must keep its lock.

    Called where an error is being handled already: a close that fails as well is logged, not
    raised over it (its descriptors are closed all the same, `DurableCsvFile.close`)."""
    if file is None or file.unsure:
        return file
    try:
        file.close()
    except BaseException as error:  # noqa: BLE001
        logger.warning("closing {} after a failure failed too: {!r}", file.path, error)
    return None


@dataclass
class _CommitterState:
    """What the committer thread keeps from one turn to the next."""

    log: CommitLog
    file: DurableCsvFile | None = None
    #: False after a seal while idle failed; a commit that works makes it True again.
    sealing_when_idle: bool = True


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, None when there is none."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write every part, in order, without first copying them into one buffer."""
    pending = [memoryview(part) for part in parts if part]
    while pending:
        written = os.writev(fd, pending[:IOV_MAX])
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
                 retry_max_seconds: float = 5.0, rotation: Rotation = Rotation(),
                 clock: Callable[[], float] = time.time, linger_seconds: float = 0.0,
                 linger_until: int = MAX_BATCH_MESSAGES):
        self.path = Path(path)
        #: How long a batch smaller than `linger_until` waits for more before it is committed: at 500
        #: requests a second, 2 ms took the workers' CPU a message down 14% (bench/RESULTS.md).
        self.linger_seconds = linger_seconds
        #: The batch that needs no waiting: the appenders' threads, all of them in it, can send no more.
        self.linger_until = min(max(linger_until, 1), MAX_BATCH_MESSAGES)
        self.rotation = rotation
        self.clock = clock
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

    def append(self, message_id: str, data: bytes, rows: int = 0, origin: Origin | None = None) -> bool:
        """Commit one message's rows; False when that message was already committed."""
        self._ensure_committer()
        pending = PendingAppend(message_id, data, rows, origin)
        self._queue.put(pending)
        pending.wait()
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
        """The committer thread: one turn after another, for as long as the process lives.

        No error ends it. A batch's error goes to the batch's actors within the turn; one outside
        any commit (the clock, an idle seal's bookkeeping, memory) is logged, and the next turn
        begins after a pause that grows to `retry_max_seconds`. A committer that ended would
        leave every later append waiting for ever.
        """
        work = self._queue
        state = _CommitterState(CommitLog(self.path))
        pause = 0.0
        while True:
            try:
                self._turn(work, state)
                pause = 0.0
            except BaseException:  # noqa: BLE001 (whatever it was, the actors still need a committer)
                pause = min(max(2 * pause, 0.1), self.retry_max_seconds)
                logger.exception("the CSV committer failed between commits; it goes on in {:.1f} s", pause)
                state.file = _closed_unless_unsure(state.file)
                time.sleep(pause)

    def _turn(self, work: queue.SimpleQueue[PendingAppend], state: _CommitterState) -> None:
        """Commit what waits, at most one batch; or, when nothing comes in time, the idle chores."""
        seal_due = state.file.seal_due_in() if state.file is not None and state.sealing_when_idle else None
        batch: list[PendingAppend] = []
        try:
            batch.append(work.get(timeout=_sooner(state.log.due_in(), seal_due)))
        except queue.Empty:  # idle: the commits so far are logged now, not at the next one
            state.log.write()
            if seal_due is not None and state.file.seal_due_in() == 0:
                try:
                    state.file.seal_if_due()
                except BaseException as error:  # the next commit seals it, or waits out the disk
                    logger.warning("could not seal {} while idle: {}", self.path, error)
                    state.sealing_when_idle = False
                    state.file = _closed_unless_unsure(state.file)
            return
        report = None
        try:  # from here on, the batch is finished (its actors let go) however the turn ends
            self._gather(work, batch)
            state.file, report = self._commit_waiting_out_the_disk(state.file, batch)
            state.sealing_when_idle = True
            self._tell(self.observers, report)
        except BaseException as error:  # hand every other failure to the waiting actors
            for pending in batch:
                pending.written = False
                pending.error = error
            state.file = _closed_unless_unsure(state.file)
        finally:
            for pending in batch:
                pending.finish()
        if report is not None:
            state.log.add(report)  # once the actors are released: a line (~60 us) is not theirs to wait for

    def _gather(self, work: queue.SimpleQueue[PendingAppend], batch: list[PendingAppend]) -> None:
        """Add to the batch what waits, then, while it is under `linger_until`, what comes in the linger."""
        size = sum(len(pending.data) for pending in batch)
        lingering_until = time.monotonic() + self.linger_seconds if self.linger_seconds > 0 else None
        while size < MAX_BATCH_BYTES and len(batch) < MAX_BATCH_MESSAGES:
            try:
                pending = work.get_nowait()
            except queue.Empty:
                left = lingering_until - time.monotonic() if lingering_until is not None else 0
                if left <= 0 or len(batch) >= self.linger_until:
                    break
                try:
                    pending = work.get(timeout=left)
                except queue.Empty:
                    break
            batch.append(pending)
            size += len(pending.data)

    def _commit_waiting_out_the_disk(self, file: DurableCsvFile | None, batch: list[PendingAppend]
                                     ) -> tuple[DurableCsvFile, CommitReport]:
        """Commit the batch, retrying for as long as the disk refuses it; other errors are raised.

        A message a failed try marked `written` stays marked: if its rows landed whole, the next
        try's recovery puts them in the ledger and skips them, and they are still this batch's own.
        """
        delay = 0.1
        while True:
            try:
                file = file or DurableCsvFile(self.path, self.rotation, self.clock)
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
