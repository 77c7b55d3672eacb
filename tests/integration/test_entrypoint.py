"""entrypoint.sh runs API and workers and stops both cleanly on Ctrl+C or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess

import httpx
import pytest

from tests.support.rabbit import create_vhost, delete_vhost, queue_state, vhost_url
from tests.support.stack import ROOT, Stack
from tests.support.waiting import wait_for


@pytest.fixture()
def settings(tmp_path):
    vhost = create_vhost("entry")
    stack = Stack(tmp_path, vhost_url(vhost))  # only for its ports and environment
    yield stack
    delete_vhost(vhost)


def start_entrypoint(stack: Stack) -> subprocess.Popen:
    process = subprocess.Popen(
        [str(ROOT / "entrypoint.sh")],
        cwd=ROOT,
        env=stack.env,
        stdout=open(stack.workers_log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(lambda: stack.http.get("/ready").status_code == 200, timeout=60, what="the API")
    wait_for(lambda: queue_state(stack.rabbitmq_url, "ingest")[1] == 2, timeout=60, what="two consumers")
    wait_for(lambda: queue_state(stack.rabbitmq_url, "training")[1] == 1, timeout=60, what="the model worker")
    assert queue_state(stack.rabbitmq_url, "training")[1] == 1, "main workers must not consume training"
    return process


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(lambda p: os.killpg(p.pid, signal.SIGINT), id="ctrl-c to the whole process group"),
        pytest.param(lambda p: p.send_signal(signal.SIGTERM), id="sigterm to the entrypoint"),
    ],
)
def test_entrypoint_stops_api_and_workers_gracefully(settings, stop):
    process = start_entrypoint(settings)
    stop(process)
    try:
        process.wait(60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    log = settings.workers_log.read_text()
    assert "Worker has been shut down" in log
    assert "Killing worker process" not in log, "a second signal made Dramatiq drop in-flight work"
    with pytest.raises(httpx.ConnectError):
        settings.http.get("/health")
    wait_for(lambda: queue_state(settings.rabbitmq_url, "ingest")[1] == 0, timeout=30, what="no consumers left")
    assert queue_state(settings.rabbitmq_url, "training")[1] == 0, "the model workers stopped too"
    assert log.count("Worker has been shut down") >= 3, "2 main worker processes and 1 model worker process"
