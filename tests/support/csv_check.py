"""Compare the CSV with what the clients got 2xx for, row by row."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pipeline.shard_files import read_shard
from tests.support.waiting import wait_for


def rows_by_key(path: Path) -> dict[tuple[str, int], list[dict]]:
    """Rows by (message_id, pred_index), from every file of the shard: the live one and those sealed from it."""
    found: dict[tuple[str, int], list[dict]] = {}
    for row in read_shard(path):
        found.setdefault((row["message_id"], row["pred_index"]), []).append(row)
    return found


def count_rows(path: Path, message_ids: set[str]) -> int:
    return sum(len(rows) for (mid, _), rows in rows_by_key(path).items() if mid in message_ids)


def assert_rows_match(path: Path, accepted: dict[str, dict]) -> None:
    """Every pred of every accepted payload is in the file exactly once, value for value."""
    found = rows_by_key(path)
    expected_keys = {(mid, i) for mid, payload in accepted.items() for i in range(len(payload["data"]["preds"]))}
    ours = {key: rows for key, rows in found.items() if key[0] in accepted}
    missing = expected_keys - ours.keys()
    duplicated = {key for key, rows in ours.items() if len(rows) > 1}
    unexpected = ours.keys() - expected_keys
    assert not missing, f"{len(missing)} rows lost, e.g. {sorted(missing)[:3]}"
    assert not duplicated, f"{len(duplicated)} rows written twice, e.g. {sorted(duplicated)[:3]}"
    assert not unexpected, f"{len(unexpected)} rows nobody sent, e.g. {sorted(unexpected)[:3]}"
    for (message_id, index), (row,) in ours.items():
        payload = accepted[message_id]
        pred = payload["data"]["preds"][index]
        assert row["pred_count"] == len(payload["data"]["preds"])
        assert row["device_id"] == payload["device_id"]
        assert row["client_id"] == payload["client_id"]
        assert row["license_id"] == payload["data"]["license_id"]
        assert datetime.fromisoformat(row["created_at"]) == datetime.fromisoformat(payload["created_at"])
        assert row["prob"] == pred["prob"]
        assert row["tags"] == pred["tags"]
        assert row["image_frame"] == pred["image_frame"]


def wait_for_rows(path: Path, accepted: dict[str, dict], timeout: float = 120) -> None:
    """Until every pred of the accepted payloads is in the CSV (then compare them with assert_rows_match)."""
    expected = sum(len(payload["data"]["preds"]) for payload in accepted.values())
    wait_for(lambda: count_rows(path, set(accepted)) >= expected, timeout=timeout, interval=0.5,
             what=f"{expected} rows in {path}")
