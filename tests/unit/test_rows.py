"""The CSV format is lossless and inert in spreadsheets."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from app.schemas import IngestPayload
from pipeline.rows import COLUMNS, HEADER, neutralise_cell, read_rows, encode_rows, restore_cell

# Any Unicode a client can send as valid JSON text (lone surrogates are refused by the schema).
hostile_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(",\"'\r\n\t=+-@;\x00\\ ")),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=40,
)
identifier = hostile_text.filter(lambda text: len(text) >= 1)
base64_text = st.binary(max_size=64).map(lambda raw: __import__("base64").b64encode(raw).decode()).filter(bool)
pred = st.fixed_dictionaries(
    {
        "image_frame": base64_text,
        "prob": st.floats(min_value=0.0, max_value=1.0),
        "tags": st.lists(hostile_text, max_size=5),
    }
)
payload = st.fixed_dictionaries(
    {
        "device_id": identifier,
        "client_id": identifier,
        "created_at": st.datetimes().map(datetime.isoformat),
        "data": st.fixed_dictionaries({"license_id": identifier, "preds": st.lists(pred, min_size=1, max_size=5)}),
    }
)


def csv_text(*messages: tuple[str, dict]) -> str:
    return HEADER + "".join(encode_rows(message_id, body)[0].decode() for message_id, body in messages)


@given(payload, identifier)
def test_every_value_reads_back_exactly(body, message_id):
    validated = IngestPayload.model_validate(body).model_dump(mode="json")
    rows = list(read_rows(io.StringIO(csv_text((message_id, validated)), newline="")))
    assert len(rows) == len(body["data"]["preds"])
    for index, (row, sent) in enumerate(zip(rows, body["data"]["preds"])):
        assert row["message_id"] == message_id
        assert (row["pred_index"], row["pred_count"]) == (index, len(rows))
        assert row["device_id"] == body["device_id"]
        assert row["client_id"] == body["client_id"]
        assert row["license_id"] == body["data"]["license_id"]
        assert datetime.fromisoformat(row["created_at"]) == datetime.fromisoformat(body["created_at"])
        assert row["prob"] == sent["prob"]
        assert row["tags"] == sent["tags"]
        assert row["image_frame"] == sent["image_frame"]


@given(st.lists(st.tuples(identifier, payload), min_size=2, max_size=4))
def test_messages_written_one_after_another_keep_their_boundaries(messages):
    text = csv_text(*((mid, IngestPayload.model_validate(body).model_dump(mode="json")) for mid, body in messages))
    rows = list(read_rows(io.StringIO(text, newline="")))
    assert [row["message_id"] for row in rows] == [
        mid for mid, body in messages for _ in body["data"]["preds"]
    ]


def reference_encoding(message_id: str, body: dict) -> bytes:
    """The format by definition: every cell through csv.writer, every cell quoted."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    preds = body["data"]["preds"]
    for index, item in enumerate(preds):
        writer.writerow([
            neutralise_cell(message_id), index, len(preds), neutralise_cell(body["device_id"]),
            neutralise_cell(body["client_id"]), neutralise_cell(body["created_at"]),
            neutralise_cell(body["data"]["license_id"]), repr(float(item["prob"])),
            json.dumps(item["tags"], ensure_ascii=False, separators=(",", ":")),
            neutralise_cell(item["image_frame"]),
        ])
    return out.getvalue().encode()


@given(payload, identifier, st.lists(hostile_text, min_size=1, max_size=5))
def test_the_fast_encoding_is_byte_for_byte_what_the_csv_module_writes(body, message_id, frames):
    """encode_rows skips the csv module for the frames; it must not change a byte (any frame text)."""
    for item, frame in zip(body["data"]["preds"], frames):
        item["image_frame"] = frame
    assert encode_rows(message_id, body)[0] == reference_encoding(message_id, body)


EVERY_CELL_QUOTED = re.compile(r'(?:(?:"(?:[^"]|"")*",){9}"(?:[^"]|"")*"\r\n)+')


@given(payload, identifier)
def test_every_cell_of_every_row_is_quoted(body, message_id):
    assert EVERY_CELL_QUOTED.fullmatch(encode_rows(message_id, body)[0].decode())


def test_a_cell_a_semicolon_locale_would_split_stays_one_quoted_cell():
    """A spreadsheet splitting on `;` reads `cam-1;=cmd|...` unquoted as a cell starting with `=`."""
    body = {"device_id": "cam-1;=cmd|' /C calc'!A0", "client_id": "c", "created_at": "2023-02-13T10:49:06",
            "data": {"license_id": "l", "preds": [{"image_frame": "aGk=", "prob": 0.5, "tags": []}]}}
    line = encode_rows("m-1", body)[0].decode()
    assert ',"cam-1;=cmd|\' /C calc\'!A0",' in line


@given(hostile_text)
def test_neutralising_a_cell_is_undone_exactly(text):
    assert restore_cell(neutralise_cell(text)) == text


def test_formula_cells_are_written_with_a_leading_quote():
    for dangerous in ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'x"]:
        assert neutralise_cell(dangerous) == "'" + dangerous
    assert neutralise_cell("plain") == "plain"


def test_a_formula_client_id_is_stored_inert_in_the_file():
    body = {
        "device_id": "d",
        "client_id": "=HYPERLINK(\"http://x\")",
        "created_at": "2023-02-13T10:49:06",
        "data": {"license_id": "l", "preds": [{"image_frame": "aGk=", "prob": 0.5, "tags": []}]},
    }
    data, count = encode_rows("m-1", body)
    raw_cells = next(csv.reader(io.StringIO(data.decode(), newline="")))
    assert count == 1
    assert raw_cells[COLUMNS.index("client_id")] == "'=HYPERLINK(\"http://x\")"


def test_header_names_the_documented_columns():
    assert HEADER.rstrip("\r\n").split(",") == list(COLUMNS)


@given(payload, identifier)
def test_messages_encoded_with_orjson_decode_with_dramatiqs_json_encoder_and_back(body, message_id):
    from dramatiq.encoder import JSONEncoder

    from actors.encoding import OrjsonEncoder

    data = {"message_id": message_id, "args": [body], "kwargs": {}, "options": {"retries": 1}}
    assert JSONEncoder().decode(OrjsonEncoder().encode(data)) == data
    assert OrjsonEncoder().decode(JSONEncoder().encode(data)) == data


@given(st.text(max_size=30), identifier)
def test_a_frame_that_is_not_base64_is_still_written_losslessly(frame, message_id):
    """The worker trusts the API's validation, but a hand-published message must not break the file."""
    body = {
        "device_id": "d",
        "client_id": "c",
        "created_at": "2023-02-13T10:49:06",
        "data": {"license_id": "l", "preds": [{"image_frame": frame, "prob": 0.5, "tags": []}]},
    }
    (row,) = read_rows(io.StringIO(csv_text((message_id, body)), newline=""))
    assert row["image_frame"] == frame
