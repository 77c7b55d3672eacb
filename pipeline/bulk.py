"""Payloads read back from uploaded files: CSV and XLSX in the sink's row format, and NDJSON.

A CSV or XLSX file has the columns the workers write (`pipeline.rows`), one
row per pred, so a file the service wrote can be uploaded again as it is.
`message_id`, `pred_index` and `pred_count` are optional, the other columns
are required, and their order is free. Rows are grouped back into payloads:
consecutive rows with the same `message_id` (or, without one, with the same
device_id, client_id, created_at and license_id) form one payload, which is
complete once it has `pred_count` rows when that column is given. Text cells
are restored as `read_csv` does (one leading `'` dropped) and `tags` is a
JSON array. An NDJSON file holds one `/api` body per line.

Everything here streams: a reader holds one payload's rows at a time, never
the file, so memory stays flat whatever the file's size. A payload is only
rebuilt here, not validated: the API validates it like a POST /api body.
Problems are reported in the shape of the API's 422 entries
(`{"field", "message", "type"}`), with the file's line numbers.
"""

from __future__ import annotations

import csv
import struct
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, BinaryIO

import orjson

from pipeline.rows import COLUMNS, TEXT_COLUMNS, restore_cell

#: Columns a file must have; the others (`message_id`, `pred_index`, `pred_count`) are optional.
REQUIRED_COLUMNS = ("device_id", "client_id", "created_at", "license_id", "prob", "tags", "image_frame")
#: Columns that must agree across the rows of one payload (they are the payload's, not the pred's).
PAYLOAD_COLUMNS = ("device_id", "client_id", "created_at", "license_id")


class UnreadableFile(ValueError):
    """The file, or the rest of it from `line` on, cannot be read.

    `kind` tells the caller what to answer: `header` (the columns are wrong),
    `format` (not the declared kind of file), `too_large` (an XLSX over a
    limit) or `broken` (reading had to stop mid-file).
    """

    def __init__(self, message: str, *, kind: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.line = line


@dataclass
class FilePayload:
    """One payload rebuilt from a file, or why a part of the file could not become one."""

    #: First and last line (CSV, NDJSON) or row (XLSX) it came from; 1-based, the header is line 1.
    line: int
    last_line: int
    #: The `/api` body rebuilt from the rows (or parsed from the NDJSON line); None when `errors`.
    payload: Any = None
    #: The file's `message_id` for it, when the file has one.
    message_id: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    #: The line of each pred, in pred order (CSV, XLSX), to name rows in validation errors.
    pred_lines: list[int] = field(default_factory=list)
    #: Characters read for it: lets the caller bound the memory of what it holds at once.
    size: int = 0


@dataclass
class ReadProgress:
    """Counts kept while a reader runs; the answer reports them."""

    rows_read: int = 0


def problem(field_name: str, message: str, error_type: str) -> dict[str, str]:
    return {"field": field_name, "message": message, "type": error_type}


# -- rows of the sink's format -----------------------------------------------------------------


@dataclass
class _Row:
    line: int
    last_line: int
    cells: dict[str, str]
    size: int


class _RowDecoder:
    """Turns one record of text cells into typed values, checking what grouping relies on."""

    def __init__(self, header: Sequence[str]):
        names = [name.strip() for name in header]
        unknown = [name for name in names if name not in COLUMNS]
        missing = [name for name in REQUIRED_COLUMNS if name not in names]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if unknown or missing or repeated:
            parts = []
            if missing:
                parts.append(f"missing column(s) {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
            if repeated:
                parts.append(f"repeated column(s) {', '.join(repeated)}")
            raise UnreadableFile(
                f"line 1 must be the header: {'; '.join(parts)}. Expected the columns "
                f"{', '.join(REQUIRED_COLUMNS)} (any order), optionally message_id, pred_index, pred_count",
                kind="header",
                line=1,
            )
        self.names = names

    def row(self, line: int, last_line: int, cells: Sequence[str]) -> _Row | FilePayload:
        """The row's cells by column, or a rejected FilePayload when it has too many cells."""
        if len(cells) > len(self.names) and any(cells[len(self.names) :]):
            message = f"line {line}: {len(cells)} cells, but the header has {len(self.names)} columns"
            return FilePayload(line, last_line, errors=[problem("row", message, "row_length")])
        values = dict(zip(self.names, cells))  # a short row: its missing cells are empty
        for name in self.names[len(cells) :]:
            values[name] = ""
        return _Row(line, last_line, values, sum(map(len, cells)))


class _Group:
    """Consecutive rows of one payload, and what was wrong with them."""

    #: What one pred adds to a POST /api body besides its cells (field names, quotes, commas).
    PRED_OVERHEAD_BYTES = 64

    def __init__(self, row: _Row, key: tuple, max_preds: int, max_payload_bytes: int | None = None):
        self.key = key
        self.first = row
        self.last_line = row.last_line
        self.max_preds = max_preds
        self.max_payload_bytes = max_payload_bytes
        self.rows: list[_Row] = []
        self.row_count = 0
        self.size = 0
        self.expected = _integer(row.cells.get("pred_count", ""))  # None when absent or not a number
        self.add(row)

    @property
    def complete(self) -> bool:
        return self.expected is not None and self.row_count >= self.expected

    @property
    def too_large(self) -> bool:
        return self.max_payload_bytes is not None and self.size > self.max_payload_bytes

    def add(self, row: _Row) -> None:
        self.row_count += 1
        self.last_line = row.last_line
        # Past a limit the payload is refused: keep no more rows (memory stays one body's worth).
        if self.row_count <= self.max_preds and not self.too_large:
            self.rows.append(row)
            self.size += row.size + self.PRED_OVERHEAD_BYTES

    def finish(self) -> FilePayload:
        cells = self.first.cells
        message_id = cells.get("message_id") or None
        result = FilePayload(self.first.line, self.last_line, message_id=message_id, size=self.size)
        errors = result.errors
        if message_id is not None and not _is_uuid(message_id):
            errors.append(problem("message_id", f"line {self.first.line}: {message_id!r} is not a UUID "
                                  "in its canonical form (the ids the service writes are)", "message_id"))
        if self.row_count > self.max_preds:
            errors.append(problem("pred_count", f"{self.row_count} rows for one payload; at most {self.max_preds} "
                                  "preds are allowed (MAX_PREDS)", "too_long"))
            return result
        if self.too_large:  # one broker message, like a POST /api body: the same bound
            errors.append(problem("body", f"lines {self.first.line}-{self.last_line} make a payload of over "
                                  f"{self.max_payload_bytes} bytes; POST /api takes at most that (MAX_BODY_BYTES)",
                                  "too_large"))
            return result
        preds, lines = [], []
        for position, row in enumerate(self.rows):
            pred, pred_errors = _pred(row)
            errors.extend(pred_errors)
            preds.append((_integer(row.cells.get("pred_index", "")) if "pred_index" in row.cells else position, pred))
            lines.append(row.line)
            for name in PAYLOAD_COLUMNS:
                if row.cells[name] != cells[name]:
                    errors.append(problem(name, f"line {row.line}: {name} differs from line {self.first.line}'s, "
                                          "though both rows are of one payload", "inconsistent_rows"))
            count = row.cells.get("pred_count", "")
            if count and _integer(count) != self.expected or not count and self.expected is not None:
                errors.append(problem("pred_count", f"line {row.line}: pred_count {row.cells['pred_count']!r} is "
                                      f"not a count, or differs from line {self.first.line}'s", "pred_count"))
        if self.expected is not None and self.row_count != self.expected:
            errors.append(problem("pred_count", f"{self.row_count} of the {self.expected} rows of this payload "
                                  "were found (pred_count); a payload is whole or refused", "incomplete_payload"))
        indexes = [index for index, _ in preds]
        if "pred_index" in cells and sorted(i for i in indexes if i is not None) != list(range(len(preds))):
            values = [row.cells["pred_index"] for row in self.rows]
            errors.append(problem("pred_index", f"pred_index values {values} are not 0 to {len(preds) - 1}, each once",
                                  "pred_index"))
        if errors:
            return result
        order = sorted(range(len(preds)), key=lambda position: preds[position][0])
        result.payload = {
            "device_id": cells["device_id"],
            "client_id": cells["client_id"],
            "created_at": cells["created_at"],
            "data": {"license_id": cells["license_id"], "preds": [preds[position][1] for position in order]},
        }
        result.pred_lines = [lines[position] for position in order]
        return result


def _pred(row: _Row) -> tuple[dict[str, Any], list[dict[str, str]]]:
    errors = []
    cells = row.cells
    try:
        prob: Any = float(cells["prob"])
    except ValueError:
        prob = None
        errors.append(problem("prob", f"line {row.line}: prob {cells['prob']!r} is not a number", "float_parsing"))
    tags: Any = []
    if cells["tags"] != "":  # an empty cell: no tags (a spreadsheet user may leave it blank)
        try:
            tags = orjson.loads(cells["tags"])
        except orjson.JSONDecodeError:
            tags = None
        if not isinstance(tags, list):
            errors.append(problem("tags", f"line {row.line}: tags must be a JSON array such as [\"person\", "
                                  f"\"entrance\"] (got {cells['tags'][:80]!r})", "tags_json"))
    return {"image_frame": cells["image_frame"], "prob": prob, "tags": tags}, errors


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _group_key(cells: dict[str, str]) -> tuple:
    if cells.get("message_id"):
        return ("message_id", cells["message_id"])
    return ("fields", *(cells[name] for name in PAYLOAD_COLUMNS))


def group_rows(
    records: Iterable[tuple[int, int, Sequence[str]] | FilePayload],
    header: Sequence[str],
    *,
    max_preds: int,
    progress: ReadProgress,
    max_payload_bytes: int | None = None,
) -> Iterator[FilePayload]:
    """Payloads from records of text cells as `(first line, last line, cells)`, in file order.

    Cells are those of the file: restored here (leading `'`), typed here.
    Blank records are skipped; a record that is already a (rejected)
    FilePayload, a row the reader could not parse, passes through. A payload
    ends where the next row belongs to another one, or once it has
    `pred_count` rows.
    """
    decoder = _RowDecoder(header)
    current: _Group | None = None
    for record in records:
        if isinstance(record, FilePayload):
            row: _Row | FilePayload = record
        elif not any(record[2]):
            continue
        else:
            row = decoder.row(*record)
        progress.rows_read += 1
        if isinstance(row, FilePayload):  # unreadable: it cannot belong to any payload
            if current is not None:
                yield current.finish()
                current = None
            yield row
            continue
        for name in TEXT_COLUMNS:
            if name in row.cells:
                row.cells[name] = restore_cell(row.cells[name])
        key = _group_key(row.cells)
        if current is not None and key != current.key:
            yield current.finish()
            current = None
        if current is None:
            current = _Group(row, key, max_preds, max_payload_bytes)
        else:
            current.add(row)
        if current.complete:  # pred_count rows: done, without waiting for the next row
            yield current.finish()
            current = None
    if current is not None:
        yield current.finish()


# -- CSV -----------------------------------------------------------------------------------------


def read_csv_payloads(
    file: BinaryIO, *, max_preds: int, max_line_bytes: int, progress: ReadProgress
) -> Iterator[FilePayload]:
    """Payloads from a CSV file (UTF-8, a byte-order mark allowed), read as a stream.

    Raises UnreadableFile for a wrong header (before anything is yielded), and
    mid-file at a line that is not UTF-8 or is longer than `max_line_bytes`
    (a bound on memory: one row is never larger than one /api body).
    """
    if csv.field_size_limit() < max_line_bytes:
        csv.field_size_limit(max_line_bytes)  # the default (128 KiB) is less than one image_frame may be
    lines = _RecordBoundedLines(file, max_line_bytes)
    reader = csv.reader(lines)
    header = _next_record(reader)
    if header is None:
        raise UnreadableFile("the file is empty; line 1 must be the header", kind="header", line=1)
    lines.record_ended()  # the header's bytes are not the first row's
    yield from group_rows(_records(reader, lines), header, max_preds=max_preds, progress=progress,
                          max_payload_bytes=max_line_bytes)


def _next_record(reader) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as error:
        raise UnreadableFile(f"line {reader.line_num}: {error}", kind="broken", line=reader.line_num) from None


def _records(reader, lines: "_RecordBoundedLines") -> Iterator[tuple[int, int, list[str]] | FilePayload]:
    last = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # the reader starts afresh at the next line
            line = reader.line_num
            yield FilePayload(line, line, errors=[problem("row", f"line {line}: {error}", "csv_error")])
            last = line
            lines.record_ended()
            continue
        lines.record_ended()
        yield last + 1, reader.line_num, cells
        last = reader.line_num


def _lines(file: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) for each line of the file, a byte-order mark dropped; (number, None) for a
    line longer than `max_bytes`, whose rest is skipped a piece at a time, never held whole."""
    number = 0
    while line := file.readline(max_bytes + 2):  # + "\r\n"
        number += 1
        if len(line.rstrip(b"\r\n")) > max_bytes:
            while line and not line.endswith(b"\n"):
                line = file.readline(1 << 20)
            yield number, None
            continue
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # the byte-order mark spreadsheets and some editors put first
        yield number, line


class _RecordBoundedLines:
    """The file's lines for csv.reader, with a bound on the bytes of one *record*.

    A quoted cell may span lines, so bounding lines alone bounds nothing: a
    record of a thousand lines would be held whole by the reader. The bytes
    since the last whole record are counted; past `max_bytes` reading stops.
    """

    def __init__(self, file: BinaryIO, max_bytes: int):
        self._lines = _utf8_lines(file, max_bytes)
        self.max_bytes = max_bytes
        self._since_record = 0
        self._first_line = 1
        self._line = 0

    def __iter__(self) -> "_RecordBoundedLines":
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._line += 1
        self._since_record += len(line)
        if self._since_record > self.max_bytes:
            raise UnreadableFile(
                f"the record starting at line {self._first_line} is longer than {self.max_bytes} bytes "
                "(MAX_BODY_BYTES; a quoted cell that never ends?); reading stopped there",
                kind="broken", line=self._first_line,
            )
        return line

    def record_ended(self) -> None:
        self._since_record = 0
        self._first_line = self._line + 1


def _utf8_lines(file: BinaryIO, max_bytes: int) -> Iterator[str]:
    """The file's lines, decoded one at a time so that an error names its line exactly."""
    for number, line in _lines(file, max_bytes):
        if line is None:
            raise UnreadableFile(
                f"line {number} is longer than {max_bytes} bytes (MAX_BODY_BYTES); reading stopped there",
                kind="broken", line=number,
            )
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UnreadableFile(
                f"line {number} is not UTF-8 text ({error.reason} at byte {error.start}); reading stopped there",
                kind="format" if number == 1 else "broken", line=number,
            ) from None


# -- XLSX ----------------------------------------------------------------------------------------


def read_xlsx_payloads(
    file: BinaryIO, *, max_preds: int, max_unpacked_bytes: int, max_strings_bytes: int, progress: ReadProgress,
    max_entries: int = 1000, max_payload_bytes: int | None = None,
) -> Iterator[FilePayload]:
    """Payloads from the first sheet of a workbook, its rows streamed (openpyxl read-only mode).

    The sheet's rows are parsed as they are read, but openpyxl loads the
    workbook's shared-strings table whole: its uncompressed size is checked
    first against `max_strings_bytes`, and the whole archive's against
    `max_unpacked_bytes` (zip bombs). The shared strings are found the way
    openpyxl finds them, by content type in `[Content_Types].xml`, not by name
    (a renamed part would pass a check by name). The number of files in the
    archive is read from its end record before the directory is parsed. A cell
    is parsed whole too, so no part may hold a text longer than
    `max_payload_bytes` (`_text_problem`): such a cell could never fit a
    payload, and Excel itself stops at 32,767 characters. Cells
    are taken as text the way a CSV holds them; formulas are read as their
    text, never evaluated. A payload assembled from rows obeys MAX_BODY_BYTES
    (`max_payload_bytes`), like a POST /api body.
    """
    import openpyxl  # only uploads need it; keeps the API's import light

    _check_entry_count(file, max_entries)
    _check_workbook_sizes(file, max_unpacked_bytes, max_strings_bytes, max_payload_bytes)
    try:
        workbook = openpyxl.load_workbook(file, read_only=True, data_only=False)
    except Exception as error:  # openpyxl raises many kinds for a zip that is no workbook
        raise UnreadableFile(f"not an XLSX workbook openpyxl can read ({error!r})", kind="format") from None
    try:
        if not workbook.worksheets:
            raise UnreadableFile("the workbook has no sheet", kind="format")
        sheet = workbook.worksheets[0]
        sheet.reset_dimensions()  # a wrong <dimension> in the file must not hide rows
        records = _sheet_records(sheet.iter_rows(min_row=1, min_col=1, values_only=True))
        header = next(records, (1, 1, []))[2]
        while header and header[-1] == "":
            header.pop()
        if not header:
            raise UnreadableFile("row 1 of the first sheet must be the header; it is empty", kind="header", line=1)
        yield from group_rows(records, header, max_preds=max_preds, progress=progress,
                              max_payload_bytes=max_payload_bytes)
    finally:
        workbook.close()


def _sheet_records(rows: Iterator[tuple]) -> Iterator[tuple[int, int, list[str]]]:
    number = 0
    while True:
        try:
            values = next(rows)
        except StopIteration:
            return
        except Exception as error:  # broken XML inside the archive
            raise UnreadableFile(f"row {number + 1} and after cannot be read ({error!r}); reading stopped there",
                                 kind="broken", line=number + 1) from None
        number += 1
        yield number, number, [_cell_text(value) for value in values]


_END_OF_DIRECTORY = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END = b"PK\x06\x06"
#: A directory entry is 46 bytes and its name, extra field and comment; real ones stay far below this.
_MAX_ENTRY_BYTES = 46 + 1024
_SHARED_STRINGS_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
#: `[Content_Types].xml` is a few KB in any real workbook; it is read whole to find the parts.
_MAX_CONTENT_TYPES_BYTES = 1024 * 1024


def _check_entry_count(file: BinaryIO, max_entries: int) -> None:
    """Refuse an archive of more than `max_entries` files from its end record alone: zipfile would
    parse a directory of 100,000 entries (and hold them all) before any other check could run.

    zipfile parses the directory until its stated size runs out, whatever count the record
    gives, so the size is bounded too (`_MAX_ENTRY_BYTES` an entry). The zip64 end record is
    read where zipfile reads it, right before its locator.
    """
    file.seek(0, 2)
    size = file.tell()
    file.seek(max(0, size - (22 + 65535)))  # the end record, after at most a 64 KiB comment
    tail = file.read()
    file.seek(0)
    at = tail.rfind(_END_OF_DIRECTORY)
    if at < 0 or len(tail) < at + 22:
        raise UnreadableFile("not an XLSX workbook (it is not a zip archive)", kind="format")
    entries, directory_bytes = struct.unpack_from("<H", tail, at + 10)[0], struct.unpack_from("<I", tail, at + 12)[0]
    locator = at - 20
    if locator >= 56 and tail[locator:locator + 4] == _ZIP64_LOCATOR:  # zip64: the zip64 end record rules
        record = tail[locator - 56:locator]
        if record[:4] != _ZIP64_END:
            raise UnreadableFile("not an XLSX workbook (its zip64 end record is missing)", kind="format")
        entries, directory_bytes = struct.unpack_from("<QQ", record, 32)
    if entries > max_entries or directory_bytes > max_entries * _MAX_ENTRY_BYTES:
        raise UnreadableFile(f"the workbook holds {entries} files in a directory of {directory_bytes} bytes; the "
                             f"limit is {max_entries} files (MAX_XLSX_ENTRIES)", kind="too_large")


def _shared_strings_parts(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> set[str]:
    """The archive's shared-strings parts: by content type, as openpyxl finds them, and by name.

    `[Content_Types].xml` is read as openpyxl reads it (the last entry of that name, a part's
    name without its first character); one too large or unreadable to check is refused, since
    a check that fell back on names alone would be passed by a renamed part.
    """
    names = {m.filename for m in members if m.filename.lower().endswith("sharedstrings.xml")}
    try:
        types = archive.getinfo("[Content_Types].xml")
    except KeyError:
        return names  # openpyxl refuses such a file itself
    if types.file_size > _MAX_CONTENT_TYPES_BYTES:
        raise UnreadableFile(f"the workbook's [Content_Types].xml is over {_MAX_CONTENT_TYPES_BYTES} bytes",
                             kind="format")
    from defusedxml import ElementTree

    try:
        root = ElementTree.fromstring(archive.read(types))
    except Exception as error:  # ParseError, or defusedxml refusing entities
        raise UnreadableFile(f"the workbook's [Content_Types].xml cannot be read ({error!r})", kind="format") from None
    for override in root:
        part = override.get("PartName")
        if override.get("ContentType") == _SHARED_STRINGS_TYPE and part:
            names.add(part[1:])
    return names


#: What zipfile raises for an archive it cannot unpack: no zip, a bad CRC, corrupt deflate
#: data, encryption, an unknown method, a stream cut short, sizes that do not fit.
_BROKEN_ARCHIVE = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OverflowError,
                   ValueError)


def _check_workbook_sizes(file: BinaryIO, max_unpacked_bytes: int, max_strings_bytes: int,
                          max_text_bytes: int | None = None) -> None:
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            unpacked = sum(member.file_size for member in members)
            if unpacked > max_unpacked_bytes:
                raise UnreadableFile(f"the workbook unpacks to {unpacked} bytes; the limit is {max_unpacked_bytes} "
                                     "(MAX_XLSX_UNPACKED_BYTES)", kind="too_large")
            parts = {name.lower() for name in _shared_strings_parts(archive, members)}
            for member in members if max_text_bytes else ():
                if member.file_size > max_text_bytes and (problem := _text_problem(archive, member, max_text_bytes)):
                    raise UnreadableFile(f"{member.filename} {problem}", kind="too_large")
    except UnreadableFile:
        raise
    except _BROKEN_ARCHIVE as error:  # no zip, or a corrupt, encrypted or truncated part
        raise UnreadableFile(f"the workbook cannot be unpacked ({error!r})", kind="format") from None
    finally:
        file.seek(0)
    strings = sum(m.file_size for m in members if m.filename.lower() in parts)
    if strings > max_strings_bytes:
        raise UnreadableFile(f"the workbook's shared strings are {strings} bytes; the limit is {max_strings_bytes} "
                             "(MAX_XLSX_STRINGS_BYTES); upload it as CSV, which streams", kind="too_large")


def _text_problem(archive: zipfile.ZipFile, member: zipfile.ZipInfo, limit: int) -> str | None:
    """Why the part may hold a text (a cell) longer than `limit` bytes, or None.

    Any XML text or attribute value lies between two `<` (a literal one is
    `&lt;`), so the longest run without one bounds what the parser must hold
    for one cell, at the price of unpacking the part once more, in pieces.
    The exception is a CDATA section, which may hold `<`: spreadsheet programs
    never write one, so a large part that has one is refused. Compressed
    binary parts (images) meet a `<` every few hundred bytes and pass. Pieces
    are at most `limit` long, so only the run across their joins needs counting.
    """
    run, piece, before = 0, min(limit, 1 << 20), b""
    with archive.open(member) as part:
        while chunk := part.read(piece):
            if b"<![CDATA[" in before[-8:] + chunk:
                return "holds a CDATA section, which no spreadsheet program writes"
            before = chunk
            first = chunk.find(b"<")
            if first < 0:
                run += len(chunk)
            else:
                if run + first > limit:
                    break
                run = len(chunk) - chunk.rfind(b"<") - 1
            if run > limit:
                break
        else:
            return None
    return f"holds a text (a cell?) longer than {limit} bytes (MAX_BODY_BYTES), which no payload could hold"


def _cell_text(value: Any) -> str:
    """A cell's value as the text a CSV would hold."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return str(value)


# -- NDJSON --------------------------------------------------------------------------------------


def read_ndjson_payloads(file: BinaryIO, *, max_line_bytes: int, progress: ReadProgress) -> Iterator[FilePayload]:
    """One payload per non-blank line, each parsed as strict JSON (orjson), read as a stream.

    A line longer than `max_line_bytes` is refused and skipped without being held whole.
    """
    for number, line in _lines(file, max_line_bytes):
        if line is None:
            progress.rows_read += 1
            message = f"line {number} is longer than {max_line_bytes} bytes (MAX_BODY_BYTES)"
            yield FilePayload(number, number, errors=[problem("body", message, "too_large")])
            continue
        if not line.strip():
            continue
        progress.rows_read += 1
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            message = f"line {number} is not valid JSON: {error.msg} (column {error.colno})"
            yield FilePayload(number, number, errors=[problem("body", message, "json_invalid")])
            continue
        yield FilePayload(number, number, payload=value, size=len(line))
