"""`python -m pipeline.shards`: list, verify and merge, against real shards the sink wrote."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.csv_sink import CsvSink, Rotation
from pipeline.rows import HEADER_BYTES, encode_rows, read_csv
from pipeline.shard_files import sealed_files, shard_files
from pipeline.shards import main, merge
from tests.unit.test_csv_rotation import Clock
from tests.unit.test_csv_sink import append, body

ROOT = Path(__file__).resolve().parents[2]


def payload(number: int, preds: int = 2, created_at: str = "2023-02-13T10:49:06.613585") -> dict:
    return {**body(random.Random(number), preds=preds), "created_at": created_at}


def rotated_shard(path: Path, messages: range, host: str = "h") -> dict[str, dict]:
    """A shard of several sealed files and a live one; returns what was written, by message id."""
    clock = Clock(1_000_000.0)
    sink = CsvSink(path, rotation=Rotation(every_seconds=60, host=host), clock=clock)
    written = {}
    for number in messages:
        if number % 3 == 0 and written:
            # Time moves between appends only: moved after the last, the committer would seal the
            # live file when idle, at a moment of its own, perhaps under the test's reads.
            clock.now += 60
        written[f"m-{number:04d}"] = payload(number)
        append(sink, f"m-{number:04d}", written[f"m-{number:04d}"])
    return written


def run(*argv: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.shards", *argv], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_merging_two_hosts_keeps_each_row_once_in_the_sinks_own_format_byte_for_byte(tmp_path):
    one = rotated_shard(tmp_path / "a" / "data.csv", range(0, 8), host="a")
    two = rotated_shard(tmp_path / "b" / "data.csv", range(5, 12), host="b")  # m-0005..7 redelivered to b
    files = shard_files(tmp_path / "a" / "data.csv") + shard_files(tmp_path / "b" / "data.csv")
    assert len(files) > 4
    report = merge(files, tmp_path / "merged.csv")
    everything = {**one, **two}
    expected = HEADER_BYTES + b"".join(encode_rows(mid, everything[mid])[0] for mid in sorted(everything))
    assert (tmp_path / "merged.csv").read_bytes() == expected
    assert report.rows == 2 * len(everything) and report.copies_dropped == 2 * 3
    assert report.incomplete_messages == 0 and report.unreadable_lines == 0


def test_merging_by_day_writes_one_file_per_day_of_created_at_as_sent(tmp_path):
    path = tmp_path / "data.csv"
    sink = CsvSink(path)
    days = {"m-1": "2023-02-13T23:59:59+01:00", "m-2": "2023-02-14 00:00:01", "m-3": "2023-02-13T08:00:00Z"}
    for message_id, created_at in days.items():
        append(sink, message_id, payload(int(message_id[2:]), created_at=created_at))
    assert main(["merge", str(path), "--out", str(tmp_path / "days"), "--by", "day"]) == 0
    assert sorted(file.name for file in (tmp_path / "days").iterdir()) == ["2023-02-13.csv", "2023-02-14.csv"]
    assert [row["message_id"] for row in read_csv(tmp_path / "days" / "2023-02-13.csv")] == ["m-1"] * 2 + ["m-3"] * 2
    assert {row["message_id"] for row in read_csv(tmp_path / "days" / "2023-02-14.csv")} == {"m-2"}


def test_a_message_torn_in_a_live_file_is_left_out_of_the_merge_and_counted(tmp_path, capsys):
    path = tmp_path / "data.csv"
    append(CsvSink(path), "m-1", payload(1))
    torn = encode_rows("m-2", payload(2, preds=3))[0]
    with open(path, "ab") as handle:
        handle.write(torn[: torn.index(b"\r\n") + 2] + torn[torn.index(b"\r\n") + 2 :][:40])  # row 0 whole, row 1 cut
    assert main(["merge", str(path), "--out", str(tmp_path / "merged.csv")]) == 0
    assert {row["message_id"] for row in read_csv(tmp_path / "merged.csv")} == {"m-1"}
    err = capsys.readouterr().err
    assert "left out 1 message" in err and "skipped 1 line" in err


def test_merge_refuses_a_file_the_sink_did_not_write_naming_it(tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("a,b\r\n1,2\r\n")
    assert main(["merge", str(other), "--out", str(tmp_path / "merged.csv")]) == 2
    assert str(other) in capsys.readouterr().err
    assert not (tmp_path / "merged.csv").exists()


def test_a_bad_memory_limit_is_refused_naming_the_option(tmp_path, capsys):
    path = tmp_path / "data.csv"
    append(CsvSink(path), "m-1", payload(1))
    assert main(["merge", str(path), "--out", str(tmp_path / "m.csv"), "--memory-limit", "lots"]) == 2
    assert "--memory-limit" in capsys.readouterr().err


def test_verify_passes_a_clean_rotated_shard(tmp_path, capsys):
    path = tmp_path / "data.csv"
    rotated_shard(path, range(9))
    assert main(["verify", *map(str, shard_files(path))]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok:") == len(shard_files(path))


def verify_with_a_copy_of_m_0000_in(path: Path, sealed_index: int, capsys) -> tuple[int, str]:
    """Append a second copy of message m-0000 to one sealed file of the shard, and verify that file."""
    rotated_shard(path, range(7))
    target = sealed_files(path)[sealed_index].path
    with open(target, "ab") as handle:
        handle.write(encode_rows("m-0000", payload(0))[0])
    code = main(["verify", str(target)])
    return code, capsys.readouterr().out


def test_verify_finds_a_message_written_twice_into_a_sealed_file(tmp_path, capsys):
    code, out = verify_with_a_copy_of_m_0000_in(tmp_path / "data.csv", 0, capsys)
    assert code == 1 and "m-0000 is in this file twice" in out


def test_verify_finds_a_message_in_two_files_of_the_shard(tmp_path, capsys):
    code, out = verify_with_a_copy_of_m_0000_in(tmp_path / "data.csv", 1, capsys)
    assert code == 1 and "m-0000 is also committed to segment 1" in out


def test_verify_fails_a_torn_sealed_file_and_notes_a_torn_live_one(tmp_path, capsys):
    path = tmp_path / "data.csv"
    rotated_shard(path, range(7))
    sealed = sealed_files(path)[0].path
    for file in (sealed, path):
        with open(file, "ab") as handle:
            handle.write(encode_rows("m-torn", payload(99))[0][:30])
    assert main(["verify", str(path)]) == 0
    assert "note: 30 bytes after the last complete message" in capsys.readouterr().out
    assert main(["verify", str(sealed)]) == 1
    assert "problem: 30 bytes after the last complete message" in capsys.readouterr().out


def test_verify_finds_rows_missing_from_a_sealed_file(tmp_path, capsys):
    path = tmp_path / "data.csv"
    rotated_shard(path, range(6))
    sealed = sealed_files(path)[0].path
    data = sealed.read_bytes()
    sealed.write_bytes(data[: len(HEADER_BYTES)] + data[len(HEADER_BYTES):][len(encode_rows("m-0000", payload(0))[0]):])
    assert main(["verify", str(sealed)]) == 1
    assert "rows are missing" in capsys.readouterr().out


def test_list_shows_every_file_of_the_shard_with_its_messages(tmp_path, capsys):
    path = tmp_path / "data.csv"
    rotated_shard(path, range(7))
    assert main(["list", str(path), "--json"]) == 0
    (entries,) = json.loads(capsys.readouterr().out).values()
    assert [entry["state"] for entry in entries] == ["sealed", "sealed", "live"]
    assert [entry["messages"] for entry in entries] == [3, 3, 1]
    assert [entry["file"] for entry in entries[:2]] == [name.path.name for name in sealed_files(path)]
    assert all(entry["present"] for entry in entries)


def test_the_command_reads_csv_path_from_the_settings_when_no_file_is_given(tmp_path):
    path = tmp_path / "data.csv"
    rotated_shard(path, range(4))
    listed = run("list", env={"CSV_PATH": str(path)})
    assert listed.returncode == 0, listed.stderr
    assert "sealed" in listed.stdout and "live" in listed.stdout
    verified = run("verify", env={"CSV_PATH": str(path)})
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _write_big_shard(path: Path, messages: int) -> int:
    """A shard file of `messages` messages of 5 rows (~1 KB each), written fast: the sink's own encoding."""
    template = {**payload(1, preds=5), "data": {"license_id": "lic", "preds": [
        {"image_frame": "QUJD" * 30, "prob": 0.5 + index / 10, "tags": ["x"]} for index in range(5)]}}
    with open(path, "wb") as out:
        out.write(HEADER_BYTES)
        for number in range(messages):
            out.write(encode_rows(f"m-{number:09d}", template)[0])
    return 5 * messages


@pytest.mark.slow
def test_merge_runs_in_bounded_memory_however_many_rows_there_are(tmp_path):
    """Two copies of 1.5M rows (~2 x 400 MB of CSV) merged under a 100 MB bound: each key once, the process small."""
    path = tmp_path / "a.csv"
    rows = _write_big_shard(path, 300_000)
    copy = tmp_path / "b.csv"
    os.link(path, copy)
    script = ("import sys; from pipeline.shards import main; from tests.support.processes import peak_rss_mb;"
              " code = main(sys.argv[1:]); print(peak_rss_mb()); sys.exit(code)")
    merged = subprocess.run([sys.executable, "-c", script, "merge", str(path), str(copy), "--out",
                             str(tmp_path / "merged.csv"), "--memory-limit", "100MB"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert merged.returncode == 0, merged.stderr
    peak_mb = float(merged.stdout.strip().splitlines()[-1])
    assert f"merged {rows:,} rows" in merged.stdout
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB"
    assert (tmp_path / "merged.csv").read_bytes() == path.read_bytes()


def test_verify_shows_a_progress_bar_by_bytes_on_a_terminal_and_nothing_otherwise(tmp_path, capsys):
    from pipeline.shards import _verify_with_progress

    path = tmp_path / "data.csv"
    rotated_shard(path, range(9))
    files = shard_files(path)
    assert all(v.ok for v in _verify_with_progress(files, show=True))
    bar = capsys.readouterr().err
    assert "verify" in bar and "100%" in bar and files[-1].name in bar
    assert main(["verify", *map(str, files)]) == 0  # pytest's stderr is no terminal
    assert "verify:" not in capsys.readouterr().err


def test_merge_asks_duckdb_for_its_progress_bar_only_when_told(tmp_path, monkeypatch):
    import duckdb

    settings = []
    real_connect = duckdb.connect

    def connect(*args, **kwargs):
        connection = real_connect(*args, **kwargs)
        original = connection.execute

        class Recording:
            def __getattr__(self, name):
                return getattr(connection, name)

            def execute(self, query, *rest):
                if "enable_progress_bar" in query:
                    settings.append(query)
                return original(query, *rest)

        return Recording()

    monkeypatch.setattr(duckdb, "connect", connect)
    path = tmp_path / "data.csv"
    append(CsvSink(path), "m-1", payload(1))
    merge([path], tmp_path / "a.csv", progress=True)
    merge([path], tmp_path / "b.csv")
    assert settings == ["SET enable_progress_bar = true", "SET enable_progress_bar = false"]
