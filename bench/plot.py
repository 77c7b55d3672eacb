"""One picture per benchmark run: every system's accepted and written messages over time.

Two numbers in a table (x1.3 accepted, x1.6 written) hide what differs: when
each system stalls, how far the written curve trails the accepted one, whether
a queue drains after the load stops. So each run draws cumulative counts of
both, for ours and, with `--baseline`, the baseline, on the same axes and the
same clock (seconds since that system's first request): the gap between the
curves is seen, not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Line styles: one colour per system, solid for written, dashed for accepted.
_COLOURS = ("#3b6ea5", "#c0504d", "#4f8f3a", "#8064a2")


def curves(report: dict[str, Any]) -> dict[str, tuple[list[float], list[int]]]:
    """(seconds since the first request, cumulative count) of accepted and of written messages."""
    started = report["started"]
    out = {}
    for name in ("accepted", "written"):
        times = sorted(t - started for t in report[f"{name}_timeline"])
        out[name] = (times, list(range(1, len(times) + 1)))
    return out


def plot_run(reports: list[dict[str, Any]], path: Path) -> Path | None:
    """Draw `reports` (ours first, then the baseline if any) into `path`; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for colour, report in zip(_COLOURS, reports):
        lines = curves(report)
        label = report["label"]
        axis.step(*lines["accepted"], where="post", color=colour, linestyle="--", linewidth=1.2,
                  label=f"{label}: accepted ({report['accepted_per_s']:,.0f} req/s)")
        axis.step(*lines["written"], where="post", color=colour, linewidth=2,
                  label=f"{label}: written ({report['rows_per_s_end_to_end']:,.0f} rows/s end to end)")
    axis.set_xlabel("seconds since the system's first request")
    axis.set_ylabel("messages (cumulative)")
    axis.set_title(" vs ".join(r["label"] for r in reports) + f": {reports[0]['requests']:,} requests")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
