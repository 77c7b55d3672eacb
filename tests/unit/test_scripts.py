"""The README's commands fail fast and say what to do when there is no broker to start."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from pathlib import Path

from tests.support.stack import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_ensure_rabbitmq_fails_at_once_with_one_line_for_an_unreachable_remote_broker():
    # Loopback, but not an address the script would start a local server for; nothing listens there.
    env = {**os.environ, "RABBITMQ_URL": "amqp://guest:guest@127.0.0.2:1/"}
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "scripts" / "ensure_rabbitmq.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 10
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "RABBITMQ_URL" in lines[0]


def test_ensure_rabbitmq_succeeds_silently_when_the_broker_answers():
    result = subprocess.run([str(ROOT / "scripts" / "ensure_rabbitmq.sh")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr == ""


def test_the_three_worker_groups_between_them_consume_every_queue_once():
    import re

    from actors import INGEST_QUEUE, PREDICTIONS_QUEUE, TASKS_QUEUE, TRAINING_QUEUE, broker
    from config import Settings

    script = (ROOT / "entrypoint_dramatiq.sh").read_text()

    def queues_of(role: str) -> set[str]:
        return set(re.search(rf"^ +{role}\)\n +queues=\"([^\"]+)\"", script, re.MULTILINE)[1].split())

    groups = {"main": set(Settings.model_fields["worker_queues"].default.split()),
              "tasks": queues_of("tasks"), "ml": queues_of("ml")}
    assert groups == {"main": {INGEST_QUEUE}, "tasks": {TASKS_QUEUE}, "ml": {TRAINING_QUEUE, PREDICTIONS_QUEUE}}
    assert set().union(*groups.values()) == broker.get_declared_queues()


def _fake_bin(tmp_path: Path, **fakes: str) -> dict[str, str]:
    """An environment whose PATH has only what the scripts use, and the given fakes (name: script
    body): so rabbitmq-server and redis-server look absent, and `id`, `sudo`, `apt-get` say what
    the test wants."""
    import shutil

    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("bash", "dirname", "timeout", "mkdir", "seq", "sleep"):
        (fake / tool).symlink_to(shutil.which(tool))
    for name, body in fakes.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    return {**os.environ, "PATH": str(fake), "CSV_PATH": str(tmp_path / "data" / "data.csv")}


def _run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "scripts" / script)], env=env, capture_output=True, text=True, timeout=60)


def test_ensure_redis_succeeds_silently_when_redis_answers():
    result = _run("ensure_redis.sh", dict(os.environ))
    assert result.returncode == 0 and result.stderr == ""


def test_ensure_redis_fails_at_once_with_one_line_for_an_unreachable_remote_redis():
    started = time.monotonic()
    result = _run("ensure_redis.sh", {**os.environ, "REDIS_URL": "redis://127.0.0.2:1/0"})
    assert result.returncode == 1 and time.monotonic() - started < 10
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "REDIS_URL" in lines[0]


def test_ensure_redis_starts_a_local_redis_bound_to_loopback_beside_the_csv(tmp_path):
    import redis

    port = free_port()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "CSV_PATH": str(tmp_path / "data.csv")}
    result = _run("ensure_redis.sh", env)
    client = redis.Redis(port=port)
    try:
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == f"starting local Redis on 127.0.0.1:{port} (files in {tmp_path / 'redis'})..."
        assert client.ping() and client.config_get("bind")["bind"] == "127.0.0.1"
    finally:
        client.shutdown(nosave=True)


@pytest.mark.parametrize("script, package, url", [
    ("ensure_redis.sh", "redis-server", ("REDIS_URL", "redis://127.0.0.1:{port}/0")),
    ("ensure_rabbitmq.sh", "rabbitmq-server", ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:{port}/")),
])
def test_without_the_right_to_install_the_scripts_name_the_exact_command_in_one_line(tmp_path, script, package, url):
    env = _fake_bin(tmp_path, id="echo 1000", sudo="exit 1", **{"apt-get": "exit 1"})
    env[url[0]] = url[1].format(port=free_port())
    result = _run(script, env)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert f"run 'sudo apt-get install -y --no-install-recommends {package}'" in line


def test_as_root_an_install_that_fails_says_so_in_one_line_after_saying_what_it_installs(tmp_path):
    env = _fake_bin(tmp_path, id="echo 0", **{"apt-get": "exit 100"})
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    result = _run("ensure_redis.sh", env)
    assert result.returncode == 1
    installing, failed = result.stderr.strip().splitlines()
    assert installing.startswith("installing Redis (apt-get install -y --no-install-recommends redis-server")
    assert failed.startswith("could not install Redis with 'apt-get install")


def test_a_rabbitmq_the_script_starts_is_awaited_while_it_is_not_up_yet_not_given_up_on_at_the_first_refusal(
        tmp_path):
    """Just after `rabbitmq-server -detached`, `rabbitmqctl await_startup` exits 69 at once: the node is
    not up to be waited for. Here it refuses twice, then the node listens."""
    import socket
    import threading

    calls, up = tmp_path / "calls", tmp_path / "up"
    env = _fake_bin(tmp_path, **{
        "rabbitmq-server": "exit 0",
        "rabbitmqctl": f"n=0; [ -f {calls} ] && read n < {calls}; n=$((n + 1)); echo $n > {calls}; "
                       f"[ $n -ge 3 ] || exit 69; : > {up}",
    })
    port = free_port()
    env["RABBITMQ_URL"] = f"amqp://guest:guest@127.0.0.1:{port}/"
    listener = socket.socket()

    def listen_once_up() -> None:
        deadline = time.monotonic() + 30
        while not up.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        listener.bind(("127.0.0.1", port))
        listener.listen()

    thread = threading.Thread(target=listen_once_up, daemon=True)
    thread.start()
    try:
        result = _run("ensure_rabbitmq.sh", env)
    finally:
        thread.join(timeout=30)
        listener.close()
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "starting local RabbitMQ (rabbitmq-server -detached)..."
    assert calls.read_text().strip() == "3"


@pytest.mark.parametrize("script", ["entrypoint_api.sh", "entrypoint_dramatiq.sh"])
@pytest.mark.parametrize(("setting", "seen"), [(None, "2097152 1048576"), ("3145728", "3145728 1572864"),
                                               ("0", "unset unset")])
def test_the_service_processes_start_with_glibc_keeping_the_heaps_free_top_for_the_next_message(
        tmp_path, script, setting, seen):
    """MALLOC_TRIM_THRESHOLD_BYTES reaches the API and the workers as glibc's MALLOC_TRIM_THRESHOLD_ (and
    half of it as MALLOC_MMAP_THRESHOLD_), which glibc reads once, at start: a Python process cannot
    set them for itself afterwards."""
    import sys

    fake = tmp_path / "python"  # the real interpreter, except for the service's own command
    fake.write_text("#!/usr/bin/env bash\n"
                    'if [ "$1 $2" = "-m uvicorn" ] || [ "$1 $2 $3" = "-m logs dramatiq" ]; then\n'
                    '  echo "trim=${MALLOC_TRIM_THRESHOLD_:-unset} ${MALLOC_MMAP_THRESHOLD_:-unset}"; exit 0\n'
                    "fi\n"
                    f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "WORKER_RESTART": "no", "PROMETHEUS_DB": str(tmp_path / "prometheus"),
           "API_HOST": "127.0.0.1"}  # (app.auth check refuses another address without keys)
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_BYTES"):
        env.pop(name, None)
    if setting is not None:
        env["MALLOC_TRIM_THRESHOLD_BYTES"] = setting
    result = subprocess.run([str(ROOT / script)], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"trim={seen}"
