"""bench/profile.py's summary of a py-spy profile."""

from __future__ import annotations

from bench.profile import summarise


def test_own_and_inclusive_shares_of_a_collapsed_profile(tmp_path):
    raw = tmp_path / "workers.raw"
    raw.write_text(
        'process 1:"dramatiq";Thread._bootstrap (threading.py:1);run (w.py:1);encode (rows.py:9) 30\n'
        'process 1:"dramatiq";Thread._bootstrap (threading.py:1);run (w.py:1);ack (c.py:2) 10\n'
        'process 1:"dramatiq";Thread._bootstrap (threading.py:1);poll (p.py:3) 60\n'
    )
    summary = summarise(raw)
    own = summary.split("including callees:")[0]
    inclusive = summary.split("including callees:")[1]
    assert "100 samples" in summary
    assert " 60.0%  poll (p.py:3)" in own and " 30.0%  encode (rows.py:9)" in own
    assert " 40.0%  run (w.py:1)" in inclusive  # its callees' samples count for it
    assert "process 1" not in inclusive and "Thread._bootstrap" not in inclusive  # every stack has those
