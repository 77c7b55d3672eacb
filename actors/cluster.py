"""RabbitMQ's nodes as RABBITMQ_URL lists them, and which of them answer.

RABBITMQ_URL names one node, or the nodes of a cluster: separated by `;`
(`amqp://u:p@rabbit-1:5672/v;amqp://u:p@rabbit-2:5672/v;...`, the form
Dramatiq itself accepts), or, with the user, password, vhost and options
said once, as a comma-separated host list (`amqp://u:p@rabbit-1:5672,
rabbit-2:5672,rabbit-3:5672/v`, as libpq and MongoDB take it). Every process shuffles its copy of the list once:
pika tries the nodes in that order on each (re)connect, so the API processes
and workers spread over the cluster instead of all crowding the first node,
and each moves to the next node by itself when its node goes. All the nodes
must name one vhost: it is what the deployment's Redis records are named by.

Whether the cluster is whole is a question for `/ready` and `/status`, not
for publishing (a quorum queue goes on with a majority): a TCP connect to each
node's AMQP port, with a short timeout and answered from a cache for a second,
so probes and open status pages cost the nodes almost nothing. A node whose
RabbitMQ is stopped, killed or unreachable does not accept the connection.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from typing import Any
from urllib.parse import unquote, urlsplit

CACHE_SECONDS = 1.0


def node_urls(rabbitmq_url: str) -> list[str]:
    """The nodes' URLs, in the order given; raises ValueError, naming RABBITMQ_URL, when they disagree."""
    urls = [url for part in rabbitmq_url.split(";") if part.strip() for url in _each_host(part.strip())]
    if not urls:
        raise ValueError("RABBITMQ_URL is empty: give the AMQP URL of a node, or of each node separated by ';'")
    vhosts = {vhost_of(url) for url in urls}
    if len(vhosts) > 1:
        raise ValueError(f"RABBITMQ_URL names {len(urls)} nodes with different vhosts ({', '.join(sorted(vhosts))}); "
                         "every node of a cluster serves the same vhosts, so give each URL the same one")
    return urls


def _each_host(url: str) -> list[str]:
    """`amqp://u:p@a:1,b:2/v` -> `amqp://u:p@a:1/v`, `amqp://u:p@b:2/v`; any other URL as it is."""
    parts = urlsplit(url)
    credentials, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return [url]
    return [parts._replace(netloc=f"{credentials}{at}{host.strip()}").geturl() for host in hosts.split(",") if host.strip()]


def vhost_of(url: str) -> str:
    return unquote(urlsplit(url).path[1:]) or "/"


def shuffled(urls: list[str], rng: random.Random | None = None) -> list[str]:
    """This process's order of the nodes."""
    order = list(urls)
    (rng or random).shuffle(order)
    return order


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or (5671 if parts.scheme == "amqps" else 5672)


class NodeProbe:
    """Which nodes accept a connection on their AMQP port, read at most once a second.

    All nodes are probed at once, and a probe not done within `timeout` counts the node down:
    `socket.create_connection`'s timeout covers the connect, not the name lookup before it, and
    a resolver that does not answer would otherwise hold /ready for seconds per node. Each probe
    is a daemon thread (a lookup hanging must not hold the process's exit), and a node's next
    probe waits for its last one to end, so a hanging resolver holds one thread per node at most.
    """

    def __init__(self, urls: list[str], timeout: float = 0.25):
        self.nodes = [_address(url) for url in urls]
        self.timeout = timeout
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._probes: dict[tuple[str, int], Future] = {}

    @property
    def cluster(self) -> bool:
        return len(self.nodes) > 1

    def read(self) -> dict[str, Any]:
        """{"state": "ok" | "degraded" | "down", "nodes": n, "down": ["host:port", ...]}; blocking,
        for at most about twice `timeout`."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            probes = [self._probe(node) for node in self.nodes]
            # Two connect timeouts: a name with two addresses, the first silently dropped (an
            # unrouted IPv6 beside a working IPv4), still reads as up.
            wait_all(probes, timeout=2 * self.timeout + 0.1)
            down = [f"{host}:{port}" for (host, port), probe in zip(self.nodes, probes)
                    if not (probe.done() and probe.result())]
            state = "ok" if not down else "down" if len(down) == len(self.nodes) else "degraded"
            answer = {"state": state, "nodes": len(self.nodes), "down": down}
            self._cached = (time.monotonic(), answer)
            return answer

    def _probe(self, node: tuple[str, int]) -> Future:
        """A new probe of `node`, or its last one while that still runs (a lookup not answered)."""
        last = self._probes.get(node)
        if last is not None and not last.done():
            return last
        probe: Future = Future()
        threading.Thread(target=lambda: probe.set_result(self._accepts(*node)),
                         name=f"node-probe {node[0]}:{node[1]}", daemon=True).start()
        self._probes[node] = probe
        return probe

    def _accepts(self, host: str, port: int) -> bool:
        try:
            with socket.create_connection((host, port), timeout=self.timeout):
                return True
        except Exception:  # OSError, and e.g. UnicodeError from a name IDNA refuses: down either way
            return False
