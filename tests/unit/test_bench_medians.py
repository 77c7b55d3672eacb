"""bench/run.py --repeat: medians over alternating rounds."""

from __future__ import annotations

from bench.procstat import per_request_ms, rabbitmq_cpu_seconds
from bench.run import median, print_medians


def report(accepted: float, rows: float, ratio: tuple[float, float] | None = None) -> dict:
    result = {
        "accepted_per_s": accepted,
        "rows_per_s_end_to_end": rows,
        "post_latency_ms": {99: 100.0},
        "cpu_seconds": {"api": 1.0, "workers": 2.0, "rabbitmq": 0.8, "load": 0.5},
        "cpu_ms_per_request": per_request_ms({"api": 1.0, "workers": 2.0, "rabbitmq": None, "load": 0.5}, 1000),
    }
    if ratio:
        result["ratio_to_baseline"] = {"accepted_per_s": ratio[0], "rows_per_s_end_to_end": ratio[1]}
    return result


def test_median_of_odd_and_even_counts():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5


def test_the_summary_prints_medians_and_the_median_ratio(capsys):
    rounds = [
        (report(1000, 5000, (1.2, 1.1)), report(900, 4500)),
        (report(800, 4000, (0.9, 1.0)), report(850, 4100)),
        (report(1100, 5200, (1.3, 1.2)), report(880, 4400)),
    ]
    print_medians(rounds)
    out = capsys.readouterr().out
    assert "ours: 1,000 req/s, 5,000 rows/s" in out
    assert "baseline: 880 req/s, 4,400 rows/s" in out
    assert "accepted req/s x1.20, end-to-end rows/s x1.10" in out



def test_the_summary_gives_cpu_per_request_per_part(capsys):
    print_medians([(report(1000, 5000), None)])
    assert "CPU ms per request api+workers 3.00 (api 1.00, workers 2.00), rabbitmq n/a, load 0.50" in capsys.readouterr().out


def test_rabbitmq_cpu_is_read_from_its_beam_process():
    """The machine's RabbitMQ runs here (the suite needs it): its CPU time only grows."""
    first = rabbitmq_cpu_seconds()
    assert first is not None and first > 0 and rabbitmq_cpu_seconds() >= first
