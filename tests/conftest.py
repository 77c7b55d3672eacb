"""Shared fixtures. Integration tests run the real stack on a vhost of their own."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Before anything reads config: in-process apps are open (no keys file, whatever a developer keeps in
# data/) unless a test gives them keys, and answer TestClient's Host header `testserver`. Stacks get
# keys of their own (tests/support/stack.py).
os.environ["API_KEYS_FILE"] = str(Path(tempfile.gettempdir()) / f"no-api-keys-{os.getpid()}.json")
os.environ["ALLOWED_HOSTS"] = "127.0.0.1 localhost testserver"

hypothesis_settings.register_profile("ci", max_examples=300, deadline=None)
hypothesis_settings.register_profile("dev", max_examples=100, deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_collection_modifyitems(config, items):
    """The bare-Debian release check (tests/release, about half an hour) runs only when asked for: -m bare."""
    if "bare" in (config.getoption("markexpr") or ""):
        return
    opt_in = pytest.mark.skip(reason="the bare-Debian release check is opt-in: ./test.sh -m bare -s")
    for item in items:
        if "bare" in item.keywords:
            item.add_marker(opt_in)


@pytest.fixture(autouse=True)
def _log_lines_stay_with_their_test():
    """Write out the log lines a test queued (logs.BatchedStderr) while its output is still captured."""
    yield
    from logs import flush_logs

    flush_logs()


@pytest.fixture(scope="session")
def vhost():
    from tests.support.rabbit import create_vhost, delete_vhost

    name = create_vhost()
    yield name
    delete_vhost(name)


@pytest.fixture(scope="session")
def stack(vhost, tmp_path_factory):
    """API + 2 worker processes x 8 threads + the task worker group, shared by the integration tests."""
    from tests.support.rabbit import vhost_url
    from tests.support.stack import Stack

    running = Stack(tmp_path_factory.mktemp("stack"), vhost_url(vhost), processes=2, threads=8)
    try:
        running.start()
        running.start_task_workers()
        yield running
    finally:
        running.stop()
