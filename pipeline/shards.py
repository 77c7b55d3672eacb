"""`python -m pipeline.shards`: list, verify and merge the CSV files of one or more shards.

    python -m pipeline.shards list   [CSV_PATH]
    python -m pipeline.shards verify [FILE ...]
    python -m pipeline.shards merge  FILE_OR_DIR ... --out PATH [--by total|day]

Why it is shaped this way:

- `list` and `verify` read the ledger (read-only, never creating one) next to
  the files: it says which segment each message is in and where its rows end,
  so a file is checked against it message by message, in batches, in memory
  that does not grow with the file (a copy of a message shows as a second end
  offset or a second segment, not as an entry in a Python set).
- `merge` is DuckDB's work, not Python's: the shards of several hosts may
  hold the same `(message_id, pred_index)` (a message redelivered to another
  host after its first host wrote it but died before the ack), and keeping
  each once over any number of rows is a `GROUP BY` that DuckDB runs within
  `--memory-limit`, spilling to disk beside the output. Messages whose rows
  are not all there (the torn tail of a live file being written) are left out
  and counted: the next merge, once they are whole, has them.
- Output is this service's CSV format byte for byte (the header unquoted,
  every cell quoted, `\\r\\n`), cells copied as text, never re-parsed into
  numbers or dates; each file is written as `.part` and renamed when whole.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path

from pipeline.csv_sink import scan_complete_messages
from pipeline.rows import COLUMNS, HEADER_BYTES
from pipeline.shard_files import ledger_path, parse_sealed, sealed_files, shard_files

_CHUNK = 500
#: Where a commit's sender is kept: (table, alias, join onto commits c). By message id (`origins`)
#: by workers of the versions before `senders`, which is kept by where the message ends (pipeline.csv_sink).
_ORIGIN_JOINS = (
    ("origins", "o", " LEFT JOIN origins o USING (message_id)"),
    ("senders", "s", " LEFT JOIN senders s ON s.segment = c.segment AND s.end_offset = c.end_offset"
                     " AND s.message_id = c.message_id"),
)


class ShardError(Exception):
    """A reason the command cannot go on, said in one line."""


# ---------------------------------------------------------------- the ledger, read-only

class LedgerReader:
    """The sink's ledger opened read-only: workers may be writing it meanwhile."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            self._db.execute("SELECT segment FROM commits LIMIT 0")
            self._db.execute("SELECT sequence FROM segments LIMIT 0")
        except sqlite3.Error as error:
            raise ShardError(f"{path}: cannot read this ledger ({error}); a worker of this version makes it "
                             "current at its first commit") from error

    def segments(self) -> list[dict]:
        cursor = self._db.execute("SELECT sequence, state, name, messages, bytes, first_commit, last_commit"
                                  " FROM segments ORDER BY sequence")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def live(self) -> int:
        return self._db.execute("SELECT max(sequence) FROM segments").fetchone()[0]

    def summary(self, segment: int) -> tuple[int, float | None, float | None]:
        return self._db.execute("SELECT count(*), min(committed_at), max(committed_at) FROM commits"
                                " WHERE segment = ?", (segment,)).fetchone()

    def where(self, message_ids: list[str]) -> dict[str, tuple[int, int]]:
        marks = ",".join("?" * len(message_ids))
        rows = self._db.execute(f"SELECT message_id, segment, end_offset FROM commits WHERE message_id IN ({marks})",
                                message_ids)
        return {message_id: (segment, end) for message_id, segment, end in rows}

    def commits_after(self, segment: int, end: int, limit: int) -> list[tuple]:
        """Up to `limit` commits written after the one ending at `end` in `segment`, in the order written:
        (segment, end_offset, message_id, committed_at, tenant, client_id, device_id); the origin is
        None for a message committed without one (by a worker from before origins, or re-derived from
        the CSV), from whichever of the tables the ledger has."""
        present = [(alias, join) for table, alias, join in _ORIGIN_JOINS if table in self._tables]

        def who(field: str) -> str:
            named = [f"{alias}.{field}" for alias, _ in present]
            return f"coalesce({', '.join(named)})" if len(named) > 1 else named[0] if named else "NULL"

        joins = "".join(join for _, join in present)
        return self._db.execute(
            f"SELECT c.segment, c.end_offset, c.message_id, c.committed_at, {who('tenant')}, {who('client_id')},"
            f" {who('device_id')} FROM commits c{joins}"
            " WHERE (c.segment, c.end_offset) > (?, ?) ORDER BY c.segment, c.end_offset LIMIT ?",
            (segment, end, limit)).fetchall()

    def end_before(self, segment: int, end: int) -> int | None:
        """Where the message before the one ending at `end` in `segment` ends; None for the segment's first."""
        return self._db.execute("SELECT max(end_offset) FROM commits WHERE segment = ? AND end_offset < ?",
                                (segment, end)).fetchone()[0]

    @cached_property
    def _tables(self) -> set[str]:
        return {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def close(self) -> None:
        self._db.close()


def _live_of(path: Path) -> tuple[Path, int | None]:
    """The shard's live CSV_PATH, and the segment a sealed file was (None: `path` is the live file)."""
    sealed = parse_sealed(path)
    return (sealed.live, sealed.sequence) if sealed else (path, None)


# ---------------------------------------------------------------- list

def _utc(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_shard(live: Path) -> list[dict]:
    """One entry per file of the shard: sequence, state, file, messages, bytes, first and last commit."""
    live = Path(live)
    ledger_file = ledger_path(live)
    on_disk = {name.path.name: name for name in sealed_files(live)}
    entries: list[dict] = []
    if ledger_file.exists():
        ledger = LedgerReader(ledger_file)
        try:
            for segment in ledger.segments():
                if segment["state"] == "live":
                    messages, first, last = ledger.summary(segment["sequence"])
                    entry = dict(sequence=segment["sequence"], state="live", file=live.name, messages=messages,
                                 bytes=live.stat().st_size if live.exists() else 0, first=first, last=last,
                                 present=live.exists())
                else:
                    entry = dict(sequence=segment["sequence"], state=segment["state"], file=segment["name"],
                                 messages=segment["messages"], bytes=segment["bytes"],
                                 first=segment["first_commit"], last=segment["last_commit"],
                                 present=on_disk.pop(segment["name"], None) is not None)
                entries.append(entry)
        finally:
            ledger.close()
    elif live.exists():
        entries.append(dict(sequence=None, state="live", file=live.name, messages=None, bytes=live.stat().st_size,
                            first=None, last=None, present=True))
    for name in on_disk.values():  # sealed files the ledger does not know (copied in, or another ledger's)
        entries.append(dict(sequence=name.sequence, state="unknown to the ledger", file=name.path.name,
                            messages=None, bytes=name.path.stat().st_size, first=name.first, last=name.last,
                            present=True))
    return entries


def _print_list(live: Path, entries: list[dict]) -> None:
    print(f"{live}  (ledger {ledger_path(live).name})")
    print(f"  {'seq':>6}  {'state':<8}  {'messages':>9}  {'bytes':>13}  {'first commit':<20}  {'last commit':<20}  file")
    for entry in entries:
        missing = "" if entry["present"] else "  (not in the directory: moved away?)"
        sequence = "-" if entry["sequence"] is None else entry["sequence"]
        messages = "-" if entry["messages"] is None else f"{entry['messages']:,}"
        print(f"  {sequence:>6}  {entry['state']:<8}  {messages:>9}  {entry['bytes']:>13,}  {_utc(entry['first']):<20}"
              f"  {_utc(entry['last']):<20}  {entry['file']}{missing}")


# ---------------------------------------------------------------- verify

@dataclass
class Verdict:
    """What `verify` found in one file; `problems` make the command fail, `notes` do not."""

    file: str
    messages: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _complete_messages(path: Path) -> tuple[list[tuple[str, int]], int]:
    """(message_id, end_offset) of the file's complete messages, and the offset just past the last one.

    The list is bounded by the file's size, which rotation bounds; the checks against the ledger go in batches.
    """
    with open(path, "rb") as reader:
        reader.seek(len(HEADER_BYTES))
        return scan_complete_messages(reader, len(HEADER_BYTES))


def verify_file(path: Path) -> Verdict:
    """Check one file of a shard: its header, a torn tail, and every message against the ledger."""
    path = Path(path)
    verdict = Verdict(str(path))
    if not path.is_file():
        verdict.problems.append("no such file")
        return verdict
    verdict.bytes = size = path.stat().st_size
    with open(path, "rb") as head:
        if head.read(len(HEADER_BYTES)) != HEADER_BYTES:
            verdict.problems.append("does not start with this service's CSV header: not a file the sink wrote")
            return verdict
    live, sealed_as = _live_of(path)
    ledger = LedgerReader(ledger_path(live)) if ledger_path(live).exists() else None
    try:
        segment = sealed_as if sealed_as is not None else (ledger.live() if ledger else None)
        if ledger is None:
            verdict.notes.append(f"no ledger ({ledger_path(live).name}): the file is checked alone")
        seen: set[str] = set()  # only without a ledger: the ledger is what finds copies otherwise
        behind = 0
        entries, good_end = _complete_messages(path)
        for start in range(0, len(entries), _CHUNK):
            batch = entries[start : start + _CHUNK]
            verdict.messages += len(batch)
            if ledger is None:
                for message_id, _ in batch:
                    if message_id in seen:
                        verdict.problems.append(f"message {message_id} is in this file twice")
                    seen.add(message_id)
                continue
            where = ledger.where([message_id for message_id, _ in batch])
            for message_id, end in batch:
                found = where.get(message_id)
                if found is None:
                    behind += 1
                elif found[0] != segment:
                    verdict.problems.append(f"message {message_id} is also committed to segment {found[0]}: "
                                            "written twice in this shard")
                elif found[1] != end:
                    verdict.problems.append(f"message {message_id} is in this file twice (its rows end at {end}; "
                                            f"the ledger's copy at {found[1]})")
        if good_end < size:
            what = f"{size - good_end} bytes after the last complete message (offset {good_end})"
            if sealed_as is None:
                verdict.notes.append(f"{what}: a write in progress, or one a crash tore; the next commit cuts it off")
            else:
                verdict.problems.append(f"{what}: torn or damaged, in a sealed file")
        if behind:
            (verdict.notes if sealed_as is None else verdict.problems).append(
                f"{behind} complete message(s) not in the ledger"
                + ("; the next commit records them" if sealed_as is None else ""))
        if ledger is not None:
            recorded = ledger.summary(segment)[0]
            if recorded > verdict.messages - behind:
                verdict.problems.append(f"the ledger has {recorded} messages in this file, the file "
                                        f"{verdict.messages - behind} of them: rows are missing")
    finally:
        if ledger is not None:
            ledger.close()
    return verdict


def _print_verdict(verdict: Verdict) -> None:
    state = "ok" if verdict.ok else "PROBLEMS"
    print(f"{verdict.file}: {state}: {verdict.messages:,} complete messages, {verdict.bytes:,} bytes")
    for problem in verdict.problems[:20]:
        print(f"  problem: {problem}")
    if len(verdict.problems) > 20:
        print(f"  ... and {len(verdict.problems) - 20} more problems")
    for note in verdict.notes:
        print(f"  note: {note}")


# ---------------------------------------------------------------- merge

@dataclass
class MergeReport:
    rows: int = 0
    files: list[str] = field(default_factory=list)
    copies_dropped: int = 0
    incomplete_messages: int = 0
    unreadable_lines: int = 0
    seconds: float = 0.0


def _inputs(paths: Sequence[Path]) -> list[Path]:
    """The files to merge: each path, or every CSV file of the sink's format in a directory."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(candidate for candidate in path.glob("*.csv") if _is_ours(candidate))
        elif not path.is_file():
            raise ShardError(f"{path}: no such file or directory")
        elif not _is_ours(path):
            raise ShardError(f"{path} does not start with this service's CSV header; leave it out of the merge")
        else:
            files.append(path)
    if not files:
        raise ShardError("nothing to merge: no CSV file of this service's format among the paths given")
    return files


def _is_ours(path: Path) -> bool:
    with open(path, "rb") as head:
        return head.read(len(HEADER_BYTES)) == HEADER_BYTES


def _quoted(column: str) -> str:
    """SQL for one cell as the sink writes it: in quotes, its own quotes doubled."""
    return f"""'"' || replace({column}, '"', '""') || '"' AS {column}"""


def merge(paths: Sequence[Path], out: Path, by: str = "total", memory_limit: str = "512MB",
          temp_dir: Path | None = None, progress: bool = False) -> MergeReport:
    """Merge the files into `out` (a file, or with by="day" a directory of <created_at day>.csv)."""
    import duckdb  # only here: the sink and the API never need it

    started = time.monotonic()
    files = _inputs(paths)
    out = Path(out)
    target_dir = out if by == "day" else out.parent
    target_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".merge-", dir=temp_dir or target_dir))
    report = MergeReport()
    try:
        db = duckdb.connect(str(work / "merge.duckdb"))
        db.execute(f"SET memory_limit = '{_size_setting(memory_limit)}'")
        db.execute(f"SET enable_progress_bar = {'true' if progress else 'false'}")  # DuckDB's own, per query
        db.execute(f"SET temp_directory = '{work / 'spill'}'")
        db.execute("SET preserve_insertion_order = true")  # rows come out in the order they were read
        columns = {name: "VARCHAR" for name in COLUMNS}
        db.execute(
            "CREATE TABLE raw AS SELECT * FROM read_csv($files, header = true, columns = $columns, delim = ',',"
            " quote = '\"', escape = '\"', auto_detect = false, allow_quoted_nulls = false,"
            " ignore_errors = true, store_rejects = true)",
            {"files": [str(file) for file in files], "columns": columns},
        )
        report.unreadable_lines = db.execute("SELECT count(*) FROM reject_errors").fetchone()[0]
        # The keys alone go through the GROUP BY (a frame is up to a megabyte; a key ~50 bytes): one
        # copy of each row is picked by its rowid, and its cells are fetched once, by a join.
        db.execute("CREATE TABLE keys AS SELECT min(rowid) AS id, message_id, TRY_CAST(pred_index AS INTEGER) AS idx,"
                   " max(TRY_CAST(pred_count AS INTEGER)) AS count FROM raw GROUP BY message_id, pred_index")
        total, unique = db.execute("SELECT (SELECT count(*) FROM raw), (SELECT count(*) FROM keys)").fetchone()
        report.copies_dropped = total - unique
        db.execute("CREATE TABLE complete AS SELECT message_id FROM keys GROUP BY message_id"
                   " HAVING count(*) = max(count) AND max(idx) = count(*) - 1 AND min(idx) = 0")
        report.incomplete_messages = db.execute(
            "SELECT count(DISTINCT message_id) FROM keys ANTI JOIN complete USING (message_id)").fetchone()[0]
        # In the order read (files as given, rows as written), each key at its first place. The rows
        # to keep are marked in place: a join or a sort of whole rows would reorder them, or need the memory.
        db.execute("ALTER TABLE raw ADD COLUMN keep BOOLEAN DEFAULT false")
        db.execute("UPDATE raw SET keep = true WHERE rowid IN (SELECT id FROM keys SEMI JOIN complete USING (message_id))")
        db.execute("DROP TABLE keys")
        cells = ", ".join(_quoted(name) for name in COLUMNS)
        outputs = ([(day, target_dir / f"{day}.csv") for (day,) in
                    db.execute("SELECT DISTINCT substr(created_at, 1, 10) AS day FROM raw WHERE keep ORDER BY day"
                               ).fetchall()]
                   if by == "day" else [(None, out)])
        for day, target in outputs:
            where = "AND substr(created_at, 1, 10) = $day" if day is not None else ""
            part = target.with_name(target.name + ".part")
            written = db.execute(
                f"COPY (SELECT {cells} FROM raw WHERE keep {where}) TO '{part}'"
                " (FORMAT csv, HEADER true, QUOTE '', ESCAPE '', NEW_LINE '\r\n')",
                {"day": day} if day is not None else {},
            ).fetchone()[0]
            if written == 0:  # DuckDB writes no header for no rows; the format always has one
                part.write_bytes(HEADER_BYTES)
            part.replace(target)
            report.rows += written
            report.files.append(str(target))
        db.close()
    except duckdb.Error as error:
        raise ShardError(f"merge failed: {error}") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report


def _size_setting(text: str) -> str:
    """A memory limit DuckDB understands (e.g. 512MB, 2GB); refused here with the field's name if not."""
    cleaned = text.strip().upper().replace("IB", "B")
    number = cleaned.rstrip("KMGTB")
    if not number.replace(".", "", 1).isdigit() or cleaned[len(number):] not in ("KB", "MB", "GB", "TB", "B"):
        raise ShardError(f"--memory-limit {text!r}: give a size such as 256MB or 2GB")
    return cleaned


# ---------------------------------------------------------------- the command line

def _default_live() -> Path:
    from config import get_settings

    return Path(get_settings().csv_path)


def _verify_with_progress(files: Sequence[Path], *, show: bool | None = None) -> list[Verdict]:
    """verify_file over `files`, with a bar by bytes on stderr while it runs (`show`: None means
    only on a terminal, as tqdm decides)."""
    from tqdm import tqdm

    sizes = [Path(file).stat().st_size if Path(file).is_file() else 0 for file in files]
    verdicts = []
    with tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="verify", file=sys.stderr,
              disable=None if show is None else not show) as bar:
        for file, size in zip(files, sizes):
            bar.set_postfix_str(Path(file).name)
            verdicts.append(verify_file(file))
            bar.update(size)
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.shards", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the files of a shard, with their messages, sizes and times")
    listing.add_argument("live", nargs="*", type=Path, help="the shard's CSV_PATH (default: from the settings)")
    listing.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    checking = commands.add_parser("verify", help="check files against their ledger; exit 1 on a problem")
    checking.add_argument("files", nargs="*", type=Path,
                          help="files, sealed or live (default: every file of the shard at CSV_PATH)")
    checking.add_argument("--json", action="store_true")
    merging = commands.add_parser("merge", help="merge files of any shards, each (message_id, pred_index) once")
    merging.add_argument("paths", nargs="+", type=Path, help="files, or directories of them")
    merging.add_argument("--out", required=True, type=Path,
                         help="the merged file; with --by day a directory of YYYY-MM-DD.csv files")
    merging.add_argument("--by", choices=("total", "day"), default="total",
                         help="one file, or one per day of created_at as sent (default: total)")
    merging.add_argument("--memory-limit", default="512MB", help="DuckDB's memory bound; it spills beyond (512MB)")
    merging.add_argument("--temp-dir", type=Path, help="where to spill (default: beside the output)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            shards = args.live or [_default_live()]
            listed = {str(live): list_shard(live) for live in shards}
            if args.json:
                print(json.dumps(listed, indent=2))
            else:
                for live in shards:
                    _print_list(live, listed[str(live)])
            return 0
        if args.command == "verify":
            files = args.files or _files_of(_default_live())
            verdicts = _verify_with_progress(files)
            if args.json:
                print(json.dumps([{**asdict(verdict), "ok": verdict.ok} for verdict in verdicts], indent=2))
            else:
                for verdict in verdicts:
                    _print_verdict(verdict)
            return 0 if all(verdict.ok for verdict in verdicts) else 1
        report = merge(args.paths, args.out, by=args.by, memory_limit=args.memory_limit, temp_dir=args.temp_dir,
                       progress=sys.stderr.isatty())
        print(f"merged {report.rows:,} rows into {len(report.files)} file(s) in {report.seconds:.1f} s; "
              f"{report.copies_dropped:,} copies of rows dropped")
        for name in report.files:
            print(f"  {name}")
        if report.incomplete_messages:
            print(f"left out {report.incomplete_messages:,} message(s) whose rows are not all there "
                  "(a live file's write in progress?); merge again later to have them", file=sys.stderr)
        if report.unreadable_lines:
            print(f"skipped {report.unreadable_lines:,} line(s) that are not whole CSV rows (a torn tail?); "
                  "`verify` says where", file=sys.stderr)
        return 0
    except ShardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _files_of(live: Path) -> list[Path]:
    files = shard_files(live)
    if not files:
        raise ShardError(f"{live}: no files in this shard yet (is CSV_PATH right?)")
    return files


if __name__ == "__main__":
    sys.exit(main())
