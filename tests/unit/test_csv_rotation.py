"""Rotation: the live CSV is sealed by size and by time, sealed files are never written again, and
exactly-once spans every file of the shard, across crashes in the middle of a seal."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import random
import sqlite3
from pathlib import Path

import pytest

from pipeline import csv_sink
from pipeline.csv_sink import CsvSink, Ledger, Rotation
from pipeline.rows import HEADER_BYTES, encode_rows, read_csv
from pipeline.shard_files import parse_sealed, read_shard, sealed_files, shard_files
from tests.support.waiting import wait_for
from tests.unit.test_csv_sink import answer_within, append, body

DAY = 86400


class Clock:
    """Unix seconds that move only when told."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def message(number: int, preds: int = 3) -> tuple[str, dict]:
    return f"m-{number}", body(random.Random(number), preds=preds)


def shard_counts(path: Path) -> dict[str, list[int]]:
    """pred indexes per message id over every file of the shard."""
    seen: dict[str, list[int]] = {}
    for row in read_shard(path):
        seen.setdefault(row["message_id"], []).append(row["pred_index"])
    return seen


def assert_shard_exactly(path: Path, expected: dict[str, int]) -> None:
    seen = shard_counts(path)
    assert seen.keys() == expected.keys()
    for message_id, count in expected.items():
        assert seen[message_id] == list(range(count)), message_id


def digests(files: list[Path]) -> dict[str, str]:
    return {file.name: hashlib.sha256(file.read_bytes()).hexdigest() for file in files}


def test_the_live_file_is_sealed_before_a_commit_would_take_it_past_the_size_bound(tmp_path):
    path = tmp_path / "data.csv"
    sizes = {number: len(encode_rows(*message(number))[0]) for number in range(30)}
    bound = len(HEADER_BYTES) + 4 * max(sizes.values())
    sink = CsvSink(path, rotation=Rotation(max_bytes=bound, host="web-1"))
    for number in range(30):
        assert append(sink, *message(number)) is True
    sealed = sealed_files(path)
    assert len(sealed) >= sum(sizes.values()) // bound
    assert [name.sequence for name in sealed] == list(range(1, len(sealed) + 1))
    for name in sealed:
        assert name.host == "web-1" and name.first <= name.last
        assert name.path.stat().st_size <= bound
        assert name.path.read_bytes().startswith(HEADER_BYTES)
    assert_shard_exactly(path, {f"m-{n}": 3 for n in range(30)})


def test_a_sealed_name_is_host_sequence_and_the_utc_times_of_its_first_and_last_commit(tmp_path):
    path = tmp_path / "data.csv"
    clock = Clock(1_764_633_600.0)  # 2025-12-02T00:00:00Z
    sink = CsvSink(path, rotation=Rotation(every_seconds=DAY, host="web-1"), clock=clock)
    append(sink, *message(1))
    clock.now += 3600 + 5
    append(sink, *message(2))
    clock.now += DAY  # the next day: the first commit seals yesterday's file first
    append(sink, *message(3))
    (sealed,) = sealed_files(path)
    assert sealed.path.name == "data.web-1.000001.20251202T000000Z-20251202T010005Z.csv"
    assert [row["message_id"] for row in read_csv(sealed.path)] == ["m-1"] * 3 + ["m-2"] * 3
    assert {row["message_id"] for row in read_csv(path)} == {"m-3"}


def test_a_sealed_file_is_never_written_again(tmp_path):
    path = tmp_path / "data.csv"
    bound = len(HEADER_BYTES) + 3 * len(encode_rows(*message(0, preds=5))[0])
    sink = CsvSink(path, rotation=Rotation(max_bytes=bound))
    for number in range(12):
        append(sink, *message(number, preds=5))
    before = digests([name.path for name in sealed_files(path)])
    assert before
    for number in range(12):  # redeliveries of every message, sealed or live
        assert append(sink, *message(number, preds=5)) is False
    for number in range(12, 20):
        append(sink, *message(number, preds=5))
    after = digests([name.path for name in sealed_files(path)])
    assert {name: after[name] for name in before} == before
    assert_shard_exactly(path, {f"m-{n}": 5 for n in range(20)})


def test_a_redelivery_of_a_message_in_a_sealed_file_is_not_written_again_by_another_process_later(tmp_path):
    path = tmp_path / "data.csv"
    clock = Clock(1_000_000.0)
    append(CsvSink(path, rotation=Rotation(every_seconds=60), clock=clock), *message(1))
    clock.now += 60
    append(CsvSink(path, rotation=Rotation(every_seconds=60), clock=clock), *message(2))
    assert len(sealed_files(path)) == 1
    assert append(CsvSink(path, rotation=Rotation(every_seconds=60), clock=clock), *message(1)) is False
    assert_shard_exactly(path, {"m-1": 3, "m-2": 3})


def test_a_quiet_live_file_is_sealed_when_its_window_ends_without_a_new_commit(tmp_path):
    path = tmp_path / "data.csv"
    sink = CsvSink(path, rotation=Rotation(every_seconds=1))
    append(sink, *message(1))
    wait_for(lambda: len(sealed_files(path)) == 1, timeout=10, what="the idle committer sealing the file")
    assert_shard_exactly(path, {"m-1": 3})


def test_a_seal_whose_rename_failed_is_finished_by_the_next_try_and_nothing_is_written_twice(tmp_path, monkeypatch):
    path = tmp_path / "data.csv"
    clock = Clock(1_000_000.0)
    sink = CsvSink(path, rotation=Rotation(every_seconds=60), clock=clock, retry_max_seconds=0.1)
    append(sink, *message(1))
    real_rename, failures = os.rename, []

    def rename_failing_once(source, target):
        if not failures:
            failures.append(target)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_rename(source, target)

    monkeypatch.setattr(csv_sink.os, "rename", rename_failing_once)
    clock.now += 60
    assert append(sink, *message(2)) is True
    assert failures, "the seal was tried"
    (sealed,) = sealed_files(path)
    assert [row["message_id"] for row in read_csv(sealed.path)] == ["m-1"] * 3
    assert_shard_exactly(path, {"m-1": 3, "m-2": 3})


@pytest.mark.parametrize("crash_after", ["begin_seal", "rename"])
def test_a_process_that_died_in_the_middle_of_a_seal_leaves_a_shard_the_next_one_finishes(tmp_path, crash_after):
    """The steps of a seal, cut after each: the ledger's record of it says what is left to do."""
    path = tmp_path / "data.csv"
    for number in range(2):
        append(CsvSink(path), *message(number))
    ledger = Ledger(Path(f"{path}.ledger"))
    messages, first, last = ledger.summary(1)
    name = f"data.host.000001.{'19700101T000000Z'}-{'19700101T000000Z'}.csv"
    ledger.begin_seal(1, name, path.stat().st_size, messages, first, last)
    if crash_after == "rename":
        os.rename(path, tmp_path / name)
    ledger.close()
    assert append(CsvSink(path), *message(1)) is False
    assert append(CsvSink(path), *message(2)) is True
    assert [row["message_id"] for row in read_csv(tmp_path / name)] == ["m-0"] * 3 + ["m-1"] * 3
    assert [row["message_id"] for row in read_csv(path)] == ["m-2"] * 3
    with sqlite3.connect(f"{path}.ledger") as db:
        assert db.execute("SELECT state FROM segments WHERE sequence = 1").fetchone() == ("sealed",)


def test_a_lost_ledger_is_rebuilt_from_every_file_of_the_shard(tmp_path):
    path = tmp_path / "data.csv"
    clock = Clock(1_000_000.0)
    rotation = Rotation(every_seconds=60)
    for number in range(3):
        append(CsvSink(path, rotation=rotation, clock=clock), *message(number))
        clock.now += 60
    assert len(sealed_files(path)) == 2
    for suffix in (".ledger", ".ledger-wal", ".ledger-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    for number in range(3):
        assert append(CsvSink(path, rotation=rotation, clock=clock), *message(number)) is False
    assert append(CsvSink(path, rotation=rotation, clock=clock), *message(3)) is True
    assert_shard_exactly(path, {f"m-{n}": 3 for n in range(4)})
    assert [parse_sealed(file).sequence for file in shard_files(path)[:-1]] == [1, 2, 3]


def test_a_ledger_from_before_rotation_is_taken_over_as_the_live_segment(tmp_path):
    path = tmp_path / "data.csv"
    data = encode_rows(*message(1))[0]
    path.write_bytes(HEADER_BYTES + data)
    with sqlite3.connect(f"{path}.ledger") as db:
        db.execute("CREATE TABLE commits (message_id TEXT PRIMARY KEY, end_offset INTEGER NOT NULL,"
                   " committed_at REAL NOT NULL) WITHOUT ROWID")
        db.execute("INSERT INTO commits VALUES ('m-1', ?, 1.0)", (len(HEADER_BYTES) + len(data),))
    sink = CsvSink(path, rotation=Rotation(every_seconds=60))
    assert append(sink, *message(1)) is False
    assert append(sink, *message(2)) is True
    assert_shard_exactly(path, {"m-1": 3, "m-2": 3})


def _append_rotating(path: str, worker: int, messages: int) -> None:
    sink = CsvSink(path, rotation=Rotation(max_bytes=60_000, host="h"))
    for number in range(messages):
        append(sink, f"m-{worker}-{number}", body(random.Random(worker * 1000 + number), preds=(number % 4) + 1))
        if number % 3 == 0:  # a redelivery, possibly of a message sealed since
            append(sink, f"m-{worker}-{number // 2}", body(random.Random(worker * 1000 + number // 2),
                                                           preds=((number // 2) % 4) + 1))


def test_processes_sealing_the_same_shard_keep_every_message_once_and_every_sealed_file_whole(tmp_path):
    path = tmp_path / "data.csv"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_rotating, args=(str(path), worker, 40)) for worker in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert_shard_exactly(path, {f"m-{w}-{n}": (n % 4) + 1 for w in range(3) for n in range(40)})
    sealed = sealed_files(path)
    assert len(sealed) >= 3
    with sqlite3.connect(f"{path}.ledger") as db:
        recorded = dict(db.execute("SELECT name, bytes FROM segments WHERE state = 'sealed'"))
    assert recorded == {name.path.name: name.path.stat().st_size for name in sealed}


def test_a_new_live_file_the_full_disk_cannot_create_is_waited_out_and_the_sink_goes_on(tmp_path, monkeypatch):
    """A seal renames the live file, and the next one is made at once: on a full disk that open fails
    with the file's descriptor already given up. The try is waited out like any full disk, and the
    committer lives on, instead of failing the message and then stopping with the shard's lock held."""
    path = tmp_path / "data.csv"
    sizes = [len(encode_rows(*message(number))[0]) for number in range(3)]
    sink = CsvSink(path, retry_max_seconds=0.05, rotation=Rotation(max_bytes=len(HEADER_BYTES) + sizes[0] + 1))
    assert append(sink, *message(0)) is True
    real_open, refusals = os.open, [2]

    def full_disk_open(name, flags, *args):
        if str(name) == str(path) and flags & os.O_CREAT and refusals[0]:
            refusals[0] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(name))
        return real_open(name, flags, *args)

    monkeypatch.setattr(csv_sink.os, "open", full_disk_open)
    assert answer_within(lambda: append(sink, *message(1))) == [True]  # seals the first file, then waits out the disk
    assert refusals == [0]
    assert answer_within(lambda: append(sink, *message(2))) == [True]
    assert_shard_exactly(path, {f"m-{n}": 3 for n in range(3)})
