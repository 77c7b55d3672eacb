"""A 3-node RabbitMQ cluster on this machine, started and stopped by the tests that need one.

One Erlang VM per node, each with its own directory (data, logs, config, pid
file) and free ports, all sharing one Erlang cookie in a HOME of their own, so
nothing collides with the machine's own RabbitMQ (`../shared/DRAMATIQ-FACTS.md`
has the recipe). The node binaries are called directly: the /usr/sbin wrappers
switch user and the machine's rabbitmq-env.conf forces the default node name.
Every wait has a deadline; a node that does not come up fails the test with
the end of its log.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.support.stack import free_port
from tests.support.waiting import wait_for

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def available() -> str | None:
    """Why no cluster can be started here, or None."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        return f"no RabbitMQ server at {RABBITMQ_BIN} (apt-get install rabbitmq-server)"
    if os.geteuid() != 0:
        return "a RabbitMQ cluster of the tests' own needs root here (its Erlang VMs and directories)"
    return None


@dataclass
class Node:
    name: str  #: e.g. c1a2b3-1@localhost
    port: int  #: AMQP
    dist_port: int
    directory: Path

    @property
    def pid_file(self) -> Path:
        return self.directory / "pid"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


class Cluster:
    """Three nodes, formed once; kill, start and restart them one by one."""

    def __init__(self, workdir: Path, size: int = 3, listen: tuple[str, ...] = ("127.0.0.1",)):
        """`listen`: the addresses every node takes AMQP connections on (e.g. a veth's, for a namespace)."""
        self.workdir = workdir
        self.listen = listen
        self.home = workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        prefix = f"c{uuid.uuid4().hex[:6]}"
        self.nodes = [Node(f"{prefix}-{index}@localhost", free_port(), free_port(), workdir / f"node{index}")
                      for index in range(1, size + 1)]
        for node in self.nodes:
            self._configure(node)

    def _configure(self, node: Node) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        peers = "\n".join(f"cluster_formation.classic_config.nodes.{i} = {peer.name}"
                          for i, peer in enumerate(self.nodes, 1))
        listeners = "".join(f"listeners.tcp.{i} = {address}:{node.port}\n" for i, address in enumerate(self.listen, 1))
        (node.directory / "rabbitmq.conf").write_text(
            f"{listeners}"
            "loopback_users = none\n"
            "vm_memory_high_watermark.absolute = 512MB\n"
            "disk_free_limit.absolute = 50MB\n"
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"{peers}\n"
        )
        (node.directory / "enabled_plugins").write_text("[].\n")
        (node.directory / "env.conf").write_text("")

    def _env(self, node: Node) -> dict[str, str]:
        directory = node.directory
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_PORT": str(node.port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(node.pid_file),
            "RABBITMQ_CONF_ENV_FILE": str(directory / "env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def ctl(self, node: Node, *args: str, timeout: float = 60, check: bool = True) -> str:
        """`rabbitmqctl -n <node> ...` with the cluster's cookie; its output."""
        done = subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", node.name, *args],
                              env=self._env(node), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {node.name} {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def start_node(self, node: Node) -> None:
        node.pid_file.unlink(missing_ok=True)
        subprocess.run([str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"], env=self._env(node),
                       capture_output=True, timeout=60, check=True)

    def await_node(self, node: Node, timeout: float = 120) -> None:
        wait_for(node.pid_file.exists, timeout=30, what=f"{node.name} to write its pid file")
        try:
            self.ctl(node, "wait", "--timeout", str(int(timeout)), str(node.pid_file), timeout=timeout + 10)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            raise AssertionError(f"{node.name} did not start: {error}\n{self.log_tail(node)}") from None

    def start(self) -> "Cluster":
        for node in self.nodes:
            self.start_node(node)
        for node in self.nodes:
            self.await_node(node)
        wait_for(lambda: self.running_nodes() == len(self.nodes), timeout=120, interval=1,
                 what=f"{len(self.nodes)} nodes in one cluster")
        return self

    def running_nodes(self, via: Node | None = None) -> int:
        """How many nodes the cluster says are running, asked of `via` (else the first that answers)."""
        for node in [via] if via else self.nodes:
            try:
                status = self.ctl(node, "cluster_status", "--formatter", "json", timeout=30)
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
            return len(json.loads(status).get("running_nodes", []))
        return 0

    def kill(self, node: Node) -> None:
        """kill -9 of the node's Erlang VM: no goodbye to its clients or peers."""
        pid = node.pid()
        assert pid is not None, f"{node.name} has no pid"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), timeout=30, what=f"{node.name} to die")

    def stop_node(self, node: Node) -> None:
        """A graceful stop, as a rolling restart does."""
        pid = node.pid()
        self.ctl(node, "stop", str(node.pid_file), timeout=120)
        if pid:
            wait_for(lambda: not _alive(pid), timeout=60, what=f"{node.name} to stop")

    def add_vhost(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.ctl(self.nodes[0], "add_vhost", name)
        self.ctl(self.nodes[0], "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name

    def url(self, vhost: str, address: str = "127.0.0.1", options: str = "") -> str:
        """RABBITMQ_URL for the whole cluster: every node, `;`-separated; `options` a query string."""
        query = f"?{options}" if options else ""
        return ";".join(f"amqp://guest:guest@{address}:{node.port}/{vhost}{query}" for node in self.nodes)

    def queue_members_online(self, vhost: str) -> dict[str, int]:
        """Per quorum queue of the vhost, how many of its members are online."""
        for node in self.nodes:
            try:
                out = self.ctl(node, "list_queues", "-p", vhost, "name", "online", "--formatter", "json", timeout=30)
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
            return {queue["name"]: len(queue.get("online") or []) for queue in json.loads(out or "[]")}
        return {}

    def restore(self) -> None:
        """Every node running again, as a test that failed between a fault and its recovery left them."""
        down = [node for node in self.nodes if not _runs(node)]
        for node in down:
            self.start_node(node)
        for node in down:
            self.await_node(node)
        wait_for(lambda: self.running_nodes() == len(self.nodes), timeout=120, interval=1,
                 what=f"all {len(self.nodes)} nodes running again")

    def log_tail(self, node: Node, lines: int = 30) -> str:
        log = self._log(node)
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def log_size(self, node: Node) -> int:
        """Where `node`'s log ends now: a mark that `log_since` reads from."""
        log = self._log(node)
        return log.stat().st_size if log.exists() else 0

    def log_since(self, node: Node, mark: int) -> str:
        """What `node` logged after `mark`, however much: a tail of fixed length can lose a line under load."""
        log = self._log(node)
        if not log.exists():
            return ""
        with log.open("rb") as file:
            file.seek(mark)
            return file.read().decode(errors="replace")

    @staticmethod
    def _log(node: Node) -> Path:
        return node.directory / "log" / f"{node.name}.log"

    def stop(self) -> None:
        for node in self.nodes:
            pid = node.pid()
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for node in self.nodes:
            pid = node.pid()
            if pid:
                wait_for(lambda: not _alive(pid), timeout=30, what=f"{node.name} to die")
        shutil.rmtree(self.workdir, ignore_errors=True)


def _runs(node: Node) -> bool:
    """The node's VM is alive: its pid file names a live process started as that node (a pid left
    in the file may belong to another process by now; the VM's command line does not name it)."""
    pid = node.pid()
    if not pid or not _alive(pid):
        return False
    try:
        return f"RABBITMQ_NODENAME={node.name}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (the VM was our child's child) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
