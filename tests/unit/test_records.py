"""pipeline.records: pages of a real shard the sink wrote, across its sealed files and its live one."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from pipeline.csv_sink import CsvSink, Rotation
from pipeline.records import Position, RecordQuery, RecordsUnavailable, read_page
from pipeline.rows import encode_rows, read_csv
from pipeline.shard_files import ledger_path, read_shard, sealed_files
from tests.unit.test_csv_rotation import Clock
from tests.unit.test_csv_sink import body

START = 1_000_000.0


def shard(path: Path, origins: list[tuple[str, str, str] | None], preds: int = 3,
          every_seconds: float = 60) -> tuple[CsvSink, Clock]:
    """Message m-<i> from origins[i], one a second; a file sealed every minute (the first two are sealed)."""
    clock = Clock(START)
    sink = CsvSink(path, rotation=Rotation(every_seconds=every_seconds, host="h"), clock=clock)
    for number, origin in enumerate(origins):
        send(sink, number, origin, preds)
        clock.now += 20
    return sink, clock


def send(sink: CsvSink, number: int, origin: tuple[str, str, str] | None, preds: int = 3) -> None:
    payload = body(random.Random(number), preds=preds)
    if origin is not None:
        payload = {**payload, "client_id": origin[1], "device_id": origin[2]}
    data, rows = encode_rows(f"m-{number:03d}", payload)
    assert sink.append(f"m-{number:03d}", data, rows, origin)


def walk(path: Path, query: RecordQuery, cursor: str | None = None) -> tuple[list[dict], str, int]:
    """Every row the query answers, page after page; the last cursor; how many pages it took."""
    rows, pages = [], 0
    while True:
        page = read_page(path, query, cursor)
        rows += page.records
        cursor, pages = page.next, pages + 1
        if not page.more:
            return rows, cursor, pages
        assert pages < 1000


def ids(rows: list[dict]) -> list[tuple[str, int]]:
    return [(row["message_id"], row["pred_index"]) for row in rows]


EVERYONE = RecordQuery(tenant=None)


def test_walking_the_pages_returns_every_row_once_in_the_order_written_across_sealed_files(tmp_path):
    path = tmp_path / "data.csv"
    shard(path, [("t", "c", "d")] * 10)
    assert len(sealed_files(path)) >= 2
    rows, _, pages = walk(path, RecordQuery(tenant=None, limit=4))  # 4 rows: pages split messages of 3
    assert ids(rows) == ids(list(read_shard(path)))
    assert len(rows) == 30 and pages >= 8
    first = read_page(path, RecordQuery(tenant=None, limit=1)).records[0]
    assert first == {**next(read_shard(path)), "written_at": "1970-01-12T13:46:40.000Z"}


def test_a_tenant_reads_only_its_own_messages_and_an_admin_reads_every_tenants(tmp_path):
    path = tmp_path / "data.csv"
    shard(path, [("a", "c1", "d"), ("b", "c1", "d"), None, ("", "c1", "d"), ("a", "c2", "d")])
    assert {row["message_id"] for row in walk(path, RecordQuery(tenant="a"))[0]} == {"m-000", "m-004"}
    assert {row["message_id"] for row in walk(path, RecordQuery(tenant="b"))[0]} == {"m-001"}
    # Without keys (tenant ""), only what was sent without keys; a message of unknown origin is no one's.
    assert {row["message_id"] for row in walk(path, RecordQuery(tenant=""))[0]} == {"m-003"}
    assert len(walk(path, EVERYONE)[0]) == 15


def test_client_and_device_filters_match_the_rows_even_of_messages_of_unknown_origin(tmp_path):
    path = tmp_path / "data.csv"
    sink, _ = shard(path, [("a", "c1", "d1"), ("a", "c2", "d1"), ("a", "c1", "d2")])
    payload = {**body(random.Random(9), preds=2), "client_id": "c1", "device_id": "d1"}
    sink.append("m-009", *encode_rows("m-009", payload))  # no origin, as an older worker commits
    assert {row["message_id"] for row in walk(path, RecordQuery(tenant="a", client_id="c1"))[0]} == {"m-000", "m-002"}
    assert {row["message_id"] for row in walk(path, RecordQuery(tenant="a", device_id="d1"))[0]} == {"m-000", "m-001"}
    both = walk(path, RecordQuery(tenant=None, client_id="c1", device_id="d1"))[0]
    assert ids(both) == [("m-000", 0), ("m-000", 1), ("m-000", 2), ("m-009", 0), ("m-009", 1)]


def test_since_and_until_select_by_when_the_rows_were_written(tmp_path):
    path = tmp_path / "data.csv"
    shard(path, [("t", "c", "d")] * 9)  # m-<i> written at START + 20 i
    query = RecordQuery(tenant="t", since=START + 60, until=START + 120)
    assert [row["message_id"] for row in walk(path, query)[0]] == ["m-003"] * 3 + ["m-004"] * 3 + ["m-005"] * 3
    late = walk(path, RecordQuery(tenant="t", since=START + 150))[0]
    assert {row["message_id"] for row in late} == {"m-008"}


def test_a_page_stops_at_the_scan_bound_and_says_where_to_go_on(tmp_path):
    path = tmp_path / "data.csv"
    shard(path, [("other", "c", "d")] * 7 + [("t", "c", "d")])
    page = read_page(path, RecordQuery(tenant="t", scan=3))
    assert page.records == [] and page.more and page.scanned == 3
    rows, _, pages = walk(path, RecordQuery(tenant="t", scan=3), page.next)
    assert {row["message_id"] for row in rows} == {"m-007"} and pages == 2


def test_a_page_stops_at_its_byte_bound_but_always_returns_a_message(tmp_path):
    path = tmp_path / "data.csv"
    shard(path, [("t", "c", "d")] * 4)
    page = read_page(path, RecordQuery(tenant="t", max_bytes=1))
    assert {row["message_id"] for row in page.records} == {"m-000"} and page.more
    assert ids(walk(path, RecordQuery(tenant="t", max_bytes=1))[0]) == ids(list(read_shard(path)))


def test_the_last_cursor_of_a_walk_is_where_rows_written_later_appear_even_after_a_seal(tmp_path):
    path = tmp_path / "data.csv"
    sink, clock = shard(path, [("t", "c", "d")] * 2)
    seen, cursor, _ = walk(path, RecordQuery(tenant="t"))
    clock.now += 120
    for number in range(2, 5):  # the live file is sealed meanwhile
        send(sink, number, ("t", "c", "d"))
    later, _, _ = walk(path, RecordQuery(tenant="t"), cursor)
    assert ids(seen + later) == ids(list(read_shard(path))) and len(later) == 9


def test_a_sealed_file_moved_away_is_named_as_unavailable_and_its_rows_skipped(tmp_path):
    path = tmp_path / "data.csv"
    shard(path, [("t", "c", "d")] * 8)
    first = sealed_files(path)[0].path
    everything = {row["message_id"] for row in read_shard(path)}
    moved = {row["message_id"] for row in read_csv(first)}
    first.rename(tmp_path / "elsewhere.csv")
    page = read_page(path, RecordQuery(tenant="t", limit=1000))
    assert page.unavailable == [first.name]
    assert {row["message_id"] for row in page.records} == everything - moved and moved


def test_rows_that_disagree_with_the_ledger_are_refused_not_returned(tmp_path):
    path = tmp_path / "data.csv"
    shard(path, [("t", "c", "d")] * 2, every_seconds=0)
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"m-001"', b'"m-00X"'))
    with pytest.raises(RecordsUnavailable, match="does not hold message m-001"):
        walk(path, EVERYONE)


def test_a_ledger_from_before_origins_answers_admins_and_no_tenant(tmp_path):
    path = tmp_path / "data.csv"
    shard(path, [("t", "c", "d")] * 3)
    with sqlite3.connect(ledger_path(path)) as db:
        db.execute("DROP TABLE senders")
    assert len(walk(path, EVERYONE)[0]) == 9
    assert walk(path, RecordQuery(tenant="t"))[0] == []


def test_senders_an_older_worker_kept_by_message_id_still_answer_their_tenant(tmp_path):
    path = tmp_path / "data.csv"
    shard(path, [("t", "c", "d"), ("u", "c", "d"), ("t", "c", "e")])
    with sqlite3.connect(ledger_path(path)) as db:  # what a worker of the version before `senders` left
        db.execute("CREATE TABLE origins (message_id TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
                   " client_id TEXT NOT NULL, device_id TEXT NOT NULL) WITHOUT ROWID")
        db.execute("INSERT INTO origins SELECT message_id, tenant, client_id, device_id FROM senders"
                   " WHERE message_id != 'm-002'")
        db.execute("DELETE FROM senders WHERE message_id != 'm-002'")  # m-002 is a newer worker's
    assert {row["message_id"] for row in walk(path, RecordQuery(tenant="t"))[0]} == {"m-000", "m-002"}
    assert {row["message_id"] for row in walk(path, RecordQuery(tenant="u"))[0]} == {"m-001"}


def test_a_sender_left_behind_by_a_file_cut_short_is_not_lent_to_the_next_message_ending_there(tmp_path):
    path = tmp_path / "data.csv"
    sink, _ = shard(path, [("t", "c", "d")] * 2, every_seconds=0)
    with sqlite3.connect(ledger_path(path)) as db:
        (end_of_first,) = db.execute("SELECT end_offset FROM commits WHERE message_id = 'm-000'").fetchone()
        # A file cut back to its first message, and its ledger after a worker of an older version
        # cleared it (commits only: the senders of the cut message stay behind).
        db.execute("DELETE FROM commits WHERE message_id = 'm-001'")
    with open(path, "r+b") as file:
        file.truncate(end_of_first)
    # The same payload under an id of the same length ends where m-001 ended; it comes without a sender.
    payload = body(random.Random(1), preds=3)
    data, rows = encode_rows("m-00X", {**payload, "client_id": "c", "device_id": "d"})
    assert CsvSink(path).append("m-00X", data, rows, None)
    assert {row["message_id"] for row in walk(path, RecordQuery(tenant="t"))[0]} == {"m-000"}
    assert "m-00X" in {row["message_id"] for row in walk(path, EVERYONE)[0]}


def test_a_shard_nothing_was_written_to_has_no_records(tmp_path):
    page = read_page(tmp_path / "data.csv", EVERYONE)
    assert page.records == [] and not page.more and page.next == str(Position())


@pytest.mark.parametrize("cursor", ["x", "1.2", "1.2.3.4", "-1.0.0", "1." + "9" * 19 + ".0"])
def test_a_cursor_this_api_did_not_give_is_refused(tmp_path, cursor):
    with pytest.raises(ValueError, match="cursor"):
        read_page(tmp_path / "data.csv", EVERYONE, cursor)


def test_a_cursor_that_is_no_message_boundary_still_reads_whole_messages(tmp_path):
    path = tmp_path / "data.csv"
    shard(path, [("t", "c", "d")] * 3, every_seconds=0)
    rows, _, _ = walk(path, EVERYONE, "1.5.0")  # offset 5 is inside the header: the walk starts at the first message
    assert ids(rows) == ids(list(read_shard(path)))


@pytest.mark.parametrize("limit", [1, 2])
def test_pages_smaller_than_the_first_message_walk_on_with_the_cursors_they_give(tmp_path, limit):
    path = tmp_path / "data.csv"
    shard(path, [("t", "c", "d")] * 4, every_seconds=0)
    rows, _, pages = walk(path, RecordQuery(tenant="t", limit=limit))
    assert ids(rows) == ids(list(read_shard(path))) and pages >= 12 // limit


def test_rows_with_frames_larger_than_the_csv_modules_default_are_read(tmp_path):
    import csv

    path = tmp_path / "data.csv"
    sink = CsvSink(path)
    payload = body(random.Random(1), preds=1)
    payload["data"]["preds"][0]["image_frame"] = "QUJD" * 50_000
    sink.append("m-big", *encode_rows("m-big", payload), ("t", "c", "d"))
    before = csv.field_size_limit()
    csv.field_size_limit(128 * 1024)
    try:
        (row,) = read_page(path, RecordQuery(tenant="t")).records
    finally:
        csv.field_size_limit(before)
    assert len(row["image_frame"]) == 200_000
