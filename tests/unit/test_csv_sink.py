"""The sink: concurrent appends never interleave, a message is written once, crashes recover."""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from pipeline.csv_sink import CommitLog, CommitReport, CsvSink, DurableCsvFile, ForeignCsvError, PendingAppend
from pipeline.rows import HEADER_BYTES, encode_rows, read_csv
from tests.support.waiting import wait_for


def body(rng: random.Random, preds: int | None = None) -> dict:
    return {
        "device_id": f"dev-{rng.randrange(100)}",
        "client_id": "c,\"q\"\n",
        "created_at": "2023-02-13T10:49:06.613585",
        "data": {
            "license_id": "lic",
            "preds": [
                {"image_frame": "QUJD" * rng.randrange(1, 2000), "prob": rng.random(), "tags": ["x", "y,z"]}
                for _ in range(preds or rng.randint(1, 10))
            ],
        },
    }


def append(sink: CsvSink, message_id: str, payload: dict) -> bool:
    return sink.append(message_id, encode_rows(message_id, payload)[0])


def answer_within(call, timeout: float = 20) -> list:
    """[what `call()` returned, or raised], from a thread given `timeout` seconds; [] if it never came back
    (an append left waiting for ever)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # noqa: BLE001 (the test asserts on it)
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome


def assert_exactly(path: Path, expected: dict[str, int]) -> None:
    """The file holds each expected message's rows once, whole and in order."""
    rows = read_csv(path)
    seen: dict[str, list[int]] = {}
    for row in rows:
        seen.setdefault(row["message_id"], []).append(row["pred_index"])
    assert seen.keys() == expected.keys()
    for message_id, count in expected.items():
        assert seen[message_id] == list(range(count)), message_id


def _append_from_process(path: str, worker: int, messages: int, threads: int) -> None:
    sink = CsvSink(path)
    rng = random.Random(worker)

    def run(thread: int) -> None:
        for number in range(messages):
            payload = body(random.Random(worker * 1_000_000 + thread * 1000 + number), preds=(number % 10) + 1)
            append(sink, f"m-{worker}-{thread}-{number}", payload)

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    del rng


def test_many_processes_and_threads_append_without_interleaving_or_loss(tmp_path):
    path = tmp_path / "out" / "data.csv"
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_append_from_process, args=(str(path), w, 40, 6)) for w in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    expected = {f"m-{w}-{t}-{n}": (n % 10) + 1 for w in range(3) for t in range(6) for n in range(40)}
    assert_exactly(path, expected)


def _open_at_once(path: str, barrier) -> None:
    barrier.wait()
    DurableCsvFile(Path(path)).close()  # raises (exit code 1) if the ledger set-up races


def test_processes_opening_a_new_sink_at_the_same_moment_all_succeed(tmp_path):
    context = multiprocessing.get_context("fork")
    for round_ in range(15):  # the race (SQLite "database is locked" on the WAL switch) is narrow
        path = tmp_path / f"round-{round_}" / "data.csv"
        barrier = context.Barrier(4)
        processes = [context.Process(target=_open_at_once, args=(str(path), barrier)) for _ in range(4)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
        assert [process.exitcode for process in processes] == [0, 0, 0, 0], f"round {round_}"


def test_a_message_appended_twice_is_written_once(tmp_path):
    sink = CsvSink(tmp_path / "data.csv")
    payload = body(random.Random(1), preds=3)
    assert append(sink, "m-1", payload) is True
    assert append(sink, "m-1", payload) is False
    assert_exactly(tmp_path / "data.csv", {"m-1": 3})


def test_duplicates_inside_one_batch_are_written_once(tmp_path):
    file = DurableCsvFile(tmp_path / "data.csv")
    data = encode_rows("m-1", body(random.Random(1), preds=2))[0]
    batch = [PendingAppend("m-1", data), PendingAppend("m-1", data)]
    file.commit(batch)
    assert [pending.written for pending in batch] == [True, False]
    assert_exactly(tmp_path / "data.csv", {"m-1": 2})


def test_a_redelivery_after_a_restart_is_not_written_again(tmp_path):
    payload = body(random.Random(2), preds=4)
    first = CsvSink(tmp_path / "data.csv")
    assert append(first, "m-1", payload)
    restarted = CsvSink(tmp_path / "data.csv")  # a new process would build a new sink
    assert append(restarted, "m-1", payload) is False
    assert_exactly(tmp_path / "data.csv", {"m-1": 4})


def test_rows_flushed_before_the_ledger_was_updated_count_as_committed(tmp_path):
    """A worker killed between the CSV flush and the ledger insert."""
    path = tmp_path / "data.csv"
    sink = CsvSink(path)
    append(sink, "m-1", body(random.Random(3), preds=2))
    orphan = encode_rows("m-2", body(random.Random(4), preds=3))[0]
    with open(path, "ab") as handle:
        handle.write(orphan)
    assert append(CsvSink(path), "m-2", body(random.Random(4), preds=3)) is False
    assert append(CsvSink(path), "m-3", body(random.Random(5), preds=1)) is True
    assert_exactly(path, {"m-1": 2, "m-2": 3, "m-3": 1})


@pytest.mark.parametrize("cut", [1, 10, -1])
def test_a_torn_write_is_truncated_and_the_message_written_whole_on_redelivery(tmp_path, cut):
    """A writer that died mid-write leaves part of a message; it was never acked."""
    path = tmp_path / "data.csv"
    append(CsvSink(path), "m-1", body(random.Random(6), preds=2))
    payload = body(random.Random(7), preds=5)
    torn = encode_rows("m-2", payload)[0]
    with open(path, "ab") as handle:
        handle.write(torn[: cut if cut > 0 else len(torn) + cut])
    assert append(CsvSink(path), "m-2", payload) is True
    assert_exactly(path, {"m-1": 2, "m-2": 5})


def test_a_lost_ledger_is_rebuilt_from_the_csv(tmp_path):
    path = tmp_path / "data.csv"
    append(CsvSink(path), "m-1", body(random.Random(8), preds=2))
    for suffix in (".ledger", ".ledger-wal", ".ledger-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert append(CsvSink(path), "m-1", body(random.Random(8), preds=2)) is False
    assert_exactly(path, {"m-1": 2})


@pytest.fixture()
def csv_default_cell_limit():
    """The csv module as a fresh process has it (128 KiB a cell), whatever an earlier test set."""
    import csv

    before = csv.field_size_limit()
    csv.field_size_limit(128 * 1024)
    yield
    csv.field_size_limit(before)


def test_a_lost_ledger_is_rebuilt_even_past_rows_with_frames_larger_than_the_csv_modules_default(
        tmp_path, csv_default_cell_limit):
    path = tmp_path / "data.csv"
    big = body(random.Random(8), preds=1)
    big["data"]["preds"][0]["image_frame"] = "QUJD" * 50_000  # 200,000 characters
    sink = CsvSink(path)
    append(sink, "m-big", big)
    append(sink, "m-after", body(random.Random(9), preds=2))
    for suffix in (".ledger", ".ledger-wal", ".ledger-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rebuilt = CsvSink(path)
    assert append(rebuilt, "m-big", big) is False and append(rebuilt, "m-after", body(random.Random(9), preds=2)) is False
    assert_exactly(path, {"m-big": 1, "m-after": 2})


def test_a_commit_and_its_senders_are_one_transaction(tmp_path):
    from pipeline.csv_sink import Ledger

    ledger = Ledger(tmp_path / "data.csv.ledger")
    statements: list[str] = []
    ledger._db.set_trace_callback(statements.append)
    ledger.record([("m-1", 100)], 1, 5.0, [("m-1", 100, ("t", "c", "d"))])
    assert [statement.split()[0] for statement in statements] == ["BEGIN", "INSERT", "INSERT", "COMMIT"]


def test_a_group_commit_is_one_ledger_transaction_from_its_first_read_to_its_last_write(tmp_path):
    path = tmp_path / "data.csv"
    file = DurableCsvFile(path)
    first = [PendingAppend(f"m-{n}", *encode_rows(f"m-{n}", body(random.Random(n), preds=2))) for n in range(3)]
    file.commit(first)
    statements: list[str] = []
    file._ledger._db.set_trace_callback(statements.append)
    again = [PendingAppend(f"m-{n}", *encode_rows(f"m-{n}", body(random.Random(n), preds=2))) for n in range(2, 5)]
    file.commit(again)
    file.close()
    words = [statement.split()[0].upper() for statement in statements]
    assert words[0] == "BEGIN" and words[-1] == "COMMIT", statements
    assert words.count("BEGIN") == 1 and words.count("COMMIT") == 1, statements
    assert_exactly(path, {f"m-{n}": 2 for n in range(5)})


def test_a_csv_replaced_by_an_operator_resets_the_ledger(tmp_path):
    path = tmp_path / "data.csv"
    append(CsvSink(path), "m-1", body(random.Random(9), preds=2))
    path.write_bytes(b"")
    assert append(CsvSink(path), "m-2", body(random.Random(10), preds=1)) is True
    assert_exactly(path, {"m-2": 1})


def test_the_ledger_holds_every_committed_message_with_its_end_offset(tmp_path):
    path = tmp_path / "data.csv"
    sink = CsvSink(path)
    for number in range(5):
        append(sink, f"m-{number}", body(random.Random(number), preds=2))
    with sqlite3.connect(f"{path}.ledger") as db:
        entries = dict(db.execute("SELECT message_id, end_offset FROM commits"))
    assert set(entries) == {f"m-{n}" for n in range(5)}
    assert max(entries.values()) == os.path.getsize(path)


def test_a_file_with_another_header_is_refused_with_advice(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("something,else\r\n")
    with pytest.raises(ForeignCsvError, match="CSV_PATH"):
        append(CsvSink(path), "m-1", body(random.Random(11), preds=1))


def test_header_is_written_once(tmp_path):
    path = tmp_path / "data.csv"
    sink = CsvSink(path)
    for number in range(3):
        append(sink, f"m-{number}", body(random.Random(number), preds=1))
    assert path.read_bytes().count(HEADER_BYTES) == 1


def test_the_observer_hears_rows_written_duplicates_and_fsync_time(tmp_path):
    reports = []
    sink = CsvSink(tmp_path / "data.csv", observers=[reports.append])
    data = encode_rows("m-1", body(random.Random(15), preds=3))[0]
    assert sink.append("m-1", data, rows=3)
    assert not sink.append("m-1", data, rows=3)
    assert sum(report.rows_written for report in reports) == 3
    assert sum(report.messages_written for report in reports) == 1
    assert sum(report.duplicates for report in reports) == 1
    assert reports[0].fsync_seconds > 0


# -- lingering for the messages right behind -------------------------------------------------


def test_a_small_batch_lingers_for_the_message_right_behind_it_and_both_share_one_flush(tmp_path):
    reports = []
    sink = CsvSink(tmp_path / "data.csv", observers=[reports.append], linger_seconds=30, linger_until=2)
    sink._ensure_committer()
    first = PendingAppend("m-1", encode_rows("m-1", body(random.Random(1), preds=1))[0], rows=1)
    sink._queue.put(first)
    wait_for(sink._queue.empty, timeout=10, what="the committer to take the first message")

    assert answer_within(lambda: append(sink, "m-2", body(random.Random(2), preds=1)), timeout=10) == [True]
    assert answer_within(first.wait, timeout=10) == [None] and first.written
    assert [report.messages_written for report in reports] == [2]
    assert_exactly(tmp_path / "data.csv", {"m-1": 1, "m-2": 1})


def test_a_batch_of_as_many_messages_as_threads_that_could_add_to_it_does_not_linger(tmp_path):
    sink = CsvSink(tmp_path / "data.csv", linger_seconds=60, linger_until=1)

    assert answer_within(lambda: append(sink, "m-1", body(random.Random(1), preds=1)), timeout=10) == [True]


def test_a_batch_lingers_no_longer_than_the_linger(tmp_path):
    sink = CsvSink(tmp_path / "data.csv", linger_seconds=0.2, linger_until=32)
    started = time.monotonic()

    assert answer_within(lambda: append(sink, "m-1", body(random.Random(1), preds=1)), timeout=10) == [True]
    assert time.monotonic() - started >= 0.2


def test_the_workers_sink_lingers_as_configured_until_every_worker_thread_waits_in_its_batch():
    from actors import settings
    from actors.ingest import sink

    assert sink.linger_seconds == settings.sink_commit_linger_ms / 1000 > 0
    assert sink.linger_until == settings.worker_threads


# -- a disk that refuses writes -------------------------------------------------------------


class FillingDisk:
    """Stands in for os.writev. The first write waits for `go` (so the next batch gathers several
    messages), then `failures` writes put half their bytes down and raise ENOSPC."""

    def __init__(self, failures: int, go: threading.Event):
        self.failures = failures
        self.go = go
        self.calls = 0
        self.first_batch_rows: int | None = None
        self.real = os.writev

    def __call__(self, fd: int, buffers):
        self.calls += 1
        if self.calls == 1:
            self.first_batch_rows = b"".join(bytes(buffer) for buffer in buffers).count(b"\r\n")
            self.go.wait(10)
        elif self.failures > 0:
            self.failures -= 1
            data = b"".join(bytes(buffer) for buffer in buffers)
            self.real(fd, [data[: len(data) // 2]])
            raise OSError(28, "No space left on device")
        return self.real(fd, buffers)


def test_a_full_disk_is_waited_out_and_every_message_written_once_as_its_own(tmp_path, monkeypatch):
    import pipeline.csv_sink as csv_sink

    sink = CsvSink(tmp_path / "data.csv", retry_max_seconds=0.05)
    append(sink, "before", body(random.Random(0), preds=2))
    faults = []
    sink.fault_observers.append(faults.append)
    go = threading.Event()
    disk = FillingDisk(failures=3, go=go)
    monkeypatch.setattr(csv_sink.os, "writev", disk)

    payloads = {f"m-{n}": body(random.Random(n), preds=3) for n in range(8)}
    answers = {}
    threads = [threading.Thread(target=lambda mid=mid, p=p: answers.__setitem__(mid, append(sink, mid, p)))
               for mid, p in payloads.items()]
    for thread in threads:
        thread.start()
    # The committer holds its first batch (one message, or a few that came at once); the rest queue up.
    wait_for(lambda: disk.first_batch_rows is not None
             and sink._queue.qsize() == len(payloads) - disk.first_batch_rows // 3,
             timeout=10, what="the others to queue up")
    go.set()
    for thread in threads:
        thread.join(timeout=30)

    # No appender saw an error, and each was told its rows were written (not "duplicate"), even
    # those a failed try had already put down whole.
    assert answers == {mid: True for mid in payloads}
    assert_exactly(tmp_path / "data.csv", {"before": 2, **{mid: 3 for mid in payloads}})
    reasons = [fault.reason for fault in faults if fault is not None]
    assert reasons and all("Errno 28" in reason for reason in reasons)
    assert faults[-1] is None and sink.fault is None


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), OSError(30, "Read-only file system"),
                                   PermissionError(13, "Permission denied"),
                                   sqlite3.OperationalError("database or disk is full")])
def test_disk_errors_are_faults_of_the_disk(error):
    from pipeline.csv_sink import disk_fault

    assert disk_fault(error)


@pytest.mark.parametrize("error", [ValueError("bad"), OSError(9, "Bad file descriptor"),
                                   sqlite3.OperationalError("no such table: messages")])
def test_other_errors_are_not(error):
    from pipeline.csv_sink import disk_fault

    assert disk_fault(error) is None


def test_an_error_that_is_not_the_disks_still_reaches_the_appender(tmp_path):
    (tmp_path / "data.csv").write_text("someone,else\r\n")
    with pytest.raises(ForeignCsvError):
        append(CsvSink(tmp_path / "data.csv"), "m-1", body(random.Random(1)))


def test_rows_whose_flush_failed_are_cut_off_and_written_again_not_vouched_for(tmp_path, monkeypatch):
    """After a failed fdatasync the pages may be clean in the cache yet not on disk: the next
    fdatasync succeeds on them, so recovery must never find them there to put in the ledger."""
    import pipeline.csv_sink as csv_sink

    sink = CsvSink(tmp_path / "data.csv", retry_max_seconds=0.05)
    append(sink, "before", body(random.Random(0), preds=2))
    size_before = (tmp_path / "data.csv").stat().st_size
    real_fdatasync, real_writev, sizes_at_write, failed = os.fdatasync, os.writev, [], []

    def failing_once(fd):
        if not failed:
            failed.append(fd)
            raise OSError(5, "Input/output error")
        return real_fdatasync(fd)

    def writev(fd, buffers):
        sizes_at_write.append(os.fstat(fd).st_size)
        return real_writev(fd, buffers)

    monkeypatch.setattr(csv_sink.os, "fdatasync", failing_once)
    monkeypatch.setattr(csv_sink.os, "writev", writev)
    assert append(sink, "m-1", body(random.Random(1), preds=3)) is True
    assert sizes_at_write == [size_before, size_before], "written twice, from the same end: the tail was cut off"
    assert_exactly(tmp_path / "data.csv", {"before": 2, "m-1": 3})


def test_the_lock_is_kept_while_an_unflushed_tail_cannot_be_cut_off(tmp_path, monkeypatch):
    import fcntl

    import pipeline.csv_sink as csv_sink

    path = tmp_path / "data.csv"
    file = DurableCsvFile(path)
    file.commit([PendingAppend("m-0", encode_rows("m-0", body(random.Random(0), preds=1))[0])])
    monkeypatch.setattr(csv_sink.os, "fdatasync", lambda fd: (_ for _ in ()).throw(OSError(5, "EIO")))
    monkeypatch.setattr(csv_sink.os, "ftruncate", lambda fd, size: (_ for _ in ()).throw(OSError(5, "EIO")))
    rows = encode_rows("m-1", body(random.Random(1)))[0]
    with pytest.raises(OSError):
        file.commit([PendingAppend("m-1", rows)])
    assert file.unsure
    other = os.open(f"{path}.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):  # another process would wait, not recover the tail
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        monkeypatch.undo()
        report = file.commit([PendingAppend("m-1", rows)])  # the next try cuts it off first
        assert report.messages_written == 1 and not file.unsure
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and lets go
    finally:
        os.close(other)
        file.close()
    assert_exactly(path, {"m-0": 1, "m-1": len(read_csv(path)) - 1})


def test_a_file_that_fails_to_open_leaves_no_descriptor_behind(tmp_path, monkeypatch):
    import pipeline.csv_sink as csv_sink

    def broken_ledger(path):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(csv_sink, "Ledger", broken_ledger)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(sqlite3.OperationalError):
            DurableCsvFile(tmp_path / "data.csv")
    assert len(os.listdir("/proc/self/fd")) == before


def test_an_error_that_follows_a_disk_fault_ends_the_fault(tmp_path, monkeypatch):
    import pipeline.csv_sink as csv_sink

    sink = CsvSink(tmp_path / "data.csv", retry_max_seconds=0.05)
    append(sink, "before", body(random.Random(0), preds=1))
    faults, errors = [], iter([OSError(28, "No space left on device"), ValueError("not the disk")])
    sink.fault_observers.append(faults.append)

    def writev(fd, buffers):
        raise next(errors)

    monkeypatch.setattr(csv_sink.os, "writev", writev)
    with pytest.raises(ValueError):
        append(sink, "m-1", body(random.Random(1)))
    assert sink.fault is None and faults[-1] is None and len(faults) == 2


def test_the_sink_goes_on_after_an_error_that_is_not_the_disks(tmp_path, monkeypatch):
    """The committer thread survives it: the next append is written, not left waiting forever."""
    import pipeline.csv_sink as csv_sink

    sink = CsvSink(tmp_path / "data.csv")
    append(sink, "before", body(random.Random(0), preds=1))
    real, errors = os.writev, [ValueError("not the disk")]
    monkeypatch.setattr(csv_sink.os, "writev", lambda fd, b: real(fd, b) if not errors else (_ for _ in ()).throw(errors.pop()))
    with pytest.raises(ValueError):
        append(sink, "m-1", body(random.Random(1), preds=1))
    assert answer_within(lambda: append(sink, "m-2", body(random.Random(2), preds=1)), timeout=10) == [True]
    assert_exactly(tmp_path / "data.csv", {"before": 1, "m-2": 1})


def test_commits_are_logged_as_one_line_with_their_sums_once_the_sink_is_idle(tmp_path):
    from loguru import logger

    lines: list[str] = []
    handler = logger.add(lambda message: lines.append(str(message)), level="INFO", format="{message}")
    try:
        sink = CsvSink(tmp_path / "data.csv")
        for n in range(3):
            sink.append(f"m-{n}", encode_rows(f"m-{n}", body(random.Random(n), preds=2))[0], rows=2)
        sink.append("m-0", encode_rows("m-0", body(random.Random(0), preds=2))[0], rows=2)  # a redelivery
        ours = lambda: [line for line in lines if str(tmp_path) in line]  # noqa: E731 (other tests' sinks log too)
        wait_for(ours, timeout=5, what="the commits' line, within a second of the last")
    finally:
        logger.remove(handler)
    assert len(ours()) == 1, lines
    line = ours()[0]
    assert line.startswith(f"wrote 6 rows of 3 messages to {tmp_path / 'data.csv'} in 4 commits over ")
    assert line.rstrip().endswith("; 1 already there")


def test_a_busy_sink_logs_its_commits_once_a_second():
    from loguru import logger

    now = [0.0]
    log = CommitLog("data.csv", every=1.0, clock=lambda: now[0])
    lines: list[str] = []
    handler = logger.add(lambda message: lines.append(str(message)), level="INFO", format="{message}")
    try:
        log.add(CommitReport(messages_written=1, rows_written=1, duplicates=0, fsync_seconds=0.001))  # at 0 s, alone
        log.write()
        (single,) = lines  # and in the singular
        assert single.startswith("wrote 1 row of 1 message to data.csv in 1 commit over 0.0 s")
        lines.clear()
        for tick in range(1, 26):  # 2.5 s of commits, 10 a second
            now[0] = tick / 10
            log.add(CommitReport(messages_written=4, rows_written=20, duplicates=0, fsync_seconds=0.002))
    finally:
        logger.remove(handler)
    # A line spans from its first commit: 0.1-1.1 s and 1.2-2.2 s, each end included.
    assert len(lines) == 2 and all(line.startswith("wrote 220 rows of 44 messages to data.csv in 11 commits over 1.0 s")
                                   for line in lines)
    assert log.due_in() == pytest.approx(0.8)  # the last 0.3 s's, written when due or idle


def test_a_log_line_that_fails_neither_raises_nor_keeps_its_sums():
    from loguru import logger

    def broken(_message):
        raise OSError("log disk gone")

    handler = logger.add(broken, level="INFO", format="{message}", catch=False)
    try:
        log = CommitLog("data.csv")
        log.add(CommitReport(messages_written=2, rows_written=5, duplicates=0, fsync_seconds=0.001))
        log.write()  # the committer's thread calls it: it must come back
    finally:
        logger.remove(handler)
    assert log.due_in() is None and log.messages == 0


def test_an_error_outside_any_commit_leaves_the_committer_serving(tmp_path):
    """Between commits the committer reads its clock (is a seal due?), logs and waits: an error there
    once ended its thread, and every later append waited for ever."""
    from pipeline.csv_sink import Rotation

    raised = threading.Event()

    def clock() -> float:
        if armed and not raised.is_set():
            raised.set()
            raise OSError("clock unavailable")
        return 1_700_000_000.0

    armed = False
    sink = CsvSink(tmp_path / "data.csv", rotation=Rotation(every_seconds=86400), clock=clock)
    assert append(sink, "before", body(random.Random(0), preds=1)) is True
    armed = True  # the committer asks the clock when the next seal is due, at the latest once it is idle
    assert raised.wait(timeout=10)
    assert answer_within(lambda: append(sink, "after", body(random.Random(1), preds=1)), timeout=10) == [True]
    assert_exactly(tmp_path / "data.csv", {"before": 1, "after": 1})
