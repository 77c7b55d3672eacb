"""The files of one shard: the live CSV and the sealed files rotated out of it, by name.

A host's shard is its `CSV_PATH` (the live file, the only one written) and the
files sealed from it, in the same directory, named

    <stem>.<host>.<sequence>.<first>-<last><suffix>
    data.web-1.000003.20261202T000000Z-20261202T235959Z.csv

after `CSV_PATH`'s own stem and suffix (`data`, `.csv`), the host that wrote
it, the segment's sequence number (six digits or more, so names sort in the
order they were written) and the UTC times of its first and last commit. The
name is made once, when the file is sealed, from the ledger; a sealed file is
never written again. The name alone tells a reader which shard a file belongs
to, in which order, and what time it spans, so the files can be listed, moved
and merged without opening the ledger.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.rows import read_rows

_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SEALED = re.compile(
    r"^(?P<stem>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<sequence>\d{6,})"
    r"\.(?P<first>\d{8}T\d{6}Z)-(?P<last>\d{8}T\d{6}Z)(?P<suffix>\.[^.]*)?$"
)


def host_label(configured: str = "") -> str:
    """The host's name as sealed files carry it: CSV_HOST, else the machine's name; only [A-Za-z0-9_-]."""
    label = _HOST_UNSAFE.sub("-", configured or socket.gethostname()).strip("-")
    return label or "host"


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime(_TIME_FORMAT)


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, _TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp()


def sealed_path(live: Path, host: str, sequence: int, first: float, last: float) -> Path:
    """Where segment `sequence` of the shard at `live` goes when it is sealed."""
    live = Path(live)
    return live.with_name(f"{live.stem}.{host}.{sequence:06d}.{_stamp(first)}-{_stamp(last)}{live.suffix}")


@dataclass(frozen=True)
class SealedName:
    """What a sealed file's name says."""

    path: Path
    live: Path  #: the CSV_PATH it was rotated out of
    host: str
    sequence: int
    first: float  #: unix seconds of its first commit (to the second)
    last: float

    @property
    def ledger(self) -> Path:
        return ledger_path(self.live)


def parse_sealed(path: Path) -> SealedName | None:
    """The parts of a sealed file's name, or None when `path` is not named like one."""
    path = Path(path)
    match = _SEALED.match(path.name)
    if match is None:
        return None
    live = path.with_name(match["stem"] + (match["suffix"] or ""))
    return SealedName(path, live, match["host"], int(match["sequence"]), _epoch(match["first"]),
                      _epoch(match["last"]))


def ledger_path(live: Path) -> Path:
    return Path(f"{live}.ledger")


def sealed_files(live: Path) -> list[SealedName]:
    """The shard's sealed files still in its directory, oldest first (by sequence)."""
    live = Path(live)
    if not live.parent.is_dir():
        return []
    found = []
    for candidate in live.parent.glob(f"{live.stem}.*{live.suffix}"):
        name = parse_sealed(candidate)
        if name is not None and name.live == live:
            found.append(name)
    return sorted(found, key=lambda name: (name.sequence, name.path.name))


def shard_files(live: Path) -> list[Path]:
    """Every file of the shard that holds rows, in the order they were written: sealed ones, then the live one."""
    live = Path(live)
    files = [name.path for name in sealed_files(live)]
    if live.exists():
        files.append(live)
    return files


def read_shard(live: Path) -> Iterator[dict[str, Any]]:
    """The decoded rows of every file of the shard, in the order they were written."""
    for path in shard_files(live):
        with open(path, newline="", encoding="utf-8") as handle:
            yield from read_rows(handle)
