"""The CSV row format: one row per item of `data.preds`, and the way back.

Format (RFC 4180, UTF-8, `\\r\\n` line ends, every cell quoted; the header line is not):

    message_id, pred_index, pred_count, device_id, client_id, created_at,
    license_id, prob, tags, image_frame

- `pred_count` lets a reader (and the sink's crash recovery) tell a complete
  message from a torn one: a message is whole when it has rows 0..pred_count-1.
- `prob` is written with `repr`, the shortest text that parses back to the
  same float.
- `tags` is a JSON array, so tags holding commas, quotes or newlines survive.
- Every cell is quoted (OWASP's advice on CSV injection): a spreadsheet that
  splits on `;` (many locales do) would otherwise cut `cam-1;=cmd|...` into a
  cell that starts with `=`. The header is fixed names, left as earlier
  versions wrote it so their files stay this service's own (the sink checks).
- Formula neutralisation (OWASP CSV injection): a text cell starting with
  `=`, `+`, `-`, `@`, tab, CR or `'` gets one `'` in front, so a spreadsheet
  shows it as text. Reading back: drop one leading `'` from any text cell that
  starts with it (`restore_cell`). Because a leading `'` is itself escaped, the
  rule is lossless.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

COLUMNS = (
    "message_id",
    "pred_index",
    "pred_count",
    "device_id",
    "client_id",
    "created_at",
    "license_id",
    "prob",
    "tags",
    "image_frame",
)
TEXT_COLUMNS = ("message_id", "device_id", "client_id", "created_at", "license_id", "image_frame")
HEADER = ",".join(COLUMNS) + "\r\n"
HEADER_BYTES = HEADER.encode()
#: How every row is written: each cell quoted.
QUOTING = csv.QUOTE_ALL

_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")


def neutralise_cell(value: str) -> str:
    """Make a text cell inert in spreadsheets without losing information."""
    if value.startswith(_FORMULA_TRIGGERS):
        return "'" + value
    return value


def restore_cell(value: str) -> str:
    """Undo `neutralise_cell`."""
    return value[1:] if value.startswith("'") else value


def _escaped(cell: bytes) -> bytes:
    """A cell's bytes with its quotes doubled, as csv.writer writes them inside the quotes.

    `in` first: a memchr, where `replace` scans slower and copies (frames never hold `"`).
    """
    return cell.replace(b'"', b'""') if b'"' in cell else cell


def _quoted(cell: str) -> bytes:
    """One cell as csv.writer writes it with QUOTE_ALL: in quotes, its own quotes doubled."""
    return b'"' + _escaped(cell.encode()) + b'"'


def encode_rows(message_id: str, payload: dict[str, Any]) -> tuple[bytes, int]:
    """Encode one payload as CSV bytes, one row per pred; return (bytes, row count).

    `payload` is the JSON form of `app.schemas.IngestPayload` as the API
    enqueued it; it was validated there and is not validated again.

    The bytes are exactly what `csv.writer` with QUOTE_ALL would write for the
    same cells (tests/unit/test_rows.py checks it on any text), but no cell goes
    through the csv module: with every cell quoted its rule is one line
    (`_escaped`), and the module's per-character scan of the ~8 KB frames, then
    its per-row call for the small cells, were the largest shares of a
    worker's own time in the profiles (bench/RESULTS.md). The cells every row
    of a message shares are quoted once.

    Built as bytes, cell by cell, not as one str encoded at the end: one
    character past Latin-1 in any tag made that str, every frame in it, two
    bytes a character, and its encoding the slow path (58 -> 44 us a message).
    """
    data = payload["data"]
    preds = data["preds"]
    count = len(preds)
    first = _quoted(neutralise_cell(message_id)) + b',"'
    shared = b'",' + b",".join((
        b'"%d"' % count,
        _quoted(neutralise_cell(payload["device_id"])),
        _quoted(neutralise_cell(payload["client_id"])),
        _quoted(neutralise_cell(payload["created_at"])),
        _quoted(neutralise_cell(data["license_id"])),
    )) + b',"'
    parts: list[bytes] = []
    for index, pred in enumerate(preds):
        parts += (first, b"%d" % index, shared, repr(float(pred["prob"])).encode(), b'","',
                  _escaped(orjson.dumps(pred["tags"])), b'","',
                  _escaped(neutralise_cell(pred["image_frame"]).encode()), b'"\r\n')
    return b"".join(parts), count


#: Largest cell the readers of this service's own files accept. The csv module's default, 128 KiB,
#: is less than one image_frame may be (MAX_FRAME_LENGTH, 1 MiB by default): a reader left at it
#: takes a whole row for a torn one. The files are this service's, their cells bounded by its limits.
MAX_CELL_CHARS = 2**31 - 1


def allow_large_cells() -> None:
    """Lift the csv module's cell limit (process-wide) before reading rows the sink wrote."""
    if csv.field_size_limit() < MAX_CELL_CHARS:
        csv.field_size_limit(MAX_CELL_CHARS)


def decode_row(cells: list[str]) -> dict[str, Any]:
    """Turn one CSV record (as `csv.reader` returns it) back into typed values."""
    if len(cells) != len(COLUMNS):
        raise ValueError(f"expected {len(COLUMNS)} cells, got {len(cells)}")
    row: dict[str, Any] = dict(zip(COLUMNS, cells))
    for name in TEXT_COLUMNS:
        row[name] = restore_cell(row[name])
    row["pred_index"] = int(row["pred_index"])
    row["pred_count"] = int(row["pred_count"])
    row["prob"] = float(row["prob"])
    row["tags"] = orjson.loads(row["tags"])
    return row


def read_rows(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Read decoded rows from CSV text lines (the header line is skipped).

    Open the file with `open(path, newline="", encoding="utf-8")`.
    """
    allow_large_cells()
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    if tuple(header) != COLUMNS:
        raise ValueError(f"unexpected CSV header {header!r}; expected {list(COLUMNS)!r}")
    for cells in reader:
        yield decode_row(cells)


def read_csv(path) -> list[dict[str, Any]]:
    """All rows of a CSV file the sink wrote, decoded."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(read_rows(handle))
