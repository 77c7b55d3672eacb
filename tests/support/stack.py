"""The real service as subprocesses: uvicorn API and the dramatiq CLI, on an isolated vhost."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.processes import descendants
from tests.support.rabbit import create_vhost, delete_vhost, queue_state, vhost_url
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


#: Ports handed out below the kernel's ephemeral range (net.ipv4.ip_local_port_range), from here up.
LOWEST_PORT = 10_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A port nothing listens on, for a server a test starts.

    Not one the kernel picks (bind to port 0): those come from the ephemeral range, which the
    kernel also hands to outgoing connections, and one did take such a port between this probe
    and the API's own bind (uvicorn: "address already in use", in a CI run). Below that range only
    a listener of ours can hold a port, and the probe sees it.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(LOWEST_PORT, low) if low > LOWEST_PORT + 1000 else 0
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free port below the ephemeral range after 200 tries")


class Stack:
    """API and workers started from the project's own entrypoint scripts."""

    def __init__(self, workdir: Path, rabbitmq_url: str, *, processes: int = 2, threads: int = 8, auth: bool = True,
                 command_prefix: tuple[str, ...] = (), **settings: str):
        """`auth`: the API has a keys file with one admin key, which `http` sends; else it is open.
        `command_prefix`: what the processes are started under (e.g. `ip netns exec HOST`, another "host")."""
        self.workdir = workdir
        self.command_prefix = command_prefix
        self.keys_file = workdir / "api-keys.json"
        self.csv_path = workdir / "data.csv"
        self.api_port = free_port()
        self.prometheus_port = free_port()
        self.rabbitmq_url = rabbitmq_url
        self.processes = processes
        self.env = {
            **os.environ,
            "RABBITMQ_URL": rabbitmq_url,
            "CSV_PATH": str(self.csv_path),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.api_port),
            "PROMETHEUS_HOST": "127.0.0.1",
            "PROMETHEUS_PORT": str(self.prometheus_port),
            "PROMETHEUS_DB": str(workdir / "prometheus"),
            "ML_PROMETHEUS_PORT": str(free_port()),
            "TASK_PROMETHEUS_PORT": str(free_port()),
            "MODEL_STORE_URL": str(workdir / "models"),
            "DATASET_DIR": str(workdir / "datasets"),
            "WORKER_PROCESSES": str(processes),
            "WORKER_THREADS": str(threads),
            "PYTHON": str(ROOT / ".venv" / "bin" / "python"),
            "API_KEYS_FILE": str(self.keys_file),
            **{name.upper(): value for name, value in settings.items()},
        }
        self.admin_key = self.add_key("test-admin", "admin") if auth else None
        #: Requests with the admin key (or none, when `auth` is off); paths relative to the API.
        self.http = httpx.Client(base_url=self.base_url, headers=self.auth_headers(self.admin_key), timeout=10)
        self.api: subprocess.Popen | None = None
        self.workers: subprocess.Popen | None = None
        self.model_workers: subprocess.Popen | None = None
        self.task_workers: subprocess.Popen | None = None
        self.model_workers_log = workdir / "model-workers.log"
        self.task_workers_log = workdir / "task-workers.log"
        self.api_log = workdir / "api.log"
        self.workers_log = workdir / "workers.log"

    def add_key(self, name: str, scopes: str, *, client_ids: tuple[str, ...] = (), rate: int | None = None,
                tenant: str | None = None) -> str:
        """A new key in this stack's keys file; its secret, once a running API knows it.

        The API re-reads the file within about a second: a test that used the key at once would
        see 401s (locust's run did, for its first second).
        """
        from app.keys import add_key

        secret = add_key(self.keys_file, name, scopes.split(","), list(client_ids), rate, tenant)
        if getattr(self, "api", None) is not None and self.api.poll() is None:  # (the admin key comes first)
            # Authentication comes first: any answer but 401 (a 422 for `{}`, a 403) means it is known.
            wait_for(lambda: httpx.post(f"{self.base_url}/api", json={}, headers=self.auth_headers(secret),
                                        timeout=5).status_code != 401, timeout=10, interval=0.05,
                     what=f"the API to know the key {name!r}")
        return secret

    def id_scope(self, tenant: str = "test-admin") -> str:
        """app.tenancy.id_scope as this stack's API computes it for `tenant`."""
        from actors.stats import namespace_for
        from app.tenancy import scope_name

        return scope_name(namespace_for(self.rabbitmq_url), tenant)

    @staticmethod
    def auth_headers(key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}/metrics"

    def _spawn(self, script: str, log: Path, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*self.command_prefix, str(ROOT / script), *args],
            cwd=ROOT,
            env=self.env,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # away from pytest's terminal signals
        )

    def start_workers(self, *, wait: bool = True) -> None:
        self.workers = self._spawn("entrypoint_dramatiq.sh", self.workers_log)
        if wait:
            self.wait_for_consumers()

    def start_model_workers(self, timeout: float = 60) -> None:
        """The `ml` worker group: training and predictions queues."""
        self.model_workers = self._start_group("ml", self.model_workers_log, "training", timeout)

    def start_task_workers(self, timeout: float = 60) -> None:
        """The `tasks` worker group: the tasks queue (the countdown)."""
        self.task_workers = self._start_group("tasks", self.task_workers_log, "tasks", timeout)

    def _start_group(self, role: str, log: Path, queue: str, timeout: float) -> subprocess.Popen:
        group = self._spawn("entrypoint_dramatiq.sh", log, role)

        def consuming() -> bool:
            if group.poll() is not None:
                raise AssertionError(f"the {role} worker group exited; see {log}")
            return queue_state(self.rabbitmq_url, queue)[1] >= 1

        wait_for(consuming, timeout=timeout, interval=0.2, what=f"the {role} workers to consume the {queue} queue")
        return group

    def wait_for_consumers(self, timeout: float = 60) -> None:
        """Every worker process consumes the ingest queue."""

        def consuming() -> bool:
            if self.workers.poll() is not None:
                raise AssertionError(f"workers exited with {self.workers.returncode}; see {self.workers_log}")
            return queue_state(self.rabbitmq_url, "ingest")[1] >= self.processes

        wait_for(consuming, timeout=timeout, interval=0.2, what="workers to consume the ingest queue")

    def start_api(self, *, wait_ready: bool = True) -> None:
        self.api = self._spawn("entrypoint_api.sh", self.api_log)

        def answering() -> bool:
            if self.api.poll() is not None:
                raise AssertionError(f"API exited with {self.api.returncode}; see {self.api_log}")
            status = self.http.get("/ready" if wait_ready else f"{self.base_url}/health", timeout=5)
            return status.status_code == 200

        wait_for(answering, timeout=60, interval=0.1, what="the API to answer")

    def start(self) -> "Stack":
        self.start_workers()
        self.start_api()
        return self

    def stop_workers(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        return stop_tree(self.workers, sig, timeout)

    def stop_task_workers(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        return stop_tree(self.task_workers, sig, timeout)

    def stop(self) -> None:
        stop_tree(self.api, signal.SIGTERM, 30)
        self.stop_workers()
        stop_tree(self.task_workers, signal.SIGTERM, 60)
        stop_tree(self.model_workers, signal.SIGTERM, 60)


def stop_tree(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
    """Signal the entrypoint only, as `docker stop` does; kill the whole tree if it hangs.

    The tree is noted before the signal: an entrypoint that dies at once (SIGKILL cannot be
    forwarded) leaves its children to init, where nothing finds them afterwards, and the
    workers run in a session of their own. Whatever of it outlives the entrypoint is killed.
    """
    if process is None:
        return None
    # Only while it runs: the pid of one reaped before (stopped twice) may be another process's.
    tree = descendants(process.pid) if process.poll() is None else []
    if process.poll() is None:
        process.send_signal(sig)
    try:
        status = process.wait(timeout)
    except subprocess.TimeoutExpired:
        tree = [process.pid, *descendants(process.pid), *tree]
        _kill_all(tree)
        status = process.wait(10)
    _kill_all(tree)
    return status


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def isolated_stack(workdir: Path, prefix: str, **settings) -> Iterator[Stack]:
    """A Stack (not started yet) on a vhost of its own; stopped and the vhost deleted on the way out,
    also when starting it fails."""
    vhost = create_vhost(prefix)
    stack = Stack(workdir, vhost_url(vhost), **settings)
    try:
        yield stack
    finally:
        stack.stop()
        delete_vhost(vhost)
