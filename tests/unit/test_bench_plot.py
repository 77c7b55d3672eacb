"""bench/plot.py: one picture of accepted and written over time, for every system of a run."""

from __future__ import annotations

import pytest

from bench.plot import curves, plot_run


def report(label: str, accepted: list[float], written: list[float]) -> dict:
    return {
        "label": label, "requests": len(accepted), "started": 100.0,
        "accepted_per_s": 10.0, "rows_per_s_end_to_end": 50.0,
        "accepted_timeline": accepted, "written_timeline": written,
    }


def test_curves_count_accepted_and_written_from_the_first_request():
    lines = curves(report("ours", [100.5, 100.2], [101.0, 100.7]))
    assert lines["accepted"] == ([pytest.approx(0.2), pytest.approx(0.5)], [1, 2])
    assert lines["written"] == ([pytest.approx(0.7), pytest.approx(1.0)], [1, 2])


def test_a_run_with_a_baseline_draws_both_systems_on_one_picture(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.step
    monkeypatch.setattr(matplotlib.axes.Axes, "step",
                        lambda self, *a, **k: drawn.append(k["label"]) or original(self, *a, **k))
    path = plot_run([report("ours", [100.1, 100.2], [100.3, 100.4]),
                     report("baseline", [100.2, 100.4], [100.9, 101.5])], tmp_path / "run.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    assert [label.split(" (")[0] for label in drawn] == [
        "ours: accepted", "ours: written", "baseline: accepted", "baseline: written"]
