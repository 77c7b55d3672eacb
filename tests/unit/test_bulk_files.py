"""Payloads read back from CSV, XLSX and NDJSON files (pipeline/bulk.py): grouping, restoring, refusing."""

from __future__ import annotations

import csv
import io
import random
import uuid

import openpyxl
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.schemas import SEED_EXAMPLE, IngestPayload
from pipeline.bulk import (
    ReadProgress,
    UnreadableFile,
    read_csv_payloads,
    read_ndjson_payloads,
    read_xlsx_payloads,
)
from pipeline.rows import COLUMNS, HEADER, encode_rows
from tests.unit.test_rows import payload as payload_strategy

LIMITS = {"max_preds": 100, "max_line_bytes": 4 * 1024 * 1024}


def validated(body: dict) -> dict:
    return IngestPayload.model_validate(body).model_dump(mode="json")


def service_csv(*messages: tuple[str, dict]) -> bytes:
    """A CSV exactly as the workers write it."""
    return (HEADER + "".join(encode_rows(mid, body)[0].decode() for mid, body in messages)).encode()


def read_csv_bytes(data: bytes, **limits) -> tuple[list, ReadProgress]:
    progress = ReadProgress()
    return list(read_csv_payloads(io.BytesIO(data), progress=progress, **{**LIMITS, **limits})), progress


def rewrite(data: bytes, columns: list[str]) -> bytes:
    """The same CSV with only `columns`, in that order (a hand-made file)."""
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def seed_with(**changes) -> dict:
    body = orjson.loads(orjson.dumps(SEED_EXAMPLE))
    body.update(changes)
    return validated(body)


def several_preds(count: int, device: str = "cam-01") -> dict:
    pred = SEED_EXAMPLE["data"]["preds"][0]
    return seed_with(device_id=device, data={"license_id": "lic-42", "preds": [
        {**pred, "prob": index / count, "tags": [f"t{index}"]} for index in range(count)
    ]})


# -- CSV -------------------------------------------------------------------------------------------


@given(st.lists(payload_strategy, min_size=1, max_size=4))
def test_a_csv_the_service_wrote_reads_back_as_the_same_payloads_and_ids(bodies):
    messages = [(str(uuid.uuid4()), validated(body)) for body in bodies]
    found, progress = read_csv_bytes(service_csv(*messages))
    assert [(item.message_id, item.payload, item.errors) for item in found] == [(mid, body, []) for mid, body in messages]
    assert progress.rows_read == sum(len(body["data"]["preds"]) for _, body in messages)
    assert all(validated(item.payload) == item.payload for item in found), "a round trip changes nothing"


def test_line_numbers_count_the_header_and_each_pred_row():
    found, _ = read_csv_bytes(service_csv((str(uuid.uuid4()), several_preds(3)), (str(uuid.uuid4()), seed_with())))
    assert [(item.line, item.last_line, item.pred_lines) for item in found] == [(2, 4, [2, 3, 4]), (5, 5, [5])]


def test_a_byte_order_mark_and_any_column_order_are_accepted():
    mid = str(uuid.uuid4())
    data = rewrite(service_csv((mid, several_preds(2))), list(reversed(COLUMNS)))
    found, _ = read_csv_bytes(b"\xef\xbb\xbf" + data)
    assert [(item.message_id, item.payload) for item in found] == [(mid, several_preds(2))]


def test_without_id_columns_consecutive_rows_of_one_device_and_time_are_one_payload():
    first, second = several_preds(3, "cam-01"), several_preds(2, "cam-02")
    data = service_csv((str(uuid.uuid4()), first), (str(uuid.uuid4()), second))
    found, _ = read_csv_bytes(rewrite(data, list(COLUMNS[3:])))
    assert [(item.message_id, item.payload) for item in found] == [(None, first), (None, second)]


def test_pred_count_ends_a_payload_even_when_the_next_one_looks_the_same():
    body = several_preds(2)
    data = service_csv((str(uuid.uuid4()), body), (str(uuid.uuid4()), body))
    found, _ = read_csv_bytes(rewrite(data, ["pred_count", *COLUMNS[3:]]))
    assert [item.payload for item in found] == [body, body]


def test_rows_out_of_pred_index_order_are_put_back_in_order():
    mid = str(uuid.uuid4())
    header, *rows = service_csv((mid, several_preds(3))).decode().split("\r\n")[:-1]
    shuffled = "\r\n".join([header, rows[2], rows[0], rows[1]]) + "\r\n"
    found, _ = read_csv_bytes(shuffled.encode())
    assert found[0].payload == several_preds(3)
    assert found[0].pred_lines == [3, 4, 2]


def test_a_payload_missing_a_row_is_rejected_whole_and_the_next_one_is_read():
    broken, whole = str(uuid.uuid4()), str(uuid.uuid4())
    header, *rows = service_csv((broken, several_preds(3)), (whole, seed_with())).decode().split("\r\n")[:-1]
    found, _ = read_csv_bytes(("\r\n".join([header, rows[0], rows[2], rows[3]]) + "\r\n").encode())
    assert [(item.message_id, item.payload is None) for item in found] == [(broken, True), (whole, False)]
    assert [error["type"] for error in found[0].errors] == ["incomplete_payload", "pred_index"]


def test_bad_cells_are_named_by_column_and_line():
    mid = str(uuid.uuid4())
    text = service_csv((mid, several_preds(2))).decode()
    text = text.replace(',"0.5",', ',"high",').replace('"[""t0""]"', "not json")
    found, _ = read_csv_bytes(text.encode())
    assert found[0].payload is None
    assert {(error["field"], error["message"].split(":")[0]) for error in found[0].errors} == {
        ("prob", "line 3"), ("tags", "line 2")
    }


def test_a_pred_count_that_is_not_a_count_is_refused():
    text = service_csv((str(uuid.uuid4()), several_preds(2))).decode().replace(',"1","2",', ',"1","two",')
    found, _ = read_csv_bytes(text.encode())
    assert [(item.line, item.last_line, item.payload) for item in found] == [(2, 3, None)]
    assert [error["field"] for error in found[0].errors] == ["pred_count"]


def test_an_empty_tags_cell_means_no_tags():
    data = rewrite(service_csv((str(uuid.uuid4()), seed_with())), list(COLUMNS)).replace(
        b'"[""person"",""entrance""]"', b""
    )
    found, _ = read_csv_bytes(data)
    assert found[0].payload["data"]["preds"][0]["tags"] == []


def test_a_message_id_that_is_not_a_uuid_is_refused():
    found, _ = read_csv_bytes(service_csv(("not-a-uuid", seed_with())))
    assert [error["field"] for error in found[0].errors] == ["message_id"]


def test_a_row_with_more_cells_than_the_header_is_rejected_alone():
    mid = str(uuid.uuid4())
    data = service_csv((mid, seed_with())) + b"a,b,c,d,e,f,g,h,i,j,k\r\n" + service_csv((mid, seed_with()))[len(HEADER):]
    found, _ = read_csv_bytes(data)
    assert [(item.line, [e["type"] for e in item.errors]) for item in found] == [(2, []), (3, ["row_length"]), (4, [])]


def test_more_rows_than_max_preds_in_one_payload_are_refused():
    found, _ = read_csv_bytes(service_csv((str(uuid.uuid4()), several_preds(5))), max_preds=3)
    assert found[0].payload is None and found[0].errors[0]["type"] == "too_long"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"device_id,client_id\r\n", "missing column(s) created_at"),
        (HEADER.encode().replace(b"prob", b"probability"), "unknown column(s) 'probability'"),
        (HEADER.encode().replace(b"tags", b"prob"), "repeated column(s) prob"),
    ],
)
def test_a_wrong_header_refuses_the_file_before_any_payload(data, words):
    with pytest.raises(UnreadableFile) as refused:
        read_csv_bytes(data)
    assert refused.value.kind == "header" and words in refused.value.message


def test_text_that_is_not_utf8_stops_reading_at_its_line():
    good = service_csv((str(uuid.uuid4()), seed_with()))
    reader = read_csv_payloads(io.BytesIO(good + b"\xff\xfe broken\r\n"), progress=ReadProgress(), **LIMITS)
    assert next(reader).payload == seed_with()
    with pytest.raises(UnreadableFile) as stopped:
        next(reader)
    assert (stopped.value.kind, stopped.value.line) == ("broken", 3)
    assert "line 3 is not UTF-8" in stopped.value.message


def test_a_line_longer_than_the_limit_stops_reading_without_holding_it():
    data = service_csv((str(uuid.uuid4()), seed_with())) + b"x" * 10_000 + b"\r\n"
    with pytest.raises(UnreadableFile) as stopped:
        read_csv_bytes(data, max_line_bytes=1000)
    assert (stopped.value.kind, stopped.value.line) == ("broken", 3)


def test_reading_is_lazy_a_payload_at_a_time():
    """The reader holds rows of one payload, never the file: it yields before reading the rest."""
    first = service_csv((str(uuid.uuid4()), seed_with()))
    file = io.BytesIO(first + first[len(HEADER):] * 100_000)
    reader = read_csv_payloads(file, progress=ReadProgress(), **LIMITS)
    next(reader)
    assert file.tell() < 64 * 1024


# -- XLSX ------------------------------------------------------------------------------------------


def workbook_bytes(rows: list[list], *, dimension: str | None = None) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    if dimension is None:
        return out.getvalue()
    return _with_dimension(out.getvalue(), dimension)


def _with_dimension(data: bytes, dimension: str) -> bytes:
    import re
    import zipfile

    source, target = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(target, "w") as out:
        for member in source.infolist():
            content = source.read(member)
            if member.filename == "xl/worksheets/sheet1.xml":
                content = re.sub(rb'<dimension ref="[^"]*"', f'<dimension ref="{dimension}"'.encode(), content)
            out.writestr(member, content)
    return target.getvalue()


def csv_rows(data: bytes) -> list[list]:
    """The cells of a service CSV as a spreadsheet holds them: numbers as numbers, text as text."""
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    numeric = {COLUMNS.index(name) for name in ("pred_index", "pred_count", "prob")}
    return [rows[0]] + [[float(c) if i in numeric else c for i, c in enumerate(row)] for row in rows[1:]]


def read_xlsx_bytes(data: bytes, **limits) -> list:
    options = {"max_preds": 100, "max_unpacked_bytes": 1 << 30, "max_strings_bytes": 1 << 30, **limits}
    return list(read_xlsx_payloads(io.BytesIO(data), progress=ReadProgress(), **options))


def test_an_xlsx_of_the_service_rows_reads_back_as_the_same_payloads():
    hostile = seed_with(device_id="=cmd|' /C calc'!A0", client_id="'quoted", created_at="2023-02-13T10:49:06+02:00")
    messages = [(str(uuid.uuid4()), hostile), (str(uuid.uuid4()), several_preds(3))]
    found = read_xlsx_bytes(workbook_bytes(csv_rows(service_csv(*messages))))
    assert [(item.message_id, item.payload, item.errors) for item in found] == [(m, b, []) for m, b in messages]


def test_an_xlsx_with_a_wrong_dimension_still_yields_every_row():
    messages = [(str(uuid.uuid4()), several_preds(2)) for _ in range(3)]
    found = read_xlsx_bytes(workbook_bytes(csv_rows(service_csv(*messages)), dimension="A1:B2"))
    assert [item.message_id for item in found] == [mid for mid, _ in messages]


def test_a_spreadsheet_date_cell_is_read_as_iso_8601():
    from datetime import datetime

    rows = csv_rows(service_csv((str(uuid.uuid4()), seed_with())))
    rows[1][COLUMNS.index("created_at")] = datetime(2023, 2, 13, 10, 49, 6, 613000)  # Excel keeps milliseconds
    assert read_xlsx_bytes(workbook_bytes(rows))[0].payload["created_at"] == "2023-02-13T10:49:06.613000"


def test_an_xlsx_whose_strings_exceed_the_limit_is_refused_before_reading():
    """Excel puts text in a shared-strings part, which openpyxl loads whole (openpyxl writes it inline)."""
    import zipfile

    out = io.BytesIO(workbook_bytes(csv_rows(service_csv((str(uuid.uuid4()), several_preds(50))))))
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/sharedStrings.xml", b"<sst>" + b" " * 100_000 + b"</sst>")
    data = out.getvalue()
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(data, max_strings_bytes=50_000)
    assert refused.value.kind == "too_large" and "MAX_XLSX_STRINGS_BYTES" in refused.value.message
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(data, max_unpacked_bytes=100_000)
    assert "MAX_XLSX_UNPACKED_BYTES" in refused.value.message


def test_an_xlsx_cell_longer_than_any_payload_is_refused_before_openpyxl_parses_it(monkeypatch):
    """openpyxl holds a cell's text whole while it parses; a 1 GB inline string must not get there."""
    import openpyxl

    rows = csv_rows(service_csv((str(uuid.uuid4()), seed_with())))
    rows[1][COLUMNS.index("device_id")] = "x" * 30_000  # openpyxl writes at most Excel's 32,767
    data = workbook_bytes(rows)
    assert read_xlsx_bytes(data, max_payload_bytes=1 << 20), "under the bound it is read as usual"
    monkeypatch.setattr(openpyxl, "load_workbook", lambda *a, **k: pytest.fail("the sheet was parsed"))
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(data, max_payload_bytes=20_000)
    assert refused.value.kind == "too_large" and "xl/worksheets/sheet1.xml" in refused.value.message
    assert "MAX_BODY_BYTES" in refused.value.message


@pytest.mark.parametrize("content, too_long", [
    (b"<a>" + b"x" * 998 + b"</a>", False),  # "a>" and 998 bytes: 1000
    (b"<a>" + b"x" * 999 + b"</a>", True),
    (b"<" + b"y" * 700 + b"<" + b"z" * 999 + b"<", False),  # runs that cross the pieces' joins
    (b"<" + b"y" * 700 + b"<" + b"z" * 1001, True),
    (b"z" * 1001, True),
    (bytes(range(256)) * 40, False),  # binary: a `<` in every 256 bytes
    (b"<a>" + b"x" * 995 + b"<![CDA" + b"TA[" + b"<" * 500 + b"]]></a>", True),  # CDATA may hold `<`
])
def test_the_longest_text_of_a_part_is_measured_across_the_pieces_it_is_read_in(content, too_long):
    import zipfile

    from pipeline.bulk import _text_problem

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("part.xml", content)
    with zipfile.ZipFile(out) as archive:
        assert bool(_text_problem(archive, archive.getinfo("part.xml"), 1000)) is too_long


@pytest.mark.parametrize("data", [b"not a zip at all", workbook_bytes([])[:200]])
def test_a_file_that_is_no_workbook_is_refused_as_such(data):
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(data)
    assert refused.value.kind == "format"


# -- NDJSON ----------------------------------------------------------------------------------------


def read_ndjson_bytes(data: bytes, max_line_bytes: int = 1 << 20) -> tuple[list, ReadProgress]:
    progress = ReadProgress()
    return list(read_ndjson_payloads(io.BytesIO(data), max_line_bytes=max_line_bytes, progress=progress)), progress


def test_ndjson_lines_are_payloads_and_blank_lines_are_skipped():
    line = orjson.dumps(SEED_EXAMPLE)
    found, progress = read_ndjson_bytes(b"\xef\xbb\xbf" + line + b"\n\n  \r\n" + line + b"\r\n" + b"{broken\n")
    assert [(item.line, item.payload == SEED_EXAMPLE) for item in found] == [(1, True), (4, True), (5, False)]
    assert found[2].errors[0]["type"] == "json_invalid" and "line 5" in found[2].errors[0]["message"]
    assert progress.rows_read == 3


def test_an_ndjson_line_over_the_limit_is_refused_alone():
    line = orjson.dumps(SEED_EXAMPLE)
    found, _ = read_ndjson_bytes(line + b"\n" + b"[" + b"1," * 5000 + b"1]\n" + line, max_line_bytes=len(line))
    assert [(item.line, [e["type"] for e in item.errors]) for item in found] == [(1, []), (2, ["too_large"]), (3, [])]


# -- bounds on what one upload can make the API hold -------------------------------------------


def test_a_quoted_cell_that_spans_many_lines_is_bounded_per_record_not_per_line():
    """Each line is short, but an unclosed quote makes them all one record."""
    data = service_csv((str(uuid.uuid4()), seed_with())) + b'"x,' + b"short line\r\n" * 2000
    with pytest.raises(UnreadableFile) as stopped:
        read_csv_bytes(data, max_line_bytes=10_000)
    assert stopped.value.kind == "broken" and "record starting at line 3" in stopped.value.message


def test_a_payload_assembled_from_rows_obeys_the_body_limit_of_post_api():
    big = several_preds(20)
    for pred in big["data"]["preds"]:
        pred["image_frame"] = "QUJD" * 200  # 800 bytes each: every line is well under the limit
    small = seed_with()
    found, _ = read_csv_bytes(service_csv((str(uuid.uuid4()), big), (str(uuid.uuid4()), small)),
                              max_line_bytes=5_000)
    assert found[0].payload is None and [e["field"] for e in found[0].errors] == ["body"]
    assert "MAX_BODY_BYTES" in found[0].errors[0]["message"]
    assert found[1].payload == small, "the next payload is read as usual"


def _with_renamed_shared_strings(size: int) -> bytes:
    """A workbook whose shared strings are a part named xl/strs.xml: found by content type only."""
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(workbook_bytes(csv_rows(service_csv((str(uuid.uuid4()), seed_with()))))))
    target = io.BytesIO()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for member in source.infolist():
            content = source.read(member)
            if member.filename == "[Content_Types].xml":
                content = content.replace(b"</Types>", b'<Override PartName="/xl/strs.xml" ContentType="application/'
                                          b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
            out.writestr(member, content)
        out.writestr("xl/strs.xml", b"<sst>" + b" " * size + b"</sst>")
    return target.getvalue()


def test_shared_strings_are_found_by_content_type_not_by_name():
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(_with_renamed_shared_strings(100_000), max_strings_bytes=50_000)
    assert "MAX_XLSX_STRINGS_BYTES" in refused.value.message


def test_an_archive_of_too_many_files_is_refused_before_its_directory_is_parsed(monkeypatch):
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for number in range(50):
            archive.writestr(f"x/{number}.xml", b"")
    monkeypatch.setattr(zipfile.ZipFile, "__init__", lambda *a, **k: pytest.fail("the directory was parsed"))
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(out.getvalue(), max_entries=20)
    assert refused.value.kind == "too_large" and "holds 50 files" in refused.value.message


def _zip_of(count: int) -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for number in range(count):
            archive.writestr(f"x/{number}.xml", b"")
    return out.getvalue()


def test_an_archive_whose_end_record_understates_its_files_is_refused_by_its_directory_size(monkeypatch):
    """zipfile parses the whole directory whatever count the end record gives."""
    import struct
    import zipfile

    data = bytearray(_zip_of(2000))
    at = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, at + 8, 1, 1)  # "one file"
    assert len(zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()) == 2000, "what zipfile would hold"
    monkeypatch.setattr(zipfile.ZipFile, "__init__", lambda *a, **k: pytest.fail("the directory was parsed"))
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(bytes(data), max_entries=20)
    assert refused.value.kind == "too_large" and "MAX_XLSX_ENTRIES" in refused.value.message


def test_a_zip64_archive_is_counted_from_the_record_zipfile_reads():
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", allowZip64=True) as archive:
        for number in range(50):
            archive.writestr(f"x/{number}.xml", b"")
        archive.comment = b""
    data = out.getvalue()
    if b"PK\x06\x06" not in data:  # zipfile writes zip64 records only when needed: force them
        import struct

        at = data.rfind(b"PK\x05\x06")
        entries, size, offset = struct.unpack_from("<HII", data, at + 10)
        record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset)
        locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, at, 1)
        end = bytearray(data[at:])
        struct.pack_into("<HH", end, 8, 0xFFFF, 0xFFFF)
        data = data[:at] + record + locator + bytes(end)
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(data, max_entries=20)
    assert "holds 50 files" in refused.value.message


def _rewritten(data: bytes, change) -> bytes:
    """The workbook with `change(name, content) -> [(name, content), ...]` applied to each part."""
    import zipfile

    source, target = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for member in source.infolist():
            for name, content in change(member.filename, source.read(member)):
                out.writestr(name, content)
    return target.getvalue()


def test_a_content_types_part_too_large_to_check_is_refused_not_skipped():
    data = workbook_bytes(csv_rows(service_csv((str(uuid.uuid4()), seed_with()))))
    padded = _rewritten(data, lambda name, content: [(name, content.replace(
        b"</Types>", b"<!--" + b" " * (2 << 20) + b"--></Types>") if name == "[Content_Types].xml" else content)])
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(padded)
    assert refused.value.kind == "format" and "[Content_Types].xml" in refused.value.message


def test_the_content_types_openpyxl_reads_are_the_ones_checked():
    """Two entries of that name: zipfile (and so openpyxl) reads the last one."""
    import warnings

    strings_type = b"application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"

    def change(name, content):
        if name != "[Content_Types].xml":
            return [(name, content)]
        hidden = content.replace(b"</Types>", b'<Override PartName="/xl/strs.xml" ContentType="' + strings_type
                                 + b'"/></Types>')
        return [(name, content), (name, hidden), ("xl/strs.xml", b"<sst>" + b" " * 100_000 + b"</sst>")]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
        data = _rewritten(workbook_bytes(csv_rows(service_csv((str(uuid.uuid4()), seed_with())))), change)
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(data, max_strings_bytes=50_000)
    assert "MAX_XLSX_STRINGS_BYTES" in refused.value.message


def test_a_workbook_whose_part_cannot_be_unpacked_is_refused_as_such():
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", random.Random(0).randbytes(300_000))  # incompressible
    data = bytearray(out.getvalue())
    data[100_000:100_400] = b"\x00" * 400  # corrupt deflate data, far from the directory
    with pytest.raises(UnreadableFile) as refused:
        read_xlsx_bytes(bytes(data), max_payload_bytes=100_000)
    assert refused.value.kind == "format" and "cannot be unpacked" in refused.value.message


def test_the_header_does_not_count_against_the_first_records_bound():
    header = service_csv()
    data = service_csv((str(uuid.uuid4()), seed_with(device_id="d" * 200)))
    row = len(data) - len(header)
    record_bound = row + len(header) // 2
    assert row < record_bound < len(data), "the row fits, the row with the header would not"
    found = list(read_csv_payloads(io.BytesIO(data), max_preds=100, max_line_bytes=record_bound, progress=ReadProgress()))
    assert [item.errors for item in found] == [[]]
