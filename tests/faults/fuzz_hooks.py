"""schemathesis hooks for the fuzz test (loaded through SCHEMATHESIS_HOOKS by the `st` CLI it runs).

Two jobs: an NDJSON serializer, without which `POST /api/batch`'s second media
type cannot be generated at all; and a record of every detection the API
accepted (to FUZZ_ACCEPTED_FILE, one JSON line each), so the test can check
afterwards that the CSV holds exactly their rows.
"""

from __future__ import annotations

import json
import os

import orjson
import schemathesis


def ndjson_bytes(value) -> bytes:
    """The schema's NDJSON body is text, sent as it is. A negative case's other value (a number, a
    list) has no NDJSON form; its counterpart on the wire is a body that is not text at all."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b"\xff" + json.dumps(value).encode() + b"\n"  # json: any integer, not orjson's 64 bits


schemathesis.serializer("application/x-ndjson")(lambda context, value: ndjson_bytes(value))


def _record(lines: list[tuple[str, object]]) -> None:
    path = os.environ.get("FUZZ_ACCEPTED_FILE")
    if path and lines:
        with open(path, "ab") as file:
            file.write(b"".join(orjson.dumps({"message_id": mid, "payload": body}) + b"\n" for mid, body in lines))


def _sent_items(case) -> list:
    """The batch's items by index, as the API counted them (NDJSON: one per non-blank line)."""
    from app.bulk_ingest import parse_ndjson

    if isinstance(case.body, list):
        return case.body
    return [value for value, _ in parse_ndjson(ndjson_bytes(case.body), 1 << 30)]


@schemathesis.hook
def after_call(context, case, response) -> None:
    if case.method.upper() != "POST" or response.status_code >= 300:
        return
    path = case.operation.path
    if path == "/api" and response.status_code == 202:
        _record([(response.json()["message_id"], case.body)])
    elif path == "/api/batch":
        items = _sent_items(case)
        _record([(item["message_id"], items[item["index"]]) for item in response.json()["items"]
                 if item["status"] == "received"])
    elif path == "/file/upload" and response.json().get("enqueued"):
        _record([("upload", response.json()["enqueued"])])
