"""bench/auth.py runs and measures each case (its figures go to bench/RESULTS.md, not into asserts)."""

from __future__ import annotations

from app import auth


def test_the_auth_benchmark_measures_open_keyed_and_rate_limited_checks(monkeypatch):
    from bench import auth as bench_auth

    monkeypatch.setattr(auth, "get_authenticator", auth.get_authenticator)  # restored after the run
    results = bench_auth.main(["--calls", "50"])
    assert set(results) == {"open", "key", "key with a rate"}
    assert all(micros > 0 for micros in results.values())
