"""The API's garbage collector settings (app/collector.py): set once the process is ready to serve."""

from __future__ import annotations

import gc

import pytest
from fastapi.testclient import TestClient

from app.collector import tune_collector
from app.main import create_app
from config import get_settings


@pytest.fixture(autouse=True)
def pythons_collector_restored():
    """Each test starts from, and leaves, the collector as the test process had it."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tuning_freezes_what_start_up_made_and_collects_the_young_less_often():
    class Kept:
        pass

    middle_and_oldest = gc.get_threshold()[1:]
    kept = Kept()  # made at "start-up", and alive
    tune_collector(10_000)
    assert gc.get_threshold() == (10_000, *middle_and_oldest)
    assert not any(o is kept for o in gc.get_objects()), "what start-up made is in no generation the collector scans"


def test_zero_leaves_pythons_collector_alone():
    before = gc.get_threshold()
    tune_collector(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_api_tunes_its_collector_once_it_is_ready(monkeypatch):
    monkeypatch.setenv("API_GC_YOUNG_THRESHOLD", "12345")
    get_settings.cache_clear()
    try:
        app = create_app()
        assert gc.get_threshold()[0] != 12345, "the collector is set when the app is ready, not when it is made"
        with TestClient(app):
            assert gc.get_threshold()[0] == 12345
            assert gc.get_freeze_count() > 0
    finally:
        get_settings.cache_clear()
