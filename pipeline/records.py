"""Rows of one shard read back a page at a time, by who sent them and when they were written: GET /records.

Why it is shaped this way:

- The ledger is the index. Every committed message has a row there: its
  segment (file), the offset its rows end at, when they became durable and
  who sent it (its origin: tenant, client_id, device_id). A page walks those
  entries in the order the rows were written, filters them there, and reads
  from the CSV only the byte ranges of the messages it returns, with `pread`:
  no file is scanned, and a page costs the same at the start of a 100 GB
  shard as at its end.
- The work of one page is bounded three ways: `limit` rows returned, `scan`
  ledger entries examined, `max_bytes` of rows read. A page stops at the first
  bound it meets and says where to go on (`next`), so a filter that matches
  little gives short pages quickly rather than one long query.
- A cursor is a position in the shard, `<segment>.<end>.<skip>`: after the
  message ending at `end` of `segment`, skipping the first `skip` rows of the
  next. Positions never move (sealed files are never written again, the live
  one only grows), so a cursor stays good across rotations and restarts, and
  the last one of a walk is where new rows will appear.
- A message without an origin (committed by a worker of an older version, or
  re-derived from the CSV after its ledger lost it) belongs to no tenant: only
  a query for every tenant (an admin key) returns it.
- Rows come from the live file while workers append to it and seal it. The
  ledger only names messages whose rows are already on disk; a file is opened
  and then its segment checked to be still the one at that name (a rename
  happens only after the ledger says the seal has begun), and every row read
  is checked to be the message the ledger says is there.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.rows import HEADER_BYTES, allow_large_cells, decode_row
from pipeline.shard_files import ledger_path
from pipeline.shards import LedgerReader, ShardError

CURSOR_PATTERN = r"^\d{1,9}\.\d{1,18}\.\d{1,6}$"
_CURSOR = re.compile(CURSOR_PATTERN)
#: An offset after every entry of a segment (and still a cursor's 18 digits).
_PAST_THE_END = 10**18 - 1
#: Times a live file is looked up again when a seal moves it while a page opens it.
_OPEN_ATTEMPTS = 5


class RecordsUnavailable(Exception):
    """The shard cannot be read now (its ledger is unreadable or disagrees with a file); says why."""


@dataclass(frozen=True)
class Position:
    #: The start: before every entry (segments count from 1, and every message ends past the header).
    segment: int = 0
    end: int = 0
    skip: int = 0

    def __str__(self) -> str:
        return f"{self.segment}.{self.end}.{self.skip}"

    @classmethod
    def parse(cls, text: str | None) -> "Position":
        if not text:
            return cls()
        if not _CURSOR.match(text):
            raise ValueError(f"cursor {text!r} is not one this API gave (<segment>.<offset>.<rows>)")
        segment, end, skip = map(int, text.split("."))
        return cls(segment, end, skip)


@dataclass(frozen=True)
class RecordQuery:
    """What a page asks for. `tenant` None: every tenant's rows (an admin's query)."""

    tenant: str | None
    client_id: str | None = None
    device_id: str | None = None
    since: float | None = None  #: unix seconds; rows written at or after
    until: float | None = None  #: unix seconds; rows written before
    limit: int = 100
    scan: int = 10_000
    max_bytes: int = 16 * 1024 * 1024

    def wants(self, tenant: str | None, client_id: str | None, device_id: str | None, written: float) -> bool:
        """Whether a message may match, from its ledger entry (an unknown origin is checked on its rows)."""
        if self.tenant is not None and tenant != self.tenant:
            return False
        if self.since is not None and written < self.since:
            return False
        if self.until is not None and written >= self.until:
            return False
        if self.client_id is not None and client_id is not None and client_id != self.client_id:
            return False
        return not (self.device_id is not None and device_id is not None and device_id != self.device_id)

    def keeps(self, row: dict[str, Any]) -> bool:
        return ((self.client_id is None or row["client_id"] == self.client_id)
                and (self.device_id is None or row["device_id"] == self.device_id))


@dataclass
class Page:
    records: list[dict[str, Any]] = field(default_factory=list)
    #: Where the next page starts; also where rows written later will appear.
    next: str = str(Position())
    #: Whether the walk stopped at a bound, with entries left to examine.
    more: bool = False
    scanned: int = 0
    #: Sealed files the ledger names that are no longer beside the live file (moved, merged away).
    unavailable: list[str] = field(default_factory=list)


def read_page(live: Path, query: RecordQuery, cursor: str | None = None) -> Page:
    """One page of the shard at `live` (CSV_PATH) from `cursor`; raises RecordsUnavailable."""
    position = Position.parse(cursor)
    live = Path(live)
    page = Page(next=str(position))
    if not ledger_path(live).exists():
        return page  # nothing was ever committed here
    try:
        ledger = LedgerReader(ledger_path(live))
    except ShardError as error:
        raise RecordsUnavailable(str(error)) from error
    files = _SegmentFiles(live, ledger)
    try:
        _fill(page, query, position, ledger, files)
    except sqlite3.Error as error:
        raise RecordsUnavailable(f"{ledger_path(live)}: {error}") from error
    finally:
        files.close()
        ledger.close()
    page.unavailable = sorted(files.missing)
    return page


def _fill(page: Page, query: RecordQuery, position: Position, ledger: LedgerReader, files: "_SegmentFiles") -> None:
    position = _skip_segments_before(query.since, position, ledger)
    entries = ledger.commits_after(position.segment, position.end, query.scan)
    page.more = len(entries) == query.scan
    read_bytes = 0
    # The first message's start is looked up, never taken from the cursor: a cursor is only a position.
    previous: tuple[int, int] | None = None
    for index, (segment, end, message_id, written, tenant, client_id, device_id) in enumerate(entries):
        start = previous[1] if previous and previous[0] == segment else None
        previous = (segment, end)
        skip = position.skip if index == 0 else 0
        page.scanned += 1
        if not query.wants(tenant, client_id, device_id, written):
            page.next = str(Position(segment, end))
            continue
        if read_bytes and read_bytes >= query.max_bytes:
            page.more = True
            return  # page.next is this message's start
        if start is None:
            start = ledger.end_before(segment, end) or len(HEADER_BYTES)
        data = files.read(segment, start, end)
        if data is None:  # its file is gone: counted as examined, named in `unavailable`
            page.next = str(Position(segment, end))
            continue
        read_bytes += len(data)
        rows = [row for row in _rows(data, message_id, segment) if query.keeps(row)]
        taken = rows[skip : skip + query.limit - len(page.records)]
        stamp = _iso(written)
        page.records += [{**row, "written_at": stamp} for row in taken]
        if skip + len(taken) < len(rows):
            page.next = str(Position(position.segment if index == 0 else entries[index - 1][0],
                                     position.end if index == 0 else entries[index - 1][1], skip + len(taken)))
            page.more = True
            return
        page.next = str(Position(segment, end))
        if len(page.records) == query.limit:
            page.more = page.more or index + 1 < len(entries)
            return


def _skip_segments_before(since: float | None, position: Position, ledger: LedgerReader) -> Position:
    """From the start, a `since` skips the sealed segments whose last commit is older."""
    if since is None or position != Position():
        return position
    for segment in ledger.segments():
        if segment["state"] == "sealed" and segment["last_commit"] is not None and segment["last_commit"] < since:
            position = Position(segment["sequence"], _PAST_THE_END)
        else:
            break
    return position


def _rows(data: bytes, message_id: str, segment: int) -> list[dict[str, Any]]:
    allow_large_cells()
    try:
        rows = [decode_row(cells) for cells in csv.reader(io.StringIO(data.decode("utf-8"), newline=""))]
    except (ValueError, csv.Error):  # UnicodeDecodeError and orjson's errors are ValueErrors
        rows = []
    if not rows or any(row["message_id"] != message_id for row in rows):
        raise RecordsUnavailable(f"segment {segment} does not hold message {message_id} where its ledger says; "
                                 "run `python -m pipeline.shards verify`")
    return rows


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _SegmentFiles:
    """The open file of each segment a page reads, found by the ledger's names."""

    def __init__(self, live: Path, ledger: LedgerReader):
        self.live = live
        self.ledger = ledger
        self.missing: set[str] = set()
        self._fds: dict[int, int | None] = {}

    def read(self, segment: int, start: int, end: int) -> bytes | None:
        if segment not in self._fds:
            self._fds[segment] = self._open(segment)
        fd = self._fds[segment]
        if fd is None:
            return None
        data = os.pread(fd, end - start, start)
        if len(data) != end - start:
            raise RecordsUnavailable(f"segment {segment} ends before offset {end}, which its ledger records; "
                                     "run `python -m pipeline.shards verify`")
        return data

    def _open(self, segment: int) -> int | None:
        for _ in range(_OPEN_ATTEMPTS):
            state, name = self._state(segment)
            sealed = self.live.with_name(name) if name else None
            if state == "sealed":
                try:
                    return os.open(sealed, os.O_RDONLY)
                except FileNotFoundError:
                    self.missing.add(name)
                    return None
            if state == "sealing" and sealed is not None:
                try:
                    return os.open(sealed, os.O_RDONLY)  # renamed already
                except FileNotFoundError:
                    pass
            try:
                fd = os.open(self.live, os.O_RDONLY)
            except FileNotFoundError:
                continue  # between a seal's rename and the new live file
            # Still this segment's file? A rename comes only after the ledger says `sealing`, so if it
            # still says `live` (or, mid-seal, the sealed name is still missing) nothing moved before the open.
            again, _ = self._state(segment)
            if again == "live" or (again == "sealing" and sealed is not None and not sealed.exists()):
                return fd
            os.close(fd)
        raise RecordsUnavailable(f"segment {segment} of {self.live} kept moving while it was opened; retry")

    def _state(self, segment: int) -> tuple[str | None, str | None]:
        for entry in self.ledger.segments():
            if entry["sequence"] == segment:
                return entry["state"], entry["name"]
        return None, None

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
